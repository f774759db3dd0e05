"""The live view in a real headless Chromium: log in, watch a call as it is spoken.

The page is served by the real server; the call's events are published
through the LiveHub while the page is open, and the test reads the page's
DOM. A screenshot is saved to ``tests/artifacts/live-view.png`` (the
README's ``docs/live-view.png`` is a copy of one).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from controller.devtools.rig.wait import wait_for
from controller.records import MediaCounters, ToolCallEntry, TranscriptEntry, TurnEntry
from tests.http.conftest import TOKEN, Stack, make_record
from tests.http.webdriver import Browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

TRANSCRIPT_JS = (
    "return Array.from(document.querySelectorAll('#transcript li'))"
    ".map(li => li.querySelector('.role').textContent + ': ' + "
    "li.querySelector('.text').textContent);"
)

# The call, as the call shell would report it: (kind, data) in order.
CONVERSATION: list[tuple[Any, dict[str, Any]]] = [
    ("state", {"state": "talking"}),
    (
        "transcript",
        {"role": "agent", "text": "Hello, Bakery Miller, how can I help?", "start_ms": 400},
    ),
    (
        "transcript",
        {
            "role": "caller",
            "text": "Hi! When do you open tomorrow?",
            "start_ms": 3300,
            "end_ms": 5200,
        },
    ),
    (
        "turn",
        {
            "index": 1,
            "response_id": "resp_1",
            "caller_stopped_ms": 5200,
            "response_latency_ms": 180,
            "first_audio_latency_ms": 460,
            "first_frame_latency_ms": 610,
        },
    ),
    (
        "transcript",
        {
            "role": "agent",
            "text": "We open at seven. Would you like me to put an order aside for you?",
            "start_ms": 5810,
            "end_ms": 9500,
        },
    ),
    (
        "transcript",
        {"role": "caller", "text": "Yes, order 4711 please.", "start_ms": 8300, "end_ms": 9900},
    ),
    (
        "turn",
        {
            "index": 1,
            "response_id": "resp_1",
            "caller_stopped_ms": 5200,
            "response_latency_ms": 180,
            "first_audio_latency_ms": 460,
            "first_frame_latency_ms": 610,
            "barge_in": True,
            "barge_in_stop_latency_ms": 40,
        },
    ),
    (
        "tool_call",
        {
            "call_id": "fc_1",
            "name": "lookup_order",
            "arguments": {"number": "4711"},
            "started_ms": 10650,
        },
    ),
    (
        "tool_call",
        {
            "call_id": "fc_1",
            "name": "lookup_order",
            "arguments": {"number": "4711"},
            "result": '{"status": "ready"}',
            "started_ms": 10650,
            "duration_ms": 820,
        },
    ),
    (
        "turn",
        {
            "index": 2,
            "response_id": "resp_2",
            "caller_stopped_ms": 9900,
            "response_latency_ms": 210,
            "first_audio_latency_ms": 520,
            "first_frame_latency_ms": 700,
        },
    ),
    (
        "transcript",
        {
            "role": "agent",
            "text": "Order 4711 is ready for you at seven.",
            "start_ms": 11600,
            "end_ms": 14000,
        },
    ),
    ("dtmf", {"direction": "caller", "digits": "1", "at_ms": 15200}),
    (
        "transcript",
        {"role": "caller", "text": "Great, thank you. Bye!", "start_ms": 16200, "end_ms": 17600},
    ),
    (
        "turn",
        {
            "index": 3,
            "response_id": "resp_3",
            "caller_stopped_ms": 17600,
            "response_latency_ms": 170,
            "first_audio_latency_ms": 430,
            "first_frame_latency_ms": 590,
        },
    ),
    ("transcript", {"role": "agent", "text": "Goodbye, see you tomorrow!", "start_ms": 18190}),
]


def _history(stack: Stack) -> None:
    """A few finished calls, so the list looks like a working day."""
    now = dt.datetime.now(dt.UTC)
    for i, (number, outcome, seconds) in enumerate(
        [
            ("+49 30 5550142", "caller_hung_up", 74),
            ("+49 171 5550199", "agent_hung_up", 41),
            ("+49 89 5550123", "transferred", 128),
        ]
    ):
        started = now - dt.timedelta(minutes=12 * (i + 1))
        record = make_record(
            f"done{i}", caller_number=number, started_at=started, answered_at=started
        )
        stack.start(record)
        stack.end(
            record,
            outcome=outcome,
            ended_at=started + dt.timedelta(seconds=seconds),
            turns=[TurnEntry(index=0, response_id="r", first_frame_latency_ms=640)],
            transcript=[TranscriptEntry(role="caller", text="Hello?", start_ms=500)],
            tool_calls=[ToolCallEntry(call_id="x", name="transfer", started_ms=9000)]
            if outcome == "transferred"
            else [],
            media=MediaCounters(rtp_received=3000),
        )


async def test_the_live_view_shows_a_call_as_it_is_spoken(make_stack, tmp_path: Path) -> None:
    async with make_stack(token=TOKEN) as stack, Browser.launch(tmp_path) as browser:
        _history(stack)
        # With a token the page first asks for it, once.
        await browser.open(stack.url + "/")
        assert await browser.run("return location.pathname;") == "/login"
        await browser.run(
            "document.querySelector('input[name=token]').value = arguments[0];"
            "document.querySelector('form').submit();",
            TOKEN,
        )
        await browser.wait_for(
            "return location.pathname === '/' && document.querySelectorAll("
            "'#recent-list li').length === 3;",
            what="the page with three recent calls",
        )

        # A call comes in while the page is open: it is listed as active.
        started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=19)
        call = make_record(
            "live-7f3a",
            caller_number="+49 30 5550187",
            dialled_number="100",
            profile="bakery",
            model="gpt-realtime",
            started_at=started,
            answered_at=started,
        )
        stack.start(call)
        await browser.wait_for(
            "return document.querySelector('#active-list li[data-call-id=\"live-7f3a\"]');",
            what="the live call in the list",
        )
        await browser.run(
            "document.querySelector('#active-list li[data-call-id=\"live-7f3a\"]').click();"
        )
        await wait_for(lambda: stack.hub.subscriber_count("live-7f3a") == 1, 10, what="the page")

        # Each line appears in the page as it is published.
        expected: list[str] = []
        for kind, data in CONVERSATION:
            stack.observers.call_event("live-7f3a", kind, data)
            if kind == "transcript":
                expected.append(f"{data['role']}: {data['text']}")
            if kind in ("transcript", "dtmf", "tool_call"):
                shown = await browser.wait_for(
                    f"const lines = (() => {{ {TRANSCRIPT_JS} }})();"
                    "return lines.length && lines.some(l => l.includes(arguments[0])) && lines;",
                    data.get("text") or data.get("digits") or data.get("name"),
                    what=f"{kind} {data}",
                )
        assert [line for line in shown if line.split(": ")[0] in ("caller", "agent")] == expected
        assert 'tool: lookup_order({"number":"4711"}) \u2192 ok {"status": "ready"}' in shown
        assert "keys: caller: 1" in shown

        # The timeline: both sides' speech, the tool call, the barge-in, each turn's wait.
        drawn = await browser.run(
            "const svg = document.getElementById('timeline');"
            "const texts = cls => Array.from(svg.querySelectorAll(cls)).map(e => e.textContent);"
            "return {caller: svg.querySelectorAll('rect.seg-caller').length,"
            " agent: svg.querySelectorAll('rect.seg-agent').length,"
            " tools: svg.querySelectorAll('rect.seg-tool').length,"
            " bargein: texts('.bargein-label'), latency: texts('.latency-label'),"
            " state: document.getElementById('call-state').textContent,"
            " title: document.getElementById('call-title').textContent};"
        )
        assert drawn == {
            "caller": 3,
            "agent": 4,
            "tools": 1,
            "bargein": ["barge-in"],
            "latency": ["610 ms", "700 ms", "590 ms"],
            "state": "talking",
            "title": "+49 30 5550187 \u2192 100",
        }
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "live-view.png").write_bytes(await browser.screenshot())

        # The call ends: the page shows the final record and stops listening.
        stack.end(call, outcome="agent_hung_up", ended_at=started + dt.timedelta(seconds=21))
        await browser.wait_for(
            "return document.getElementById('call-state').textContent === 'ended' && "
            "document.getElementById('hangup').hidden;",
            what="the ended call",
        )
        await wait_for(lambda: stack.hub.subscriber_count("live-7f3a") == 0, 5)
        problems = [e for e in await browser.console() if e.get("level") == "SEVERE"]
        assert problems == []  # no script error, nothing the CSP blocked
