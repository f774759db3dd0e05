"""The model server's per-session script (controller/devtools/modelserver/script.py).

A real RealtimeSession client talks to the real server over loopback; every
event either side sends is validated against the ``openai`` package's types.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.devtools.modelserver import (
    CallStep,
    ModelServer,
    ServerConfig,
    SilentStep,
    SpeakStep,
    load_script,
    main,
    parse_script,
)
from controller.devtools.modelserver.audio import tone, ulaw_encode
from controller.devtools.modelserver.command import build_parser, config_from_args
from controller.devtools.modelserver.config import SessionRecord
from controller.devtools.modelserver.peer import IdFactory, PeerSession
from controller.realtime import events as ev
from controller.realtime.session import RealtimeSession
from tests.modelpeer import validated_server
from tests.modelpeer.validate import validate_server_event
from tests.unit.test_modelserver import (
    PCMU,
    fmt_of,
    is_type,
    open_session,
    read_until,
    reply_audio,
    speak,
)

FMT = fmt_of(PCMU)  # u-law 8 kHz: 8 bytes per ms
DTMF = CallStep("send_dtmf", {"digits": "2"})
OUTCOME = {"status": "achieved", "summary": "The order ships on Monday.", "data": {"day": "Mon"}}

#: What a response without output sends: nothing between created and done.
SILENT_RESPONSE = ["response.created", "response.done", "rate_limits.updated"]


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    srv = validated_server(ServerConfig(speed=0, seed=7, tone_ms=1000, tone_hz=440.0))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
    for record in srv.sessions:
        assert record.validation_failures == [], record.validation_failures
        assert record.errors == [], record.errors


async def turn(session: RealtimeSession) -> list[ev.ServerEvent]:
    """One caller turn (1.5 s of audio); the events up to its response's rate_limits.updated."""
    await speak(session, FMT)
    return await read_until(session, is_type("rate_limits.updated"))


def response_events(events: list[ev.ServerEvent]) -> list[str]:
    """The types from response.created on, without the audio and transcript deltas."""
    noisy = {"response.output_audio.delta", "response.output_audio_transcript.delta"}
    types = [e.type for e in events if e.type not in noisy]
    return types[types.index("response.created") :]


def done_of(events: list[ev.ServerEvent]) -> ev.ResponseDone:
    done = next(e for e in events if isinstance(e, ev.ResponseDone))
    return done


def transcript_of(events: list[ev.ServerEvent]) -> str:
    done = next(e for e in events if isinstance(e, ev.ResponseOutputAudioTranscriptDone))
    return done.transcript


def peak_hz(audio: bytes) -> float:
    samples = FMT.decode(audio).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * FMT.rate / samples.size)


# --- the steps, in order ------------------------------------------------------------------


async def test_steps_in_order_then_the_configured_reply(server: ModelServer) -> None:
    server.config.script = (
        SpeakStep(transcript="Hello, this is the agent.", tone_hz=600.0, tone_ms=300),
        DTMF,
        SilentStep(),
        SpeakStep(transcript="Hi Sam."),
    )
    session = await open_session(server, tools=[ev.FunctionTool(name="send_dtmf")])

    events = await turn(session)  # step 0: speak, with its own tone and transcript
    assert transcript_of(events) == "Hello, this is the agent."
    audio = reply_audio(events)
    assert len(audio) == 300 * 8 and peak_hz(audio) == pytest.approx(600, abs=10)

    events = await turn(session)  # step 1: the function call
    args = next(e for e in events if isinstance(e, ev.ResponseFunctionCallArgumentsDone))
    assert (args.name, json.loads(args.arguments)) == ("send_dtmf", {"digits": "2"})
    assert not reply_audio(events)

    # The controller answers the call and asks for a response: step 2, silent.
    await session.send(ev.ConversationItemCreate.function_output(args.call_id, '{"ok": true}'))
    await session.send(ev.ResponseCreate())
    events = await read_until(session, is_type("rate_limits.updated"))
    assert response_events(events) == SILENT_RESPONSE
    done = done_of(events)
    assert done.response.status == "completed"
    assert done.response.output == []
    assert done.response.usage is not None
    assert done.response.usage.output_tokens == 0

    events = await turn(session)  # step 3: speak with the configured tone
    assert transcript_of(events) == "Hi Sam."
    assert len(reply_audio(events)) == 1000 * 8
    assert peak_hz(reply_audio(events)) == pytest.approx(440, abs=10)

    events = await turn(session)  # the script is used up: the configured reply
    assert transcript_of(events) == server.config.transcript
    assert len(reply_audio(events)) == 1000 * 8

    responses = server.session.responses
    assert [(r.kind, r.step, r.trigger) for r in responses] == [
        ("audio", 0, "turn"),
        ("function_call", 1, "turn"),
        ("silent", 2, "response.create"),
        ("audio", 3, "turn"),
        ("audio", None, "turn"),
    ]
    assert responses[2].status == "completed" and responses[2].item_id == ""
    await session.close()


