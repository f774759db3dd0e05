"""The process's one 20 ms media clock, ticking every call's media.

A timer per call would cost 200 timer handles and wake-ups per tick at 200
calls and drift apart; one task on a monotonic
:class:`~controller.media.schedule.FrameSchedule` ticks every call's
subscriber (its :class:`~controller.media.call_media.CallMedia`) instead.
While no call is subscribed the clock sleeps, and it starts a fresh grid
when the next call registers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from controller.logs import kv
from controller.media.schedule import FRAME_PERIOD, FrameSchedule

log = logging.getLogger(__name__)

#: At most one "media clock stalled" warning per this many seconds.
STALL_WARNING_INTERVAL = 10.0


class ClockSubscriber(Protocol):
    """Anything the :class:`MediaClock` ticks."""

    def tick(self, now: float) -> None:
        """Do this period's work; ``now`` is ``loop.time()``. Must not block."""
        ...


class MediaClock:
    """The process's one 20 ms clock, driving every call's media.

    Run :meth:`run` as one task for the life of the process (or use
    :meth:`start`/:meth:`stop`). Every period, after the deadline
    ``start + n * period`` passes, it calls ``tick(now)`` on each registered
    subscriber, in registration order. A subscriber that raises is logged
    (the first time with a traceback, then every 500th time) and counted in
    :attr:`subscriber_errors`; the clock and the other subscribers go on.
    When the event loop stalls for more than ``max_burst`` periods, ticks are
    skipped rather than run back to back (:attr:`resyncs`, and a warning at
    most every :data:`STALL_WARNING_INTERVAL` seconds).

    Subscribers that need frame indices take a schedule from
    :meth:`new_schedule`: it shares the clock's deadlines exactly, so each
    tick makes exactly one of its frames due (more only after a stall).

    Args:
        period: the tick period in seconds.
        max_burst: stall policy of the clock's schedules (see :class:`FrameSchedule`).
    """

    def __init__(self, *, period: float = FRAME_PERIOD, max_burst: int = 4) -> None:
        self.period = period
        self.max_burst = max_burst
        self._subscribers: list[ClockSubscriber] = []
        self._snapshot: tuple[ClockSubscriber, ...] = ()
        self._errors: dict[int, int] = {}
        self._schedule: FrameSchedule | None = None
        self._past_resyncs = 0
        # Set when a subscriber registers: an idle clock sleeps until then.
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Ticks run so far.
        self.ticks = 0
        #: Exceptions raised by subscribers.
        self.subscriber_errors = 0

    # -- subscribers -----------------------------------------------------------------------

    def register(self, subscriber: ClockSubscriber) -> None:
        """Tick ``subscriber`` from the next period on."""
        self._subscribers.append(subscriber)
        self._snapshot = tuple(self._subscribers)
        self._wake.set()

    def unregister(self, subscriber: ClockSubscriber) -> None:
        """Stop ticking ``subscriber`` (no error if it is not registered)."""
        try:
            self._subscribers.remove(subscriber)
        except ValueError:
            return
        self._snapshot = tuple(self._subscribers)
        self._errors.pop(id(subscriber), None)

    @property
    def subscribers(self) -> int:
        """Number of registered subscribers."""
        return len(self._subscribers)

    def new_schedule(self) -> FrameSchedule:
        """Return a schedule on the clock's deadlines whose first frame is the next tick.

        Must be called with an event loop running (the clock's grid starts
        on first use if :meth:`run` has not started yet).
        """
        if not self._subscribers:
            # The clock is idle (or about to be): start a fresh grid now
            # rather than hand out deadlines from before it went to sleep.
            self._reset_grid()
        grid = self._grid()
        return FrameSchedule(
            grid.start, self.period, max_burst=self.max_burst, first_index=grid.next_index
        )

    # -- running ---------------------------------------------------------------------------

    @property
    def resyncs(self) -> int:
        """Stalls of the event loop long enough to make the clock skip ticks."""
        current = self._schedule.resyncs if self._schedule is not None else 0
        return self._past_resyncs + current

    async def run(self) -> None:
        """Tick the subscribers every period until cancelled."""
        loop = asyncio.get_running_loop()
        sleep = asyncio.sleep
        last_warning = -STALL_WARNING_INTERVAL
        while True:
            if not self._snapshot:
                # No call: sleep until one registers, so an idle controller
                # does not wake 50 times a second for nothing.
                self._wake.clear()
                await self._wake.wait()
                stale = self._schedule
                if stale is not None and stale.next_deadline < loop.time():
                    self._reset_grid()
                continue
            schedule = self._grid()
            # Sleep even when late (sleep(0) yields): an overloaded clock must
            # not starve the socket callbacks of the event loop.
            await sleep(max(schedule.next_deadline - loop.time(), 0.0))
            now = loop.time()
            resyncs = schedule.resyncs
            if not schedule.due(now):
                continue  # woke a hair early (timer granularity)
            if schedule.resyncs != resyncs and now - last_warning >= STALL_WARNING_INTERVAL:
                last_warning = now
                log.warning(
                    "media clock stalled; skipped ticks instead of bursting %s",
                    kv(skipped_total=schedule.skipped_frames, resyncs=schedule.resyncs),
                )
            snapshot = self._snapshot
            if not snapshot:
                continue  # the last call left while we slept
            self.ticks += 1
            for subscriber in snapshot:
                try:
                    subscriber.tick(now)
                except Exception:
                    self._subscriber_failed(subscriber)

    def start(self) -> asyncio.Task[None]:
        """Start :meth:`run` as a task (kept here, so it is not garbage collected)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="media-clock")
        return self._task

    async def stop(self) -> None:
        """Cancel the task started by :meth:`start` and wait for it."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    def _reset_grid(self) -> None:
        if self._schedule is not None:
            self._past_resyncs += self._schedule.resyncs
        self._schedule = None

    def _grid(self) -> FrameSchedule:
        if self._schedule is None:
            start = asyncio.get_running_loop().time() + self.period
            self._schedule = FrameSchedule(start, self.period, max_burst=self.max_burst)
        return self._schedule

    def _subscriber_failed(self, subscriber: ClockSubscriber) -> None:
        self.subscriber_errors += 1
        key = id(subscriber)
        count = self._errors.get(key, 0) + 1
        self._errors[key] = count
        if count == 1 or count % 500 == 0:
            log.exception(
                "media clock subscriber failed %s",
                kv(subscriber=type(subscriber).__name__, failures=count),
            )
