"""The life of a call as data: states, outcomes and the allowed transitions (pure).

A call is in exactly one :class:`CallState`. The transitions are a table
(:data:`TRANSITIONS`), not booleans scattered over the code, and
:class:`CallLifecycle` refuses anything the table does not allow with
:class:`~controller.errors.CallStateError` (that is a bug in the controller,
never the caller's doing)::

    (RINGING) --> SETTING_UP --> CONNECTED --> ENDING --> ENDED
        |              |                         ^
        +--------------+-------------------------+   (no answer, set-up failed,
                                                       or the caller left early)

Outbound calls start ``RINGING``; inbound calls are answered at birth.

How a call ended is its :class:`Outcome`, fixed when it starts ``ENDING``:
the first reason wins, later ones are ignored (a caller hanging up while the
agent says goodbye is still an agent hang-up).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.errors import CallStateError


class CallState(enum.Enum):
    """Where a call is in its life."""

    RINGING = "ringing"  # outbound: dialled, not answered yet
    SETTING_UP = "setting_up"  # answered; bridge, externalMedia and the model opening
    CONNECTED = "connected"  # media flows both ways; the conversation runs
    ENDING = "ending"  # an outcome is fixed; resources are being released
    ENDED = "ended"  # everything is released


class Outcome(enum.Enum):
    """How a call ended (what an operator wants to know first)."""

    CALLER_HUNG_UP = "caller_hung_up"
    AGENT_HUNG_UP = "agent_hung_up"  # the hangup tool, or a limit with a goodbye
    TRANSFERRED = "transferred"
    HANDED_BACK = "handed_back"  # back to the dialplan, e.g. the controller stopping
    OPERATOR_HUNG_UP = "operator_hung_up"  # POST /calls/{id}/hangup
    NOT_ANSWERED = "not_answered"  # outbound: busy, no answer, congestion, failed
    FAILED = "failed"  # an error; the caller is handed back to the dialplan

    @property
    def to_dialplan(self) -> bool:
        """True when the caller goes back to the dialplan rather than being hung up."""
        return self in (Outcome.HANDED_BACK, Outcome.FAILED)


TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.RINGING: frozenset({CallState.SETTING_UP, CallState.ENDING}),
    CallState.SETTING_UP: frozenset({CallState.CONNECTED, CallState.ENDING}),
    CallState.CONNECTED: frozenset({CallState.ENDING}),
    CallState.ENDING: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


@dataclass(frozen=True)
class Ending:
    """Why a call ends: the outcome and the words for the log and the dialplan."""

    outcome: Outcome
    reason: str


class CallLifecycle:
    """One call's state, moved only along :data:`TRANSITIONS`."""

    def __init__(self, *, ringing: bool = False) -> None:
        self._state = CallState.RINGING if ringing else CallState.SETTING_UP
        self._ending: Ending | None = None

    @property
    def state(self) -> CallState:
        """The current state."""
        return self._state

    @property
    def ending(self) -> Ending | None:
        """How the call ends, once it is ending (None before)."""
        return self._ending

    @property
    def over(self) -> bool:
        """True once the call is ending or ended."""
        return self._ending is not None

    def answered(self) -> None:
        """The far end of an outbound call answered.

        Raises:
            CallStateError: the call is not ringing.
        """
        self._move(CallState.SETTING_UP)

    def connected(self) -> None:
        """Set-up is complete.

        Raises:
            CallStateError: the call is not setting up.
        """
        self._move(CallState.CONNECTED)

    def end(self, outcome: Outcome, reason: str) -> bool:
        """Start ending with this outcome, unless an outcome is already fixed.

        Returns:
            True if this call fixed the outcome, False if the call was
            already ending (the first reason wins).
        """
        if self._ending is not None:
            return False
        self._move(CallState.ENDING)
        self._ending = Ending(outcome, reason)
        return True

    def ended(self) -> None:
        """Everything is released.

        Raises:
            CallStateError: the call was not ending.
        """
        self._move(CallState.ENDED)

    def _move(self, target: CallState) -> None:
        if target not in TRANSITIONS[self._state]:
            raise CallStateError(f"a call cannot go from {self._state.value} to {target.value}")
        self._state = target
