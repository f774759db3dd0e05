"""Conversation control end to end: barge-in, tools, caller keys, profiles, limits.

Every test runs a real call: the rig's phone (Asterisk calling itself over
SIP) dials the PBX, the dialplan hands the call to the in-process controller,
and the controller talks to the local GA model server. What the caller heard
is asserted on the phone's own recording (MixMonitor ``r()``), what it sent
on ``t()``. Both files start together and share a timeline, to a few tens of
ms; it advances only while frames flow (see :func:`make_utterance`), so tests
that measure time have the phone play (silence) throughout.

The model server replies with tones; each test picks frequencies that tell
the sounds apart (:func:`controller.devtools.rig.audio.tone_spans` finds each tone to 5 ms).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.call.call import Call
from controller.devtools.modelserver import ModelServer, SessionRecord
from controller.devtools.modelserver.peer import PeerSession
from controller.devtools.modelserver.vad import SpeechStarted
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import (
    make_silence,
    make_tone,
    read_wav,
    tone_levels,
    tone_spans,
    write_wav,
)
from controller.devtools.rig.audio import wait_recording as wait_wav
from controller.devtools.rig.calls import (
    Script,
    call_pbx,
    playable,
    wait_nothing_left,
    wait_rig_done,
)
from controller.devtools.rig.sandbox import Sandbox
from controller.devtools.rig.wait import wait_for
from controller.rtp.endpoint import RtpEndpoint
from tests.e2e.conftest import RunningController

StartController = Callable[..., Awaitable[RunningController]]

AGENT_HZ = 1000.0  # the model's first reply (the model_server fixture's default)
LATER_HZ = 600.0  # replies after the one under test
CALLER_HZ = 400.0  # the caller "speaking"


# --- helpers --------------------------------------------------------------------------


def shared_file(asterisk: Sandbox, stem: str) -> tuple[Path, str]:
    """A unique file in the shared directory: ``(host path, path inside Asterisk)``."""
    host = asterisk.shared_dir / f"{stem}-{uuid.uuid4().hex[:8]}.wav"
    return host, asterisk.inside_path(host)


def make_utterance(
    path: Path,
    freq: float,
    seconds: float,
    *,
    after: float = 0.0,
    then: float = 0.0,
    amplitude: float = 0.5,
) -> Path:
    """``after`` s of silence, a tone (5 ms fades: the caller speaking), ``then`` s of silence.

    The phone plays silence rather than waiting because MixMonitor's
    recordings only advance while frames flow: a stretch in which neither side
    sends anything (the phone in Wait(), the agent listening) is left out of
    both files. While the phone plays, its recordings keep wall-clock time.
    """
    n = round(seconds * 8000)
    tone = amplitude * np.sin(2 * np.pi * freq * np.arange(n) / 8000)
    ramp = np.linspace(0.0, 1.0, 40)
    tone[:40] *= ramp
    tone[-40:] *= ramp[::-1]
    parts = [np.zeros(round(after * 8000)), tone, np.zeros(round(then * 8000))]
    return write_wav(path, np.concatenate(parts))


async def current_call(running: RunningController) -> Call:
    """The call the controller is serving (waits for it)."""

    def first() -> Call | None:
        return next(iter(running.controller.calls.values()), None)

    call = await wait_for(first, 10, what="the controller to take the call")
    assert isinstance(call, Call)
    return call


async def ended_call(running: RunningController, timeout: float = 15) -> Call:
    """The call once it is over and torn down."""
    await wait_for(lambda: running.ended, timeout, what="the call to end")
    assert len(running.ended) == 1, running.ended
    return running.ended[0]


async def heard(path: Path, timeout: float = 10) -> tuple[Any, int]:
    """The samples of a finished recording and its rate."""
    return read_wav(await wait_wav(path, timeout))


def client_events(record: SessionRecord) -> list[dict[str, Any]]:
    """What the controller sent the model, without the audio appends."""
    return [e for e in record.received if e.get("type") != "input_audio_buffer.append"]


def function_outputs(record: SessionRecord) -> list[dict[str, Any]]:
    return [i for i in record.items_created if i["type"] == "function_call_output"]


def only(spans: list[tuple[float, float]], what: str) -> tuple[float, float]:
    assert len(spans) == 1, f"expected one {what}, found {spans}"
    return spans[0]


@dataclass(frozen=True)
class Heard:
    """Where a tone from the controller was heard on a recording (seconds)."""

    start: float  # its first sound
    stop: float  # its last sound
    seconds: float  # how much of it was heard


def heard_tone(samples: Any, rate: int, freq: float, what: str) -> Heard:
    """The agent's tone ``freq`` on a recording.

    How much was heard is the sum of the stretches, not stop - start: if the
    controller's media clock stalls (a busy machine), the rest of the audio
    comes that much later (it is delayed, never dropped) and the caller hears
    a short pause in it.
    """
    spans = tone_spans(samples, rate, freq)
    assert spans, f"no {what} ({freq:g} Hz) on the recording"
    return Heard(spans[0][0], spans[-1][1], sum(b - a for a, b in spans))


@dataclass
class Taps:
    """Wall-clock (``time.monotonic``) taps on the in-process peers.

    Instrumentation only: the wrapped methods run unchanged. ``frames`` is
    when the controller put each RTP frame on the wire toward Asterisk;
    ``speech_started`` is when the model server decided the caller started
    speaking (it emits ``input_audio_buffer.speech_started`` there).
    """

    frames: list[float] = field(default_factory=list)
    speech_started: list[float] = field(default_factory=list)


@pytest.fixture
def taps(monkeypatch: pytest.MonkeyPatch) -> Taps:
    found = Taps()
    send_frame = RtpEndpoint.send_frame
    speech_started = PeerSession._speech_started

    def tapped_send(self: RtpEndpoint, payload: bytes, frame_index: int) -> None:
        found.frames.append(time.monotonic())
        send_frame(self, payload, frame_index)

    def tapped_started(self: PeerSession, vad_event: SpeechStarted) -> None:
        found.speech_started.append(time.monotonic())
        speech_started(self, vad_event)

    monkeypatch.setattr(RtpEndpoint, "send_frame", tapped_send)
    monkeypatch.setattr(PeerSession, "_speech_started", tapped_started)
    return found


# --- 1. barge-in --------------------------------------------------------------------------


async def test_barge_in_stops_the_agent_at_once_and_truncates_what_the_caller_heard(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
    taps: Taps,
) -> None:
    config = model_server.config
    config.tone_ms = 5000  # the greeting: 5 s of 1 kHz
    running = await start_controller(AGENT_GREETING="Hello, how can I help?")
    delay = 2.5  # the greeting starts well before this (set-up takes < 1 s)
    speech = make_utterance(
        asterisk.shared_dir / "bargein-speech.wav", CALLER_HZ, 1.2, after=delay, then=2.5
    )
    heard_path, heard_inside = shared_file(asterisk, "bargein-heard")
    sent_path, sent_inside = shared_file(asterisk, "bargein-sent")
    await call_pbx(
        ari,
        "100",
        Script(
            record=heard_inside,
            record_sent=sent_inside,
            play=playable(asterisk, speech),
            wait=0.5,
        ),
        rig_id="bargein",
    )
    record = await model_server.wait_for_session(timeout=10)
    await model_server.wait_for(lambda: record.truncates, timeout=10)
    config.tone_hz = LATER_HZ  # the reply to the caller's turn sounds different
    await wait_rig_done(ari, "bargein", timeout=20)
    call = await ended_call(running)
    await wait_nothing_left(ari)

    samples, rate = await heard(heard_path)
    sent, sent_rate = await heard(sent_path)
    greeting_heard = heard_tone(samples, rate, AGENT_HZ, "greeting")
    agent_start, agent_stop = greeting_heard.start, greeting_heard.stop
    caller_start, caller_end = only(tone_spans(sent, sent_rate, CALLER_HZ), "caller utterance")
    heard_ms = greeting_heard.seconds * 1000
    # The two files share a timeline (see below for how closely): the caller
    # started when its script said.
    assert abs(caller_start - delay) < 0.1, caller_start
    assert agent_start < caller_start < agent_start + 5.0

    # The model sends faster than real time (speed 4): it had sent the whole
    # greeting long before the caller spoke, so only the controller's playout
    # queue held the rest of it. The session lets the server interrupt by
    # itself, so the controller sends no response.cancel.
    greeting = record.responses[0]
    assert (greeting.status, greeting.audio_ms_sent) == ("completed", 5000)
    assert record.session["audio"]["input"]["turn_detection"]["interrupt_response"] is True
    assert "response.cancel" not in record.received_types()

    # Stop latency: from the model's speech_started to the last agent audio
    # the caller heard, on the recording's timeline. Alignment: the first RTP
    # frame the controller sent (wall clock, tapped at the socket) is where
    # the agent's audio starts on the recording, and every later frame takes
    # the same path (Asterisk passes chan_rtp's frames on at once, no jitter
    # buffer), so a wall-clock moment t is at agent_start + (t - first frame)
    # and the path's own delay cancels out. Aligning on the caller's onset in
    # t() plus the VAD's vad_min_speech_ms instead would add the way up (RTP,
    # the bridge, the controller's 40 ms input chunks) and back, and
    # MixMonitor keeps r() and t() in step only to a few tens of ms (its
    # audiohook resyncs the two directions), so that figure is only reported.
    assert len(taps.speech_started) == 1
    started_at = agent_start + (taps.speech_started[0] - taps.frames[0])
    stop_latency_ms = (agent_stop - started_at) * 1000
    assert -20 <= stop_latency_ms <= 60, (stop_latency_ms, agent_stop, started_at)
    detected_at = caller_start + config.vad_min_speech_ms / 1000
    round_trip_ms = (agent_stop - detected_at) * 1000
    # Coarse guard on the whole way, caller's onset to silence: catches caller
    # audio held back on its way to the model (measured: tens of ms here).
    assert round_trip_ms < 300, round_trip_ms

    # The truncate says what the caller heard of the greeting.
    assert len(record.truncates) == 1, record.truncates
    truncate = record.truncates[0]
    assert truncate["item_id"] == greeting.item_id
    assert abs(truncate["audio_end_ms"] - heard_ms) <= 40, (truncate, heard_ms)
    assert truncate["audio_end_ms"] < truncate["audio_ms"] == 5000
    assert call.truncations == 1
    assert record.errors == []

    # The rest of the greeting never reached the caller: no trace of 1 kHz
    # after the cut, up to the end of the recording (past where the 5 s
    # greeting would have ended), while the reply to the caller's turn is heard.
    assert len(samples) / rate > agent_start + 5.2
    after = tone_levels(samples, rate, AGENT_HZ)[int((agent_stop + 0.01) / 0.005) :]
    # (A 5 ms frame may catch splatter where the reply's tone starts abruptly.)
    assert np.count_nonzero(after > -45) <= 2, np.sort(after)[-5:]
    reply_start, _ = tone_spans(samples, rate, LATER_HZ)[0]
    assert reply_start > caller_end, (reply_start, caller_end)
    print(
        f"barge-in: heard {heard_ms:.0f} ms, truncate audio_end_ms={truncate['audio_end_ms']}, "
        f"stop {stop_latency_ms:.1f} ms after speech_started, "
        f"{round_trip_ms:.0f} ms after the caller's onset + {config.vad_min_speech_ms} ms"
    )


# --- 2. send_dtmf --------------------------------------------------------------------------


async def test_send_dtmf_reaches_the_caller_in_order(
    ari: AriClient, model_server: ModelServer, start_controller: StartController
) -> None:
    call_id = model_server.queue_function_call("send_dtmf", {"digits": "1234#"})
    running = await start_controller(AGENT_GREETING="Hi.")  # the greeting is the tool call
    # The phone reads keys until '#' (Read() keeps the digits before it).
    await call_pbx(ari, "100", Script(read=0, read_timeout=8, wait=1), rig_id="keys")
    result = await wait_rig_done(ari, "keys", timeout=20)
    assert result["digits"] == "1234"
    call = await ended_call(running)
    assert call.end_reason == "caller hung up"
    assert [(t.name, t.arguments) for t in call.tool_calls] == [("send_dtmf", {"digits": "1234#"})]

    record = model_server.session
    outputs = function_outputs(record)
    assert [o["call_id"] for o in outputs] == [call_id]
    assert json.loads(outputs[0]["output"]) == {"ok": True, "pressed": "1234#"}
    events = client_events(record)
    at = next(i for i, e in enumerate(events) if e["type"] == "conversation.item.create")
    assert events[at + 1]["type"] == "response.create"
    assert record.errors == []
    await wait_nothing_left(ari)


# --- 3. hangup -------------------------------------------------------------------------------


async def test_hangup_ends_the_call_after_the_goodbye_has_played(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
) -> None:
    goodbye_ms = 2000
    model_server.config.tone_ms = goodbye_ms
    model_server.config.tone_hz = 800.0
    # Like a real model: one response that says goodbye, then calls hangup.
    model_server.queue_function_call("hangup", {"reason": "said goodbye"}, speak_first=True)
    running = await start_controller(AGENT_GREETING="Goodbye.")
    heard_path, heard_inside = shared_file(asterisk, "hangup-heard")
    # The phone plays silence, so its recording keeps time until the hang-up.
    silence = make_silence(asterisk.shared_dir / "silence-12s.wav", 12.0)
    await call_pbx(
        ari,
        "100",
        Script(record=heard_inside, play=playable(asterisk, silence), wait=1),
        rig_id="bye",
    )
    result = await wait_rig_done(ari, "bye", timeout=20)
    call = await ended_call(running)
    await wait_nothing_left(ari)

    assert call.end_reason == "agent hung up: said goodbye"
    assert result["state"] == "done"
    record = model_server.session
    response = record.responses[0]
    assert (response.kind, response.function_name, response.status) == (
        "audio",
        "hangup",
        "completed",
    )
    assert function_outputs(record) == []  # a hang-up gets no reply
    samples, rate = await heard(heard_path)
    goodbye = heard_tone(samples, rate, 800.0, "goodbye")
    stop = goodbye.stop
    played_ms = goodbye.seconds * 1000
    # The whole goodbye (one 20 ms frame of slack: a busy machine may lose one).
    assert abs(played_ms - goodbye_ms) <= 25, played_ms
    # The call ended right after it (the recording stops at the hang-up), but
    # not while its last frames were still on their way through Asterisk: that
    # cuts the end off (before GOODBYE_TAIL_SECONDS: 0 ms later, 1980 ms heard).
    after_ms = (len(samples) / rate - stop) * 1000
    assert 40 <= after_ms < 600, after_ms
    print(
        f"hangup: goodbye heard {played_ms:.0f} ms of {goodbye_ms}, "
        f"call ended {after_ms:.0f} ms later"
    )


# --- 4. transfer -------------------------------------------------------------------------------


AGENTS_TRANSFER = """
[transfer_targets.landing]
context = "rig-pbx"
extension = "rig-transfer-landing"
description = "the test landing extension"

