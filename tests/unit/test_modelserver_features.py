"""The local model server and newer models' features: the new session fields (accepted,
checked and echoed), preambles (two audio items per response), MCP tool listings and
calls, and ``idle_timeout_ms``.

The peer is pure, so it is driven directly. Every event it sends is checked against
the ``openai`` package's GA types, and every client event it accepts too.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from typing import Any

import numpy as np
import pytest

from controller.config import load_settings
from controller.devtools.modelserver.audio import ulaw_encode
from controller.devtools.modelserver.command import build_parser, config_from_args
from controller.devtools.modelserver.config import (
    ScriptedCall,
    ScriptedMcpCall,
    ServerConfig,
    SessionRecord,
)
from controller.devtools.modelserver.peer import IdFactory, PeerSession
from controller.realtime import events as ev
from tests.modelpeer.validate import validate_client_event, validate_server_event


def make_peer(
    calls: list[ScriptedCall | ScriptedMcpCall] | None = None, **config: Any
) -> PeerSession:
    record = SessionRecord(id="sess_test", model="gpt-realtime-2", auth="bearer")
    peer = PeerSession(
        ServerConfig(**config),
        record,
        ids=IdFactory(seed=5),
        function_calls=deque(calls or []),
        validator=validate_client_event,
    )
    peer.open()
    drain(peer)
    return peer


def drain(peer: PeerSession) -> list[dict[str, Any]]:
    out = list(peer.outbox)
    peer.outbox.clear()
    for event in out:
        validate_server_event(event)  # the test peer's own fidelity
    return out


def send(peer: PeerSession, event: dict[str, Any]) -> list[dict[str, Any]]:
    peer.receive(json.dumps(event))
    return drain(peer)


def run(peer: PeerSession) -> list[dict[str, Any]]:
    """Stream the active response to its end."""
    out: list[dict[str, Any]] = []
    while peer.generating:
        peer.step()
        out += drain(peer)
    return out


def update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "realtime", **session}}


def silence(ms: int) -> dict[str, Any]:
    """``input_audio_buffer.append`` of u-law silence (the session's pcmu input)."""
    audio = ulaw_encode(np.zeros(ms * 8, dtype=np.int16))
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}


# --- the session fields --------------------------------------------------------------------


def test_the_controllers_new_fields_are_accepted_and_echoed() -> None:
    settings = load_settings(
        REALTIME_REASONING_EFFORT="low",
        NOISE_REDUCTION="near_field",
        IDLE_TIMEOUT_MS="6000",
    )
    built = ev.build_session_update(
        settings,
        tools=[ev.McpTool(server_label="crm", server_url="https://crm.example/mcp")],
        prompt=ev.Prompt(id="pmpt_1", version="2", variables={"a": ev.PromptText(text="b")}),
        send_instructions=False,
    ).to_dict()
    peer = make_peer(mcp_tools={"crm": ["find_customer"]})
    updated = send(peer, built)[0]
    assert updated["type"] == "session.updated"
    session = updated["session"]
    assert session["reasoning"] == {"effort": "low"}
    assert session["prompt"] == {
        "id": "pmpt_1",
        "version": "2",
        "variables": {"a": {"type": "input_text", "text": "b"}},
    }
    assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert session["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 6000
    assert session["tools"][0]["server_label"] == "crm"
    assert peer.record.validation_failures == []


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        ({"reasoning": {"effort": "extreme"}}, "invalid_value", "session.reasoning.effort"),
        ({"reasoning": {"budget": 3}}, "unknown_parameter", "session.reasoning.budget"),
        ({"prompt": {"version": "1"}}, "missing_required_parameter", "session.prompt.id"),
        (
            {"prompt": {"id": "pmpt_1", "variables": {"city": "Paris"}}},
            "invalid_type",
            "session.prompt.variables.city",
        ),
        ({"parallel_tool_calls": "yes"}, "invalid_type", "session.parallel_tool_calls"),
        (
            {"audio": {"input": {"noise_reduction": {"type": "loud"}}}},
            "invalid_value",
            "session.audio.input.noise_reduction.type",
        ),
        (
            {
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 1000}}
                }
            },
            "invalid_value",
            "session.audio.input.turn_detection.idle_timeout_ms",
        ),
        (
            {"tools": [{"type": "mcp", "server_url": "https://x"}]},
            "missing_required_parameter",
            "session.tools[0].server_label",
        ),
        (
            {"tools": [{"type": "mcp", "server_label": "x"}]},
            "missing_required_parameter",
            "session.tools[0].server_url",
        ),
        (
            {"tools": [{"type": "mcp", "server_label": "x", "server_url": "https://x", "pw": 1}]},
            "unknown_parameter",
            "session.tools[0].pw",
        ),
        (
            {
                "tools": [
                    {
                        "type": "mcp",
                        "server_label": "x",
                        "server_url": "https://x",
                        "require_approval": "sometimes",
                    }
                ]
            },
            "invalid_value",
            "session.tools[0].require_approval",
        ),
    ],
)
def test_what_the_real_api_rejects_is_rejected(
    session: dict[str, Any], code: str, param: str
) -> None:
    peer = make_peer()
    (error,) = send(peer, update(**session))
    assert error["type"] == "error"
    assert (error["error"]["code"], error["error"]["param"]) == (code, param)


