"""What a call leaves behind: the call record, and the observers that receive it (pure).

One :class:`CallRecord` per call, inbound or outbound. The call shell
builds it as the call goes (:mod:`controller.call.call`) and hands it to a
:class:`CallObserver` three ways:

* :meth:`CallObserver.call_started` once the call is answered (so a crash
  still leaves a trace in the store);
* :meth:`CallObserver.call_event` for each thing worth watching live
  (a transcript line, a turn, a tool call, DTMF);
* :meth:`CallObserver.call_ended` once everything is released, with the
  complete record.

Observers must never block or raise into the call: they queue work (the
store's writer, server-sent events, the webhook) or update counters.
:class:`Observers` fans one call out to several.

Times: ``started_at``/``answered_at``/``ended_at`` are UTC datetimes;
everything inside the call (transcript, turns, tools, DTMF) is an offset in
milliseconds from ``started_at``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("controller.records")

Direction = Literal["inbound", "outbound"]
#: What ``outcome`` may say; ``controller_crashed`` is written at start-up
#: for records a crashed controller left open.
OUTCOMES = (
    "caller_hung_up",
    "agent_hung_up",
    "transferred",
    "handed_back",
    "operator_hung_up",
    "not_answered",
    "failed",
    "controller_crashed",
)


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TranscriptEntry(_Part):
    """One utterance."""

    role: Literal["caller", "agent"]
    text: str
    start_ms: int
    end_ms: int | None = None


class ToolCallEntry(_Part):
    """One function call of the model."""

    call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: str = ""
    refused: bool = False
    started_ms: int
    duration_ms: int | None = None


class DtmfEntry(_Part):
    """Keys pressed: by the caller, or sent by the agent."""

    direction: Literal["caller", "agent"]
    digits: str
    at_ms: int


class TurnEntry(_Part):
    """One agent turn: how long the caller waited for it (all ``None`` when unknown).

    Latencies count from the caller's end of speech as the model heard it
    (``speech_stopped``): to ``response.created``, to the first audio delta
    received, and to the first audio frame sent to Asterisk (what the caller
    feels, less the PBX's own delay). ``barge_in_stop_latency_ms`` is from
    the caller's ``speech_started`` to the agent's last frame, when the
    caller talked over this turn.
    """

    index: int
    response_id: str
    caller_stopped_ms: int | None = None
    caller_last_loud_ms: int | None = None
    response_latency_ms: int | None = None
    first_audio_latency_ms: int | None = None
    first_frame_latency_ms: int | None = None
    barge_in: bool = False
    barge_in_stop_latency_ms: int | None = None


class MediaCounters(_Part):
    """The call's RTP and playout counters."""

    rtp_received: int = 0
    rtp_lost: int = 0
    rtp_late: int = 0
    rtp_foreign: int = 0
    filled_frames: int = 0
    played_frames: int = 0
    truncations: int = 0
    playout_underruns: int = 0


class UsageTotals(_Part):
    """Model usage summed over the call's responses (``response.done`` usage).

    As in the API, cached input tokens are part of the input counts, not in
    addition to them. ``input_cached_audio_tokens`` and
    ``input_cached_text_tokens`` (``cached_tokens_details``) split
    ``input_cached_tokens`` when known; both 0 means unknown.
    """

    input_audio_tokens: int = 0
    input_text_tokens: int = 0
    input_cached_tokens: int = 0
    output_audio_tokens: int = 0
    output_text_tokens: int = 0
    input_cached_audio_tokens: int = 0
    input_cached_text_tokens: int = 0


class CallRecord(_Part):
    """Everything about one call."""

    id: str
    direction: Direction = "inbound"
    status: Literal["live", "ended"] = "live"
    controller_id: str = ""
    caller_number: str = ""
    caller_name: str = ""
    dialled_number: str = ""
    profile: str = ""
    model: str = ""
    caller_channel_id: str = ""
    bridge_id: str = ""
    external_channel_id: str = ""
    started_at: dt.datetime
    answered_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    outcome: str | None = None
    end_reason: str = ""
    transcript: list[TranscriptEntry] = Field(default_factory=list)
    tool_calls: list[ToolCallEntry] = Field(default_factory=list)
    dtmf: list[DtmfEntry] = Field(default_factory=list)
    turns: list[TurnEntry] = Field(default_factory=list)
    media: MediaCounters = MediaCounters()
    usage: UsageTotals = UsageTotals()
    cost_usd: float = 0.0
    #: Outbound: what the agent was asked to achieve, and what it reported
    #: (``unknown`` when the call ended without ``report_outcome``).
    purpose: str = ""
    result_status: str | None = None
    result_summary: str = ""
    result_data: dict[str, str] = Field(default_factory=dict)
    #: Outbound: how the ringing ended (answered, no_answer, busy, congestion,
    #: failed), the Q.850 cause when it did not answer, and AMD()'s verdict.
    ring_result: str | None = None
    hangup_cause: int | None = None
    machine: str = ""


LiveEventKind = Literal["transcript", "turn", "tool_call", "dtmf", "state"]


class CallObserver(Protocol):
    """Receives a call's record as it goes. Must not block or raise."""

    def call_started(self, record: CallRecord) -> None:
        """The call was answered."""

    def call_event(self, call_id: str, kind: LiveEventKind, data: dict[str, Any]) -> None:
        """Something worth watching live happened on the call."""

    def call_ended(self, record: CallRecord) -> None:
        """The call is over and released; ``record`` is complete."""


class Observers:
    """Fans a call out to several observers; one failing never stops the others."""

    def __init__(self, observers: Iterable[CallObserver] = ()) -> None:
        self.observers = list(observers)

    def add(self, observer: CallObserver) -> None:
        """Add an observer."""
        self.observers.append(observer)

    def call_started(self, record: CallRecord) -> None:
        """See :meth:`CallObserver.call_started`."""
        for observer in self.observers:
            try:
                observer.call_started(record)
            except Exception:
                log.exception("call observer failed (started)")

    def call_event(self, call_id: str, kind: LiveEventKind, data: dict[str, Any]) -> None:
        """See :meth:`CallObserver.call_event`."""
        for observer in self.observers:
            try:
                observer.call_event(call_id, kind, data)
            except Exception:
                log.exception("call observer failed (event)")

    def call_ended(self, record: CallRecord) -> None:
        """See :meth:`CallObserver.call_ended`."""
        for observer in self.observers:
            try:
                observer.call_ended(record)
            except Exception:
                log.exception("call observer failed (ended)")


class RecordSource(Protocol):
    """Where finished and live records are read from (the store implements it)."""

    async def get(self, call_id: str) -> CallRecord | None:
        """One record, or None when the id is unknown."""

    async def list(
        self,
        *,
        limit: int = 50,
        before: dt.datetime | None = None,
        direction: Direction | None = None,
        outcome: str | None = None,
    ) -> list[CallRecord]:
        """Records newest first (by ``started_at``), optionally filtered."""

    async def ping(self) -> bool:
        """True when the store answers."""
