"""The call-state table: legal paths pass, anything else raises CallStateError."""

from __future__ import annotations

import pytest

from controller.call.state import TRANSITIONS, CallLifecycle, CallState, Ending, Outcome
from controller.errors import CallError, CallStateError


def test_a_normal_call_goes_through_every_state_in_order() -> None:
    life = CallLifecycle()
    seen = [(life.state, life.over)]
    life.connected()
    seen.append((life.state, life.over))
    assert life.end(Outcome.CALLER_HUNG_UP, "caller hung up")
    seen.append((life.state, life.over))
    life.ended()
    seen.append((life.state, life.over))
    assert seen == [
        (CallState.SETTING_UP, False),
        (CallState.CONNECTED, False),
        (CallState.ENDING, True),
        (CallState.ENDED, True),
    ]
    assert life.ending == Ending(Outcome.CALLER_HUNG_UP, "caller hung up")


def test_set_up_can_fail_straight_to_ending() -> None:
    life = CallLifecycle()
    assert life.end(Outcome.FAILED, "failed: NoFreePortError")
    life.ended()
    assert life.ending is not None and life.ending.outcome.to_dialplan


def test_the_first_outcome_wins() -> None:
    life = CallLifecycle()
    life.connected()
    assert life.end(Outcome.AGENT_HUNG_UP, "agent hung up: bye")
    assert not life.end(Outcome.CALLER_HUNG_UP, "caller hung up")
    assert life.ending == Ending(Outcome.AGENT_HUNG_UP, "agent hung up: bye")


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], "ended"),  # released before it ended
        (["connected"], "connected"),  # connected twice
        (["connected", "end"], "connected"),  # back to life while ending
        (["end", "ended"], "ended"),  # released twice
    ],
)
def test_illegal_transitions_raise(path: list[str], illegal: str) -> None:
    life = CallLifecycle()
    for step in path:
        if step == "end":
            life.end(Outcome.HANDED_BACK, "controller stopping")
        else:
            getattr(life, step)()
    with pytest.raises(CallStateError, match="a call cannot go from"):
        getattr(life, illegal)()


def test_the_table_has_one_way_to_the_end_and_no_way_back() -> None:
    assert TRANSITIONS[CallState.ENDED] == frozenset()
    for state, targets in TRANSITIONS.items():
        assert state not in targets
    assert issubclass(CallStateError, CallError)


def test_outcomes_that_go_back_to_the_dialplan() -> None:
    assert {o for o in Outcome if o.to_dialplan} == {Outcome.HANDED_BACK, Outcome.FAILED}