# --- MCP --------------------------------------------------------------------------------------


def test_mcp_servers_are_listed_once_each_and_unknown_ones_fail() -> None:
    peer = make_peer(mcp_tools={"crm": ["find_customer", "open_ticket"]})
    tools = [
        {"type": "mcp", "server_label": "crm", "server_url": "https://crm.example/mcp"},
        {"type": "mcp", "server_label": "gone", "server_url": "https://gone.example/mcp"},
    ]
    events = send(peer, update(tools=tools))
    assert [e["type"] for e in events] == [
        "session.updated",
        "conversation.item.added",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "conversation.item.done",
        "conversation.item.added",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.failed",
    ]
    assert [t["name"] for t in events[4]["item"]["tools"]] == ["find_customer", "open_ticket"]
    # Parsed by the controller as typed events and items.
    parsed = [ev.parse_server_event(json.dumps(e)) for e in events]
    assert isinstance(parsed[4], ev.ConversationItemDone)
    assert isinstance(parsed[4].item, ev.McpListToolsItem)
    assert isinstance(parsed[7], ev.McpListToolsFailed)
    # The same servers again: no new listing.
    assert [e["type"] for e in send(peer, update(tools=tools))] == ["session.updated"]


def test_a_completed_mcp_call_is_followed_by_the_spoken_reply() -> None:
    call = ScriptedMcpCall("crm", "find_customer", '{"phone":"555"}', output='{"name":"Ann"}')
    peer = make_peer([call], tone_ms=300)
    events = send(peer, {"type": "response.create"}) + run(peer)
    types = [e["type"] for e in events]
    assert types[:9] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_item.done",
        "conversation.item.done",
    ]
    assert "response.output_audio.delta" in types
    done = events[types.index("response.done")]["response"]
    assert [i["type"] for i in done["output"]] == ["mcp_call", "message"]
    assert done["output"][0]["output"] == '{"name":"Ann"}'
    audio = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert {e["output_index"] for e in audio} == {1}
    (record,) = peer.record.responses
    assert (record.kind, record.mcp_call, record.status) == (
        "audio",
        "crm.find_customer",
        "completed",
    )


def test_a_failed_mcp_call_ends_its_response_without_a_word() -> None:
    call = ScriptedMcpCall("crm", "open_ticket", "{}", error="Service Unavailable")
    peer = make_peer([call])
    events = send(peer, {"type": "response.create"})
    assert not peer.generating
    types = [e["type"] for e in events]
    assert "response.mcp_call.failed" in types and "response.output_audio.delta" not in types
    done = events[types.index("response.done")]["response"]
    (item,) = done["output"]
    assert item["error"] == {"type": "tool_execution_error", "message": "Service Unavailable"}
    assert peer.record.responses[0].kind == "mcp_call"


# --- preambles: two audio items in one response -------------------------------------------------