async def test_silent_for_a_number_of_turns(server: ModelServer) -> None:
    server.config.script = (SilentStep(turns=2), SpeakStep(transcript="Now I speak."))
    session = await open_session(server)
    for _ in range(2):
        events = await turn(session)
        assert response_events(events) == SILENT_RESPONSE
        assert not reply_audio(events)
    events = await turn(session)
    assert transcript_of(events) == "Now I speak."
    assert [r.step for r in server.session.responses] == [0, 0, 1]
    await session.close()


async def test_silent_while_caller_audio_is_under_ms(server: ModelServer) -> None:
    """Hold: every response stays silent until 3 s of caller audio have arrived."""
    server.config.script = (SilentStep(ms=3000), SpeakStep(transcript="Hello Sam."))
    session = await open_session(server)
    # Each turn is 1.5 s of audio; responses start at 1.3 s, 2.8 s, 4.3 s.
    for _ in range(2):
        events = await turn(session)
        assert response_events(events) == SILENT_RESPONSE
    events = await turn(session)
    assert transcript_of(events) == "Hello Sam."
    assert [r.kind for r in server.session.responses] == ["silent", "silent", "audio"]
    await session.close()


async def test_consecutive_windows_count_from_where_the_last_one_ended(
    server: ModelServer,
) -> None:
    server.config.script = (SilentStep(ms=1000), SilentStep(ms=2000), SpeakStep("Done."))
    session = await open_session(server)
    steps = []
    for _ in range(3):  # responses at 1.3 s (2nd window), 2.8 s (2nd window), 4.3 s
        await turn(session)
        steps.append(server.session.responses[-1].step)
    assert steps == [1, 1, 2]
    await session.close()


# --- response.create: the agent speaks first ------------------------------------------------


async def test_response_create_takes_the_next_step(server: ModelServer) -> None:
    """The controller speaks first (e.g. a message after the beep): response.create
    with instructions gets the script's spoken step."""
    server.config.script = (
        SpeakStep(transcript="Hello, this is Acme's assistant with a message.", tone_ms=500),
    )
    session = await open_session(server)
    await session.send(
        ev.ResponseCreate(response=ev.ResponseParams(instructions="Leave the message now."))
    )
    events = await read_until(session, is_type("response.done"))
    assert transcript_of(events) == "Hello, this is Acme's assistant with a message."
    assert len(reply_audio(events)) == 500 * 8
    (record,) = server.session.responses
    assert (record.trigger, record.instructions, record.step) == (
        "response.create",
        "Leave the message now.",
        0,
    )
    await session.close()


async def test_speak_step_in_a_text_only_response(server: ModelServer) -> None:
    server.config.script = (SpeakStep(transcript="In writing."),)
    session = await open_session(server)
    await session.send(ev.ResponseCreate(response=ev.ResponseParams(output_modalities=["text"])))
    events = await read_until(session, is_type("response.done"))
    text = next(e for e in events if isinstance(e, ev.ResponseOutputTextDone))
    assert text.text == "In writing."
    assert server.session.responses[0].kind == "text"
    await session.close()


# --- function calls ---------------------------------------------------------------------------


async def test_call_step_spoken_first(server: ModelServer, tmp_path: Path) -> None:
    wav = tmp_path / "bye.wav"
    _write_wav(wav, tone(800.0, 400, 16000, level_dbfs=-10), 16000)
    server.config.script = (
        CallStep(
            "report_outcome",
            OUTCOME,
            speak_first=SpeakStep(transcript="Thank you, goodbye.", file=str(wav)),
            call_id="call_outcome_1",
        ),
    )
    session = await open_session(server, tools=[ev.FunctionTool(name="report_outcome")])
    events = await turn(session)
    assert transcript_of(events) == "Thank you, goodbye."
    audio = reply_audio(events)
    assert len(audio) == 400 * 8 and peak_hz(audio) == pytest.approx(800, abs=10)
    done = done_of(events)
    assert [item.type for item in done.response.output] == ["message", "function_call"]
    call = done.response.output[1]
    assert isinstance(call, ev.FunctionCallItem)
    assert (call.name, call.call_id) == ("report_outcome", "call_outcome_1")
    assert json.loads(call.arguments) == OUTCOME
    record = server.session.responses[0]
    assert (record.kind, record.function_name, record.step) == ("audio", "report_outcome", 0)
    await session.close()


