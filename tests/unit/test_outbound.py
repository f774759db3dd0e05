"""Outbound calls, the pure parts: what may be dialled, requests, ring results, the agent's brief,
and the conversation's outcome, hold limit and leave-a-message."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from controller.call.conversation import (
    SILENT,
    CallResult,
    Conversation,
    ConversationConfig,
    EndCall,
    Send,
    ToolCallEnded,
)
from controller.call.state import CallLifecycle, CallState, Outcome
from controller.errors import CallStateError, OutboundInvalid, OutboundRefused
from controller.outbound import (
    OutboundPolicy,
    OutboundRequest,
    outbound_instructions,
    report_outcome_tool,
    ring_result,
)
from controller.realtime.events import parse_server_event

LOG = logging.getLogger("test.outbound")


def request(**fields: Any) -> OutboundRequest:
    return OutboundRequest.model_validate({"purpose": "Ask for the opening hours.", **fields})


# --- what may be dialled ----------------------------------------------------------------


def test_the_allowlist_matches_whole_dial_strings_only() -> None:
    policy = OutboundPolicy([r"PJSIP/1\d{3}", r"PJSIP/company@tester"])
    assert policy.dial_string(request(endpoint="PJSIP/1001")) == "PJSIP/1001"
    assert policy.dial_string(request(endpoint="PJSIP/company@tester")) == "PJSIP/company@tester"
    for sneaky in ("PJSIP/10011", "PJSIP/1001@premium", "PJSIP/company@tester2"):
        with pytest.raises(OutboundRefused, match="not allowed by OUTBOUND_ALLOW"):
            policy.dial_string(request(endpoint=sneaky))


def test_an_empty_allowlist_means_outbound_calling_is_off() -> None:
    with pytest.raises(OutboundRefused, match="outbound calling is off: set OUTBOUND_ALLOW"):
        OutboundPolicy([]).dial_string(request(endpoint="PJSIP/1001"))


def test_numbers_go_through_the_trunk_and_the_allowlist() -> None:
    policy = OutboundPolicy([r"PJSIP/\+1555\d{7}@provider"], "PJSIP/{number}@provider")
    assert policy.dial_string(request(number="+15551234567")) == "PJSIP/+15551234567@provider"
    with pytest.raises(OutboundRefused):
        policy.dial_string(request(number="+19005550000"))
    with pytest.raises(OutboundInvalid, match="OUTBOUND_TRUNK"):
        OutboundPolicy([".*"]).dial_string(request(number="5551234"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "give exactly one of endpoint"),
        ({"endpoint": "PJSIP/1", "number": "123"}, "give exactly one of endpoint"),
        ({"endpoint": "PJSIP/1001&PJSIP/900"}, "characters a dial string does not use"),
        ({"endpoint": "1001"}, "must be a dial string"),
        ({"number": "12ab"}, "String should match pattern"),
        ({"endpoint": "PJSIP/1", "on_machine": "leave_message"}, "needs machine_message"),
        ({"endpoint": "PJSIP/1", "variables": {"Bad-Name": "x"}}, "must match"),
        ({"endpoint": "PJSIP/1", "ring_timeout": 1}, "greater than or equal to 5"),
    ],
)
def test_malformed_requests_are_refused_with_what_is_wrong(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        request(**fields)


# --- ringing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cause", "timed_out", "result"),
    [
        (17, False, "busy"),
        (19, False, "no_answer"),
        (34, False, "congestion"),
        (21, False, "failed"),
        (16, True, "no_answer"),
        (0, False, "failed"),
    ],
)
def test_ring_results_come_from_the_q850_cause(cause: int, timed_out: bool, result: str) -> None:
    assert ring_result(cause, timed_out=timed_out) == result


def test_an_outbound_call_rings_before_it_sets_up_and_may_end_unanswered() -> None:
    life = CallLifecycle(ringing=True)
    assert life.state is CallState.RINGING
    with pytest.raises(CallStateError):
        life.connected()
    assert life.end(Outcome.NOT_ANSWERED, "busy (cause 17)")
    life.ended()
    answered = CallLifecycle(ringing=True)
    answered.answered()
    assert answered.state is CallState.SETTING_UP


# --- the agent's brief and its outcome ------------------------------------------------------


def test_the_brief_carries_the_purpose_the_rules_and_the_users_details() -> None:
    text = outbound_instructions("Cancel order {order}", {"order": "4711", "name": "Ada"})
    assert text.startswith("You are on a phone call you placed")
    assert "Cancel order {order}" in text  # filled by the caller, not here
    assert "press keys with the send_dtmf tool" in text and "say nothing at all" in text
    assert "- name: Ada\n- order: 4711" in text
    assert report_outcome_tool()["parameters"]["properties"]["status"]["enum"][0] == "achieved"


def event(kind: str, **fields: Any) -> Any:
    return parse_server_event(json.dumps({"type": kind, "event_id": "e", **fields}))


def outcome_call(call_id: str, arguments: dict[str, Any]) -> Any:
    return event(
        "response.function_call_arguments.done",
        response_id="r",
        item_id="i",
        output_index=0,
        call_id=call_id,
        name="report_outcome",
        arguments=json.dumps(arguments),
    )


OUTBOUND = ConversationConfig(tools=frozenset({"report_outcome", "send_dtmf"}), max_hold_seconds=30)


def run_timers(conv: Conversation, until: float) -> list[Any]:
    actions: list[Any] = []
    while (due := conv.next_timer) is not None and due <= until:
        actions += conv.timer(due, SILENT)
    return actions


def test_report_outcome_records_the_result_and_ends_after_the_goodbye() -> None:
    conv = Conversation(OUTBOUND, now=0.0, log=LOG)
    conv.session_ready(0.0)
    args = {"status": "achieved", "summary": "Opens at nine.", "data": {"ticket": "A-42"}}
    actions = conv.model_event(outcome_call("c1", args), 5.0, SILENT)
    assert isinstance(actions[0], ToolCallEnded) and not actions[0].call.refused
    assert conv.result == CallResult("achieved", "Opens at nine.", {"ticket": "A-42"})
    assert run_timers(conv, 6.0) == [EndCall(Outcome.AGENT_HUNG_UP, "agent reported achieved")]


def test_an_unknown_status_is_refused_back_to_the_model() -> None:
    conv = Conversation(OUTBOUND, now=0.0, log=LOG)
    conv.session_ready(0.0)
    actions = conv.model_event(outcome_call("c1", {"status": "great"}), 5.0, SILENT)
    assert isinstance(actions[0], ToolCallEnded) and actions[0].call.refused
    sent = [a.event.to_dict() for a in actions if isinstance(a, Send)]
    assert "status must be one of: achieved" in sent[0]["item"]["output"]
    assert conv.result is None


def test_nobody_answering_within_max_hold_ends_the_call_as_not_achieved() -> None:
    conv = Conversation(OUTBOUND, now=0.0, log=LOG)
    conv.session_ready(2.0)
    assert conv.next_timer == 32.0
    actions = run_timers(conv, 40.0)
    assert [a for a in actions if isinstance(a, EndCall)] == [
        EndCall(Outcome.AGENT_HUNG_UP, "no person answered within 30s")
    ]
    assert conv.result is not None and conv.result.status == "not_achieved"


def test_once_the_agent_speaks_the_hold_limit_is_off() -> None:
    conv = Conversation(OUTBOUND, now=0.0, log=LOG)
    conv.session_ready(0.0)
    delta = event(
        "response.output_audio.delta",
        response_id="r",
        item_id="i",
        output_index=0,
        content_index=0,
        delta="AAAA",
    )
    conv.model_event(delta, 10.0, SILENT)
    assert conv.next_timer is None


def test_an_answering_machine_gets_the_message_then_the_call_ends() -> None:
    conv = Conversation(OUTBOUND, now=0.0, log=LOG)
    conv.session_ready(0.0)
    assert conv.machine_answered("Please call Ada back on 555-0100.", 1.0) == []
    assert not conv.forwards_audio and conv.wants_caller_level  # the greeting: listen only
    conv.caller_loud(1.5)  # the greeting goes on
    conv.caller_loud(3.0)  # the beep
    assert run_timers(conv, 3.9) == []
    actions = run_timers(conv, 4.0)  # quiet for a second: the beep is over
    (send,) = [a.event.to_dict() for a in actions if isinstance(a, Send)]
    assert conv.forwards_audio
    assert send["response"]["instructions"].endswith('"Please call Ada back on 555-0100."')
    assert send["response"]["tool_choice"] == "none"
    assert conv.result == CallResult("voicemail", "left a message")
    assert run_timers(conv, 5.0) == [
        EndCall(Outcome.AGENT_HUNG_UP, "left a message on the answering machine")
    ]
