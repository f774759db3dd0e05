"""The drain both controllers share: first request drains, the second stops at once.

No sleeps: the live calls are a dict the test edits, the deadline is either
already past (``seconds=0``) or an hour away, and the test yields to the
loop only to let the drain react.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from controller.drain import Drain

log = logging.getLogger("controller.test")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def drain_of(calls: dict[str, object]) -> tuple[Drain, asyncio.Event]:
    stop = asyncio.Event()
    return Drain(calls, stop, log), stop


async def test_first_request_drains_and_stops_when_the_last_call_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: dict[str, object] = {"a": object(), "b": object()}
    drain, stop = drain_of(calls)
    caplog.set_level(logging.INFO, "controller.test")
    assert not drain.draining
    assert drain.request(3600)
    assert drain.draining
    task = asyncio.create_task(drain.run(3600))
    await settle()
    del calls["a"]
    drain.call_ended()
    await settle()
    assert not stop.is_set() and not task.done()  # one call is still live
    del calls["b"]
    drain.call_ended()
    await asyncio.wait_for(task, 5)
    assert stop.is_set()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["draining calls=2 up_to_s=3600"]


async def test_a_drain_with_no_live_call_stops_at_once() -> None:
    drain, stop = drain_of({})
    assert drain.request(3600)
    await asyncio.wait_for(drain.run(3600), 5)
    assert stop.is_set()


async def test_when_the_time_is_up_the_calls_left_are_handed_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drain, stop = drain_of({"a": object()})
    caplog.set_level(logging.INFO, "controller.test")
    assert drain.request(0)
    await asyncio.wait_for(drain.run(0), 5)  # a deadline already past
    assert stop.is_set()
    assert caplog.records[-1].getMessage() == "drain time is up; handing back calls=1"


async def test_a_second_request_stops_at_once(caplog: pytest.LogCaptureFixture) -> None:
    drain, stop = drain_of({"a": object()})
    assert drain.request(3600)
    task = asyncio.create_task(drain.run(3600))
    await settle()
    assert not stop.is_set()
    assert not drain.request(3600)  # nothing new to run
    assert stop.is_set() and drain.draining
    assert caplog.records[-1].levelno == logging.WARNING
    assert caplog.records[-1].getMessage() == "asked again while draining: stopping now calls=1"
    # The controller's stop then ends the call, which lets the drain's task finish.
    drain.call_ended()
    await asyncio.wait_for(task, 5)


async def test_a_stop_from_elsewhere_ends_the_wait_at_the_next_call_end() -> None:
    drain, stop = drain_of({"a": object(), "b": object()})
    assert drain.request(3600)
    task = asyncio.create_task(drain.run(3600))
    await settle()
    stop.set()  # e.g. request_stop(): the controller ends every call
    drain.call_ended()
    await asyncio.wait_for(task, 5)
    assert stop.is_set()