async def test_call_step_spoken_first_with_the_usual_reply(server: ModelServer) -> None:
    server.config.script = (CallStep("hangup", speak_first=True),)
    session = await open_session(server, tools=[ev.FunctionTool(name="hangup")])
    events = await turn(session)
    assert transcript_of(events) == server.config.transcript
    assert len(reply_audio(events)) == 1000 * 8
    assert [i.type for i in done_of(events).response.output] == ["message", "function_call"]
    await session.close()


async def test_call_ids_are_new_per_response(server: ModelServer) -> None:
    server.config.script = (DTMF, DTMF)
    session = await open_session(server, tools=[ev.FunctionTool(name="send_dtmf")])
    ids = []
    for _ in range(2):
        events = await turn(session)
        args = next(e for e in events if isinstance(e, ev.ResponseFunctionCallArgumentsDone))
        ids.append(args.call_id)
        await session.send(ev.ConversationItemCreate.function_output(args.call_id, "{}"))
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)
    await session.close()


async def test_a_queued_call_goes_before_the_script(server: ModelServer) -> None:
    server.config.script = (SpeakStep(transcript="Step zero."),)
    session = await open_session(server, tools=[ev.FunctionTool(name="hangup")])
    server.queue_function_call("hangup")
    await turn(session)
    events = await turn(session)
    assert transcript_of(events) == "Step zero."
    assert [(r.kind, r.step) for r in server.session.responses] == [
        ("function_call", None),
        ("audio", 0),
    ]
    await session.close()


# --- per session ------------------------------------------------------------------------------


async def test_each_session_starts_the_script_afresh(server: ModelServer) -> None:
    server.config.script = (SpeakStep(transcript="One."), SpeakStep(transcript="Two."))
    first = await open_session(server)
    assert transcript_of(await turn(first)) == "One."
    second = await open_session(server)
    assert transcript_of(await turn(second)) == "One."
    assert transcript_of(await turn(first)) == "Two."
    # A new script applies to the sessions that open after the change.
    server.config.script = (SilentStep(),)
    assert transcript_of(await turn(second)) == "Two."
    third = await open_session(server)
    assert response_events(await turn(third)) == SILENT_RESPONSE
    for session in (first, second, third):
        await session.close()


# --- the JSON form and the command line --------------------------------------------------------

EXAMPLE = [
    {"silent": {"ms": 4000}},
    {"call": {"name": "send_dtmf", "arguments": {"digits": "2"}}},
    {"silent": {"turns": 2}},
    {"speak": {"transcript": "Hello Sam, I am calling about order 1234."}},
    {"speak": "Thank you."},
    {"speak": {"tone_hz": 700, "tone_ms": 250}},
    {
        "call": {
            "name": "report_outcome",
            "arguments": OUTCOME,
            "speak_first": {"transcript": "Thanks, goodbye."},
        }
    },
    {"call": {"name": "hangup", "arguments": "{not json", "speak_first": True}},
]


def test_parse_script() -> None:
    assert parse_script(EXAMPLE) == (
        SilentStep(ms=4000),
        CallStep("send_dtmf", '{"digits": "2"}'),
        SilentStep(turns=2),
        SpeakStep(transcript="Hello Sam, I am calling about order 1234."),
        SpeakStep(transcript="Thank you."),
        SpeakStep(tone_hz=700, tone_ms=250),
        CallStep(
            "report_outcome",
            json.dumps(OUTCOME),
            speak_first=SpeakStep(transcript="Thanks, goodbye."),
        ),
        CallStep("hangup", "{not json", speak_first=True),
    )
    assert parse_script([]) == ()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"speak": "x"}, "a script is a JSON list of steps"),
        ("speak", "a script is a JSON list of steps"),
        ([{"speak": "x", "silent": {}}], "step 0: expected an object with one key"),
        (["silent"], "step 0: expected an object with one key"),
        ([{"wait_turns": 2}], "step 0: unknown step 'wait_turns'"),
        ([{"speak": "a"}, {"silent": 2}], "step 1 (silent): expected an object of fields"),
        ([{"silent": {"turns": 2, "ms": 100}}], "step 0 (silent): give turns or ms, not both"),
        ([{"silent": {"ms": 0}}], "ms must be positive"),
        ([{"silent": {"turns": 0}}], "turns must be 1 or more"),
        ([{"silent": {"ms": "1000"}}], "ms must be an integer"),
        (
            [{"silent": {"seconds": 3}}],
            "step 0 (silent): unknown field(s) seconds; known: ms, turns",
        ),
        ([{"speak": {"file": "a.wav", "tone_ms": 100}}], "give a file or a tone, not both"),
        ([{"speak": {"tone_hz": "high"}}], "tone_hz must be a number"),
        ([{"speak": {"transcript": 5}}], "transcript must be a string"),
        ([{"call": {"arguments": {}}}], "step 0 (call): "),
        ([{"call": {"name": ""}}], "name must be a non-empty string"),
        ([{"call": {"name": "x", "arguments": [1]}}], "arguments must be an object or a string"),
        ([{"call": {"name": "x", "speak_first": "yes"}}], "expected an object of fields"),
    ],
)
def test_parse_script_rejects(data: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_script(data)
    assert message in str(info.value)


def test_load_script_and_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(EXAMPLE))
    assert load_script(path) == parse_script(EXAMPLE)
    config = config_from_args(build_parser().parse_args(["--script", str(path)]))
    assert config.script == parse_script(EXAMPLE)
    assert config_from_args(build_parser().parse_args([])).script == ()


