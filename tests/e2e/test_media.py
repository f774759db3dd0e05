"""Media end to end (issue 3): what the caller says reaches the model, what the
model says reaches the caller, and nothing else does.

Every call is a real one through the sandboxed Asterisk 22: the rig's phone
(or a Local channel) calls extension 100, the in-process controller bridges
it to its externalMedia RTP socket and to the local model server, and the
phone records what it hears (MixMonitor ``r()``), so the tests assert on the
audio the caller actually received: its frequency and its duration.

The model server's energy VAD commits a turn ``prefix_padding_ms`` before
the first voiced frame until ``silence_duration_ms`` after the last one, so
the speech in a turn is ``audio_ms - PREFIX_MS - SILENCE_MS`` when the
caller was quiet for at least ``PREFIX_MS`` before speaking.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.audio.g711 import ulaw_decode, ulaw_encode
from controller.call.call import Call
from controller.call.state import CallState
from controller.devtools.modelserver import ModelServer, SessionRecord
from controller.devtools.rig.ari import AriClient, Event
from controller.devtools.rig.audio import (
    AudioStats,
    active_mask,
    analyse,
    band_dbfs,
    frame_frequencies,
    make_tone,
    make_tones,
    read_wav,
    wait_recording,
)
from controller.devtools.rig.calls import (
    Script,
    call_local,
    call_pbx,
    playable,
    wait_nothing_left,
    wait_rig_done,
)
from controller.devtools.rig.sandbox import Sandbox
from controller.devtools.rig.wait import wait_for
from tests.e2e.conftest import RunningController

#: The controller's turn detection settings (passed explicitly: the arithmetic depends on them).
PREFIX_MS = 300
SILENCE_MS = 500
VAD = {"VAD_PREFIX_MS": str(PREFIX_MS), "VAD_SILENCE_MS": str(SILENCE_MS)}
#: The model server's reply (the ``model_server`` fixture's defaults).
REPLY_HZ = 1000.0
REPLY_S = 1.5
#: What the caller says: a clear 500 Hz tone burst at -9 dBFS.
SAY_HZ = 500.0
SAY_S = 1.5
CALLER_TRANSCRIPT = "I would like to hear a tone."
AGENT_TRANSCRIPT = "A tone."
#: Time for the last frames of a reply to reach the phone's recording before it hangs up:
#: MixMonitor holds back about 0.3 s of what a channel hears (measured: a caller hanging
#: up right after 0.6 s of reply was sent has 0.30-0.34 s of it in its recording).
TAIL_GRACE = 0.8


# --- helpers -----------------------------------------------------------------------------


def shared(asterisk: Sandbox, name: str) -> tuple[Path, str]:
    """A file in the shared directory: (host path, path inside Asterisk)."""
    host = asterisk.shared_dir / name
    host.unlink(missing_ok=True)
    return host, asterisk.inside_path(host)


def media_up(call: Call) -> bool:
    """The call's RTP leg knows Asterisk's address and its model session is ready."""
    return call.state is CallState.CONNECTED


async def wait_calls(running: RunningController, count: int, timeout: float = 10.0) -> list[Call]:
    """Wait until ``count`` calls have media up and a ready model session."""

    def ready() -> list[Call]:
        calls = [c for c in running.controller.calls.values() if media_up(c)]
        return calls if len(calls) >= count else []

    calls = await wait_for(ready, timeout, what=f"{count} call(s) with media and model up")
    assert len(calls) == count, calls
    return calls


def session_of(server: ModelServer, call: Call) -> SessionRecord:
    """The model server's record of ``call``'s model session."""
    session_id = call.model_session_id
    matches = [s for s in server.sessions if s.id == session_id]
    assert len(matches) == 1, (session_id, [s.id for s in server.sessions])
    return matches[0]


async def wait_reply_played(
    server: ModelServer, call: Call, *, min_ms: float, timeout: float = 15.0
) -> None:
    """Wait until the model finished a reply and the call has played all of it."""
    record = session_of(server, call)
    media = call.media
    assert media is not None

    def played() -> bool:
        done = [r for r in record.responses if r.status == "completed" and r.kind == "audio"]
        return bool(done) and not media.speaking and media.summary().played_frames * 20 >= min_ms

    await wait_for(played, timeout, what="the reply to be generated and played out")


async def hang_up_after_reply(
    ari: AriClient, server: ModelServer, call: Call, phone: Event, *, min_ms: float
) -> None:
    """The caller hangs up once it has heard the whole reply."""
    await wait_reply_played(server, call, min_ms=min_ms)
    await asyncio.sleep(TAIL_GRACE)  # see TAIL_GRACE; not an assertion
    assert await ari.hangup(phone["id"]), "the caller's phone was already gone"


def assert_no_model_errors(server: ModelServer) -> None:
    """The model server rejected nothing the controller sent (no ``error`` events)."""
    errors = {s.id: s.errors for s in server.sessions if s.errors}
    assert not errors, errors


async def wait_ended(running: RunningController, count: int, timeout: float = 10.0) -> list[Call]:
    await wait_for(lambda: len(running.ended) >= count, timeout, what=f"{count} call(s) to end")
    return list(running.ended)


def speech_ms(turn_audio_ms: float) -> float:
    """The speech in a turn committed after >= PREFIX_MS of quiet (see the module docstring)."""
    return turn_audio_ms - PREFIX_MS - SILENCE_MS


class InputTap:
    """Keeps the caller audio the model server receives (decoded), via its validator hook.

    The fixture's validator still checks every event first.
    """

    def __init__(self, server: ModelServer, mode: str) -> None:
        self.rate = 8000 if mode == "pcmu" else 24000
        self._mode = mode
        self._chunks: list[np.ndarray] = []
        #: ``time.time()`` of the first ``input_audio_buffer.append`` (log records' clock).
        self.first_append: float | None = None
        inner = server.validator

        def hook(event: Mapping[str, Any]) -> None:
            if inner is not None:
                inner(event)
            if event.get("type") == "input_audio_buffer.append":
                if self.first_append is None:
                    self.first_append = time.time()
                raw = base64.b64decode(event["audio"])
                if self._mode == "pcmu":
                    samples = ulaw_decode(raw)
                else:
                    samples = np.frombuffer(raw, dtype="<i2")
                self._chunks.append(samples.astype(np.float64) / 32768.0)

        server.validator = hook

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0)

    def between(self, start_ms: float, end_ms: float) -> np.ndarray:
        lo, hi = int(start_ms * self.rate / 1000), int(end_ms * self.rate / 1000)
        return self.samples[lo:hi]

    def voiced_ms(self, start_ms: float, end_ms: float) -> float:
        """Milliseconds above -40 dBFS (20 ms frames) between two points of the input."""
        mask = active_mask(self.between(start_ms, end_ms), self.rate)
        return float(mask.sum()) * 20.0


def peak_dbfs(samples: np.ndarray) -> float:
    return float(20 * np.log10(max(float(np.max(np.abs(samples))) if samples.size else 0.0, 1e-10)))


def own_tone_only(
    stats: AudioStats, heard: Path, own: float, others: list[float]
) -> dict[float, float]:
    """The recording's tone is ``own``; each of ``others`` is at least 30 dB below it.

    Returns the level (dBFS) of each frequency in the recording.
    """
    samples, rate = read_wav(heard)
    assert abs(stats.dominant_hz - own) < own * 0.02, (own, stats)
    own_level = band_dbfs(samples, rate, own)
    assert own_level > -25, (own, own_level, stats)
    levels = {own: round(own_level, 1)}
    for other in others:
        level = band_dbfs(samples, rate, other)
        assert level < own_level - 30, (
            f"a caller saying {own} Hz heard {other} Hz at {level:.1f} dBFS "
            f"(its own at {own_level:.1f} dBFS)"
        )
        levels[other] = round(level, 1)
    return levels


# --- 1. one call, both audio modes ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["pcmu", "pcm24k"])
async def test_caller_speech_reaches_the_model_and_the_reply_reaches_the_caller(
    mode: str,
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="controller.call")
    model_server.config.input_transcript = CALLER_TRANSCRIPT
    model_server.config.transcript = AGENT_TRANSCRIPT
    say = make_tone(asterisk.shared_dir / "media-say-500.wav", SAY_HZ, SAY_S)
    heard, heard_inside = shared(asterisk, f"media-heard-{mode}.wav")
    running: RunningController = await start_controller(REALTIME_AUDIO=mode, **VAD)

    phone = await call_pbx(
        ari,
        "100",
        Script(record=heard_inside, delay=1, play=playable(asterisk, say), wait=15),
        rig_id=f"media_{mode}",
    )
    (call,) = await wait_calls(running, 1)
    record = session_of(model_server, call)
    assert record.session["audio"]["input"]["format"]["type"] == (
        "audio/pcmu" if mode == "pcmu" else "audio/pcm"
    )
    await hang_up_after_reply(ari, model_server, call, phone, min_ms=REPLY_S * 1000)
    result = await wait_rig_done(ari, f"media_{mode}")
    assert result["played"] == "SUCCESS"
    (ended,) = await wait_ended(running, 1)
    assert ended is call
    await wait_nothing_left(ari)
    assert_no_model_errors(model_server)

    # The model heard one turn: the caller's 1.5 s, loud.
    assert len(record.turns) == 1, record.turns
    turn = record.turns[0]
    assert turn.source == "server_vad"
    assert abs(speech_ms(turn.audio_ms) - SAY_S * 1000) <= 120, turn
    assert turn.audio_end_ms - turn.audio_start_ms == pytest.approx(turn.audio_ms, abs=20)
    assert turn.rms_dbfs > -20, turn  # the tone is at -9 dBFS; silence would be ~-100

    # The caller heard the model's reply: 1 kHz for 1.5 s.
    stats = analyse(await wait_recording(heard))
    assert abs(stats.dominant_hz - REPLY_HZ) < REPLY_HZ * 0.02, stats
    assert abs(stats.active - REPLY_S) < 0.2, stats
    assert stats.rms_dbfs > -30, stats
    own_tone_only(stats, heard, REPLY_HZ, [SAY_HZ])  # its own voice does not come back

    # The transcript: the caller's line (input transcription) then the agent's.
    assert [(line.role, line.text) for line in call.transcript] == [
        ("caller", CALLER_TRANSCRIPT),
        ("agent", AGENT_TRANSCRIPT),
    ]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("transcript ")]
    assert any("role=caller" in m and CALLER_TRANSCRIPT in m for m in logged), logged
    assert any("role=agent" in m and AGENT_TRANSCRIPT in m for m in logged), logged

    assert call.end_reason == "caller hung up"
    assert call.input_chunks_dropped == 0
    media = call.media
    assert media is not None
    summary = media.summary()
    assert summary.rx_foreign == 0
    assert abs(summary.played_frames * 0.02 - REPLY_S) <= 0.04, summary.played_frames
    print(
        f"{mode}: turn {turn.audio_ms:.0f} ms (speech {speech_ms(turn.audio_ms):.0f} ms) "
        f"at {turn.rms_dbfs:.1f} dBFS; caller heard {stats.dominant_hz:.1f} Hz for "
        f"{stats.active:.2f} s; played {summary.played_frames} frames; "
        f"rtp in {summary.rx_received}, gap frames {summary.gap_frames}"
    )


# --- 2. three calls at once ------------------------------------------------------------------


async def test_three_calls_each_hear_only_their_own_reply(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Echo replies: each caller says its own frequency and must hear exactly that back.

    The third caller hangs up in the middle of its reply; the other two calls
    go on undisturbed.
    """
    model_server.config.reply = "echo"
    say_s = 1.2
    freqs = {"201": 450.0, "202": 750.0, "203": 1250.0}
    running: RunningController = await start_controller(**VAD)
    phones: dict[str, Event] = {}
    heard: dict[str, Path] = {}
    for exten, freq in freqs.items():
        wav = make_tone(asterisk.shared_dir / f"media-say-{int(freq)}.wav", freq, say_s)
        heard[exten], inside = shared(asterisk, f"media-heard-{exten}.wav")
        script = Script(record=inside, delay=0.5, play=playable(asterisk, wav), wait=20)
        phones[exten] = await call_pbx(ari, exten, script, rig_id=f"multi_{exten}")
    calls = {c.args[0]: c for c in await wait_calls(running, 3)}
    assert set(calls) == set(freqs)

    # The third caller hangs up while its reply is playing.
    early = calls["203"]
    early_media = early.media
    assert early_media is not None
    await wait_for(
        lambda: early_media.summary().played_frames >= 30,
        15,
        what="the third caller's reply to be playing",
    )
    assert await ari.hangup(phones["203"]["id"])
    await wait_ended(running, 1)
    assert running.ended == [early]
    await wait_for(lambda: early.call_id not in running.controller.calls, 5, what="it to go")
    # The other two are still running (and were not touched) when it ends.
    assert set(running.controller.calls) == {calls["201"].call_id, calls["202"].call_id}
    assert early.end_reason == "caller hung up"
    assert not calls["201"].lifecycle.over and not calls["202"].lifecycle.over

    await asyncio.gather(
        *(
            hang_up_after_reply(ari, model_server, calls[e], phones[e], min_ms=say_s * 1000)
            for e in ("201", "202")
        )
    )
    await wait_ended(running, 3)
    await wait_nothing_left(ari)
    assert_no_model_errors(model_server)
    problems = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("controller") and r.levelno >= logging.WARNING
    ]
    assert not problems, problems

    for exten in ("201", "202"):
        call = calls[exten]
        assert call.end_reason == "caller hung up", (exten, call.end_reason)
        record = session_of(model_server, call)
        assert len(record.turns) == 1, (exten, record.turns)
        assert [r.status for r in record.responses] == ["completed"], (exten, record.responses)
        stats = analyse(await wait_recording(heard[exten]))
        own = freqs[exten]
        levels = own_tone_only(stats, heard[exten], own, [f for f in freqs.values() if f != own])
        assert abs(stats.active - say_s) < 0.25, (exten, stats)
        print(f"{exten}: heard {stats.dominant_hz:.1f} Hz for {stats.active:.2f} s; {levels}")

    # The caller who left early heard only (a part of) its own echo.
    assert session_of(model_server, early).closed
    assert early_media.summary().played_frames * 0.02 < say_s
    stats = analyse(await wait_recording(heard["203"]))
    own_tone_only(stats, heard["203"], 1250.0, [450.0, 750.0])
    assert 0.1 < stats.active < say_s, stats
    print(f"203: heard {stats.dominant_hz:.1f} Hz for {stats.active:.2f} s before hanging up")


