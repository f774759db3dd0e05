"""Build a call's :class:`~controller.records.CallRecord` from what the call knows (pure).

The conversation core keeps seconds since the call started; the record
keeps UTC datetimes for the call's start, answer and end, and integer
milliseconds from the start for everything inside the call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from controller.call.conversation import Conversation, Keys, ToolCall, TranscriptLine, Turn
from controller.call.state import Ending
from controller.media.call_media import MediaSummary
from controller.records import (
    CallRecord,
    Direction,
    DtmfEntry,
    MediaCounters,
    ToolCallEntry,
    TranscriptEntry,
    TurnEntry,
    UsageTotals,
)


@dataclass(frozen=True)
class CallFacts:
    """Who and what a call is, fixed when it starts."""

    call_id: str
    direction: Direction
    started_at: dt.datetime
    controller_id: str = ""
    caller_number: str = ""
    caller_name: str = ""
    dialled_number: str = ""
    profile: str = ""
    model: str = ""
    caller_channel_id: str = ""
    bridge_id: str = ""
    external_channel_id: str = ""
    purpose: str = ""


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def turn_entry(turn: Turn) -> TurnEntry:
    """A turn as the record keeps it."""
    return TurnEntry(
        index=turn.index,
        response_id=turn.response_id,
        caller_stopped_ms=_ms(turn.caller_stopped),
        response_latency_ms=_ms(turn.latency(turn.created)),
        first_audio_latency_ms=_ms(turn.latency(turn.first_audio)),
        first_frame_latency_ms=_ms(turn.latency(turn.first_frame)),
        barge_in=turn.barge_in,
        barge_in_stop_latency_ms=_ms(turn.barge_in_stop_latency),
    )


def transcript_entry(line: TranscriptLine) -> TranscriptEntry:
    """A transcript line as the record keeps it."""
    return TranscriptEntry(
        role="agent" if line.role == "agent" else "caller",
        text=line.text,
        start_ms=round(line.at * 1000),
        end_ms=_ms(line.end),
    )


def tool_call_entry(call: ToolCall, call_started: float) -> ToolCallEntry:
    """A tool call as the record keeps it (``call_started``: the call's start, same clock)."""
    return ToolCallEntry(
        call_id=call.call_id,
        name=call.name,
        arguments=call.arguments,
        result=call.result,
        refused=call.refused,
        started_ms=round((call.started - call_started) * 1000),
        duration_ms=None if call.finished is None else round((call.finished - call.started) * 1000),
    )


def dtmf_entry(keys: Keys) -> DtmfEntry:
    """Keys pressed, as the record keeps them."""
    return DtmfEntry(
        direction="agent" if keys.direction == "agent" else "caller",
        digits=keys.digits,
        at_ms=round(keys.at * 1000),
    )


def media_counters(summary: MediaSummary) -> MediaCounters:
    """The media summary as the record keeps it."""
    return MediaCounters(
        rtp_received=summary.rx_received,
        rtp_lost=summary.rx_lost,
        rtp_late=summary.rx_late,
        rtp_foreign=summary.rx_foreign,
        filled_frames=summary.gap_frames,
        played_frames=summary.played_frames,
        playout_underruns=summary.underruns,
    )


def build_record(
    facts: CallFacts,
    conversation: Conversation | None,
    *,
    answered_at: dt.datetime | None = None,
    ended_at: dt.datetime | None = None,
    ending: Ending | None = None,
    media: MediaSummary | None = None,
    cost: Callable[[str, UsageTotals], float] | None = None,
) -> CallRecord:
    """The record of a call so far (``ended_at``/``ending`` set: the final one).

    ``cost`` prices the conversation's usage for ``facts.model``.
    """
    record = CallRecord(
        id=facts.call_id,
        direction=facts.direction,
        status="ended" if ended_at is not None else "live",
        controller_id=facts.controller_id,
        caller_number=facts.caller_number,
        caller_name=facts.caller_name,
        dialled_number=facts.dialled_number,
        profile=facts.profile,
        model=facts.model,
        caller_channel_id=facts.caller_channel_id,
        bridge_id=facts.bridge_id,
        external_channel_id=facts.external_channel_id,
        purpose=facts.purpose,
        started_at=facts.started_at,
        answered_at=answered_at,
        ended_at=ended_at,
        outcome=ending.outcome.value if ending else None,
        end_reason=ending.reason if ending else "",
        media=media_counters(media) if media is not None else MediaCounters(),
    )
    if conversation is None:
        return record
    record.transcript = [transcript_entry(line) for line in conversation.transcript]
    record.tool_calls = [tool_call_entry(c, conversation.started) for c in conversation.tool_calls]
    record.dtmf = [dtmf_entry(keys) for keys in conversation.keys]
    record.turns = [turn_entry(turn) for turn in conversation.turns]
    usage = conversation.usage
    record.usage = UsageTotals(
        input_audio_tokens=usage.input_audio_tokens,
        input_text_tokens=usage.input_text_tokens,
        input_cached_tokens=usage.input_cached_tokens,
        output_audio_tokens=usage.output_audio_tokens,
        output_text_tokens=usage.output_text_tokens,
    )
    if cost is not None:
        record.cost_usd = round(cost(facts.model, record.usage), 6)
    record.media.truncations = conversation.truncations
    if facts.direction == "outbound":
        result = conversation.result
        if result is not None:
            record.result_status = result.status
            record.result_summary = result.summary
            record.result_data = dict(result.data)
        elif ended_at is not None:
            record.result_status = "unknown"
            record.result_summary = ending.reason if ending else ""
    return record
