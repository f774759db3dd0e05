"""MediaClock: one clock ticking every call (several ticks per 20 ms frame), on the real loop."""

from __future__ import annotations

import asyncio
import logging
import socket
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


async def test_each_subscriber_ticks_once_per_period_on_its_phase():
    assert MediaClock().phases == 2  # 10 ms ticks by default
    clock = MediaClock(phases=4)
    assert abs(clock.tick_period - 0.005) < 1e-12
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}

    class PhaseRecorder:
        def __init__(self, key: int) -> None:
            self.key = key

        def tick(self, now: float) -> None:
            seen[self.key].append(clock.tick_index)

    subs = [PhaseRecorder(k) for k in range(3)]
    clock.register(subs[0], phase=0)
    clock.register(subs[1], phase=2)
    clock.register(subs[2])  # the phase of the next tick
    assert clock.phase(subs[1]) == 2
    clock.start()
    try:
        await wait_for(lambda: len(seen[1]) >= 6, "ticks on phase 2")
        clock.set_phase(subs[1], 1)
        moved_at = len(seen[1])
        await wait_for(lambda: len(seen[1]) >= moved_at + 4, "ticks on phase 1")
    finally:
        await clock.stop()
    if clock.resyncs == 0:
        assert {i % 4 for i in seen[0]} == {0}
        assert {i % 4 for i in seen[1][:moved_at]} == {2}
        assert {i % 4 for i in seen[1][moved_at:]} == {1}
        # Once per period: consecutive ticks of one subscriber are 4 apart.
        assert all(b - a == 4 for a, b in zip(seen[0], seen[0][1:], strict=False))
    assert clock.lateness.total >= clock.ticks > 0
    assert sum(clock.lateness.counts) == clock.lateness.total
    assert clock.phase(object()) is None  # type: ignore[arg-type]


async def test_readers_are_drained_on_the_ticks_and_removed():
    clock = MediaClock()
    recorder = Recorder()
    clock.register(recorder)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    got: list[bytes] = []

    def read_one() -> None:
        got.append(a.recv(100))  # one datagram per call: the rest waits for the next tick

    clock.add_reader(a, read_one)
    clock.start()
    try:
        b.send(b"one")
        b.send(b"two")
        await wait_for(lambda: len(got) == 2, "both datagrams")
        clock.remove_reader(a)
        clock.remove_reader(a)  # idempotent
        b.send(b"three")
        await asyncio.sleep(0.05)
        assert got == [b"one", b"two"]
    finally:
        await clock.stop()
        a.close()
        b.close()
