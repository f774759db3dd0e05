"""The conversation core and newer models: several items per response, MCP, idle timeouts.

Fed the GA streams of ``tests/data/realtime/`` written by ``make_streams.py`` (each
line checked against the ``openai`` package's types below), with an explicit
``now``; the tests look at the actions returned and the public record only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from controller.call.conversation import (
    IDLE_PROMPT_INSTRUCTIONS,
    IDLE_PROMPT_WAIT_SECONDS,
    SILENT,
    Action,
    Conversation,
    ConversationConfig,
    EndCall,
    EndItem,
    Heard,
    Interrupt,
    Play,
    Playback,
    RunTool,
    Send,
    ToolCallEnded,
    TranscriptLine,
    TurnEnded,
)
from controller.media.playout import Cut, Playout
from controller.realtime.events import (
    ResponseOutputAudioDelta,
    ResponseOutputAudioDone,
    ServerEvent,
    parse_server_event,
)
from tests.modelpeer.validate import validate_server_event

DATA = Path(__file__).resolve().parents[1] / "data" / "realtime"
LOG = logging.getLogger("test.conversation.items")
STREAMS = ("preamble_answer", "preamble_tools", "mcp_call", "mcp_failures", "idle_timeout")
PREAMBLE, ANSWER = "item_Mpreamble00000001", "item_Manswer000000001"
RESPONSE = "resp_Mpre0000000000001"


def stream(name: str) -> list[ServerEvent]:
    return [parse_server_event(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines()]


def ready(config: ConversationConfig | None = None, now: float = 0.0) -> Conversation:
    conv = Conversation(config or ConversationConfig(), now=now, log=LOG)
    conv.session_ready(now)
    return conv


def feed(
    conv: Conversation, events: list[ServerEvent], now: float = 1.0, playback: Playback = SILENT
) -> list[Action]:
    out: list[Action] = []
    for event in events:
        out += conv.model_event(event, now, playback)
    return out


def feed_playing(
    conv: Conversation, events: list[ServerEvent], now: float, first_frames: dict[str, float]
) -> list[Action]:
    """Feed at ``now``, the playout sending each item's first frame at ``first_frames[item]``."""
    out: list[Action] = []
    for event in events:
        out += conv.model_event(event, now, SILENT)
        if isinstance(event, ResponseOutputAudioDelta) and event.item_id in first_frames:
            conv.playback_started(event.item_id, first_frames.pop(event.item_id))
    return out


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [a.event.to_dict() for a in actions if isinstance(a, Send)]


def until(events: list[ServerEvent], predicate: Any) -> int:
    """Index of the first event matching ``predicate``."""
    return next(i for i, e in enumerate(events) if predicate(e))


@pytest.mark.parametrize("name", STREAMS)
def test_the_streams_are_ga_server_events(name: str) -> None:
    for line in (DATA / f"{name}.jsonl").read_text().splitlines():
        validate_server_event(json.loads(line))


# --- a preamble, then the answer, in one response ---------------------------------------------


def test_a_preamble_and_its_answer_play_as_two_items_of_one_turn() -> None:
    conv = ready(now=0.0)
    events = stream("preamble_answer")
    actions = feed(conv, events, now=1.0)
    plays = [a for a in actions if isinstance(a, Play)]
    assert [p.item_id for p in plays] == [PREAMBLE] * 4 + [ANSWER] * 20
    assert all(p.audio == bytes([0x10]) * 800 for p in plays[:4])
    assert [a for a in actions if isinstance(a, EndItem)] == [EndItem(PREAMBLE), EndItem(ANSWER)]
    # One turn, its first audio the preamble's; the answer's first frame changes nothing.
    (ended,) = [a for a in actions if isinstance(a, TurnEnded)]
    (turn,) = conv.turns
    assert ended.turn is turn and turn.response_id == RESPONSE
    conv.playback_started(PREAMBLE, 1.1)
    conv.playback_started(ANSWER, 1.5)
    assert turn.first_audio == 1.0
    assert turn.first_frame == pytest.approx(1.1)
    # One transcript line per item.
    lines = [a for a in actions if isinstance(a, TranscriptLine)]
    assert [(line.role, line.text) for line in lines] == [
        ("agent", "One moment."),
        ("agent", "We open at nine tomorrow and close at six."),
    ]


