"""A call's timeline as a picture: who spoke when, barge-ins, tools, turn latency (pure).

:func:`timeline_svg` draws a :class:`~controller.records.CallRecord` as a
standalone SVG: one lane for the caller's speech and one for the agent's
(from the transcript's offsets), tool calls and keys as marks on their own
lane, barge-ins in red, and each turn's latency (caller stopped -> first
frame sent) written over the gap it measures. No fonts or scripts are
loaded from anywhere; every text is escaped.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from controller.records import CallRecord

WIDTH = 960
LANE = 34
LEFT = 70
TOP = 24


def _x(ms: float, span_ms: float) -> float:
    return LEFT + (WIDTH - LEFT - 16) * (ms / span_ms if span_ms else 0.0)


def timeline_svg(record: CallRecord) -> str:
    """The record's timeline as an SVG document."""
    ends = [e.end_ms or e.start_ms for e in record.transcript]
    ends += [t.started_ms + (t.duration_ms or 0) for t in record.tool_calls]
    if record.ended_at is not None:
        ends.append(int((record.ended_at - record.started_at).total_seconds() * 1000))
    span = max([1000, *ends])
    lanes = {"caller": TOP, "agent": TOP + LANE, "tools": TOP + 2 * LANE}
    height = TOP + 3 * LANE + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>',
        f'<text x="8" y="14" font-weight="bold">call {escape(record.id)} '
        f"({escape(record.direction)}, {escape(record.outcome or record.status)})</text>",
    ]
    for name, y in lanes.items():
        out.append(f'<text x="8" y="{y + 20}">{name}</text>')
        out.append(
            f'<line x1="{LEFT}" y1="{y + 30}" x2="{WIDTH - 16}" y2="{y + 30}" stroke="#ddd"/>'
        )
    for line in record.transcript:
        x0 = _x(line.start_ms, span)
        x1 = max(x0 + 3, _x(line.end_ms if line.end_ms is not None else line.start_ms + 300, span))
        y = lanes[line.role]
        colour = "#4a7bd0" if line.role == "agent" else "#3aa56a"
        out.append(
            f'<rect x="{x0:.1f}" y="{y + 8}" width="{x1 - x0:.1f}" height="18" rx="3" '
            f'fill="{colour}" opacity="0.8"><title>{escape(line.text)}</title></rect>'
        )
    for tool in record.tool_calls:
        x = _x(tool.started_ms, span)
        colour = "#c0392b" if tool.refused else "#8e44ad"
        y = lanes["tools"]
        out.append(
            f'<circle cx="{x:.1f}" cy="{y + 17}" r="5" fill="{colour}">'
            f"<title>{escape(tool.name)}</title></circle>"
            f'<text x="{x + 7:.1f}" y="{y + 21}">{escape(tool.name)}</text>'
        )
    for keys in record.dtmf:
        x = _x(keys.at_ms, span)
        y = lanes["caller" if keys.direction == "caller" else "agent"]
        out.append(f'<text x="{x:.1f}" y="{y + 6}" fill="#555">#{escape(keys.digits)}</text>')
    for turn in record.turns:
        if turn.caller_stopped_ms is None or turn.first_frame_latency_ms is None:
            continue
        x0 = _x(turn.caller_stopped_ms, span)
        x1 = _x(turn.caller_stopped_ms + turn.first_frame_latency_ms, span)
        y = lanes["agent"] + 30
        out.append(
            f'<line x1="{x0:.1f}" y1="{y}" x2="{x1:.1f}" y2="{y}" stroke="#e67e22" '
            f'stroke-width="2"/><text x="{x0:.1f}" y="{y + 12}" fill="#e67e22">'
            f"{turn.first_frame_latency_ms} ms</text>"
        )
        if turn.barge_in:
            out.append(
                f'<text x="{x1:.1f}" y="{lanes["agent"] + 6}" fill="#c0392b">barge-in</text>'
            )
    seconds = int(span // 1000)
    step = max(1, seconds // 10)
    for s in range(0, seconds + 1, step):
        x = _x(s * 1000, span)
        out.append(f'<text x="{x:.1f}" y="{height - 8}" fill="#777">{s}s</text>')
    out.append("</svg>")
    return "\n".join(out)
