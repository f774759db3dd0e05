"""controller.devtools.modelserver.peer: the pure protocol core, without sockets."""

from __future__ import annotations

import base64
import json
from collections import deque
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.devtools.modelserver.audio import tone, ulaw_encode
from controller.devtools.modelserver.config import (
    ScriptedCall,
    ScriptedMcpCall,
    ServerConfig,
    SessionRecord,
)
from controller.devtools.modelserver.peer import IdFactory, PeerSession
from tests.modelpeer.validate import validate_client_event, validate_server_event

CLIENT_TYPES = [
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
    "bogus.type",
]


def make_peer(**config: Any) -> PeerSession:
    record = SessionRecord(id="sess_test", model="gpt-realtime", auth="bearer")
    peer = PeerSession(
        ServerConfig(**config), record, ids=IdFactory(seed=3), function_calls=deque()
    )
    peer.open()
    return peer


def drain(peer: PeerSession) -> list[dict[str, Any]]:
    out = list(peer.outbox)
    peer.outbox.clear()
    return out


def send(peer: PeerSession, event: dict[str, Any]) -> list[dict[str, Any]]:
    peer.receive(json.dumps(event))
    return drain(peer)


def test_open_sends_session_and_conversation() -> None:
    peer = make_peer()
    events = drain(peer)
    assert [e["type"] for e in events] == ["session.created", "conversation.created"]
    assert events[0]["session"]["id"] == "sess_test"
    assert events[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_step_without_response_is_a_no_op() -> None:
    peer = make_peer()
    drain(peer)
    assert peer.step() == 0.0
    assert not peer.outbox


def test_deleting_the_item_being_streamed_does_not_break_the_stream() -> None:
    peer = make_peer(tone_ms=500, chunk_ms=100)
    drain(peer)
    events = send(peer, {"type": "response.create"})
    item_id = next(e["item"]["id"] for e in events if e["type"] == "response.output_item.added")
    peer.step()
    drain(peer)
    assert send(peer, {"type": "conversation.item.delete", "item_id": item_id})[0]["type"] == (
        "conversation.item.deleted"
    )
    while peer.generating:
        peer.step()
    assert drain(peer)[-2]["type"] == "response.done"


def test_scripted_call_then_output() -> None:
    calls: deque[ScriptedCall | ScriptedMcpCall] = deque(
        [ScriptedCall("send_dtmf", '{"digits":"12"}', "call_1")]
    )
    record = SessionRecord(id="sess_x", model="m", auth="bearer")
    peer = PeerSession(ServerConfig(), record, ids=IdFactory(), function_calls=calls)
    events = send(peer, {"type": "response.create"})
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert (done["name"], done["arguments"], done["call_id"]) == (
        "send_dtmf",
        '{"digits":"12"}',
        "call_1",
    )
    events = send(
        peer,
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
        },
    )
    assert [e["type"] for e in events] == ["conversation.item.added", "conversation.item.done"]


def test_voice_cannot_change_after_audio() -> None:
    peer = make_peer(tone_ms=100)
    drain(peer)

    def update(voice: str) -> dict[str, Any]:
        return {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"output": {"voice": voice}}},
        }

    assert send(peer, update("ash"))[0]["type"] == "session.updated"
    send(peer, {"type": "response.create"})
    while peer.generating:
        peer.step()
    drain(peer)
    assert send(peer, update("ash"))[0]["type"] == "session.updated"  # unchanged is fine
    error = send(peer, update("cedar"))[0]
    assert error["type"] == "error" and error["error"]["code"] == "cannot_update_voice"


def test_audio_format_switch_resets_the_buffer() -> None:
    peer = make_peer()
    drain(peer)
    pcm = base64.b64encode(bytes(4800)).decode()  # 100 ms of 24 kHz PCM
    send(peer, {"type": "input_audio_buffer.append", "audio": pcm})
    update = {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}},
    }
    send(peer, update)
    error = send(peer, {"type": "input_audio_buffer.commit"})[0]
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    ulaw = base64.b64encode(ulaw_encode(tone(300, 150, 8000))).decode()
    send(peer, {"type": "input_audio_buffer.append", "audio": ulaw})
    assert (
        send(peer, {"type": "input_audio_buffer.commit"})[0]["type"]
        == "input_audio_buffer.committed"
    )
    assert peer.record.input_audio_ms == 250