def test_a_barge_in_during_the_second_item_truncates_that_item_only() -> None:
    conv = ready(now=0.0)
    events = stream("preamble_answer")
    # Everything up to the answer's eighth delta: the preamble has played out.
    deltas = [i for i, e in enumerate(events) if isinstance(e, ResponseOutputAudioDelta)]
    cut_at = deltas[4 + 8]
    feed_playing(conv, events[:cut_at], 1.0, {PREAMBLE: 1.1, ANSWER: 1.5})
    speaking = Playback(speaking=True, current_item=ANSWER)
    barge = parse_server_event(
        json.dumps(
            {
                "type": "input_audio_buffer.speech_started",
                "event_id": "event_b",
                "audio_start_ms": 4000,
                "item_id": "item_caller_2",
            }
        )
    )
    assert conv.model_event(barge, 2.2, speaking) == [Interrupt()]
    # The playout cut the answer only (the preamble had finished): 700 ms heard.
    out = conv.interrupted([Heard(ANSWER, played_ms=700, received_ms=800)])
    assert sent(out) == [
        {
            "type": "conversation.item.truncate",
            "item_id": ANSWER,
            "content_index": 0,
            "audio_end_ms": 700,
        }
    ]
    # The rest of the answer is dropped; the transcript lines say what was heard.
    rest = feed(conv, events[cut_at:], now=2.3)
    assert not any(isinstance(a, Play) for a in rest)
    assert not any(isinstance(a, EndItem) for a in rest)
    lines = {line.text: line for line in conv.transcript}
    preamble = lines["One moment."]
    answer = lines["We open at nine tomorrow and close at six."]
    assert (preamble.at, preamble.end) == (1.1, 1.5)  # 400 ms, all of it
    assert (answer.at, answer.end) == (1.5, 2.2)  # 700 ms of 2 s
    assert conv.truncations == 1
    assert conv.turns[0].barge_in


def test_a_cut_while_the_preamble_is_still_queued_truncates_both_items() -> None:
    conv = ready(now=0.0)
    events = stream("preamble_answer")
    done = until(events, lambda e: isinstance(e, ResponseOutputAudioDone) and e.item_id == ANSWER)
    # The model sent both faster than real time: the preamble's line is written
    # while it still plays.
    feed_playing(conv, events[:done], 1.0, {PREAMBLE: 1.1})
    assert [line.end for line in conv.transcript] == [1.5]
    out = conv.interrupted(
        [Heard(PREAMBLE, played_ms=250, received_ms=400), Heard(ANSWER, 0, 2000)]
    )
    assert [(e["item_id"], e["audio_end_ms"]) for e in sent(out)] == [(PREAMBLE, 250), (ANSWER, 0)]
    feed(conv, events[done:], now=1.4)
    # The preamble's line ends where the caller stopped hearing it; the answer
    # was never heard: no line for it.
    assert [(line.text, line.at, line.end) for line in conv.transcript] == [
        ("One moment.", 1.1, 1.35)
    ]


def test_parallel_tool_calls_after_a_preamble_get_one_response_create() -> None:
    config = ConversationConfig(
        tools=frozenset({"send_dtmf", "lookup_order"}), http_tools=frozenset({"lookup_order"})
    )
    conv = ready(config)
    events = stream("preamble_tools")
    actions = feed(conv, events, now=1.0)
    assert {a.item_id for a in actions if isinstance(a, Play)} == {"item_Mpreamble00000002"}
    runs = [a for a in actions if isinstance(a, RunTool)]
    assert runs == [
        RunTool("call_Mdtmf0000000001", "send_dtmf", {"digits": "9"}),
        RunTool("call_Mlookup000000001", "lookup_order", {"number": "42"}),
    ]
    assert sent(actions) == []
    assert sent(conv.tool_finished(runs[1].call_id, '{"status":"shipped"}', 1.5, ok=True)) == []
    out = sent(conv.tool_finished(runs[0].call_id, '{"ok":true}', 1.8, ok=True))
    assert [e["type"] for e in out] == [
        "conversation.item.create",
        "conversation.item.create",
        "response.create",
    ]
    assert [e["item"]["call_id"] for e in out[:2]] == [runs[1].call_id, runs[0].call_id]
    assert [t.name for t in conv.tool_calls] == ["send_dtmf", "lookup_order"]


