"""controller.realtime.events: server event parsing and client event building."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.config import Settings
from controller.errors import RealtimeProtocolError, RealtimeServerError
from controller.realtime import events as ev
from tests.modelpeer.validate import (
    client_event_classes,
    server_event_classes,
    validate_client_event,
    validate_server_event,
)

DATA = Path(__file__).parent.parent / "data" / "realtime" / "ga_call.jsonl"

EXPECTED_CLASS: dict[str, type[Any]] = {
    "session.created": ev.SessionCreated,
    "session.updated": ev.SessionUpdated,
    "conversation.created": ev.ConversationCreated,
    "conversation.item.added": ev.ConversationItemAdded,
    "conversation.item.done": ev.ConversationItemDone,
    "conversation.item.created": ev.ConversationItemCreated,
    "conversation.item.truncated": ev.ConversationItemTruncated,
    "conversation.item.deleted": ev.ConversationItemDeleted,
    "input_audio_buffer.speech_started": ev.InputAudioBufferSpeechStarted,
    "input_audio_buffer.speech_stopped": ev.InputAudioBufferSpeechStopped,
    "input_audio_buffer.committed": ev.InputAudioBufferCommitted,
    "input_audio_buffer.cleared": ev.InputAudioBufferCleared,
    "input_audio_buffer.timeout_triggered": ev.InputAudioBufferTimeoutTriggered,
    "conversation.item.input_audio_transcription.delta": ev.InputAudioTranscriptionDelta,
    "conversation.item.input_audio_transcription.completed": ev.InputAudioTranscriptionCompleted,
    "conversation.item.input_audio_transcription.failed": ev.InputAudioTranscriptionFailed,
    "response.created": ev.ResponseCreated,
    "response.done": ev.ResponseDone,
    "response.output_item.added": ev.ResponseOutputItemAdded,
    "response.output_item.done": ev.ResponseOutputItemDone,
    "response.content_part.added": ev.ResponseContentPartAdded,
    "response.content_part.done": ev.ResponseContentPartDone,
    "response.output_audio.delta": ev.ResponseOutputAudioDelta,
    "response.output_audio.done": ev.ResponseOutputAudioDone,
    "response.output_audio_transcript.delta": ev.ResponseOutputAudioTranscriptDelta,
    "response.output_audio_transcript.done": ev.ResponseOutputAudioTranscriptDone,
    "response.output_text.delta": ev.ResponseOutputTextDelta,
    "response.output_text.done": ev.ResponseOutputTextDone,
    "response.function_call_arguments.delta": ev.ResponseFunctionCallArgumentsDelta,
    "response.function_call_arguments.done": ev.ResponseFunctionCallArgumentsDone,
    "mcp_list_tools.in_progress": ev.McpListToolsInProgress,
    "mcp_list_tools.completed": ev.McpListToolsCompleted,
    "mcp_list_tools.failed": ev.McpListToolsFailed,
    "response.mcp_call.in_progress": ev.ResponseMcpCallInProgress,
    "response.mcp_call.completed": ev.ResponseMcpCallCompleted,
    "response.mcp_call.failed": ev.ResponseMcpCallFailed,
    "response.mcp_call_arguments.delta": ev.ResponseMcpCallArgumentsDelta,
    "response.mcp_call_arguments.done": ev.ResponseMcpCallArgumentsDone,
    "rate_limits.updated": ev.RateLimitsUpdated,
    "error": ev.ErrorEvent,
}


def recorded_lines() -> list[str]:
    return DATA.read_text().splitlines()


# --- the recorded GA stream ----------------------------------------------------------


def test_expected_class_table_covers_every_known_type() -> None:
    assert set(EXPECTED_CLASS) == ev.KNOWN_SERVER_EVENT_TYPES


def test_known_types_are_ga_server_events() -> None:
    # Every type we model exists in the GA API (guards against beta names).
    assert set(server_event_classes()) >= ev.KNOWN_SERVER_EVENT_TYPES


def test_recorded_stream_is_realistic() -> None:
    """The recording itself validates against openai's types (unknown types aside)."""
    for line in recorded_lines():
        obj = json.loads(line)
        if obj["type"] in server_event_classes():
            validate_server_event(obj)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_every_recorded_event_parses_to_its_class(as_bytes: bool) -> None:
    lines = recorded_lines()
    seen_unknown = []
    for line in lines:
        obj = json.loads(line)
        parsed = ev.parse_server_event(line.encode() if as_bytes else line)
        expected = EXPECTED_CLASS.get(obj["type"])
        if expected is None:
            assert isinstance(parsed, ev.UnknownEvent)
            assert parsed.type == obj["type"]
            assert parsed.data == obj
            seen_unknown.append(obj["type"])
        else:
            assert type(parsed) is expected, obj["type"]
            assert parsed.type == obj["type"]
            assert getattr(parsed, "event_id", None) == obj["event_id"]
    assert set(seen_unknown) == {
        "output_audio_buffer.started",
        "conversation.item.input_audio_transcription.segment",
        "response.output_audio.timing",
    }
    # The recording exercises most of what we model.
    recorded = {json.loads(line)["type"] for line in lines}
    assert ev.KNOWN_SERVER_EVENT_TYPES - recorded == {
        "response.output_text.delta",
        "response.output_text.done",
        # MCP: covered by the conversation core's streams (tests/data/realtime/mcp_*.jsonl).
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
    }