def test_command_line_rejects_bad_scripts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.json"
    assert main(["--script", str(missing)]) == 2
    assert f"cannot read {missing}" in capsys.readouterr().err
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[{")
    assert main(["--script", str(bad_json)]) == 2
    assert "not JSON" in capsys.readouterr().err
    bad_step = tmp_path / "step.json"
    bad_step.write_text(json.dumps([{"speak": "a"}, {"silent": {"ms": -1}}]))
    assert main(["--script", str(bad_step)]) == 2
    assert f"{bad_step}: step 1 (silent): ms must be positive" in capsys.readouterr().err
    no_wav = tmp_path / "nowav.json"
    no_wav.write_text(json.dumps([{"call": {"name": "x", "speak_first": {"file": "/nope.wav"}}}]))
    assert main(["--script", str(no_wav)]) == 2
    assert "--script step 0:" in capsys.readouterr().err


def test_help_mentions_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--script FILE" in out and '{"silent": ...}' in out


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    import wave

    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())


# --- the pure peer: any mix of steps and client events -----------------------------------------

steps = st.one_of(
    st.builds(SpeakStep, transcript=st.none() | st.just("Scripted."), tone_ms=st.just(60)),
    st.builds(CallStep, name=st.just("send_dtmf"), speak_first=st.booleans()),
    st.builds(SilentStep, turns=st.integers(1, 3)),
    st.builds(SilentStep, ms=st.integers(1, 400)),
)
_SPEECH = base64.b64encode(ulaw_encode(tone(300.0, 200, 8000, level_dbfs=-15))).decode()
_QUIET = base64.b64encode(ulaw_encode(np.zeros(8 * 200, dtype=np.int16))).decode()
actions = st.sampled_from(
    [
        {"type": "input_audio_buffer.append", "audio": _SPEECH},
        {"type": "input_audio_buffer.append", "audio": _QUIET},
        {"type": "input_audio_buffer.append", "audio": _QUIET},
        {"type": "input_audio_buffer.append", "audio": _QUIET},
        {"type": "input_audio_buffer.commit"},
        {"type": "response.create"},
        {"type": "response.create", "response": {"output_modalities": ["text"]}},
        {"type": "response.cancel"},
        {"type": "step"},
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(steps, max_size=6), st.lists(actions, min_size=1, max_size=25))
def test_fuzz_scripts_give_valid_events(
    script: list[SpeakStep | CallStep | SilentStep], moves: list[dict[str, object]]
) -> None:
    record = SessionRecord(id="sess_fuzz", model="gpt-realtime", auth="bearer")
    config = ServerConfig(script=tuple(script), tone_ms=60, chunk_ms=20)
    peer = PeerSession(config, record, ids=IdFactory(seed=5), function_calls=deque())
    peer.open()
    update = ev.build_session_update(PCMU).to_dict()
    peer.receive(json.dumps(update))
    for move in moves:
        if move["type"] == "step":
            peer.step()
        else:
            peer.receive(json.dumps(move))
    while peer.generating:
        peer.step()
    for event in peer.outbox:
        validate_server_event(event)
    steps_used = [r.step for r in record.responses if r.step is not None]
    assert steps_used == sorted(steps_used)  # in order, never back
    assert all(r.status != "in_progress" for r in record.responses)