# --- MCP servers -------------------------------------------------------------------------------


def test_mcp_listings_and_calls_are_recorded_like_tool_calls() -> None:
    conv = ready()
    actions = feed(conv, stream("mcp_call"), now=2.0)
    listing, call = conv.tool_calls
    assert (listing.name, listing.refused) == ("crm.mcp_list_tools", False)
    assert json.loads(listing.result) == {"ok": True, "tools": ["find_customer"]}
    assert (call.call_id, call.name, call.arguments) == (
        "item_Mmcp00000000001",
        "crm.find_customer",
        {"phone": "555"},
    )
    assert (call.result, call.refused, call.finished) == (
        '{"name":"Ann Smith","tier":"gold"}',
        False,
        2.0,
    )
    ended = [a.call for a in actions if isinstance(a, ToolCallEnded)]
    assert {c.call_id for c in ended} == {listing.call_id, call.call_id}
    # The agent spoke after the call: nothing for the controller to ask for.
    assert sent(actions) == []
    assert [line.text for line in conv.transcript] == ["Hello Ann."]


def test_an_mcp_failure_is_reported_to_the_model_and_the_call_goes_on() -> None:
    conv = ready()
    events = stream("mcp_failures")
    listed = until(events, lambda e: e.type == "mcp_list_tools.failed") + 1
    # The tools of a server could not be listed: the model is told at once.
    first = feed(conv, events[:listed], now=1.0)
    (notice,) = sent(first)
    assert notice["item"]["role"] == "system"
    assert "tools of billing are not available" in notice["item"]["content"][0]["text"]
    assert "response.create" not in [e["type"] for e in sent(first)]
    # A call fails and the response ends without a word after it: the model is
    # told why, and asked to speak.
    rest = feed(conv, events[listed:], now=2.0)
    assert not any(isinstance(a, EndCall) for a in first + rest)
    report, create = sent(rest)
    assert report["item"]["role"] == "system"
    text = report["item"]["content"][0]["text"]
    assert "open_ticket of crm failed: Service Unavailable" in text
    assert create == {"type": "response.create"}
    listing, call = conv.tool_calls
    assert listing.refused and call.refused
    assert json.loads(call.result) == {"ok": False, "error": "Service Unavailable"}
    assert conv.next_timer is None  # nothing pending: the call simply goes on


def test_a_response_ending_right_after_an_mcp_call_gets_a_follow_up() -> None:
    conv = ready()
    events = [
        e
        for e in stream("mcp_call")
        if getattr(e, "item_id", None) != "item_Mafter000000001"
        and getattr(getattr(e, "item", None), "id", None) != "item_Mafter000000001"
    ]
    actions = feed(conv, events)
    assert sent(actions) == [{"type": "response.create"}]


def test_a_cancelled_response_with_an_mcp_call_asks_for_nothing() -> None:
    conv = ready()
    events = stream("mcp_failures")
    done = events[-2]
    assert done.type == "response.done"
    cancelled = parse_server_event(
        json.dumps(
            {
                "type": "response.done",
                "event_id": "e",
                "response": {"id": done.response.id, "status": "cancelled"},  # type: ignore[union-attr]
            }
        )
    )
    actions = feed(conv, [*events[:-2], cancelled])
    assert [e["type"] for e in sent(actions)] == ["conversation.item.create"]  # the listing only


# --- the caller goes quiet (idle_timeout_ms) ---------------------------------------------------