def test_recorded_turn_fields() -> None:
    events = [ev.parse_server_event(line) for line in recorded_lines()]
    updated = next(e for e in events if isinstance(e, ev.SessionUpdated))
    assert updated.session.input_format == "audio/pcmu"
    assert updated.session.output_format == "audio/pcmu"
    assert updated.session.voice == "marin"
    assert updated.session.expires_at == 1763722800

    started = next(e for e in events if isinstance(e, ev.InputAudioBufferSpeechStarted))
    assert started.audio_start_ms == 1180
    deltas = [e for e in events if isinstance(e, ev.ResponseOutputAudioDelta)]
    assert len(deltas) == 11
    assert sum(len(d.audio()) for d in deltas[:10]) == 9 * 800 + 480

    done = [e for e in events if isinstance(e, ev.ResponseDone)]
    assert [d.response.status for d in done] == ["completed", "cancelled", "completed"]
    cancelled = done[1].response
    assert cancelled.status_details is not None
    assert cancelled.status_details.reason == "turn_detected"
    usage = done[0].response.usage
    assert usage is not None and usage.input_token_details is not None
    assert (usage.total_tokens, usage.input_token_details.cached_tokens) == (473, 320)
    assert isinstance(done[0].response.output[0], ev.MessageItem)

    call = next(e for e in events if isinstance(e, ev.ResponseFunctionCallArgumentsDone))
    assert call.name == "hangup"
    assert json.loads(call.arguments) == {"reason": "caller said goodbye"}
    item_done = [
        e
        for e in events
        if isinstance(e, ev.ResponseOutputItemDone) and isinstance(e.item, ev.FunctionCallItem)
    ]
    assert item_done[0].item.call_id == call.call_id  # type: ignore[union-attr]

    created = next(e for e in events if isinstance(e, ev.ConversationItemCreated))
    assert isinstance(created.item, ev.FunctionCallOutputItem)

    errors = [e for e in events if isinstance(e, ev.ErrorEvent)]
    assert [e.error.code for e in errors] == ["response_cancel_not_active", "session_expired"]
    assert errors[0].error.event_id == "evt_client_7"


# --- parser edge cases ------------------------------------------------------------------


def test_unknown_fields_are_ignored() -> None:
    text = json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "event_1",
            "response_id": "resp_1",
            "item_id": "item_1",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(b"\xff" * 160).decode(),
            "obfuscation": "aZ3",
            "some_future_field": {"nested": [1, 2]},
        }
    )
    parsed = ev.parse_server_event(text)
    assert isinstance(parsed, ev.ResponseOutputAudioDelta)
    assert parsed.audio() == b"\xff" * 160


def test_unknown_item_types_are_kept() -> None:
    text = json.dumps(
        {
            "type": "conversation.item.added",
            "event_id": "e",
            "item": {"id": "item_9", "type": "mcp_approval_request", "server_label": "x"},
        }
    )
    parsed = ev.parse_server_event(text)
    assert isinstance(parsed, ev.ConversationItemAdded)
    assert isinstance(parsed.item, ev.OtherItem)
    assert (parsed.item.type, parsed.item.id) == ("mcp_approval_request", "item_9")


