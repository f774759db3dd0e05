"""FrameSchedule: drift-free 20 ms deadlines, with an injected clock."""

from __future__ import annotations

import random

import pytest

from controller.media.schedule import FrameSchedule


def test_no_drift_over_ten_minutes():
    start = 12345.678  # an arbitrary loop.time()
    schedule = FrameSchedule(start)
    assert schedule.deadline(30000) == start + 600.0
    rng = random.Random(7)
    produced: list[int] = []
    now = start
    # Wake up 0..3 ms after each deadline, like a real event loop.
    for n in range(30000):
        now = schedule.deadline(n) + rng.uniform(0.0, 0.003)
        produced.extend(schedule.due(now))
    assert produced == list(range(30000))
    assert schedule.next_deadline == start + 600.0
    elapsed = schedule.next_deadline - start
    assert len(produced) == round(elapsed / 0.020)
    assert schedule.resyncs == 0


def test_coarse_ticks_produce_exactly_elapsed_over_period():
    start = 1000.0
    schedule = FrameSchedule(start, max_burst=10)
    count = 0
    # Tick every 70 ms for 600 s: frames still match wall time exactly.
    for k in range(1, 8572):
        count += len(schedule.due(start + k * 0.070))
    now = start + 8571 * 0.070
    assert count == int((now - start) / 0.020) + 1
    assert schedule.resyncs == 0


def test_nothing_due_before_the_first_deadline():
    schedule = FrameSchedule(10.0)
    assert not schedule.due(9.999)
    assert list(schedule.due(10.0)) == [0]
    assert not schedule.due(10.0)
    assert not schedule.due(10.019)
    assert list(schedule.due(10.020)) == [1]


def test_short_hiccup_is_caught_up():
    schedule = FrameSchedule(0.0, max_burst=4)
    assert list(schedule.due(0.0)) == [0]
    # Three periods late: frames 1..4 due at once, within the burst limit.
    assert list(schedule.due(0.085)) == [1, 2, 3, 4]
    assert schedule.resyncs == 0


def test_long_stall_resyncs_instead_of_bursting():
    schedule = FrameSchedule(0.0, max_burst=4)
    assert list(schedule.due(0.0)) == [0]
    # Blocked for a second: only the newest frame, on the same grid.
    assert list(schedule.due(1.005)) == [50]
    assert schedule.resyncs == 1
    assert schedule.skipped_frames == 49
    assert list(schedule.due(1.020)) == [51]
    assert schedule.deadline(51) == pytest.approx(1.02)


def test_schedules_sharing_a_grid_agree():
    clock = FrameSchedule(500.0)
    clock.due(500.5)
    call = FrameSchedule(500.0, first_index=clock.next_index)
    for k in range(26, 1000):
        now = clock.deadline(k)  # exactly on the deadline: the worst case
        assert len(clock.due(now)) == 1
        assert len(call.due(now)) == 1


def test_schedule_validation():
    with pytest.raises(ValueError):
        FrameSchedule(0.0, period=0.0)
    with pytest.raises(ValueError):
        FrameSchedule(0.0, max_burst=0)
