"""Outbound calls: what may be dialled, the request, ring results, the agent's brief (pure).

An outbound call is asked for with an :class:`OutboundRequest` (``POST
/calls``, or ``ari-realtime call``). :class:`OutboundPolicy` decides whether
it may be placed at all: the dial string is built from ``endpoint`` or from
``number`` through ``OUTBOUND_TRUNK``, and must match one of the regular
expressions of ``OUTBOUND_ALLOW`` as a whole (``re.fullmatch``); an empty
list means outbound calling is off. A model can be talked into anything by
the person it speaks to, and the user asking for a call may be a web form:
the operator's allowlist is the one thing that bounds what gets dialled.

When the far end never answers, :func:`ring_result` names what happened
from the Q.850 cause Asterisk reports (``ChannelDestroyed.cause``).

:func:`outbound_instructions` is the agent's brief: the purpose in the
user's words, then the rules of phone menus, hold and answering machines.
"""

from __future__ import annotations

import re
import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.errors import OutboundInvalid, OutboundRefused

OnMachine = Literal["hangup", "leave_message", "continue"]
#: What the agent may report with ``report_outcome``.
RESULT_STATUSES = ("achieved", "not_achieved", "voicemail", "needs_human", "wrong_number")
#: Dial strings are short; this bound keeps a hostile request from being a regex workout.
MAX_DIAL_STRING = 200
_DIAL_CHARS = set(string.ascii_letters + string.digits + "+-_./@:#*,")


class OutboundRequest(BaseModel):
    """One outbound call as the user asks for it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    endpoint: str | None = Field(None, max_length=MAX_DIAL_STRING)
    number: str | None = Field(None, max_length=32, pattern=r"^\+?[0-9*#]{2,31}$")
    purpose: str = Field(min_length=3, max_length=4000)
    profile: str | None = Field(None, max_length=64)
    variables: dict[str, str] = Field(default_factory=dict, max_length=32)
    caller_id: str | None = Field(None, max_length=80)
    ring_timeout: int = Field(30, ge=5, le=180)
    max_duration: int | None = Field(None, ge=10, le=86_400)
    on_machine: OnMachine = "continue"
    machine_message: str | None = Field(None, max_length=2000)
    webhook_url: str | None = Field(None, max_length=2000, pattern=r"^https?://")

    @model_validator(mode="after")
    def _one_destination(self) -> OutboundRequest:
        if (self.endpoint is None) == (self.number is None):
            raise ValueError("give exactly one of endpoint (a dial string) or number")
        if self.on_machine == "leave_message" and not self.machine_message:
            raise ValueError("on_machine=leave_message needs machine_message (what to say)")
        return self

    @field_validator("endpoint")
    @classmethod
    def _dial_string(cls, value: str | None) -> str | None:
        if value is not None:
            check_dial_string(value)
        return value

    @field_validator("variables")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,31}", key):
                raise ValueError(f"variable name {key!r} must match [a-z_][a-z0-9_]{{0,31}}")
            if len(text) > 500:
                raise ValueError(f"variable {key!r} is longer than 500 characters")
        return value


def check_dial_string(value: str) -> None:
    """Refuse what cannot be an Asterisk dial string (``TECH/resource``).

    Raises:
        ValueError: the message says what is wrong.
    """
    tech, slash, rest = value.partition("/")
    if not slash or not tech.isalnum() or not rest:
        raise ValueError("must be a dial string such as PJSIP/1001 or PJSIP/+15551234567@trunk")
    bad = sorted(set(value) - _DIAL_CHARS)
    if bad:
        raise ValueError(f"contains characters a dial string does not use: {''.join(bad)!r}")


class OutboundPolicy:
    """What may be dialled: ``OUTBOUND_ALLOW``, ``OUTBOUND_TRUNK`` and the concurrency cap.

    Args:
        allow: the regular expressions (already validated at start-up).
        trunk: the dial string template for ``number`` (``{number}`` is replaced).
        max_concurrent: most outbound calls live at once (beyond it: refused).
    """

    def __init__(self, allow: list[str], trunk: str = "", max_concurrent: int = 4) -> None:
        self.patterns = [re.compile(p) for p in allow]
        self.trunk = trunk
        self.max_concurrent = max_concurrent

    @property
    def enabled(self) -> bool:
        """True when anything at all may be dialled."""
        return bool(self.patterns)

    def dial_string(self, request: OutboundRequest) -> str:
        """The dial string for ``request``, once it is allowed.

        Raises:
            OutboundRefused: outbound calling is off, or the destination is not allowed.
            OutboundInvalid: ``number`` without ``OUTBOUND_TRUNK``.
        """
        if not self.enabled:
            raise OutboundRefused(
                "outbound calling is off: set OUTBOUND_ALLOW to the destinations "
                "(regular expressions matching whole dial strings) the agent may call"
            )
        if request.endpoint is not None:
            dial = request.endpoint
        else:
            if not self.trunk:
                raise OutboundInvalid("number needs OUTBOUND_TRUNK (e.g. PJSIP/{number}@provider)")
            dial = self.trunk.replace("{number}", request.number or "")
        if not any(p.fullmatch(dial) for p in self.patterns):
            raise OutboundRefused(f"{dial} is not allowed by OUTBOUND_ALLOW; nothing was dialled")
        return dial


RingResult = Literal["answered", "no_answer", "busy", "congestion", "failed"]

#: Q.850 causes Asterisk reports for calls that never answered.
_CAUSES: dict[int, RingResult] = {
    17: "busy",  # user busy
    18: "no_answer",  # no user responding
    19: "no_answer",  # no answer from user (alerted): the ring timeout
    34: "congestion",  # no circuit/channel available
    38: "congestion",  # network out of order
    41: "congestion",  # temporary failure
    42: "congestion",  # switching equipment congestion
    44: "congestion",  # requested channel not available
}


def ring_result(cause: int, *, timed_out: bool = False) -> RingResult:
    """What an unanswered call's Q.850 ``cause`` means; ``timed_out``: our ring timeout hit.

    Asterisk reports 16 (normal clearing) or 0 for a ring timeout on some
    channel drivers, so our own timer has the last word.
    """
    if timed_out:
        return "no_answer"
    return _CAUSES.get(cause, "failed")


_RULES = """\
You are on a phone call you placed on behalf of a user. Your purpose:
{purpose}

