"""The timeline picture of a call record is well-formed SVG showing what happened."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from controller.records import CallRecord, ToolCallEntry, TranscriptEntry, TurnEntry
from controller.timeline import timeline_svg

SVG = "{http://www.w3.org/2000/svg}"


def test_the_timeline_draws_speech_tools_and_latency_and_escapes_text() -> None:
    start = dt.datetime(2026, 11, 29, 10, 42, tzinfo=dt.UTC)
    record = CallRecord(
        id="c1",
        started_at=start,
        ended_at=start + dt.timedelta(seconds=12),
        outcome="caller_hung_up",
        transcript=[
            TranscriptEntry(
                role="caller", text="<script>alert(1)</script>", start_ms=1000, end_ms=4000
            ),
            TranscriptEntry(role="agent", text="Hello & welcome", start_ms=4600, end_ms=8000),
        ],
        tool_calls=[ToolCallEntry(call_id="x", name="send_dtmf", started_ms=9000, refused=True)],
        turns=[
            TurnEntry(
                index=0,
                response_id="r",
                caller_stopped_ms=4000,
                first_frame_latency_ms=600,
                barge_in=True,
            )
        ],
    )
    svg = timeline_svg(record)
    root = ET.fromstring(svg)  # well-formed, whatever the caller said
    titles = [t.text for t in root.iter(f"{SVG}title")]
    assert titles == ["<script>alert(1)</script>", "Hello & welcome", "send_dtmf"]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "600 ms" in texts and "barge-in" in texts and "12s" in texts
    assert "<script>" not in svg