def test_missing_event_id_is_tolerated() -> None:
    parsed = ev.parse_server_event('{"type":"input_audio_buffer.cleared"}')
    assert isinstance(parsed, ev.InputAudioBufferCleared)
    assert parsed.event_id == ""


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("{", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        ("", "invalid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"text"', "not a JSON object"),
        ('{"delta": "AAAA"}', "no 'type'"),
        ('{"type": 7}', "not a string"),
        ('{"type": null}', "not a string"),
        ('{"type": "response.output_audio.delta", "delta": "AAAA"}', "response_id"),
        ('{"type": "error", "error": "boom"}', "invalid error event"),
        ('{"type": "input_audio_buffer.speech_started", "item_id": "i"}', "audio_start_ms"),
    ],
)
def test_bad_input_raises_protocol_error(data: str | bytes, needle: str) -> None:
    with pytest.raises(RealtimeProtocolError) as info:
        ev.parse_server_event(data)
    assert needle in str(info.value)


def test_protocol_error_does_not_echo_payload() -> None:
    secret_payload = "sk-THIS-SHOULD-NOT-LEAK"
    data = json.dumps({"type": "response.output_audio.delta", "delta": secret_payload})
    with pytest.raises(RealtimeProtocolError) as info:
        ev.parse_server_event(data)
    assert secret_payload not in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_fuzz_arbitrary_input(data: str | bytes) -> None:
    try:
        event = ev.parse_server_event(data)
    except RealtimeProtocolError:
        return
    assert isinstance(event.type, str)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    event_type=st.sampled_from(sorted(ev.KNOWN_SERVER_EVENT_TYPES)),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "item_id",
                "response_id",
                "delta",
                "audio_start_ms",
                "audio_end_ms",
                "item",
                "response",
                "session",
                "error",
                "part",
                "call_id",
                "arguments",
                "transcript",
                "rate_limits",
            ]
        ),
        json_values,
        max_size=6,
    ),
)
def test_fuzz_known_types_with_random_fields(event_type: str, fields: dict[str, Any]) -> None:
    """A known type with garbage fields parses or raises RealtimeProtocolError, nothing else."""
    data = json.dumps({"type": event_type, **fields})
    try:
        event = ev.parse_server_event(data)
    except RealtimeProtocolError:
        return
    assert event.type == event_type


def test_error_event_to_exception() -> None:
    parsed = ev.parse_server_event(
        json.dumps(
            {
                "type": "error",
                "event_id": "event_1",
                "error": {
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "message": "Incorrect API key provided.",
                    "param": None,
                    "event_id": "client_1",
                },
            }
        )
    )
    assert isinstance(parsed, ev.ErrorEvent)
    exc = parsed.to_exception()
    assert isinstance(exc, RealtimeServerError)
    assert (exc.code, exc.error_type, exc.event_id, exc.fatal) == (
        "invalid_api_key",
        "invalid_request_error",
        "client_1",
        True,
    )
    benign = ev.ErrorEvent(
        type="error",
        error=ev.ErrorDetail(type="invalid_request_error", code="response_cancel_not_active"),
    ).to_exception()
    assert not benign.fatal


# --- client events ------------------------------------------------------------------------


def settings_for(**env: str) -> Settings:
    return Settings(**env)  # type: ignore[arg-type]


PCMU = settings_for()
PCM24K = settings_for(REALTIME_AUDIO="pcm24k", TRANSCRIPTION_LANGUAGE="de")
SEMANTIC = settings_for(VAD_TYPE="semantic_vad", VAD_EAGERNESS="low", TRANSCRIPTION_MODEL="")

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "send_dtmf",
        "description": "Press keys on the phone keypad.",
        "parameters": {
            "type": "object",
            "properties": {"digits": {"type": "string", "default": None}},
            "required": ["digits"],
        },
    }
]


@pytest.mark.parametrize("settings", [PCMU, PCM24K, SEMANTIC], ids=["pcmu", "pcm24k", "semantic"])
def test_session_update_validates_against_openai_types(settings: Settings) -> None:
    update = ev.build_session_update(settings, tools=TOOLS)
    validate_client_event(json.loads(update.to_json()))
    validate_client_event(update.to_dict())