def test_invalid_base64_audio() -> None:
    peer = make_peer()
    drain(peer)
    error = send(peer, {"type": "input_audio_buffer.append", "audio": "not base64!"})[0]
    assert error["error"]["code"] == "invalid_value"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
field_names = st.sampled_from(
    [
        "session",
        "audio",
        "item",
        "item_id",
        "content_index",
        "audio_end_ms",
        "response",
        "response_id",
        "previous_item_id",
        "event_id",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(CLIENT_TYPES), st.dictionaries(field_names, json_values, max_size=4)
        ),
        min_size=1,
        max_size=8,
    )
)
def test_fuzz_client_events_never_crash_the_peer(script: list[tuple[str, dict[str, Any]]]) -> None:
    peer = make_peer(tone_ms=200, chunk_ms=50)
    for event_type, fields in script:
        peer.receive(json.dumps({"type": event_type, **fields}))
        peer.step()
    for _ in range(10):
        peer.step()
    for event in peer.outbox:
        assert isinstance(event["type"], str) and event["event_id"].startswith("event_")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64)))
def test_fuzz_raw_messages(data: str | bytes) -> None:
    peer = make_peer()
    drain(peer)
    peer.receive(data)
    for event in peer.outbox:
        assert event["type"] in {
            "error",
            "input_audio_buffer.cleared",
            "response.created",
        } or event["type"].startswith(
            ("response.", "conversation.", "session.", "input_audio_buffer.", "rate_limits.")
        )


# --- session.update fuzzing: the peer never crashes, and what it sends is valid GA -----------

_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-10, 100_000)
    | st.floats(-2, 2, allow_nan=False)
    | st.sampled_from(["audio/pcm", "audio/pcmu", "server_vad", "semantic_vad", "high", "x"])
    | st.lists(st.sampled_from(["audio", "text"]), max_size=2)
)
_format = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["audio/pcm", "audio/pcmu", "audio/pcma", "x"]) | _leaf,
        "rate": st.sampled_from([24000, 16000]) | _leaf,
    },
)
_turn = st.fixed_dictionaries(
    {},
    optional={
        key: st.sampled_from(["server_vad", "semantic_vad"]) if key == "type" else _leaf
        for key in (
            "type",
            "threshold",
            "prefix_padding_ms",
            "silence_duration_ms",
            "idle_timeout_ms",
            "create_response",
            "interrupt_response",
            "eagerness",
        )
    },
)
_session = st.fixed_dictionaries(
    {"type": st.just("realtime")},
    optional={
        "audio": st.fixed_dictionaries(
            {},
            optional={
                "input": st.fixed_dictionaries(
                    {},
                    optional={
                        "format": _format | _leaf,
                        "turn_detection": _turn | _leaf,
                        "transcription": st.just({"model": "gpt-4o-mini-transcribe"}) | _leaf,
                    },
                ),
                "output": st.fixed_dictionaries(
                    {}, optional={"format": _format, "voice": _leaf, "speed": _leaf}
                ),
            },
        ),
        "output_modalities": _leaf,
        "instructions": _leaf,
        "max_output_tokens": _leaf,
    },
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_session, min_size=1, max_size=3))
def test_fuzz_session_updates(updates: list[dict[str, Any]]) -> None:
    record = SessionRecord(id="sess_f", model="gpt-realtime", auth="bearer")
    peer = PeerSession(
        ServerConfig(tone_ms=100),
        record,
        ids=IdFactory(1),
        function_calls=deque(),
        validator=validate_client_event,
    )
    peer.open()
    speech = base64.b64encode(ulaw_encode(tone(300, 400, 8000)) + b"\xff" * 4000).decode()
    for update in updates:
        peer.receive(json.dumps({"type": "session.update", "session": update}))
        peer.receive(json.dumps({"type": "input_audio_buffer.append", "audio": speech}))
        peer.receive(json.dumps({"type": "response.create"}))
        for _ in range(5):
            peer.step()
        peer.receive(json.dumps({"type": "input_audio_buffer.commit"}))
    for event in peer.outbox:
        validate_server_event(event)