def test_when_the_server_answers_the_idle_timeout_the_controller_asks_for_nothing() -> None:
    conv = ready(ConversationConfig(silence_timeout_seconds=20), now=0.0)
    actions = feed(conv, stream("idle_timeout"), now=10.0)
    assert sent(actions) == []
    assert [line.text for line in conv.transcript] == ["Are you still there?"]
    # "Are you still there?" is not activity: the silence limit still counts from 0.
    assert conv.next_timer == 20.0
    (goodbye,) = sent(conv.timer(20.0, SILENT))
    assert "goodbye" in goodbye["response"]["instructions"]


def test_when_the_server_does_not_answer_the_controller_asks_the_caller() -> None:
    conv = ready(now=0.0)
    triggered = stream("idle_timeout")[0]
    assert conv.model_event(triggered, 5.0, SILENT) == []
    assert conv.next_timer == pytest.approx(5.0 + IDLE_PROMPT_WAIT_SECONDS)
    (prompt,) = sent(conv.timer(5.0 + IDLE_PROMPT_WAIT_SECONDS, SILENT))
    assert prompt == {
        "type": "response.create",
        "response": {"instructions": IDLE_PROMPT_INSTRUCTIONS},
    }
    assert conv.next_timer is None


@pytest.mark.parametrize("what", ["the caller speaks", "a response starts"])
def test_no_idle_prompt_once_the_caller_speaks_or_a_response_starts(what: str) -> None:
    conv = ready(now=0.0)
    conv.model_event(stream("idle_timeout")[0], 5.0, SILENT)
    if what == "the caller speaks":
        kind, fields = "input_audio_buffer.speech_started", {"audio_start_ms": 1, "item_id": "i"}
    else:
        kind, fields = "response.created", {"response": {"id": "resp_x"}}
    event = parse_server_event(json.dumps({"type": kind, "event_id": "e", **fields}))
    conv.model_event(event, 5.2, SILENT)
    # No prompt is due (a started response only arms the stall check, 15 s on).
    assert conv.next_timer is None or conv.next_timer >= 5.2 + 15
    assert conv.timer(6.0, SILENT) == []


def test_an_ended_call_is_not_prompted() -> None:
    conv = ready(now=0.0)
    conv.model_event(stream("idle_timeout")[0], 5.0, SILENT)
    conv.stop()
    assert conv.next_timer is None and conv.timer(6.0, SILENT) == []


def test_the_tools_found_are_kept_whichever_comes_first() -> None:
    conv = ready()
    events = stream("mcp_call")
    listing = [e for e in events if "item_Mlist0000000001" in e.model_dump_json()]
    # conversation.item.done (with the tools) before mcp_list_tools.completed.
    done, completed = listing[-1], listing[-2]
    assert (done.type, completed.type) == ("conversation.item.done", "mcp_list_tools.completed")
    feed(conv, [*listing[:-2], done, completed])
    assert json.loads(conv.tool_calls[0].result) == {"ok": True, "tools": ["find_customer"]}


def test_the_playout_cuts_only_the_item_playing_and_the_core_truncates_it() -> None:
    """Playout and core together: the preamble ended and played out, the answer plays."""
    playout = Playout()
    playout.enqueue(PREAMBLE, b"\x10" * 3200)  # 400 ms
    playout.end_item(PREAMBLE)
    playout.enqueue(ANSWER, b"\x11" * 16000)  # 2 s received, still streaming
    for _ in range(20 + 35):  # the preamble, then 700 ms of the answer
        playout.next_frame()
    assert playout.current_item == ANSWER
    cuts = playout.flush()
    assert cuts == [Cut(ANSWER, played_ms=700, received_ms=2000, discarded_ms=1300)]
    assert playout.played_ms(PREAMBLE) == 400
    conv = ready()
    heard = [Heard(c.item_id, c.played_ms, c.received_ms) for c in cuts if not c.finished]
    assert [(e["item_id"], e["audio_end_ms"]) for e in sent(conv.interrupted(heard))] == [
        (ANSWER, 700)
    ]
