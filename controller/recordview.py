"""Call records as text for ``ari-realtime calls`` (pure).

:func:`list_lines` is the one-line-per-call table, :func:`show_lines` one
call in full. Times are UTC; offsets inside a call are ``+M:SS.t`` from its
start. Cost is the record's own ``cost_usd``; when a record has usage but no
cost (written before prices were known), it is estimated now from the
price table and marked ``~``; ``?`` marks a model the table does not price.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from controller.pricing import PriceTable
from controller.records import CallRecord

LIST_HEADER = (
    "started (UTC)",
    "id",
    "direction",
    "caller",
    "dialled",
    "duration",
    "outcome",
    "cost",
)


def when(moment: dt.datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC (a naive time is taken as UTC), or ``-``."""
    if moment is None:
        return "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def duration(record: CallRecord) -> str:
    """``M:SS`` from start to end, or ``live``."""
    if record.ended_at is None:
        return "live"
    seconds = max(0, round((record.ended_at - record.started_at).total_seconds()))
    return f"{seconds // 60}:{seconds % 60:02d}"


def offset(ms: int | None) -> str:
    """An offset into the call, ``+M:SS.t``, or ``?``."""
    if ms is None:
        return "?"
    tenths = max(ms, 0) // 100
    return f"+{tenths // 600}:{tenths // 10 % 60:02d}.{tenths % 10}"


def _ms(value: int | None) -> str:
    return "?" if value is None else f"{value} ms"


def cost(record: CallRecord, prices: PriceTable) -> str:
    """``$0.0123``; ``~$0.0123`` when estimated now; ``?`` when the model has no price."""
    usage = record.usage
    tokens = (
        usage.input_audio_tokens
        + usage.input_text_tokens
        + usage.output_audio_tokens
        + usage.output_text_tokens
    )
    if record.cost_usd or not tokens:
        return f"${record.cost_usd:.4f}"
    estimate = prices.estimate(record.model, usage)
    return f"~${estimate.usd:.4f}" if estimate.priced else "?"


def _outcome(record: CallRecord) -> str:
    return record.outcome or ("live" if record.status == "live" else "-")


def _footnote(costs: list[str], prices: PriceTable) -> list[str]:
    if any(c.startswith(("~", "?")) for c in costs):
        return [f"~ estimated with the prices of {prices.source}; ? the model has no price"]
    return []


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def list_lines(records: list[CallRecord], prices: PriceTable) -> list[str]:
    """The calls table, a header line first; ``no calls`` when there are none."""
    if not records:
        return ["no calls"]
    costs = [cost(r, prices) for r in records]
    rows = [LIST_HEADER] + [
        (
            when(r.started_at),
            r.id,
            r.direction,
            r.caller_number or "-",
            r.dialled_number or "-",
            duration(r),
            _outcome(r),
            c,
        )
        for r, c in zip(records, costs, strict=True)
    ]
    return table(rows) + _footnote(costs, prices)


def show_lines(r: CallRecord, prices: PriceTable) -> list[str]:
    """One call: header fields, transcript, turns with latencies, tool calls, DTMF."""
    caller = r.caller_number or "-"
    if r.caller_name:
        caller += f" ({r.caller_name})"
    outcome = _outcome(r) + (f": {r.end_reason}" if r.end_reason else "")
    u, m = r.usage, r.media
    call_cost = cost(r, prices)
    header = [
        ("call", r.id),
        ("direction", r.direction),
        ("status", r.status),
        ("outcome", outcome),
        ("caller", caller),
        ("dialled", r.dialled_number or "-"),
        ("profile", r.profile or "-"),
        ("model", r.model or "-"),
        ("controller", r.controller_id or "-"),
        ("started", f"{when(r.started_at)} UTC"),
        ("answered", when(r.answered_at)),
        ("ended", when(r.ended_at)),
        ("duration", duration(r)),
        (
            "cost",
            f"{call_cost} (tokens: audio in {u.input_audio_tokens}, text in "
            f"{u.input_text_tokens}, cached in {u.input_cached_tokens}, audio out "
            f"{u.output_audio_tokens}, text out {u.output_text_tokens})",
        ),
        (
            "media",
            f"rtp received {m.rtp_received}, lost {m.rtp_lost}, late {m.rtp_late}, "
            f"foreign {m.rtp_foreign}; frames played {m.played_frames}, filled "
            f"{m.filled_frames}; truncations {m.truncations}, underruns {m.playout_underruns}",
        ),
    ]
    width = max(len(k) for k, _ in header)
    lines = [f"{k.ljust(width)}  {v}" for k, v in header]

    lines += ["", "transcript"]
    lines += [f"  {offset(t.start_ms)}  {t.role:<6}  {t.text}".rstrip() for t in r.transcript]
    lines += [] if r.transcript else ["  (none)"]

    lines += ["", "turns"]
    for t in r.turns:
        line = (
            f"  #{t.index}  caller stopped {offset(t.caller_stopped_ms)}  response "
            f"{_ms(t.response_latency_ms)}, first audio {_ms(t.first_audio_latency_ms)}, "
            f"first frame {_ms(t.first_frame_latency_ms)}"
        )
        if t.barge_in:
            line += f"; barge-in, agent stopped in {_ms(t.barge_in_stop_latency_ms)}"
        lines.append(line)
    lines += [] if r.turns else ["  (none)"]

    lines += ["", "tool calls"]
    for c in r.tool_calls:
        arguments = json.dumps(c.arguments, ensure_ascii=False)
        status = "refused" if c.refused else "ok"
        line = f"  {offset(c.started_ms)}  {c.name} {arguments}  {status} ({_ms(c.duration_ms)})"
        lines.append(f"{line}: {c.result}" if c.result else line)
    lines += [] if r.tool_calls else ["  (none)"]

    if r.dtmf:
        lines += ["", "dtmf"]
        lines += [f"  {offset(d.at_ms)}  {d.direction:<6}  {d.digits}".rstrip() for d in r.dtmf]
    footnote = _footnote([call_cost], prices)
    return lines + ([""] + footnote if footnote else [])
