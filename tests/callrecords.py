"""Call records for tests, with every field filled, and raw access to a store's tables."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import asyncpg

from controller.records import (
    CallRecord,
    DtmfEntry,
    MediaCounters,
    ToolCallEntry,
    TranscriptEntry,
    TurnEntry,
    UsageTotals,
)
from controller.store import resolve_database_url

T0 = dt.datetime(2026, 11, 20, 9, 0, 0, 123456, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    """``T0`` plus ``seconds``."""
    return T0 + dt.timedelta(seconds=seconds)


def live_record(call_id: str, started: dt.datetime = T0, **fields: Any) -> CallRecord:
    """A record as ``call_started`` hands it over: answered, nothing said yet."""
    values: dict[str, Any] = {
        "id": call_id,
        "direction": "inbound",
        "status": "live",
        "controller_id": "pbx1/voicebot",
        "caller_number": "+4930123456",
        "caller_name": "Alice Example",
        "dialled_number": "100",
        "profile": "sales",
        "model": "gpt-realtime",
        "caller_channel_id": f"chan-{call_id}",
        "bridge_id": f"bridge-{call_id}",
        "external_channel_id": f"ext-{call_id}",
        "started_at": started,
        "answered_at": started + dt.timedelta(milliseconds=250),
    }
    values.update(fields)
    return CallRecord(**values)


def ended_record(call_id: str, started: dt.datetime = T0, **fields: Any) -> CallRecord:
    """A complete record as ``call_ended`` hands it over, every part filled."""
    values: dict[str, Any] = {
        "status": "ended",
        "ended_at": started + dt.timedelta(seconds=72, milliseconds=500),
        "outcome": "agent_hung_up",
        "end_reason": "caller said goodbye",
        "transcript": [
            TranscriptEntry(role="agent", text="Hello, sales speaking.", start_ms=300, end_ms=1900),
            TranscriptEntry(role="caller", text="When do you open? Grüße 👋", start_ms=2500),
        ],
        "tool_calls": [
            ToolCallEntry(
                call_id="fc_1",
                name="lookup_order",
                arguments={"number": "A-17", "nested": {"ok": True, "n": [1, 2]}},
                result='{"status": "shipped"}',
                started_ms=5000,
                duration_ms=120,
            ),
            ToolCallEntry(call_id="fc_2", name="transfer", refused=True, started_ms=9000),
        ],
        "dtmf": [DtmfEntry(direction="caller", digits="1234#", at_ms=3000)],
        "turns": [
            TurnEntry(
                index=1,
                response_id="resp_1",
                caller_stopped_ms=4000,
                caller_last_loud_ms=3900,
                response_latency_ms=310,
                first_audio_latency_ms=420,
                first_frame_latency_ms=440,
                barge_in=True,
                barge_in_stop_latency_ms=35,
            )
        ],
        "media": MediaCounters(rtp_received=3600, rtp_lost=2, played_frames=1800, truncations=1),
        "usage": UsageTotals(
            input_audio_tokens=1000,
            input_text_tokens=500,
            input_cached_tokens=300,
            output_audio_tokens=2000,
            output_text_tokens=100,
        ),
        "cost_usd": 0.1523,
    }
    values.update(fields)
    return live_record(call_id, started, **values)


async def raw_rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` run on the store's database directly (placeholders: ``$1`` style)."""
    target = resolve_database_url(url)
    if target.kind == "sqlite":
        conn = sqlite3.connect(str(target.path))
        try:
            qmarks = sql
            for n in range(len(args), 0, -1):
                qmarks = qmarks.replace(f"${n}", "?")
            return [tuple(r) for r in conn.execute(qmarks, args).fetchall()]
        finally:
            conn.commit()
            conn.close()
    pg = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await pg.fetch(sql, *args)]
    finally:
        await pg.close()
