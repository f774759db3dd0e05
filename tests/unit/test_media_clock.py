"""MediaClock: one 20 ms clock ticking every call, on the real event loop."""

from __future__ import annotations

import asyncio
import logging
import time

from controller.media.clock import MediaClock
from tests.unit.udp import wait_for


class Recorder:
    def __init__(self) -> None:
        self.ticks: list[float] = []

    def tick(self, now: float) -> None:
        self.ticks.append(now)


class Failing:
    def __init__(self) -> None:
        self.calls = 0

    def tick(self, now: float) -> None:
        self.calls += 1
        raise ValueError("subscriber bug")


async def test_clock_ticks_subscribers_and_survives_a_failing_one(caplog):
    clock = MediaClock()
    good_before, bad, good_after = Recorder(), Failing(), Recorder()
    for subscriber in (good_before, bad, good_after):
        clock.register(subscriber)
    assert clock.subscribers == 3
    with caplog.at_level(logging.ERROR, logger="controller.media.clock"):
        clock.start()
        try:
            await wait_for(lambda: len(good_after.ticks) >= 10, "ten ticks")
        finally:
            await clock.stop()
    assert bad.calls >= 10
    assert clock.subscriber_errors == bad.calls
    assert len(good_before.ticks) >= 10
    # The failure is logged once with its traceback, not on every tick.
    failures = [r for r in caplog.records if "subscriber failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    # Ticks follow the schedule: strictly increasing, roughly one period apart on average.
    ticks = good_before.ticks
    assert all(b > a for a, b in zip(ticks, ticks[1:], strict=False))
    assert clock.ticks >= 10


async def test_clock_unregister_and_restart():
    clock = MediaClock()
    recorder = Recorder()
    clock.register(recorder)
    clock.start()
    try:
        await wait_for(lambda: len(recorder.ticks) >= 2, "two ticks")
        clock.unregister(recorder)
        clock.unregister(recorder)  # idempotent
        count = len(recorder.ticks)
        ticks_before = clock.ticks
        # With nothing to tick, the clock sleeps: an idle controller costs nothing.
        await asyncio.sleep(0.2)
        assert clock.ticks == ticks_before
        assert len(recorder.ticks) == count
        # A new subscriber wakes it on a fresh grid: no stall, no burst of ticks.
        later = Recorder()
        schedule = clock.new_schedule()
        clock.register(later)
        await wait_for(lambda: len(later.ticks) >= 3, "ticks after waking")
        assert clock.resyncs == 0
        # The new schedule shares the fresh grid: one frame per tick.
        assert len(schedule.due(later.ticks[0])) == 1
        assert len(schedule.due(later.ticks[2])) == 2
    finally:
        await clock.stop()
    await clock.stop()  # idempotent


async def test_schedule_from_the_clock_shares_its_grid():
    clock = MediaClock()
    schedule = clock.new_schedule()
    recorder = Recorder()
    frames: list[int] = []

    class Sub:
        def tick(self, now: float) -> None:
            frames.extend(schedule.due(now))
            recorder.tick(now)

    clock.register(Sub())
    clock.start()
    try:
        await wait_for(lambda: len(recorder.ticks) >= 10, "ten ticks")
    finally:
        await clock.stop()
    # One frame per tick, consecutive indices (a stall would show as a resync instead).
    if schedule.resyncs == 0:
        assert frames == list(range(frames[0], frames[0] + len(frames)))


async def test_clock_resyncs_after_a_stall_instead_of_bursting(caplog):
    clock = MediaClock()
    schedule = clock.new_schedule()
    bursts: list[int] = []

    class Blocker:
        def __init__(self) -> None:
            self.blocked = False

        def tick(self, now: float) -> None:
            bursts.append(len(schedule.due(now)))
            if not self.blocked and len(bursts) == 3:
                self.blocked = True
                time.sleep(0.3)  # a blocking call somewhere in the process

    clock.register(Blocker())
    with caplog.at_level(logging.WARNING, logger="controller.media.clock"):
        clock.start()
        try:
            await wait_for(lambda: len(bursts) >= 8, "ticks after the stall")
        finally:
            await clock.stop()
    assert clock.resyncs == 1
    assert schedule.resyncs == 1
    # Never more than max_burst frames at once; after the stall, one frame per tick again.
    assert max(bursts) <= clock.max_burst
    assert schedule.skipped_frames >= 10
    assert any("stalled" in r.getMessage() for r in caplog.records)