How to get there:
- The call may first reach a phone menu or a recording. Listen to the whole menu before \
you choose, then press keys with the send_dtmf tool. Never say digits aloud to a menu.
- On hold, during music or recorded announcements, say nothing at all and wait.
- Speak only when a person talks to you. Say who you are calling for and why, briefly.
- Share only the details the purpose needs. Never make commitments or payments the \
purpose does not ask for.
- When you have achieved the purpose, or it cannot be achieved, or you reached a \
voicemail, say a short goodbye if a person is on the line and call report_outcome \
with the status, a one-sentence summary and any reference numbers or facts you were given.
"""


def outbound_instructions(purpose: str, variables: dict[str, Any]) -> str:
    """The agent's brief for an outbound call: the purpose, then the rules."""
    details = "\n".join(f"- {k}: {v}" for k, v in sorted(variables.items()))
    text = _RULES.format(purpose=purpose.strip())
    if details:
        text += "\nDetails from the user:\n" + details + "\n"
    return text


def report_outcome_tool() -> dict[str, Any]:
    """The ``report_outcome`` function declaration (outbound calls only)."""
    return {
        "type": "function",
        "name": "report_outcome",
        "description": (
            "Report what the call achieved and end it. Say goodbye first if a person "
            "is on the line; the call ends once your goodbye has played."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": list(RESULT_STATUSES)},
                "summary": {"type": "string", "description": "one sentence: what happened"},
                "data": {
                    "type": "object",
                    "description": "facts you were given, e.g. a reference number",
                    "additionalProperties": {"type": "string"},
                },
            },
            "required": ["status", "summary"],
        },
    }