def test_session_update_pcmu_shape() -> None:
    update = ev.build_session_update(
        PCMU, tools=[ev.FunctionTool(name="hangup", description="End the call.")]
    )
    assert update.to_dict() == {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": "gpt-realtime",
            "output_modalities": ["audio"],
            "instructions": PCMU.agent_instructions,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                    "transcription": {"model": "gpt-4o-mini-transcribe"},
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
            },
            "tools": [
                {
                    "type": "function",
                    "name": "hangup",
                    "description": "End the call.",
                    "parameters": {"type": "object", "properties": {}},
                }
            ],
            "tool_choice": "auto",
        },
    }


def test_session_update_pcm24k_and_overrides() -> None:
    update = ev.build_session_update(
        PCM24K, instructions="Be brief.", voice="cedar", interrupt_response=False
    )
    session = update.to_dict()["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["voice"] == "cedar"
    assert session["instructions"] == "Be brief."
    assert session["audio"]["input"]["transcription"] == {
        "model": "gpt-4o-mini-transcribe",
        "language": "de",
    }
    assert session["audio"]["input"]["turn_detection"]["interrupt_response"] is False


def test_session_update_semantic_vad_without_transcription() -> None:
    session = ev.build_session_update(SEMANTIC).to_dict()["session"]
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "low",
        "create_response": True,
        "interrupt_response": True,
    }
    assert "transcription" not in session["audio"]["input"]


@pytest.mark.parametrize("settings", [PCMU, PCM24K, SEMANTIC], ids=["pcmu", "pcm24k", "semantic"])
def test_session_update_has_no_beta_fields(settings: Settings) -> None:
    text = ev.build_session_update(settings, tools=TOOLS).to_json()
    session = json.loads(text)["session"]
    for beta in (
        "voice",
        "input_audio_format",
        "output_audio_format",
        "temperature",
        "modalities",
        "turn_detection",
        "input_audio_transcription",
    ):
        assert beta not in session
    assert "null" not in text.replace('"default":null', "")


def test_tool_parameters_keep_explicit_nulls() -> None:
    # exclude_none applies to model fields, not to the JSON schema inside a tool.
    session = ev.build_session_update(PCMU, tools=TOOLS).to_dict()["session"]
    assert session["tools"][0]["parameters"]["properties"]["digits"]["default"] is None


def test_client_models_forbid_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ev.SessionConfig(voice="alloy")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ev.AudioOutputConfig(format={"type": "audio/pcm", "rate": 16000})
    with pytest.raises(ValidationError):
        ev.ConversationItemTruncate(item_id="item_1", audio_end_ms=-1)


def test_audio_mode_helpers() -> None:
    assert ev.audio_format_for("pcmu") == ev.PcmuFormat()
    assert ev.audio_format_for("pcm24k") == ev.PcmFormat()
    with pytest.raises(ValueError):
        ev.audio_format_for("slin16")  # type: ignore[arg-type]
    assert ev.AUDIO_BYTES_PER_MS == {"pcmu": 8, "pcm24k": 48}


CLIENT_EVENTS: list[ev.ClientEvent] = [
    ev.InputAudioBufferAppend.from_bytes(b"\x7f" * 160),
    ev.InputAudioBufferCommit(),
    ev.InputAudioBufferClear(event_id="evt_1"),
    ev.ConversationItemCreate.user_text("The caller pressed 5."),
    ev.ConversationItemCreate.user_text("Greet the caller.", role="system"),
    ev.ConversationItemCreate.function_output("call_abc", '{"ok": true}'),
    ev.ConversationItemTruncate(item_id="item_1", content_index=0, audio_end_ms=1234),
    ev.ResponseCreate(),
    ev.ResponseCreate(response=ev.ResponseParams(instructions="Say hello.")),
    ev.ResponseCancel(),
    ev.ResponseCancel(response_id="resp_1"),
]


@pytest.mark.parametrize("event", CLIENT_EVENTS, ids=lambda e: e.type)
def test_client_events_validate_against_openai_types(event: ev.ClientEvent) -> None:
    data = json.loads(event.to_json())
    assert data["type"] in client_event_classes()
    validate_client_event(data)
    assert None not in data.values()


def test_client_event_json_shapes() -> None:
    assert CLIENT_EVENTS[1].to_json() == '{"type":"input_audio_buffer.commit"}'
    assert json.loads(CLIENT_EVENTS[6].to_json()) == {
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 1234,
    }
    assert json.loads(CLIENT_EVENTS[5].to_json()) == {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "call_abc", "output": '{"ok": true}'},
    }