# --- 3. RTP from a foreign address ------------------------------------------------------------


def rtp_packets(count: int, freq: float = 1000.0) -> list[bytes]:
    """``count`` valid RTP packets (PT 0, 20 ms each) of a loud tone (-3 dBFS)."""
    t = np.arange(count * 160) / 8000
    pcm = (0.7 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    payload = ulaw_encode(pcm)
    ssrc = 0x1234ABCD
    return [
        struct.pack("!BBHII", 0x80, 0, (1000 + i) & 0xFFFF, 160 * i, ssrc)
        + payload[i * 160 : (i + 1) * 160]
        for i in range(count)
    ]


async def test_rtp_from_a_foreign_address_is_not_played_to_the_model(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Loud RTP from another port on 127.0.0.1 never reaches the model.

    Positive control: the caller itself says a 500 Hz tone later in the call,
    and with echo replies the caller must hear exactly that, once.
    """
    model_server.config.reply = "echo"
    tap = InputTap(model_server, "pcmu")
    say = make_tone(asterisk.shared_dir / "media-say-500.wav", SAY_HZ, SAY_S)
    heard, heard_inside = shared(asterisk, "media-heard-foreign.wav")
    running: RunningController = await start_controller(**VAD)
    phone = await call_pbx(
        ari,
        "100",
        Script(record=heard_inside, delay=4, play=playable(asterisk, say), wait=15),
        rig_id="foreign",
    )
    (call,) = await wait_calls(running, 1)
    media = call.media
    assert media is not None and media.remote_address is not None
    target = media.local_address
    packets = rtp_packets(75)  # 1.5 s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1", 0))
        assert sender.getsockname() != media.remote_address
        sender.setblocking(False)
        for packet in packets:
            sender.sendto(packet, target)
            await asyncio.sleep(0.02)  # pacing the sender, not an assertion
    await wait_for(
        lambda: media.summary().rx_foreign >= len(packets),
        5,
        what=f"{len(packets)} foreign packets to be counted",
    )

    await hang_up_after_reply(ari, model_server, call, phone, min_ms=SAY_S * 1000)
    await wait_rig_done(ari, "foreign")
    await wait_ended(running, 1)
    await wait_nothing_left(ari)
    assert_no_model_errors(model_server)

    assert media.summary().rx_foreign == len(packets)
    warned = [r for r in caplog.records if "RTP from an unexpected address" in r.getMessage()]
    assert len(warned) == 1, "one warning per call, not one per packet"
    record = session_of(model_server, call)
    # One turn, and it is the caller's own tone (not 1.5 s of foreign tone before it).
    assert len(record.turns) == 1, record.turns
    turn = record.turns[0]
    assert abs(speech_ms(turn.audio_ms) - SAY_S * 1000) <= 120, turn
    # Everything the model received before that turn is digital silence.
    before = tap.between(0, turn.audio_start_ms)
    assert before.size >= 8 * 3000, before.size  # the 4 s quiet stretch reached the model
    assert peak_dbfs(before) < -60, peak_dbfs(before)
    assert tap.voiced_ms(turn.audio_start_ms, turn.audio_end_ms) == pytest.approx(
        SAY_S * 1000, abs=60
    )
    # The caller heard its own 500 Hz back, and none of the foreign 1 kHz.
    stats = analyse(await wait_recording(heard))
    own_tone_only(stats, heard, SAY_HZ, [1000.0])
    assert abs(stats.active - SAY_S) < 0.25, stats
    print(
        f"foreign: {media.summary().rx_foreign} packets dropped; quiet input "
        f"{before.size / 8:.0f} ms peak {peak_dbfs(before):.1f} dBFS; turn {turn.audio_ms:.0f} ms; "
        f"heard {stats.dominant_hz:.1f} Hz for {stats.active:.2f} s"
    )


# --- 4. a caller that sends nothing while quiet ------------------------------------------------


async def test_a_caller_sending_no_packets_still_gets_its_turn_ended(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: Callable[..., Any],
) -> None:
    """A Local channel in Wait() sends no frames: the gap filler's silence ends the turn."""
    say = make_tone(asterisk.shared_dir / "media-say-500.wav", SAY_HZ, SAY_S)
    heard, heard_inside = shared(asterisk, "media-heard-local.wav")
    running: RunningController = await start_controller(**VAD)
    phone = await call_local(
        ari,
        "100",
        Script(record=heard_inside, delay=1, play=playable(asterisk, say), wait=15),
        rig_id="local",
    )
    (call,) = await wait_calls(running, 1)
    assert call.caller.name.startswith("Local/100@from-tester-"), call.caller.name
    await hang_up_after_reply(ari, model_server, call, phone, min_ms=REPLY_S * 1000)
    await wait_rig_done(ari, "local")
    await wait_ended(running, 1)
    await wait_nothing_left(ari)
    assert_no_model_errors(model_server)

    media = call.media
    assert media is not None
    record = session_of(model_server, call)
    assert len(record.turns) == 1, record.turns
    turn = record.turns[0]
    assert abs(speech_ms(turn.audio_ms) - SAY_S * 1000) <= 120, turn
    # Asterisk sent (about) the tone and nothing else; the quiet parts were filled.
    summary = media.summary()
    received = summary.rx_received
    filled = summary.gap_frames
    assert received <= SAY_S / 0.02 + 10, received
    assert filled * 20 >= SILENCE_MS, filled
    assert record.responses and record.responses[0].status == "completed"
    stats = analyse(await wait_recording(heard))
    assert abs(stats.dominant_hz - REPLY_HZ) < REPLY_HZ * 0.02, stats
    assert abs(stats.active - REPLY_S) < 0.2, stats
    own_tone_only(stats, heard, REPLY_HZ, [SAY_HZ])
    print(
        f"local: rtp in {received}, gap frames {filled}; turn {turn.audio_ms:.0f} ms; "
        f"heard {stats.dominant_hz:.1f} Hz for {stats.active:.2f} s"
    )


# --- 5. audio before the model session is ready -----------------------------------------------


async def test_audio_before_the_model_is_ready_is_buffered_not_lost(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The model takes 2.5 s to open its session; the caller speaks at once on answer.

    The model server waits ``open_delay_s`` after the websocket upgrade before
    ``session.created``, and the controller connects only after answering,
    so the caller's 1.5 s utterance (played from the moment the call is
    answered) is over before any audio can go to the model. The utterance is
    500 Hz then 800 Hz (0.75 s each); with echo replies the caller must hear
    both halves back, so neither the start nor the rest was lost.
    """
    caplog.set_level(logging.INFO, logger="controller.call")
    open_delay = 2.5
    model_server.config.reply = "echo"
    model_server.config.open_delay_s = open_delay
    tap = InputTap(model_server, "pcmu")
    say = make_tones(asterisk.shared_dir / "media-say-500-800.wav", [(500, 0.75), (800, 0.75)])
    heard, heard_inside = shared(asterisk, "media-heard-early.wav")
    running: RunningController = await start_controller(**VAD)
    phone = await call_pbx(
        ari,
        "100",
        Script(record=heard_inside, play=playable(asterisk, say), wait=20),
        rig_id="early",
    )
    (call,) = await wait_calls(running, 1, timeout=15)
    await hang_up_after_reply(ari, model_server, call, phone, min_ms=1000)
    await wait_rig_done(ari, "early")
    await wait_ended(running, 1)
    await wait_nothing_left(ari)
    assert_no_model_errors(model_server)

    # The first audio reached the model only after the whole utterance was over.
    (answered,) = [r.created for r in caplog.records if r.getMessage().startswith("answered ")]
    assert tap.first_append is not None
    waited = tap.first_append - answered
    assert waited >= open_delay > 1.5, waited
    assert call.input_chunks_dropped == 0
    record = session_of(model_server, call)
    assert len(record.turns) == 1, record.turns
    turn = record.turns[0]
    voiced = tap.voiced_ms(turn.audio_start_ms, turn.audio_end_ms)
    assert voiced >= 1500 - 150, (voiced, turn)
    assert voiced <= 1500 + 40, (voiced, turn)
    assert turn.rms_dbfs > -20, turn

    samples, rate = read_wav(await wait_recording(heard))
    freqs = frame_frequencies(samples, rate)
    low = float(np.sum(np.abs(freqs - 500) < 15)) * 0.04
    high = float(np.sum(np.abs(freqs - 800) < 20)) * 0.04
    assert low >= 0.75 - 0.2, (low, high, freqs)
    assert abs(high - 0.75) <= 0.1, (low, high, freqs)
    print(
        f"early: first audio {waited:.2f} s after the answer; "
        f"turn {turn.audio_ms:.0f} ms with {voiced:.0f} ms voiced; "
        f"heard 500 Hz {low:.2f} s, 800 Hz {high:.2f} s"
    )