[profiles.default]
transfer_targets = ["landing"]
"""


async def test_transfer_lands_the_caller_in_the_target_extension(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
    tmp_path: Path,
) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text(AGENTS_TRANSFER)
    landing_hz = 800.0
    make_tone(asterisk.shared_dir / "rig-landing.wav", landing_hz, 1.0)
    await ari.set_global("RIG_TRANSFER_LANDED", "")
    model_server.config.tone_ms = 1000  # "transferring you now", then the call
    model_server.queue_function_call("transfer", {"target": "landing"}, speak_first=True)
    running = await start_controller(AGENTS_FILE=str(agents), AGENT_GREETING="Hi.")
    heard_path, heard_inside = shared_file(asterisk, "transfer-heard")
    await call_pbx(ari, "100", Script(record=heard_inside, wait=12), rig_id="xfer")
    await wait_rig_done(ari, "xfer", timeout=20)  # the landing hangs up after its tone
    call = await ended_call(running)
    await wait_nothing_left(ari)

    assert call.end_reason == "transferred to landing"
    landed = await ari.get_global("RIG_TRANSFER_LANDED")
    assert landed.startswith("PJSIP/tester-"), landed  # the caller's own channel
    samples, rate = await heard(heard_path)
    announcement = heard_tone(samples, rate, AGENT_HZ, "announcement")
    landing_start, landing_stop = only(tone_spans(samples, rate, landing_hz), "landing tone")
    # The whole announcement, then the landing extension's tone. (The phone
    # sends nothing, so the recording skips the quiet moment in between.)
    assert abs(announcement.seconds - 1.0) <= 0.025, announcement
    assert landing_start >= announcement.stop - 0.01, (announcement, landing_start)
    assert abs(landing_stop - landing_start - 1.0) < 0.05
    print(f"transfer: announcement {announcement.seconds:.3f} s, landed {landed}")


async def test_transfer_to_an_unlisted_target_is_refused_and_the_call_goes_on(
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
    tmp_path: Path,
) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text(AGENTS_TRANSFER)
    await ari.set_global("RIG_TRANSFER_LANDED", "")
    call_id = model_server.queue_function_call("transfer", {"target": "premium_hotline"})
    running = await start_controller(AGENTS_FILE=str(agents), AGENT_GREETING="Hi.")
    phone = await call_pbx(ari, "100", Script(wait=20), rig_id="xfer_no")
    call = await current_call(running)
    record = await model_server.wait_for_session(timeout=10)
    await model_server.wait_for(lambda: function_outputs(record), timeout=10)

    output = function_outputs(record)[0]
    assert output["call_id"] == call_id
    result = json.loads(output["output"])
    assert result["ok"] is False
    assert "premium_hotline" in result["error"] and "landing" in result["error"]
    # The model is asked to go on (and answers: the reply is the next response).
    await model_server.wait_for(lambda: len(record.responses) == 2, timeout=5)
    assert record.responses[1].trigger == "response.create"
    await model_server.wait_for(lambda: record.responses[1].status == "completed", timeout=5)

    assert not running.ended and call.call_id in running.controller.calls
    channels = {c["id"]: c for c in await ari.channels()}
    caller = channels[call.caller_channel_id]
    assert caller["state"] == "Up"
    assert caller["dialplan"]["app_name"] == "Stasis"  # still with the agent
    assert await ari.get_global("RIG_TRANSFER_LANDED") == ""  # nobody was transferred

    await ari.hangup(phone["id"])
    call = await ended_call(running)
    assert call.end_reason == "caller hung up"
    await wait_nothing_left(ari)


# --- 5. caller keys ------------------------------------------------------------------------------


async def test_caller_dtmf_reaches_the_model_as_a_message(
    ari: AriClient, model_server: ModelServer, start_controller: StartController
) -> None:
    running = await start_controller()
    await call_pbx(ari, "100", Script(delay=1.5, dtmf="5", wait=3), rig_id="callerkey")
    record = await model_server.wait_for_session(timeout=10)

    def key_messages() -> list[dict[str, Any]]:
        return [i for i in record.items_created if i["type"] == "message" and i["role"] == "user"]

    await model_server.wait_for(key_messages, timeout=10)
    (message,) = key_messages()
    text = " ".join(part.get("text", "") for part in message["content"])
    assert "5" in text, message
    events = client_events(record)
    at = next(i for i, e in enumerate(events) if e["type"] == "conversation.item.create")
    assert events[at + 1]["type"] == "response.create"
    await model_server.wait_for(
        lambda: any(r.trigger == "response.create" for r in record.responses), timeout=5
    )
    await wait_rig_done(ari, "callerkey", timeout=20)
    await ended_call(running)
    await wait_nothing_left(ari)


# --- 6. profiles --------------------------------------------------------------------------------


AGENTS_PROFILES = """
[profiles.sales]
instructions = "You are SALES-DESK-7 of Acme Widgets. The caller is {caller_number}."
voice = "cedar"
"""
DEFAULT_INSTRUCTIONS = "You are the DEFAULT-LINE agent of Acme Widgets."


async def test_dialplan_profile_sets_instructions_and_voice(
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
    tmp_path: Path,
) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text(AGENTS_PROFILES)
    running = await start_controller(
        AGENTS_FILE=str(agents), AGENT_INSTRUCTIONS=DEFAULT_INSTRUCTIONS
    )
    for count, (exten, rig_id) in enumerate((("101", "sales"), ("100", "plain")), start=1):
        await call_pbx(ari, exten, Script(wait=1), rig_id=rig_id)
        await model_server.wait_for_session(count, timeout=10)
        await wait_rig_done(ari, rig_id, timeout=15)
        await wait_for(lambda: len(running.ended) == count, 10, what="the call to end")  # noqa: B023
        await wait_nothing_left(ari)

    sales, plain = (s.session_updates[0] for s in model_server.sessions)
    # The caller's number goes in as quoted data (controller.templates).
    assert sales["instructions"].startswith(
        'You are SALES-DESK-7 of Acme Widgets. The caller is "tester".'
    )
    assert sales["audio"]["output"]["voice"] == "cedar"
    assert plain["instructions"].startswith(DEFAULT_INSTRUCTIONS)
    assert plain["audio"]["output"]["voice"] == "marin"
    assert [c.agent.profile for c in running.ended if c.agent] == ["sales", "default"]


async def test_unknown_profile_falls_back_to_default_with_a_warning(
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text('[profiles.support]\ninstructions = "Support."\nvoice = "ash"\n')
    running = await start_controller(
        AGENTS_FILE=str(agents), AGENT_INSTRUCTIONS=DEFAULT_INSTRUCTIONS
    )
    with caplog.at_level(logging.WARNING, logger="controller.call"):
        await call_pbx(ari, "101", Script(wait=1), rig_id="nosales")
        record = await model_server.wait_for_session(timeout=10)
        await wait_rig_done(ari, "nosales", timeout=15)
        call = await ended_call(running)
    assert call.agent is not None and call.agent.profile == "default"
    update = record.session_updates[0]
    assert update["instructions"].startswith(DEFAULT_INSTRUCTIONS)
    assert update["audio"]["output"]["voice"] == "marin"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("unknown profile 'sales'" in w and "support" in w for w in warnings), warnings
    await wait_nothing_left(ari)


# --- barge-in settings --------------------------------------------------------------------------


async def test_protected_greeting_is_not_interrupted(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
) -> None:
    model_server.config.tone_ms = 3000
    running = await start_controller(AGENT_GREETING="Welcome.", PROTECT_GREETING="true")
    speech = make_tone(asterisk.shared_dir / "protect-speech.wav", CALLER_HZ, 0.8, amplitude=0.5)
    heard_path, heard_inside = shared_file(asterisk, "protect-heard")
    await call_pbx(
        ari,
        "100",
        Script(record=heard_inside, delay=1.5, play=playable(asterisk, speech), wait=3),
        rig_id="protect",
    )
    record = await model_server.wait_for_session(timeout=10)
    await model_server.wait_for(lambda: record.responses, timeout=10)
    await model_server.wait_for(lambda: record.responses[0].status != "in_progress", timeout=10)
    model_server.config.tone_hz = LATER_HZ
    await wait_rig_done(ari, "protect", timeout=20)
    await ended_call(running)
    await wait_nothing_left(ari)

    turn = record.session["audio"]["input"]["turn_detection"]
    assert turn["interrupt_response"] is False  # the controller decides
    assert any(e["type"] == "input_audio_buffer.speech_started" for e in record.sent)
    assert record.truncates == []
    assert "response.cancel" not in record.received_types()
    samples, rate = await heard(heard_path)
    greeting = heard_tone(samples, rate, AGENT_HZ, "greeting")
    assert abs(greeting.seconds - 3.0) <= 0.025, greeting  # all of it (to a frame)
    print(f"protected greeting: heard {greeting.seconds:.3f} s of 3 s")


async def test_blip_under_barge_in_min_ms_does_not_interrupt_but_speech_does(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
) -> None:
    min_ms = 300
    model_server.config.tone_ms = 5000
    running = await start_controller(AGENT_GREETING="Welcome.", BARGE_IN_MIN_MS=str(min_ms))
    # The caller coughs (100 ms, well under BARGE_IN_MIN_MS) at 2 s, then
    # talks (1.2 s) at 3.1 s, both while the 5 s greeting plays.
    blip_at, speech_at = 2.0, 3.1
    cough = make_utterance(asterisk.shared_dir / "blip-cough.wav", CALLER_HZ, 0.1, after=blip_at)
    talk = make_utterance(
        asterisk.shared_dir / "blip-talk.wav",
        CALLER_HZ,
        1.2,
        after=speech_at - blip_at - 0.1,
        then=2.5,
    )
    heard_path, heard_inside = shared_file(asterisk, "blip-heard")
    sent_path, sent_inside = shared_file(asterisk, "blip-sent")
    script = Script(
        record=heard_inside,
        record_sent=sent_inside,
        play=f"{playable(asterisk, cough)}&{playable(asterisk, talk)}",
        wait=0.5,
    )
    await call_pbx(ari, "100", script, rig_id="blip")
    record = await model_server.wait_for_session(timeout=10)
    await model_server.wait_for(lambda: record.responses, timeout=10)
    await model_server.wait_for(lambda: record.responses[0].status != "in_progress", timeout=10)
    model_server.config.tone_hz = LATER_HZ  # replies to the cough and the caller
    await wait_rig_done(ari, "blip", timeout=20)
    call = await ended_call(running)
    await wait_nothing_left(ari)

    assert record.session["audio"]["input"]["turn_detection"]["interrupt_response"] is False
    starts = [e for e in record.sent if e["type"] == "input_audio_buffer.speech_started"]
    assert len(starts) >= 2  # the model heard both the cough and the talk
    samples, rate = await heard(heard_path)
    sent, sent_rate = await heard(sent_path)
    (cough_start, cough_end), (talk_start, _) = tone_spans(sent, sent_rate, CALLER_HZ)
    assert abs(cough_start - blip_at) < 0.1 and abs(talk_start - speech_at) < 0.1
    greeting = heard_tone(samples, rate, AGENT_HZ, "greeting")
    agent_stop = greeting.stop
    # The cough did not stop the greeting; the talk did, once it had lasted
    # BARGE_IN_MIN_MS (plus the VAD's detection and one 20 ms poll).
    assert agent_stop > talk_start + min_ms / 1000, (agent_stop, talk_start)
    assert agent_stop < talk_start + min_ms / 1000 + 0.3, (agent_stop, talk_start)
    truncates = [t for t in record.truncates if t["item_id"] == record.responses[0].item_id]
    assert len(truncates) == 1, record.truncates
    heard_ms = greeting.seconds * 1000
    assert abs(truncates[0]["audio_end_ms"] - heard_ms) <= 40, (truncates, heard_ms)
    assert call.truncations >= 1
    print(
        f"barge-in min {min_ms} ms: cough {1000 * (cough_end - cough_start):.0f} ms ignored; "
        f"greeting stopped {1000 * (agent_stop - talk_start):.0f} ms after the talk began, "
        f"truncate {truncates[0]['audio_end_ms']} ms vs heard {heard_ms:.0f} ms"
    )


# --- limits -------------------------------------------------------------------------------------


async def test_silence_timeout_says_goodbye_and_hangs_up(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: StartController,
) -> None:
    model_server.config.tone_hz = 800.0  # the goodbye: 1.5 s
    running = await start_controller(SILENCE_TIMEOUT_SECONDS="3")
    # The phone plays silence, so its recording keeps time (see make_utterance).
    silence = make_silence(asterisk.shared_dir / "silence-12s.wav", 12.0)
    heard_path, heard_inside = shared_file(asterisk, "silence-heard")
    started = time.monotonic()
    await call_pbx(
        ari,
        "100",
        Script(record=heard_inside, play=playable(asterisk, silence), wait=1),
        rig_id="quiet",
    )
    result = await wait_rig_done(ari, "quiet", timeout=20)
    call = await ended_call(running)
    await wait_nothing_left(ari)
    assert time.monotonic() - started < 10  # well before the phone's own 13 s

    assert call.end_reason == "nobody spoke for 3s"
    assert result["state"] == "done"
    record = model_server.session
    creates = [e for e in client_events(record) if e["type"] == "response.create"]
    assert len(creates) == 1
    assert "goodbye" in creates[0]["response"]["instructions"]
    assert creates[0]["response"]["tool_choice"] == "none"
    samples, rate = await heard(heard_path)
    goodbye = heard_tone(samples, rate, 800.0, "goodbye")
    assert abs(goodbye.seconds - 1.5) <= 0.025, goodbye  # all of it (to a frame)
    # Not cut off by the hang-up: the recording goes on after it (two frames; rounded,
    # as 4.56 - 4.52 is 0.0399... in floating point).
    assert round(len(samples) / rate - goodbye.stop, 3) >= 0.04
    # Nothing was said until the 3 s were up (the limit is checked every 0.5 s).
    assert 2.8 < goodbye.start < 4.5, goodbye
    print(f"silence timeout: goodbye at {goodbye.start:.2f} s, {goodbye.seconds:.3f} s long")
