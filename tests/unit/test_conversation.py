"""The conversation core, fed recorded GA server event streams; assertions on its actions.

The streams in ``tests/data/realtime/`` are what the Realtime API sends (in
GA order and shape, checked against the ``openai`` package's types below).
Each line is parsed with the controller's own ``parse_server_event`` and fed
to :class:`Conversation` with an explicit ``now``; the tests look only at the
actions it returns and its public record (transcript, tool calls): no event
loop, no fakes, no private attribute.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from controller.call.conversation import (
    CALLER_LOUD_SECONDS,
    DTMF_COLLECT_SECONDS,
    GOODBYE_TAIL_SECONDS,
    SILENT,
    Action,
    Conversation,
    ConversationConfig,
    EndCall,
    EndItem,
    Heard,
    Interrupt,
    Keys,
    ModelError,
    Play,
    Playback,
    RenewSession,
    RunTool,
    Send,
    ToolCallEnded,
    TranscriptLine,
    TurnEnded,
    UsageSum,
)
from controller.call.state import Outcome
from controller.realtime.events import (
    ResponseFunctionCallArgumentsDone,
    ResponseOutputAudioDelta,
    ServerEvent,
    parse_server_event,
)
from tests.modelpeer.validate import validate_server_event

DATA = Path(__file__).resolve().parents[1] / "data" / "realtime"
LOG = logging.getLogger("test.conversation")
TOOLS = ConversationConfig(
    tools=frozenset({"hangup", "send_dtmf", "transfer"}),
    transfer_targets=frozenset({"sales"}),
    hangup_grace_seconds=2.0,
)
SPEAKING = Playback(speaking=True, current_item="item_agent")


def stream(name: str) -> list[ServerEvent]:
    return [parse_server_event(line) for line in (DATA / name).read_text().splitlines()]


def event(kind: str, **fields: Any) -> ServerEvent:
    return parse_server_event(json.dumps({"type": kind, "event_id": "event_1", **fields}))


def ready(config: ConversationConfig = TOOLS, now: float = 0.0) -> Conversation:
    conv = Conversation(config, now=now, log=LOG)
    assert conv.session_ready(now) == []
    return conv


#: Actions that only report (to live watchers); most tests look at the decisions.
REPORTS = (TurnEnded, ToolCallEnded, ModelError)


def feed(
    conv: Conversation,
    events: list[ServerEvent],
    now: float = 1.0,
    playback: Playback = SILENT,
    *,
    reports: bool = False,
) -> list[tuple[str, Action]]:
    """Feed every event; return ``(event type, action)`` for every action, in order."""
    out = []
    for ev in events:
        out += [
            (ev.type, a)
            for a in conv.model_event(ev, now, playback)
            if reports or not isinstance(a, REPORTS)
        ]
    return out


def decisions(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, REPORTS)]


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [a.event.to_dict() for a in actions if isinstance(a, Send)]


def run_timers(conv: Conversation, until: float, playback: Playback = SILENT) -> list[Action]:
    """Call the timer whenever it is due, up to ``until``."""
    actions: list[Action] = []
    while (due := conv.next_timer) is not None and due <= until:
        actions += conv.timer(due, playback)
    return actions


# --- the recorded streams are what the tests think they are ---------------------------


@pytest.mark.parametrize("path", sorted(DATA.glob("tool_*.jsonl")), ids=lambda p: p.name)
def test_recorded_tool_streams_are_ga_server_events(path: Path) -> None:
    # (ga_call.jsonl also carries event types newer than the SDK, on purpose.)
    for line in path.read_text().splitlines():
        validate_server_event(json.loads(line))  # the openai package's GA types


# --- tools ------------------------------------------------------------------------------


def test_send_dtmf_runs_once_at_arguments_done_and_answers_after_response_done() -> None:
    conv = ready()
    events = stream("tool_send_dtmf.jsonl")
    actions = feed(conv, events)
    # Exactly one tool run, decided at arguments.done (output_item.done repeats it).
    assert actions == [
        (
            "response.function_call_arguments.done",
            RunTool(call_id=_call_ids(events)[0], name="send_dtmf", arguments={"digits": "1234#"}),
        )
    ]
    result = json.dumps({"ok": True, "pressed": "1234#"})
    out = conv.tool_finished(_call_ids(events)[0], result, 1.2, ok=True)
    assert [e["type"] for e in sent(out)] == ["conversation.item.create", "response.create"]
    assert sent(out)[0]["item"] == {
        "type": "function_call_output",
        "call_id": _call_ids(events)[0],
        "output": result,
    }
    assert sent(out)[1] == {"type": "response.create"}
    (record,) = conv.tool_calls
    assert (record.name, record.arguments, record.result, record.refused) == (
        "send_dtmf",
        {"digits": "1234#"},
        result,
        False,
    )


def test_a_tool_result_before_response_done_waits_for_it() -> None:
    conv = ready()
    events = stream("tool_send_dtmf.jsonl")
    done_at = [e.type for e in events].index("response.done")
    feed(conv, events[:done_at])
    assert decisions(conv.tool_finished(_call_ids(events)[0], '{"ok":true}', 1.1, ok=True)) == []
    out = feed(conv, events[done_at:])
    assert [e["type"] for e in sent([a for _, a in out])] == [
        "conversation.item.create",
        "response.create",
    ]


def test_invalid_digits_are_refused_without_a_tool_run() -> None:
    conv = ready()
    events = stream("tool_send_dtmf_invalid.jsonl")
    actions = feed(conv, events)
    assert not any(isinstance(a, RunTool) for _, a in actions)
    # The refusal goes out only after response.done, with one response.create.
    assert [kind for kind, _ in actions] == ["response.done", "response.done"]
    out = sent([a for _, a in actions])
    assert [e["type"] for e in out] == ["conversation.item.create", "response.create"]
    result = json.loads(out[0]["item"]["output"])
    assert result["ok"] is False
    assert "'x'" in result["error"] and "'!'" in result["error"]
    assert conv.tool_calls[0].refused


def test_a_transfer_outside_the_allowlist_is_refused() -> None:
    conv = ready()
    actions = [a for _, a in feed(conv, stream("tool_transfer_denied.jsonl"))]
    assert not any(isinstance(a, RunTool | EndCall) for a in actions)
    result = json.loads(sent(actions)[0]["item"]["output"])
    assert result["ok"] is False
    assert "premium_hotline" in result["error"]
    assert "allowed targets are: sales" in result["error"]
    assert run_timers(conv, 10.0) == []


def test_a_tool_not_on_this_call_is_refused() -> None:
    conv = ready(ConversationConfig(tools=frozenset({"hangup"})))
    actions = [a for _, a in feed(conv, stream("tool_send_dtmf.jsonl"))]
    assert not any(isinstance(a, RunTool) for a in actions)
    error = json.loads(sent(actions)[0]["item"]["output"])["error"]
    assert error == "tool 'send_dtmf' is not available on this call"


def test_parallel_calls_get_one_response_create_after_the_slowest_tool() -> None:
    """Two calls in one response: both outputs must go before a single
    response.create, or the model answers without the second result."""
    conv = ready()
    events = stream("tool_parallel_calls.jsonl")
    actions = [a for _, a in feed(conv, events)]
    runs = [a for a in actions if isinstance(a, RunTool)]
    assert runs == [RunTool(_call_ids(events)[0], "send_dtmf", {"digits": "9"})]
    assert sent(actions) == []  # the refused transfer waits for the running send_dtmf
    out = conv.tool_finished(runs[0].call_id, '{"ok":true}', 2.0, ok=True)
    types = [e["type"] for e in sent(out)]
    assert types == ["conversation.item.create", "conversation.item.create", "response.create"]
    assert {e["item"]["call_id"] for e in sent(out)[:2]} == set(_call_ids(events))
    assert len(conv.tool_calls) == 2


def test_hangup_waits_for_the_goodbye_to_play_then_ends() -> None:
    conv = ready()
    events = stream("tool_hangup.jsonl")
    done_at = [e.type for e in events].index("response.done")
    assert feed(conv, events[:done_at], now=1.0) == []
    # The response carrying the goodbye is still active: nothing ends.
    assert run_timers(conv, 1.5, SPEAKING) == []
    assert [a for _, a in feed(conv, events[done_at:], now=1.5)] == []  # no output, no create
    # Its audio still plays: nothing ends.
    assert run_timers(conv, 2.0, SPEAKING) == []
    # Quiet from 2.0: the end comes after the tail Asterisk needs to play it out.
    actions = run_timers(conv, 2.0 + GOODBYE_TAIL_SECONDS + 0.05)
    assert actions == [EndCall(Outcome.AGENT_HUNG_UP, "agent hung up: the caller said goodbye")]
    assert conv.next_timer is None or conv.next_timer > 10
    assert [t.name for t in conv.tool_calls] == ["hangup"]


def test_a_goodbye_that_never_ends_is_cut_at_the_cap() -> None:
    conv = ready()
    feed(conv, stream("tool_hangup.jsonl"), now=1.0)
    assert run_timers(conv, 2.9, SPEAKING) == []
    assert run_timers(conv, 3.1, SPEAKING) == [
        EndCall(Outcome.AGENT_HUNG_UP, "agent hung up: the caller said goodbye")
    ]


def test_an_allowed_transfer_runs_after_the_goodbye() -> None:
    conv = ready()
    events = stream("tool_transfer.jsonl")
    assert [a for _, a in feed(conv, events, now=1.0)] == []
    (run,) = run_timers(conv, 2.0)
    assert run == RunTool(_call_ids(events)[0], "transfer", {"target": "sales"})
    # A failed transfer goes back to the model, which can tell the caller.
    out = conv.tool_finished(run.call_id, '{"ok":false,"error":"busy"}', 2.5, ok=False)
    assert [e["type"] for e in sent(out)] == ["conversation.item.create", "response.create"]
    assert conv.tool_calls[0].refused


# --- audio, transcripts and the whole call ------------------------------------------------


def test_a_whole_recorded_call_plays_every_delta_and_honours_the_barge_in() -> None:
    conv = ready(ConversationConfig(tools=frozenset({"hangup"})))
    events = stream("ga_call.jsonl")
    typed = feed(conv, events)
    actions = [a for _, a in typed]
    plays = [a for a in actions if isinstance(a, Play)]
    deltas = [e for e in events if isinstance(e, ResponseOutputAudioDelta)]
    assert [p.audio for p in plays] == [d.audio() for d in deltas]
    # The caller talks over the second response: playout stops there, and
    # that response's audio.done no longer ends an item (it was cut).
    assert [k for k, a in typed if isinstance(a, Interrupt)] == [
        "input_audio_buffer.speech_started"
    ]
    ends = [a for a in actions if isinstance(a, EndItem)]
    assert ends == [EndItem(deltas[0].item_id)]
    lines = [a for a in actions if isinstance(a, TranscriptLine)]
    assert lines == conv.transcript
    assert {"agent", "caller"} <= {line.role for line in lines}


def test_caller_transcripts_come_from_completed_or_else_the_deltas() -> None:
    conv = ready()
    base = {"item_id": "item_u1", "content_index": 0}
    tr = "conversation.item.input_audio_transcription"
    feed(
        conv,
        [
            event(f"{tr}.delta", delta="ignored ", **base),
            event(f"{tr}.completed", transcript="Opening hours?", **base),
            event(f"{tr}.delta", delta="Is anyone ", **base),
            event(f"{tr}.delta", delta="there?", **base),
            event(f"{tr}.completed", transcript="", **base),
            event(f"{tr}.delta", delta="Hel", **base),
            event(f"{tr}.failed", error={"message": "no speech"}, **base),
            event(f"{tr}.failed", error={"message": "no speech"}, **base),
        ],
        now=3.25,
    )
    assert conv.transcript == [
        TranscriptLine(3.25, "caller", "Opening hours?", end=3.25),
        TranscriptLine(3.25, "caller", "Is anyone there?", end=3.25),
        TranscriptLine(3.25, "caller", "Hel", end=3.25),
    ]


def test_audio_that_is_not_base64_is_skipped_and_the_call_goes_on() -> None:
    conv = ready()
    bad = event(
        "response.output_audio.delta",
        response_id="r",
        item_id="i",
        output_index=0,
        content_index=0,
        delta="not base64!",
    )
    assert conv.model_event(bad, 1.0, SILENT) == []
    good = event(
        "response.output_audio.delta",
        response_id="r",
        item_id="i",
        output_index=0,
        content_index=0,
        delta="AAAA",
    )
    assert conv.model_event(good, 1.0, SILENT) == [Play("i", b"\0\0\0")]


def test_fatal_model_errors_end_the_call_and_expected_races_do_not() -> None:
    conv = ready()
    quiet = event(
        "error",
        error={
            "type": "invalid_request_error",
            "code": "response_cancel_not_active",
            "message": "x",
        },
    )
    assert conv.model_event(quiet, 1.0, SILENT) == [ModelError("response_cancel_not_active")]
    other = event(
        "error", error={"type": "invalid_request_error", "code": "invalid_value", "message": "x"}
    )
    assert conv.model_event(other, 1.0, SILENT) == [ModelError("invalid_value")]
    fatal = event(
        "error", error={"type": "invalid_request_error", "code": "invalid_api_key", "message": "x"}
    )
    assert conv.model_event(fatal, 1.0, SILENT) == [
        ModelError("invalid_api_key"),
        EndCall(Outcome.FAILED, "model error invalid_api_key"),
    ]


# --- greeting and barge-in ------------------------------------------------------------------


def speech_started(conv: Conversation, now: float, playback: Playback) -> list[Action]:
    ev = event("input_audio_buffer.speech_started", audio_start_ms=1000, item_id="item_caller")
    return conv.model_event(ev, now, playback)


def response_created(conv: Conversation, response_id: str, now: float) -> None:
    assert (
        conv.model_event(event("response.created", response={"id": response_id}), now, SILENT) == []
    )


def test_the_greeting_is_asked_for_first_and_protected_when_configured() -> None:
    conv = Conversation(
        ConversationConfig(greeting="Hello!", protect_greeting=True), now=0, log=LOG
    )
    (greet,) = sent(conv.session_ready(0.0))
    assert greet["type"] == "response.create"
    assert greet["response"]["instructions"].endswith('"Hello!"')  # quoted: said, not obeyed
    assert not conv.server_interrupts  # the controller decides when to interrupt
    response_created(conv, "resp_greeting", 0.5)
    assert speech_started(conv, 1.0, Playback(True, "item_greeting")) == []
    assert run_timers(conv, 1.5, Playback(True, "item_greeting")) == []


def test_barge_in_with_server_interruption_stops_playout_and_drops_later_deltas() -> None:
    conv = ready(ConversationConfig())
    assert conv.server_interrupts
    response_created(conv, "resp_1", 1.0)
    actions = speech_started(conv, 2.0, SPEAKING)
    assert actions == [Interrupt()]  # no response.cancel: the server cancels itself
    out = conv.interrupted([Heard("item_agent", 640, 1600), Heard("item_empty", 0, 0)])
    assert sent(out) == [
        {
            "type": "conversation.item.truncate",
            "item_id": "item_agent",
            "content_index": 0,
            "audio_end_ms": 640,
        }
    ]
    assert conv.truncations == 1
    late = event(
        "response.output_audio.delta",
        response_id="resp_1",
        item_id="item_agent",
        output_index=0,
        content_index=0,
        delta="AAAA",
    )
    assert conv.model_event(late, 2.1, SILENT) == []


def test_truncation_is_clamped_to_the_audio_received() -> None:
    conv = ready(ConversationConfig())
    out = conv.interrupted([Heard("item_agent", 900, 800)])
    assert sent(out)[0]["audio_end_ms"] == 800


def test_a_cough_under_barge_in_min_ms_never_interrupts_but_talking_does() -> None:
    conv = ready(ConversationConfig(barge_in_min_ms=100))
    response_created(conv, "resp_1", 1.0)
    # A cough: loud for 40 ms, then quiet for 300 ms before the model's VAD
    # says the speech stopped.
    assert speech_started(conv, 2.0, SPEAKING) == []
    assert conv.wants_caller_level
    now = 2.0
    while now < 2.34:
        if now < 2.04:
            conv.caller_loud(now)
        assert conv.timer(now, SPEAKING) == []
        now = conv.next_timer or now + 0.02
    stopped = event("input_audio_buffer.speech_stopped", audio_end_ms=1600, item_id="item_caller")
    assert conv.model_event(stopped, 2.4, SPEAKING) == []
    assert run_timers(conv, 2.6, SPEAKING) == []
    assert not conv.wants_caller_level

    # Talking: interrupts once it has lasted the minimum, with a cancel.
    assert speech_started(conv, 3.0, SPEAKING) == []
    actions: list[Action] = []
    now = 3.0
    while not actions and now < 3.5:
        conv.caller_loud(now)
        due = conv.next_timer
        assert due is not None
        now = due
        actions = conv.timer(now, SPEAKING)
    assert actions[0] == Interrupt()
    assert sent(actions[1:]) == [{"type": "response.cancel", "response_id": "resp_1"}]
    assert 3.1 <= now <= 3.1 + CALLER_LOUD_SECONDS
    assert not conv.wants_caller_level


def test_speech_while_the_agent_is_silent_interrupts_nothing() -> None:
    conv = ready(ConversationConfig())
    assert speech_started(conv, 2.0, SILENT) == []


# --- caller keys ------------------------------------------------------------------------


def test_keys_are_collected_and_sent_after_the_pause_or_at_hash() -> None:
    conv = ready()
    conv.caller_dtmf("4", 1.0)
    conv.caller_dtmf("2", 1.5)
    assert conv.next_timer == pytest.approx(1.5 + DTMF_COLLECT_SECONDS)
    out = sent(run_timers(conv, 3.0))
    assert out[0]["item"]["content"][0]["text"] == "[The caller pressed the keys: 42]"
    assert out[1] == {"type": "response.create"}
    conv.caller_dtmf("7", 4.0)
    conv.caller_dtmf("#", 4.1)
    assert conv.next_timer == pytest.approx(4.1)
    assert sent(run_timers(conv, 4.1))[0]["item"]["content"][0]["text"].endswith("7#]")


def test_keys_pressed_before_the_model_is_ready_are_delivered_once_it_is() -> None:
    conv = Conversation(TOOLS, now=0.0, log=LOG)
    for digit in "42#":
        conv.caller_dtmf(digit, 0.1)
    assert run_timers(conv, 1.0) == []  # nothing can go out yet, and nothing is lost
    out = sent(conv.session_ready(1.0))
    assert [e["type"] for e in out] == ["conversation.item.create", "response.create"]
    assert out[0]["item"]["content"][0]["text"] == "[The caller pressed the keys: 42#]"


def test_keys_are_not_sent_when_the_profile_says_so() -> None:
    conv = ready(ConversationConfig(dtmf_to_model=False))
    conv.caller_dtmf("1", 1.0)
    assert conv.next_timer is None


# --- limits -----------------------------------------------------------------------------


def test_max_duration_asks_for_a_goodbye_then_ends() -> None:
    conv = ready(ConversationConfig(max_call_seconds=60, hangup_grace_seconds=5))
    assert conv.next_timer == 60
    actions = run_timers(conv, 60.0)
    (goodbye,) = sent(actions)
    assert goodbye["response"]["tool_choice"] == "none"
    response_created(conv, "resp_bye", 60.2)
    assert run_timers(conv, 61.0, SPEAKING) == []
    conv.model_event(
        event("response.done", response={"id": "resp_bye", "status": "completed"}), 61.0, SILENT
    )
    assert run_timers(conv, 61.5) == [
        EndCall(Outcome.AGENT_HUNG_UP, "the call reached its maximum duration")
    ]


def test_the_silence_timeout_waits_while_the_agent_speaks() -> None:
    conv = ready(ConversationConfig(silence_timeout_seconds=10, dtmf_to_model=False))
    conv.caller_dtmf("1", 5.0)  # a key is activity, even when not sent to the model
    assert conv.next_timer == 15.0
    # The agent is still talking when the silence would be up: not silence.
    assert run_timers(conv, 15.2, SPEAKING) == []
    (goodbye,) = sent(run_timers(conv, 15.6))
    assert goodbye["type"] == "response.create"
    assert run_timers(conv, 16.0) == [EndCall(Outcome.AGENT_HUNG_UP, "nobody spoke for 10s")]


def test_after_stop_nothing_is_decided() -> None:
    conv = ready()
    conv.caller_dtmf("1", 1.0)
    conv.stop()
    assert conv.next_timer is None
    assert feed(conv, stream("tool_send_dtmf.jsonl")) == []
    assert conv.timer(5.0, SILENT) == []


def _call_ids(events: list[ServerEvent]) -> list[str]:
    return [e.call_id for e in events if isinstance(e, ResponseFunctionCallArgumentsDone)]


# --- what the call record is built from -------------------------------------------------


def test_turns_measure_the_wait_from_the_end_of_the_callers_speech() -> None:
    conv = ready(ConversationConfig(), now=100.0)
    stopped = event("input_audio_buffer.speech_stopped", audio_end_ms=1500, item_id="item_c1")
    conv.model_event(stopped, 102.0, SILENT)
    created = event("response.created", response={"id": "resp_1"})
    assert conv.model_event(created, 102.25, SILENT) == []
    delta = event(
        "response.output_audio.delta",
        response_id="resp_1",
        item_id="item_a1",
        output_index=0,
        content_index=0,
        delta="AAAA",
    )
    conv.model_event(delta, 102.5, SILENT)
    conv.model_event(delta, 102.6, SILENT)  # later deltas change nothing
    conv.playback_started("item_a1", 102.52)
    usage = {
        "total_tokens": 60,
        "input_tokens": 40,
        "output_tokens": 20,
        "input_token_details": {"text_tokens": 10, "audio_tokens": 30, "cached_tokens": 8},
        "output_token_details": {"text_tokens": 5, "audio_tokens": 15},
    }
    done = event("response.done", response={"id": "resp_1", "status": "completed", "usage": usage})
    (ended,) = conv.model_event(done, 103.0, SILENT)
    assert isinstance(ended, TurnEnded)
    turn = ended.turn
    assert turn.caller_stopped == pytest.approx(2.0)
    assert turn.latency(turn.created) == pytest.approx(0.25)
    assert turn.latency(turn.first_audio) == pytest.approx(0.5)
    assert turn.latency(turn.first_frame) == pytest.approx(0.52)
    assert not turn.barge_in
    # A follow-up response (after a tool) has no caller stop to count from.
    conv.model_event(event("response.created", response={"id": "resp_2"}), 104.0, SILENT)
    assert conv.turns[1].caller_stopped is None and conv.turns[1].latency(5.0) is None
    conv.model_event(done, 105.0, SILENT)  # the same usage again: totals add up
    assert conv.usage == UsageSum(
        input_audio_tokens=60,
        input_text_tokens=20,
        input_cached_tokens=16,
        output_audio_tokens=30,
        output_text_tokens=10,
    )


def test_a_barge_in_marks_its_turn_with_how_fast_the_agent_stopped() -> None:
    conv = ready(ConversationConfig(barge_in_min_ms=100))
    response_created(conv, "resp_1", 1.0)
    speech_started(conv, 2.0, SPEAKING)
    conv.caller_loud(2.1)
    actions = run_timers(conv, 2.2, SPEAKING)
    assert Interrupt() in actions
    (turn,) = conv.turns
    assert turn.barge_in
    assert turn.barge_in_stop_latency == pytest.approx(0.1, abs=0.021)


def test_keys_both_ways_and_tool_calls_are_reported() -> None:
    conv = ready()
    conv.caller_dtmf("5", 1.5)
    events = stream("tool_send_dtmf.jsonl")
    feed(conv, events, now=2.0)
    out = conv.tool_finished(_call_ids(events)[0], '{"ok":true}', 2.5, ok=True)
    (ended,) = [a for a in out if isinstance(a, ToolCallEnded)]
    assert ended.call.name == "send_dtmf" and ended.call.finished == 2.5
    assert conv.keys == [Keys("caller", "5", 1.5), Keys("agent", "1234#", 2.5)]
    # A refused call is reported at once.
    refused = [a for _, a in feed(conv, stream("tool_transfer_denied.jsonl"), reports=True)]
    assert any(isinstance(a, ToolCallEnded) and a.call.refused for a in refused)


def test_an_agent_line_spans_what_the_caller_heard() -> None:
    conv = ready(ConversationConfig(), now=0.0)
    response_created(conv, "resp_1", 1.0)
    delta = event(
        "response.output_audio.delta",
        response_id="resp_1",
        item_id="item_a",
        output_index=0,
        content_index=0,
        delta=base64.b64encode(bytes(8000)).decode(),  # 1 s of pcmu
    )
    conv.model_event(delta, 1.1, SILENT)
    conv.playback_started("item_a", 1.2)
    done = event(
        "response.output_audio_transcript.done",
        response_id="resp_1",
        item_id="item_a",
        output_index=0,
        content_index=0,
        transcript="One second.",
    )
    (line,) = [a for a in conv.model_event(done, 1.3, SILENT) if isinstance(a, TranscriptLine)]
    assert (line.at, line.end) == (1.2, 2.2)
    # Cut short after 400 ms: the line ends where the caller stopped hearing it.
    conv.interrupted([Heard("item_b", 400, 1000)])
    conv.playback_started("item_b", 3.0)
    done_b = event(
        "response.output_audio_transcript.done",
        response_id="resp_1",
        item_id="item_b",
        output_index=0,
        content_index=0,
        transcript="Cut.",
    )
    conv.model_event(done_b.model_copy(), 3.1, SILENT)
    assert conv.transcript[-1].end == pytest.approx(3.0)  # no audio of item_b was received


# --- the model session's continuity -----------------------------------------------------


def test_a_restored_session_gets_the_conversation_replayed_in_order() -> None:
    conv = ready(TOOLS)
    transcript = "conversation.item.input_audio_transcription.completed"
    conv.model_event(
        event(transcript, item_id="u1", content_index=0, transcript="Press one?"), 1.0, SILENT
    )
    events = stream("tool_send_dtmf.jsonl")
    feed(conv, events, now=2.0)
    conv.tool_finished(_call_ids(events)[0], '{"ok":true}', 2.5, ok=True)
    conv.session_lost(3.0)
    assert conv.next_timer is None or conv.next_timer > 100  # nothing renews while lost
    out = sent(conv.session_restored(4.0, expires_in=3600))
    kinds = [
        (e["item"]["type"], e["item"].get("role"))
        for e in out
        if e["type"] == "conversation.item.create"
    ]
    assert kinds == [("message", "user"), ("function_call", None), ("function_call_output", None)]
    assert out[1]["item"]["arguments"] == '{"digits":"1234#"}'  # exactly as the model sent it
    # The last thing was a tool result: the model owes an answer.
    assert out[-1] == {"type": "response.create"}


def test_a_response_lost_with_its_session_is_dropped_and_asked_for_again() -> None:
    conv = ready(ConversationConfig())
    transcript = "conversation.item.input_audio_transcription.completed"
    conv.model_event(
        event(transcript, item_id="u1", content_index=0, transcript="Hello?"), 1.0, SILENT
    )
    response_created(conv, "resp_1", 1.5)
    conv.session_lost(2.0)
    assert conv.active_response is None
    out = sent(conv.session_restored(3.0))
    assert out[0]["item"]["content"][0]["text"] == "Hello?"
    assert out[-1] == {"type": "response.create"}  # the caller still waits for an answer


def test_a_stalled_response_renews_the_session() -> None:
    conv = ready(ConversationConfig(stall_seconds=10))
    response_created(conv, "resp_1", 1.0)
    assert conv.next_timer == 11.0
    assert run_timers(conv, 10.9) == []
    assert run_timers(conv, 11.0) == [RenewSession("the model stalled")]
    assert conv.next_timer is None  # one renewal at a time


def test_a_session_is_renewed_before_it_expires_at_a_quiet_moment() -> None:
    conv = Conversation(ConversationConfig(), now=0.0, log=LOG)
    conv.session_ready(0.0, expires_in=3600)
    assert conv.next_timer == 3300.0  # five minutes early
    response_created(conv, "resp_1", 3299.0)
    assert run_timers(conv, 3300.0, SPEAKING) == []  # the agent speaks: not now
    conv.model_event(
        event("response.done", response={"id": "resp_1", "status": "completed"}), 3300.5, SILENT
    )
    assert run_timers(conv, 3302.0) == [RenewSession("the session expires soon")]


def test_an_expired_session_is_renewed_not_the_end_of_the_call() -> None:
    conv = ready(ConversationConfig())
    expired = event(
        "error", error={"type": "invalid_request_error", "code": "session_expired", "message": "x"}
    )
    assert conv.model_event(expired, 5.0, SILENT) == [
        ModelError("session_expired"),
        RenewSession("the session expired"),
    ]
