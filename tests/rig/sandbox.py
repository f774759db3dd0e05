"""The sandboxed Asterisk, as the tests use it (see asterisk/sandbox.py)."""

from __future__ import annotations

from pathlib import Path

from asterisk.sandbox import SHARED_DIR_INSIDE, Sandbox, SandboxError

__all__ = ["REQUIRED_MODULES", "SHARED_DIR_INSIDE", "Sandbox", "SandboxError", "start_sandbox"]

#: Modules the controller and the rig rely on; the e2e tests check they run.
REQUIRED_MODULES = (
    "app_stasis.so",
    "res_ari.so",
    "res_ari_asterisk.so",
    "res_ari_bridges.so",
    "res_ari_channels.so",
    "res_ari_endpoints.so",
    "res_ari_events.so",
    "res_ari_applications.so",
    "res_ari_playbacks.so",
    "res_ari_recordings.so",
    "res_websocket_client.so",
    "res_http_websocket.so",
    "chan_rtp.so",
    "res_rtp_multicast.so",
    "res_rtp_asterisk.so",
    "chan_pjsip.so",
    "res_pjsip.so",
    "res_pjsip_session.so",
    "res_pjsip_sdp_rtp.so",
    "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_refer.so",
    "bridge_softmix.so",
    "bridge_simple.so",
    "codec_ulaw.so",
    "codec_alaw.so",
    "codec_resample.so",
    "codec_gsm.so",
    "format_wav.so",
    "format_pcm.so",
    "format_gsm.so",
    "res_timing_timerfd.so",
    "app_mixmonitor.so",
    "app_playback.so",
    "app_read.so",
    "app_senddtmf.so",
    "app_record.so",
    "app_echo.so",
    "app_dial.so",
    "app_exec.so",
    "app_stack.so",
    "func_global.so",
    "func_logic.so",
    "func_channel.so",
    "func_timeout.so",
)


def start_sandbox(state_dir: Path, **kwargs: object) -> Sandbox:
    """Start a sandbox for a test session (builds the root fs on first use).

    Asterisk gets SIGTERM if the test process dies, so a killed run leaves
    nothing behind. Raises :class:`SandboxError` with a one-line reason.
    """
    box = Sandbox(state_dir, die_with_parent=True, **kwargs)  # type: ignore[arg-type]
    return box.start()
