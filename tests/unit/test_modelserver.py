"""The local model server, driven by the real RealtimeSession client over loopback.

Every client event the server receives is checked against the ``openai``
package's types (``validator``), and every server event it sends as well
(``server_event_validator``): these tests check the fidelity of the test peer
as much as the client.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.config import Settings
from controller.devtools.modelserver import ModelServer, ServerConfig, main
from controller.devtools.modelserver.audio import AudioFormat, Samples, rms_dbfs, tone
from controller.devtools.modelserver.server import main as server_main
from controller.errors import RealtimeConnectionError, RealtimeServerError
from controller.realtime import events as ev
from controller.realtime.session import RealtimeSession, connect_realtime
from tests.modelpeer import validated_server

KEY = "sk-test-modelserver-0123456789"
ROOT = Path(__file__).resolve().parents[2]

PCMU = Settings()
PCM24K = Settings(REALTIME_AUDIO="pcm24k")


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    srv = validated_server(ServerConfig(speed=0, seed=1, tone_ms=1000))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def open_session(
    srv: ModelServer, settings: Settings = PCMU, **update_kwargs: Any
) -> RealtimeSession:
    session = await connect_realtime(srv.url, KEY, "gpt-realtime", timeout=5)
    await session.start(ev.build_session_update(settings, **update_kwargs))
    return session


def fmt_of(settings: Settings) -> AudioFormat:
    if settings.realtime_audio == "pcmu":
        return AudioFormat("audio/pcmu", 8000)
    return AudioFormat("audio/pcm", 24000)


async def send_samples(session: RealtimeSession, fmt: AudioFormat, samples: Samples) -> None:
    wire = fmt.encode(samples)
    step = 20 * fmt.bytes_per_ms
    for i in range(0, len(wire), step):
        await session.send_audio(wire[i : i + step])


async def speak(
    session: RealtimeSession,
    fmt: AudioFormat,
    *,
    lead_ms: int = 200,
    speech_ms: int = 600,
    tail_ms: int = 700,
    hz: float = 300.0,
) -> None:
    audio = np.concatenate(
        (
            np.zeros(fmt.rate * lead_ms // 1000, dtype=np.int16),
            tone(hz, speech_ms, fmt.rate, level_dbfs=-15),
            np.zeros(fmt.rate * tail_ms // 1000, dtype=np.int16),
        )
    )
    await send_samples(session, fmt, audio)


async def read_until(
    session: RealtimeSession,
    done: Callable[[ev.ServerEvent], bool],
    timeout: float = 5.0,
) -> list[ev.ServerEvent]:
    out: list[ev.ServerEvent] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await session.recv()
            out.append(event)
            if done(event):
                return out


def is_type(name: str) -> Callable[[ev.ServerEvent], bool]:
    return lambda event: event.type == name


async def send_raw(session: RealtimeSession, obj: object) -> None:
    await session._ws.send(obj if isinstance(obj, str) else json.dumps(obj))


async def expect_error(session: RealtimeSession, obj: object) -> ev.ErrorDetail:
    if hasattr(obj, "to_json"):
        await session.send(obj)  # type: ignore[arg-type]
    else:
        await send_raw(session, obj)
    events = await read_until(session, is_type("error"))
    error = events[-1]
    assert isinstance(error, ev.ErrorEvent)
    return error.error


def types_without_deltas(events: list[ev.ServerEvent]) -> list[str]:
    noisy = {"response.output_audio.delta", "response.output_audio_transcript.delta"}
    return [e.type for e in events if e.type not in noisy]


def reply_audio(events: list[ev.ServerEvent]) -> bytes:
    return b"".join(e.audio() for e in events if isinstance(e, ev.ResponseOutputAudioDelta))


TURN_SEQUENCE = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
]
AUDIO_RESPONSE_SEQUENCE = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
    "rate_limits.updated",
]


# --- a full turn -----------------------------------------------------------------------


@pytest.mark.parametrize("settings", [PCMU, PCM24K], ids=["pcmu", "pcm24k"])
async def test_full_turn_event_order(server: ModelServer, settings: Settings) -> None:
    session = await open_session(server, settings)
    fmt = fmt_of(settings)
    await speak(session, fmt)
    events = await read_until(session, is_type("rate_limits.updated"))
    assert types_without_deltas(events) == [
        "conversation.created",
        *TURN_SEQUENCE,
        *AUDIO_RESPONSE_SEQUENCE,
    ]
    # Deltas: a transcript delta (when words are due) before each audio chunk.
    deltas = [e for e in events if isinstance(e, ev.ResponseOutputAudioDelta)]
    assert [len(d.audio()) for d in deltas] == [100 * fmt.bytes_per_ms] * 10
    transcript = "".join(
        e.delta for e in events if isinstance(e, ev.ResponseOutputAudioTranscriptDelta)
    )
    done = next(e for e in events if isinstance(e, ev.ResponseOutputAudioTranscriptDone))
    assert transcript == done.transcript == server.config.transcript
    # The reply is the configured tone, in the session's output format.
    reply = fmt.decode(reply_audio(events))
    assert reply.size == fmt.rate  # 1000 ms
    assert rms_dbfs(reply) == pytest.approx(-12, abs=0.5)

    response_done = next(e for e in events if isinstance(e, ev.ResponseDone))
    assert response_done.response.status == "completed"
    assert response_done.response.usage is not None
    assert response_done.response.usage.output_token_details is not None
    assert response_done.response.usage.output_token_details.audio_tokens == 20  # 1 per 50 ms

    record = server.session
    assert record.validation_failures == []
    assert record.errors == []
    (turn,) = record.turns
    assert turn.source == "server_vad"
    assert turn.audio_start_ms == 0  # onset 200 ms, prefix padding 300 ms, clamped
    assert 1290 <= turn.audio_end_ms <= 1310  # speech end 800 ms + 500 ms silence
    assert turn.rms_dbfs == pytest.approx(-15 - 10 * np.log10(1300 / 600), abs=0.6)
    assert record.input_audio_ms == pytest.approx(1500)
    assert record.received_types()[0] == "session.update"
    # Deltas carry obfuscation padding like the real API.
    sent_deltas = [e for e in record.sent if e["type"] == "response.output_audio.delta"]
    assert all(isinstance(e.get("obfuscation"), str) for e in sent_deltas)
    await session.close()


async def test_session_updated_reflects_the_update(server: ModelServer) -> None:
    session = await connect_realtime(server.url, KEY, "gpt-realtime-2", timeout=5)
    info = await session.start(
        ev.build_session_update(
            PCMU, tools=[ev.FunctionTool(name="hangup", description="End the call.")]
        )
    )
    assert (info.input_format, info.output_format, info.voice) == (
        "audio/pcmu",
        "audio/pcmu",
        "marin",
    )
    assert info.model == "gpt-realtime"  # the session.update's model
    assert info.tools and info.tools[0]["name"] == "hangup"
    assert server.session.model == "gpt-realtime-2"  # the ?model= of the URL
    assert server.session.session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    await session.close()


@pytest.mark.parametrize("settings", [PCMU, PCM24K], ids=["pcmu", "pcm24k"])
async def test_echo_reply_returns_the_caller_audio(server: ModelServer, settings: Settings) -> None:
    server.config.reply = "echo"
    session = await open_session(server, settings)
    fmt = fmt_of(settings)
    await speak(session, fmt, lead_ms=500, speech_ms=700, hz=400)
    events = await read_until(session, is_type("response.done"))
    reply = fmt.decode(reply_audio(events))
    # Prefix padding (300 ms) + speech (700 ms), trailing silence trimmed.
    assert reply.size / fmt.rate == pytest.approx(1.0, abs=0.02)
    spectrum = np.abs(np.fft.rfft(reply.astype(np.float64)))
    peak_hz = np.argmax(spectrum) * fmt.rate / reply.size
    assert peak_hz == pytest.approx(400, abs=5)
    await session.close()


async def test_semantic_vad_detects_turns(server: ModelServer) -> None:
    settings = Settings(VAD_TYPE="semantic_vad", VAD_EAGERNESS="high")
    session = await open_session(server, settings)
    await speak(session, fmt_of(settings), tail_ms=400)
    events = await read_until(session, is_type("response.done"))
    stopped = next(e for e in events if isinstance(e, ev.InputAudioBufferSpeechStopped))
    assert 1090 <= stopped.audio_end_ms <= 1110  # eagerness high: 300 ms of silence
    await session.close()


async def test_text_only_response(server: ModelServer) -> None:
    session = await open_session(server)
    await session.send(ev.ResponseCreate(response=ev.ResponseParams(output_modalities=["text"])))
    events = await read_until(session, is_type("response.done"))
    text_done = next(e for e in events if isinstance(e, ev.ResponseOutputTextDone))
    assert text_done.text == server.config.transcript
    assert not any(isinstance(e, ev.ResponseOutputAudioDelta) for e in events)
    assert server.session.validation_failures == []
    await session.close()


async def test_ids_are_unique_and_shaped(server: ModelServer) -> None:
    session = await open_session(server)
    await speak(session, fmt_of(PCMU))
    await read_until(session, is_type("rate_limits.updated"))
    await speak(session, fmt_of(PCMU))
    await read_until(session, is_type("rate_limits.updated"))
    sent = server.session.sent
    event_ids = [e["event_id"] for e in sent]
    assert len(set(event_ids)) == len(event_ids)
    assert all(i.startswith("event_") and len(i) == 27 for i in event_ids)
    responses = {e["response"]["id"] for e in sent if e["type"] == "response.created"}
    assert len(responses) == 2 and all(r.startswith("resp_") for r in responses)
    items = [e["item"]["id"] for e in sent if e["type"] == "conversation.item.added"]
    assert len(set(items)) == len(items) == 4 and all(i.startswith("item_") for i in items)
    await session.close()


# --- rejections (fidelity of the peer) ---------------------------------------------


@pytest.mark.parametrize(
    ("event", "code", "message", "param"),
    [
        (
            {"type": "session.update", "session": {"model": "gpt-realtime"}},
            "missing_required_parameter",
            "Missing required parameter: 'session.type'.",
            "session.type",
        ),
        (
            {"type": "session.update", "session": {"type": "realtime", "voice": "alloy"}},
            "unknown_parameter",
            "Unknown parameter: 'session.voice'.",
            "session.voice",
        ),
        (
            {
                "type": "session.update",
                "session": {"type": "realtime", "input_audio_format": "g711_ulaw"},
            },
            "unknown_parameter",
            "Unknown parameter: 'session.input_audio_format'.",
            "session.input_audio_format",
        ),
        (
            {"type": "session.update", "session": {"type": "realtime", "temperature": 0.8}},
            "unknown_parameter",
            "Unknown parameter: 'session.temperature'.",
            "session.temperature",
        ),
        (
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
                },
            },
            "invalid_value",
            "Invalid value: 16000. Supported values are: 24000.",
            "session.audio.input.format.rate",
        ),
        (
            {"type": "session.update", "session": {"type": "realtime", "modalities": ["audio"]}},
            "unknown_parameter",
            "Unknown parameter: 'session.modalities'.",
            "session.modalities",
        ),
        ("{not json", "invalid_event", "invalid JSON", None),
        ({"type": "conversation.item.teleport"}, "invalid_event", "Invalid value", "type"),
        (
            {
                "type": "conversation.item.truncate",
                "item_id": "item_nope",
                "content_index": 0,
                "audio_end_ms": 10,
            },
            "invalid_value",
            "item_nope",
            "item_id",
        ),
        (
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": "call_nope", "output": "x"},
            },
            "invalid_tool_call_id",
            "Tool call ID 'call_nope' not found in conversation.",
            None,
        ),
        (
            {"type": "response.cancel"},
            "response_cancel_not_active",
            "Cancellation failed: no active response found",
            None,
        ),
        (
            {"type": "input_audio_buffer.commit"},
            "input_audio_buffer_commit_empty",
            "buffer only has 0.00ms of audio",
            None,
        ),
        (
            {"type": "response.create", "foo": 1},
            "unknown_parameter",
            "Unknown parameter: 'foo'.",
            "foo",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and v.isidentifier() else None,
)
async def test_rejections(
    server: ModelServer, event: object, code: str, message: str, param: str | None
) -> None:
    session = await open_session(server)
    error = await expect_error(session, event)
    assert error.code == code
    assert message in error.message
    assert error.param == param
    assert error.type == "invalid_request_error"
    # The peer itself caught these, not the openai validator.
    assert server.session.validation_failures == []
    # And the session goes on.
    await session.send(ev.ResponseCreate())
    await read_until(session, is_type("response.done"))
    await session.close()


async def test_validator_catches_what_the_peer_does_not(server: ModelServer) -> None:
    session = await open_session(server)
    error = await expect_error(
        session, {"type": "response.create", "response": {"temperature": 0.7}, "event_id": "c1"}
    )
    assert (error.code, error.param, error.event_id) == (
        "unknown_parameter",
        "response.temperature",
        "c1",
    )
    part = {"type": "input_text", "text": "hi", "lang": "en"}
    error = await expect_error(
        session,
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [part]},
        },
    )
    assert (error.code, error.param) == ("unknown_parameter", "item.content[0].lang")
    error = await expect_error(session, {"type": "response.create", "response": {"tool_choice": 3}})
    assert (error.code, error.param) == ("invalid_type", "response.tool_choice")
    assert len(server.session.validation_failures) == 3
    await session.close()


async def test_error_echoes_client_event_id(server: ModelServer) -> None:
    session = await open_session(server)
    error = await expect_error(session, ev.ResponseCancel(event_id="evt_client_42"))
    assert error.event_id == "evt_client_42"
    await session.close()


async def test_commit_needs_100ms(server: ModelServer) -> None:
    session = await open_session(server)
    fmt = fmt_of(PCMU)
    await send_samples(session, fmt, np.zeros(8 * 60, dtype=np.int16))  # 60 ms
    error = await expect_error(session, ev.InputAudioBufferCommit())
    assert error.code == "input_audio_buffer_commit_empty"
    assert "only has 60.00ms of audio" in error.message
    await send_samples(session, fmt, np.zeros(8 * 60, dtype=np.int16))  # 120 ms in all
    await session.send(ev.InputAudioBufferCommit())
    events = await read_until(session, is_type("conversation.item.done"))
    assert [e.type for e in events][-3:] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert server.session.turns[-1].source == "commit"
    assert server.session.turns[-1].audio_ms == pytest.approx(120)
    await session.close()


async def test_second_response_while_active_is_rejected(server: ModelServer) -> None:
    server.config.speed = 1.0
    server.config.tone_ms = 3000
    session = await open_session(server)
    await session.send(ev.ResponseCreate())
    await read_until(session, is_type("response.output_audio.delta"))
    error = await expect_error(session, ev.ResponseCreate())
    assert error.code == "conversation_already_has_active_response"
    active = server.session.responses[0].id
    assert f"in progress: {active}." in error.message
    await session.send(ev.ResponseCancel())
    events = await read_until(session, is_type("response.done"))
    done = events[-1]
    assert isinstance(done, ev.ResponseDone)
    assert done.response.status == "cancelled"
    assert done.response.status_details is not None
    assert done.response.status_details.reason == "client_cancelled"
    assert server.session.validation_failures == []
    await session.close()


# --- truncate and barge-in ---------------------------------------------------------------


async def test_truncate_within_and_beyond_bounds(server: ModelServer) -> None:
    session = await open_session(server)
    await session.send(ev.ResponseCreate())
    events = await read_until(session, is_type("response.done"))
    item_id = next(e.item_id for e in events if isinstance(e, ev.ResponseOutputAudioDelta))
    error = await expect_error(
        session, ev.ConversationItemTruncate(item_id=item_id, audio_end_ms=1500)
    )
    assert error.code == "invalid_value"
    assert error.message == "Audio content of 1000ms is already shorter than 1500ms"
    await session.send(ev.ConversationItemTruncate(item_id=item_id, audio_end_ms=1000))
    truncated = (await read_until(session, is_type("conversation.item.truncated")))[-1]
    assert isinstance(truncated, ev.ConversationItemTruncated)
    assert (truncated.item_id, truncated.content_index, truncated.audio_end_ms) == (
        item_id,
        0,
        1000,
    )
    # After a truncate the item is shorter: a later, longer truncate fails.
    await session.send(ev.ConversationItemTruncate(item_id=item_id, audio_end_ms=400))
    await read_until(session, is_type("conversation.item.truncated"))
    error = await expect_error(
        session, ev.ConversationItemTruncate(item_id=item_id, audio_end_ms=401)
    )
    assert error.message == "Audio content of 400ms is already shorter than 401ms"
    assert [t["audio_end_ms"] for t in server.session.truncates] == [1000, 400]
    # Only assistant items can be truncated.
    user_item = server.session.sent[0]["session"]["id"]  # not an item at all
    error = await expect_error(
        session, ev.ConversationItemTruncate(item_id=user_item, audio_end_ms=0)
    )
    assert error.code == "invalid_value"
    assert server.session.validation_failures == []
    await session.close()


async def test_barge_in_cancels_the_active_response(server: ModelServer) -> None:
    server.config.speed = 1.0
    server.config.tone_ms = 4000
    session = await open_session(server)
    fmt = fmt_of(PCMU)
    await speak(session, fmt)
    first = await read_until(session, is_type("response.output_audio.delta"))
    item_id = first[-1].item_id  # type: ignore[union-attr]
    # The caller talks over the agent.
    await speak(session, fmt, lead_ms=0, speech_ms=300, tail_ms=0)
    events = await read_until(session, is_type("response.done"))
    kinds = types_without_deltas(events)
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
    done = events[-1]
    assert isinstance(done, ev.ResponseDone)
    assert done.response.status == "cancelled"
    assert done.response.status_details is not None
    assert done.response.status_details.reason == "turn_detected"
    assert done.response.output[0].status == "incomplete"
    record = server.session.responses[0]
    assert record.status == "cancelled" and record.reason == "turn_detected"
    assert 0 < record.audio_ms_sent < 4000
    received_ms = len(reply_audio(first + events)) // fmt.bytes_per_ms
    assert received_ms == record.audio_ms_sent
    # The client truncates to what was played, clamped to what was received.
    played_ms = min(received_ms, 50)
    await session.send(ev.ConversationItemTruncate(item_id=item_id, audio_end_ms=played_ms))
    await read_until(session, is_type("conversation.item.truncated"))
    # No more audio of the cancelled response after its response.done.
    await speak(session, fmt, lead_ms=0, speech_ms=0, tail_ms=600)
    later = await read_until(session, is_type("rate_limits.updated"), timeout=8)
    assert not any(
        isinstance(e, ev.ResponseOutputAudioDelta) and e.response_id == record.id for e in later
    )
    assert server.session.validation_failures == []
    await session.close()


async def test_no_cancel_when_interrupt_response_is_false(server: ModelServer) -> None:
    server.config.speed = 4.0
    server.config.tone_ms = 2000
    session = await open_session(server, interrupt_response=False)
    fmt = fmt_of(PCMU)
    await speak(session, fmt)
    await read_until(session, is_type("response.output_audio.delta"))
    await speak(session, fmt, lead_ms=0, speech_ms=200, tail_ms=0)
    events = await read_until(session, is_type("response.done"))
    assert "input_audio_buffer.speech_started" in types_without_deltas(events)
    done = events[-1]
    assert isinstance(done, ev.ResponseDone) and done.response.status == "completed"
    await session.close()


# --- tools, greeting, manual turns ---------------------------------------------------------


async def test_scripted_function_call_round_trip(server: ModelServer) -> None:
    session = await open_session(server, tools=[ev.FunctionTool(name="hangup")])
    call_id = server.queue_function_call("hangup", {"reason": "caller said goodbye"})
    await speak(session, fmt_of(PCMU))
    events = await read_until(session, is_type("rate_limits.updated"))
    kinds = types_without_deltas(events)
    assert kinds[kinds.index("response.created") :] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        *["response.function_call_arguments.delta"]
        * kinds.count("response.function_call_arguments.delta"),
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
        "rate_limits.updated",
    ]
    args_done = next(e for e in events if isinstance(e, ev.ResponseFunctionCallArgumentsDone))
    assert (args_done.call_id, args_done.name) == (call_id, "hangup")
    assert json.loads(args_done.arguments) == {"reason": "caller said goodbye"}
    deltas = "".join(
        e.delta for e in events if isinstance(e, ev.ResponseFunctionCallArgumentsDelta)
    )
    assert deltas == args_done.arguments
    item_done = next(e for e in events if isinstance(e, ev.ResponseOutputItemDone))
    assert isinstance(item_done.item, ev.FunctionCallItem)
    assert item_done.item.arguments == args_done.arguments
    # The controller answers the call, then asks for a response (after response.done).
    await session.send(ev.ConversationItemCreate.function_output(call_id, '{"ok": true}'))
    await session.send(ev.ResponseCreate())
    events = await read_until(session, is_type("response.done"))
    added = next(e for e in events if isinstance(e, ev.ConversationItemAdded))
    assert isinstance(added.item, ev.FunctionCallOutputItem) and added.item.call_id == call_id
    assert reply_audio(events)
    record = server.session
    assert [r.kind for r in record.responses] == ["function_call", "audio"]
    assert record.items_created[0]["call_id"] == call_id
    assert record.validation_failures == []
    await session.close()


async def test_greeting_from_a_text_item(server: ModelServer) -> None:
    session = await open_session(server)
    await session.send(ev.ConversationItemCreate.user_text("The caller pressed 5.", role="system"))
    await session.send(ev.ResponseCreate(response=ev.ResponseParams(instructions="Greet them.")))
    events = await read_until(session, is_type("response.done"))
    added = next(e for e in events if isinstance(e, ev.ConversationItemAdded))
    assert isinstance(added.item, ev.MessageItem) and added.item.role == "system"
    assert len(reply_audio(events)) == 8000  # 1000 ms of u-law
    response = server.session.responses[-1]
    assert (response.trigger, response.instructions) == ("response.create", "Greet them.")
    await session.close()


async def test_manual_turn_detection(server: ModelServer) -> None:
    session = await connect_realtime(server.url, KEY, "gpt-realtime", timeout=5)
    await session.start()
    update = ev.build_session_update(PCMU).to_dict()
    update["session"]["audio"]["input"]["turn_detection"] = None
    await send_raw(session, update)
    await read_until(session, is_type("session.updated"))
    fmt = fmt_of(PCMU)
    await speak(session, fmt)
    await session.send(ev.InputAudioBufferCommit())
    events = await read_until(session, is_type("conversation.item.done"))
    assert "input_audio_buffer.speech_started" not in [e.type for e in events]
    await session.send(ev.ResponseCreate())
    events = await read_until(session, is_type("response.done"))
    assert [e.type for e in events if e.type.startswith("response.")][0] == "response.created"
    assert len(server.session.responses) == 1
    assert server.session.turns[0].audio_ms == pytest.approx(1500)
    assert server.session.validation_failures == []
    await session.close()


async def test_clear_retrieve_delete(server: ModelServer) -> None:
    session = await open_session(server)
    await send_samples(session, fmt_of(PCMU), np.zeros(8 * 200, dtype=np.int16))
    await session.send(ev.InputAudioBufferClear())
    await read_until(session, is_type("input_audio_buffer.cleared"))
    error = await expect_error(session, ev.InputAudioBufferCommit())
    assert error.code == "input_audio_buffer_commit_empty"
    await session.send(ev.ConversationItemCreate.user_text("hello"))
    added = (await read_until(session, is_type("conversation.item.added")))[-1]
    assert isinstance(added, ev.ConversationItemAdded)
    await send_raw(session, {"type": "conversation.item.retrieve", "item_id": added.item.id})
    retrieved = (await read_until(session, is_type("conversation.item.retrieved")))[-1]
    assert isinstance(retrieved, ev.UnknownEvent)  # not a type the controller models
    await send_raw(session, {"type": "conversation.item.delete", "item_id": added.item.id})
    deleted = (await read_until(session, is_type("conversation.item.deleted")))[-1]
    assert isinstance(deleted, ev.ConversationItemDeleted)
    error = await expect_error(
        session, {"type": "conversation.item.delete", "item_id": added.item.id}
    )
    assert error.code == "invalid_value"
    await session.close()


# --- connection-level behaviour -------------------------------------------------------------


async def test_session_expiry(server: ModelServer) -> None:
    server.config.session_max_s = 0.3
    session = await open_session(server)
    events: list[ev.ServerEvent] = []
    with pytest.raises(RealtimeConnectionError, match="code 1001"):
        async for event in session:
            events.append(event)
    error = events[-1]
    assert isinstance(error, ev.ErrorEvent) and error.error.code == "session_expired"
    assert error.to_exception().fatal
    await server.wait_for(lambda: server.session.closed)
    assert server.session.close_code == 1001


async def test_expire_on_demand(server: ModelServer) -> None:
    session = await open_session(server)
    await server.expire()
    with pytest.raises(RealtimeConnectionError, match="code 1001"):
        async for event in session:
            assert isinstance(event, ev.ConversationCreated | ev.ErrorEvent)


async def test_beta_header_is_refused(server: ModelServer) -> None:
    session = await connect_realtime(
        server.url, KEY, "gpt-4o-realtime-preview", headers={"OpenAI-Beta": "realtime=v1"}
    )
    with pytest.raises(RealtimeServerError) as info:
        await session.start(ev.build_session_update(PCMU))
    assert info.value.code == "beta_api_shape_disabled" and info.value.fatal
    await server.wait_for(lambda: server.session.closed)
    assert server.session.close_code == 4000
    await session.close()


async def test_configured_key_is_enforced() -> None:
    async with ModelServer(ServerConfig(api_key="right-key")) as srv:
        session = await connect_realtime(srv.url, "wrong-key", "gpt-realtime")
        with pytest.raises(RealtimeServerError) as info:
            await session.start()
        assert info.value.code == "invalid_api_key" and info.value.fatal
        assert "wrong-key" not in str(info.value)
        await session.close()
        good = await connect_realtime(srv.url, "right-key", "gpt-realtime")
        await good.start()
        await good.close()


async def test_missing_auth_and_wrong_path(server: ModelServer) -> None:
    with pytest.raises(RealtimeConnectionError, match="HTTP 401") as info:
        await connect_realtime(server.url, "", "gpt-realtime")
    assert info.value.transient is False
    with pytest.raises(RealtimeConnectionError, match="HTTP 404"):
        await connect_realtime(server.url.replace("/v1/realtime", "/v2/x"), KEY, "gpt-realtime")


async def test_azure_api_key_header(server: ModelServer) -> None:
    session = await connect_realtime(server.url, KEY, "my-deployment", azure=True)
    await session.start()
    assert server.session.auth == "api-key"
    assert server.session.model == "my-deployment"
    await session.close()


async def test_drop_breaks_the_client(server: ModelServer) -> None:
    session = await open_session(server)
    await server.drop(code=1011, reason="test drop")
    with pytest.raises(RealtimeConnectionError, match="1011"):
        async for _ in session:
            pass


async def test_wait_for_times_out(server: ModelServer) -> None:
    with pytest.raises(TimeoutError):
        await server.wait_for(lambda: False, timeout=0.05)
    with pytest.raises(LookupError):
        _ = server.session


async def test_outbox_backpressure_with_slow_reader(server: ModelServer) -> None:
    server.config.tone_ms = 20_000  # 200 deltas, generated at once (speed 0)
    session = await open_session(server)
    await session.send(ev.ResponseCreate())
    await asyncio.sleep(0.2)  # not reading: the server must hold back, not buffer all
    events = await read_until(session, is_type("response.done"), timeout=10)
    assert len(reply_audio(events)) == 20_000 * 8
    await session.close()


# --- the command ---------------------------------------------------------------------------


def test_main_rejects_bad_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--reply", "file"]) == 2
    assert "--reply-file" in capsys.readouterr().err
    assert main(["--speed", "-1"]) == 2
    (tmp_path / "x.wav").write_bytes(b"junk")
    assert server_main(["--reply", "file", "--reply-file", str(tmp_path / "x.wav")]) == 2
    assert "not a PCM WAV" in capsys.readouterr().err


def test_help_says_it_is_not_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "not a model" in capsys.readouterr().out


def test_command_does_not_import_openai() -> None:
    code = (
        "import sys, controller.devtools.modelserver, controller.devtools.modelserver.command; "
        "sys.exit(1 if 'openai' in sys.modules else 0)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


async def test_command_serves_until_sigint() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller.devtools.modelserver",
        "--port",
        "0",
        "--reply",
        "tone",
        "--tone-ms",
        "200",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert "not a model" in line
        url = line.split()[-1]
        session = await connect_realtime(url, KEY, "gpt-realtime")
        await session.start(ev.build_session_update(PCMU))
        await session.send(ev.ResponseCreate())
        events = await read_until(session, is_type("response.done"))
        assert len(reply_audio(events)) == 1600
        await session.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
