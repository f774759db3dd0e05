"""Server-sent events of a live call, over real HTTP, and the hub's bounded fan-out."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from controller.devtools.rig.wait import wait_for
from controller.http import LiveHub
from controller.records import CallRecord, TranscriptEntry
from tests.http.conftest import Stack, make_record, sse_events

EVENTS: list[tuple[Any, dict[str, Any]]] = [
    ("state", {"state": "talking"}),
    ("transcript", {"role": "caller", "text": "When do you open?", "start_ms": 1200}),
    (
        "turn",
        {
            "index": 0,
            "response_id": "resp_1",
            "caller_stopped_ms": 2400,
            "first_frame_latency_ms": 610,
        },
    ),
    ("transcript", {"role": "agent", "text": "At nine.", "start_ms": 3010}),
    (
        "tool_call",
        {"call_id": "fc_1", "name": "send_dtmf", "arguments": {"digits": "1"}, "started_ms": 4000},
    ),
    ("dtmf", {"direction": "agent", "digits": "1", "at_ms": 4010}),
]


async def _until_subscribed(stack: Stack, call_id: str, count: int = 1) -> None:
    await wait_for(lambda: stack.hub.subscriber_count(call_id) == count, 5, what="subscription")


async def test_a_live_call_streams_its_events_in_order_then_end_and_close(stack: Stack) -> None:
    record = stack.start(make_record("c1"))
    stack.observers.call_event("c1", "transcript", {"role": "caller", "text": "Hi", "start_ms": 0})
    async with stack.http.get("/calls/c1/events") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        events = sse_events(resp)
        kind, snapshot = await anext(events)
        # The call so far comes first: nothing said before the page opened is missed.
        assert kind == "record"
        assert snapshot["id"] == "c1" and snapshot["status"] == "live"
        assert [t["text"] for t in snapshot["transcript"]] == ["Hi"]
        for kind, data in EVENTS:
            stack.observers.call_event("c1", kind, data)
        final = stack.end(
            record,
            outcome="caller_hung_up",
            transcript=[TranscriptEntry(role="caller", text="When do you open?", start_ms=1200)],
        )
        received = [event async for event in events]  # ends when the server closes
    assert received == [*EVENTS, ("end", final.model_dump(mode="json"))]
    await wait_for(lambda: stack.hub.subscriber_count("c1") == 0, 5)


async def test_an_ended_call_sends_end_at_once(make_stack) -> None:
    # recent=0: the hub forgets ended calls at once, so the record comes from the store.
    async with make_stack(hub=LiveHub(recent=0)) as stack:
        final = stack.end(stack.start(make_record("c1")), outcome="agent_hung_up")
        assert stack.hub.get("c1") is None
        async with stack.http.get("/calls/c1/events") as resp:
            received = [event async for event in sse_events(resp)]
    assert received == [("end", final.model_dump(mode="json"))]


async def test_the_snapshot_has_the_state_and_events_get_ids(stack: Stack) -> None:
    stack.start(make_record("c1"))
    stack.observers.call_event("c1", "state", {"state": "greeting"})
    async with stack.http.get("/calls/c1/events") as resp:
        assert await resp.content.readline() == b"retry: 3000\n"
        await resp.content.readline()
        assert await resp.content.readline() == b"event: record\n"
        assert b'"state":"greeting"' in await resp.content.readline()
        await resp.content.readline()
        stack.observers.call_event("c1", "state", {"state": "talking"})
        assert await resp.content.readline() == b"event: state\n"
        assert await resp.content.readline() == b"id: 2\n"  # the call's second event


async def test_a_slow_viewer_loses_events_with_one_lag_notice_and_never_slows_the_call(
    make_stack,
) -> None:
    async with make_stack(hub=LiveHub(queue_size=8)) as stack:
        record = stack.start(make_record("c1"))
        async with stack.http.get("/calls/c1/events") as resp:
            await _until_subscribed(stack, "c1")
            # The call publishes 1000 lines while the viewer reads nothing (no await in
            # between: the server cannot write any of them out yet).
            started = time.perf_counter()
            for i in range(1000):
                line = {"role": "agent", "text": f"line {i}", "start_ms": i}
                stack.observers.call_event("c1", "transcript", line)
            elapsed = time.perf_counter() - started
            stack.observers.call_event("c1", "state", {"state": "after the flood"})
            stack.end(record, outcome="caller_hung_up")
            received = [event async for event in sse_events(resp)]
    kinds = [kind for kind, _ in received]
    assert kinds[0] == "record"
    kept = [data["text"] for kind, data in received if kind == "transcript"]
    lag = [data for kind, data in received if kind == "lag"]
    # What was kept is the start of the flood, in order; one notice says how much is missing.
    assert kept == [f"line {i}" for i in range(len(kept))]
    assert len(lag) == 1 and lag[0]["dropped"] == 1000 - len(kept) + 1  # and the state event
    assert kinds.index("lag") == 1 + len(kept)
    assert kinds[-1] == "end"  # the end is never dropped
    assert elapsed < 0.5  # about 10 us per event; the call never waited for the viewer


async def test_two_viewers_each_get_everything(stack: Stack) -> None:
    record = stack.start(make_record("c1"))
    async with stack.http.get("/calls/c1/events") as one, stack.http.get("/calls/c1/events") as two:
        await _until_subscribed(stack, "c1", 2)
        for kind, data in EVENTS:
            stack.observers.call_event("c1", kind, data)
        stack.end(record, outcome="caller_hung_up")
        first = [e async for e in sse_events(one)]
        second = [e async for e in sse_events(two)]
    assert first == second
    assert [k for k, _ in first] == ["record", *(k for k, _ in EVENTS), "end"]


async def test_keepalive_comments_flow_while_the_call_is_quiet(make_stack) -> None:
    async with make_stack(keepalive=0.05) as stack:
        stack.start(make_record("c1"))
        async with stack.http.get("/calls/c1/events") as resp:
            events = sse_events(resp)
            assert (await anext(events))[0] == "record"
            assert await anext(events) == (":", "keepalive")


async def test_a_viewer_that_leaves_is_unsubscribed(make_stack) -> None:
    async with make_stack(keepalive=0.05) as stack:
        stack.start(make_record("c1"))
        resp = await stack.http.get("/calls/c1/events")
        await _until_subscribed(stack, "c1")
        resp.close()  # the browser tab closes
        await wait_for(lambda: stack.hub.subscriber_count("c1") == 0, 5, what="unsubscribe")


async def test_too_many_viewers_are_refused(make_stack) -> None:
    async with make_stack(hub=LiveHub(max_subscribers=1)) as stack:
        stack.start(make_record("c1"))
        async with stack.http.get("/calls/c1/events") as first:
            assert first.status == 200
            await _until_subscribed(stack, "c1")
            async with stack.http.get("/calls/c1/events") as second:
                assert second.status == 429
                assert await second.json() == {"error": "too many viewers of this call"}


async def test_stopping_the_server_ends_open_streams(make_stack) -> None:
    async with make_stack() as stack:
        stack.start(make_record("c1"))
        async with stack.http.get("/calls/c1/events") as resp:
            await _until_subscribed(stack, "c1")
            started = time.monotonic()
            await stack.server.stop()
            # The stream ended (no `end`: the call goes on) before the shutdown timeout.
            assert time.monotonic() - started < 1.5
            assert [kind async for kind, _ in sse_events(resp)] == ["record"]


# --- the hub on its own -----------------------------------------------------------------


async def test_the_hub_keeps_live_copies_and_recent_ends() -> None:
    hub = LiveHub(recent=2)
    original = make_record("c1")
    hub.call_started(original)
    hub.call_event("c1", "transcript", {"role": "caller", "text": "Hi", "start_ms": 5})
    hub.call_event("c1", "turn", {"index": 0, "response_id": "r1"})
    hub.call_event("c1", "turn", {"index": 0, "response_id": "r1", "barge_in": True})
    hub.call_event("c1", "tool_call", {"call_id": "t", "name": "hangup", "started_ms": 9})
    hub.call_event("c1", "dtmf", {"direction": "caller", "digits": "12", "at_ms": 7})
    hub.call_event("c1", "transcript", {"nonsense": True})  # kept out of the copy
    hub.call_event("ghost", "state", {"state": "x"})  # an unknown call is ignored
    live = hub.get("c1")
    assert live is not None and original.transcript == []  # the call's own record is untouched
    assert [t.text for t in live.transcript] == ["Hi"]
    assert [t.barge_in for t in live.turns] == [True]
    assert [t.name for t in live.tool_calls] == ["hangup"]
    assert [d.digits for d in live.dtmf] == ["12"]
    assert [r.id for r in hub.active()] == ["c1"]
    for i in range(3):
        hub.call_ended(make_record(f"e{i}", status="ended"))
    hub.call_ended(make_record("c1", status="ended"))
    assert hub.active() == [] and not hub.is_live("c1")
    assert hub.get("e0") is None  # only the 2 most recent are kept
    ended = hub.get("c1")
    assert isinstance(ended, CallRecord) and ended.status == "ended"
    assert hub.subscribe("c1") is None


async def test_a_subscription_orders_lag_where_the_loss_starts() -> None:
    hub = LiveHub(queue_size=3)
    hub.call_started(make_record("c1"))
    sub = hub.subscribe("c1")
    assert sub is not None
    for i in range(5):  # record + 2 fit, then 3 are lost
        hub.call_event("c1", "dtmf", {"direction": "caller", "digits": str(i), "at_ms": i})
    first, second = await sub.next(), await sub.next()
    assert first is not None and first.kind == "record"
    assert second is not None and second.data["digits"] == "0"
    hub.call_event("c1", "dtmf", {"direction": "caller", "digits": "5", "at_ms": 5})  # fits again
    hub.call_ended(make_record("c1", status="ended"))
    rest = [(e.kind, e.data.get("digits", e.data.get("dropped"))) async for e in sub]
    assert rest == [("dtmf", "1"), ("lag", 3), ("dtmf", "5"), ("end", None)]
    assert sub.dropped == 3
    assert hub.subscriber_count("c1") == 0


async def test_a_closed_subscription_ends_its_reader() -> None:
    hub = LiveHub()
    hub.call_started(make_record("c1"))
    sub = hub.subscribe("c1")
    assert sub is not None
    assert (await sub.next()) is not None
    reader = asyncio.create_task(sub.next())
    await asyncio.sleep(0)
    hub.close()
    assert await asyncio.wait_for(reader, 1) is None
    assert hub.subscriber_count("c1") == 0


async def test_the_tests_sse_reader_sees_comments_and_multiline_data() -> None:
    # The helper the tests read streams with, checked against a hand-written stream.
    class Body:
        def __init__(self, lines: list[bytes]) -> None:
            self.content = self._iter(lines)

        async def _iter(self, lines: list[bytes]) -> Any:
            for line in lines:
                yield line

    lines = [b": hi\n", b"event: x\n", b'data: {"a":\n', b"data: 1}\n", b"\n"]
    got = [e async for e in sse_events(Body(lines))]  # type: ignore[arg-type]
    assert got == [(":", "hi"), ("x", {"a": 1})]
