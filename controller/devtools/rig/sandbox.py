"""The sandboxed Asterisk, as the tests and benchmarks use it (see asterisk/sandbox.py)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

from asterisk.sandbox import CONF_DIR, SHARED_DIR_INSIDE, Sandbox, SandboxError

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
    "app_amd.so",
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
    "func_strings.so",
    "func_math.so",
)


#: Port sets a test session may use: (ARI, PBX SIP, phone SIP, RTP start).
#: The first whose ports are free wins, so a developer's own sandbox (or a
#: second test run) on the default ports does not make the tests fail.
PORT_SETS = tuple((8088 + o, 5060 + o, 5070 + o, 20000 + 5 * o) for o in (0, 200, 400, 600))


def _free(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            # As Asterisk binds: connections of an earlier run lingering in
            # TIME_WAIT do not make the port busy, a listener does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def moved_conf(http: int, pbx: int, phone: int, rtp: int) -> dict[str, str]:
    """The repo's configs with the ports moved (``extra_conf`` for :class:`Sandbox`)."""
    if (http, pbx, phone, rtp) == PORT_SETS[0]:
        return {}
    ports = {"8088": str(http), "5060": str(pbx), "5070": str(phone)}

    def moved(name: str) -> str:
        text = (CONF_DIR / name).read_text()
        for old, new in ports.items():
            text = text.replace(f":{old}", f":{new}").replace(f"bindport={old}", f"bindport={new}")
        return text

    extra = {name: moved(name) for name in ("http.conf", "pjsip.conf", "pjsip_rig.conf")}
    rtp_conf = (CONF_DIR / "rtp.conf").read_text()
    rtp_conf = rtp_conf.replace("rtpstart=20000", f"rtpstart={rtp}")
    extra["rtp.conf"] = rtp_conf.replace("rtpend=20999", f"rtpend={rtp + 999}")
    return extra


def start_sandbox(
    state_dir: Path, *, conf: Mapping[str, str] | None = None, **kwargs: object
) -> Sandbox:
    """Start a sandbox for a test session (builds the root fs on first use).

    Uses the first set of ports in :data:`PORT_SETS` that is free. Asterisk
    gets SIGTERM if the test process dies, so a killed run leaves nothing
    behind. Raises :class:`SandboxError` with a one-line reason.

    Args:
        conf: more configuration files (name -> text), over the port-moved ones.
    """
    error: SandboxError | None = None
    for ports in PORT_SETS:
        http, pbx, phone, _ = ports
        if not (
            _free(http, socket.SOCK_STREAM)
            and _free(pbx, socket.SOCK_DGRAM)
            and _free(phone, socket.SOCK_DGRAM)
        ):
            continue
        extra = {**moved_conf(*ports), **(conf or {})}
        box = Sandbox(state_dir, die_with_parent=True, extra_conf=extra, **kwargs)  # type: ignore[arg-type]
        try:
            return box.start()
        except SandboxError as exc:
            # Another sandbox took these ports between the check and the start.
            if "already in use" not in str(exc):
                raise
            error = exc
    raise error or SandboxError("asterisk sandbox: every port set in PORT_SETS is in use")