def test_a_preamble_then_the_reply_in_one_response() -> None:
    peer = make_peer(preamble_ms=300, tone_ms=1000, transcript="The answer.")
    events = send(peer, {"type": "response.create"}) + run(peer)
    (record,) = peer.record.responses
    preamble, reply = record.preamble_item_id, record.item_id
    assert preamble and preamble != reply
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["id"]) for e in added] == [(0, preamble), (1, reply)]
    audio = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert [e["item_id"] for e in audio] == [preamble] * 3 + [reply] * 10
    assert {e["output_index"] for e in audio if e["item_id"] == reply} == {1}
    transcripts = [e for e in events if e["type"] == "response.output_audio_transcript.done"]
    assert [e["transcript"] for e in transcripts] == ["One moment.", "The answer."]
    done = events[-2]["response"]
    assert done["status"] == "completed"
    assert [i["id"] for i in done["output"]] == [preamble, reply]
    assert (record.preamble_ms_sent, record.audio_ms_sent) == (300.0, 1000.0)
    # Each item is truncated within its own audio.
    ok = send(
        peer,
        {
            "type": "conversation.item.truncate",
            "item_id": reply,
            "content_index": 0,
            "audio_end_ms": 700,
        },
    )
    assert ok[0]["type"] == "conversation.item.truncated"
    too_far = send(
        peer,
        {
            "type": "conversation.item.truncate",
            "item_id": preamble,
            "content_index": 0,
            "audio_end_ms": 400,
        },
    )
    assert too_far[0]["error"]["message"] == "Audio content of 300ms is already shorter than 400ms"


def test_a_cancel_during_the_reply_keeps_the_finished_preamble() -> None:
    peer = make_peer(preamble_ms=200, tone_ms=2000)
    send(peer, {"type": "response.create"})
    for _ in range(2 + 5):  # the preamble, then half a second of the reply
        peer.step()
    drain(peer)
    events = send(peer, {"type": "response.cancel"})
    done = events[-2]["response"]
    assert (done["status"], done["status_details"]["reason"]) == ("cancelled", "client_cancelled")
    assert [i["status"] for i in done["output"]] == ["completed", "incomplete"]
    assert not peer.generating
    (record,) = peer.record.responses
    assert (record.preamble_ms_sent, record.audio_ms_sent) == (200.0, 500.0)


def test_a_scripted_call_after_speech_follows_both_items() -> None:
    call = ScriptedCall("hangup", "{}", "call_1", speak_first=True)
    peer = make_peer([call], preamble_ms=100, tone_ms=200)
    events = send(peer, {"type": "response.create"}) + run(peer)
    done = events[-2]["response"]
    assert [i["type"] for i in done["output"]] == ["message", "message", "function_call"]
    args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert args_done["output_index"] == 2


# --- idle_timeout_ms ---------------------------------------------------------------------------


def test_the_idle_timeout_commits_the_silence_and_answers() -> None:
    peer = make_peer(tone_ms=500)
    vad = {"type": "server_vad", "idle_timeout_ms": 5000}
    send(peer, update(audio={"input": {"format": {"type": "audio/pcmu"}, "turn_detection": vad}}))
    events: list[dict[str, Any]] = []
    for _ in range(49):
        events += send(peer, silence(100))
    assert events == []  # 4.9 s: not yet
    events = send(peer, silence(100))
    assert [e["type"] for e in events[:5]] == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    assert (events[0]["audio_start_ms"], events[0]["audio_end_ms"]) == (0, 5000)
    parsed = ev.parse_server_event(json.dumps(events[0]))
    assert isinstance(parsed, ev.InputAudioBufferTimeoutTriggered)
    run(peer)  # 500 ms of reply, faster than real time
    # It counts again from when the reply has played (created at 5000 ms + 500 ms).
    later: list[dict[str, Any]] = []
    for _ in range(54):
        later += send(peer, silence(100))
    assert later == []
    (triggered, *_) = send(peer, silence(100))
    assert triggered["type"] == "input_audio_buffer.timeout_triggered"
    assert triggered["audio_start_ms"] == 5500
    assert peer.record.idle_timeouts == 2
    assert [r.trigger for r in peer.record.responses] == ["idle_timeout", "idle_timeout"]


# --- the command's options ----------------------------------------------------------------------


def test_the_command_takes_a_preamble_and_mcp_servers() -> None:
    args = build_parser().parse_args(
        [
            "--preamble-ms",
            "400",
            "--mcp-server",
            "crm=find_customer, open_ticket",
            "--mcp-server",
            "empty=",
        ]
    )
    config = config_from_args(args)
    assert (config.preamble_ms, config.preamble_hz) == (400, 500.0)
    assert config.mcp_tools == {"crm": ["find_customer", "open_ticket"], "empty": []}
    for bad in (["--preamble-ms", "-1"], ["--mcp-server", "crm"]):
        with pytest.raises(ValueError):
            config_from_args(build_parser().parse_args(bad))
