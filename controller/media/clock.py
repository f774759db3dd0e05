"""The process's one media clock: every call's frames on a 20 ms grid, and its sockets drained.

A timer per call would cost 200 timer handles and wake-ups per tick at 200
calls and drift apart; one task on a monotonic
:class:`~controller.media.schedule.FrameSchedule` serves every call instead.
While no call is subscribed the clock sleeps, and it starts a fresh grid
when the next call registers.

Ticks and phases
----------------
The clock ticks every ``period / phases`` (10 ms: two phases of the 20 ms
frame period). Each subscriber (a call's
:class:`~controller.media.call_media.CallMedia`) has a phase and is ticked
once per period, on the ticks of its phase, so each call sends one frame
every 20 ms on a grid of its own; a call moves to another phase with
:meth:`MediaClock.set_phase` (when the agent starts speaking after a pause,
its first frame goes out at once and the grid follows from the tick it
belongs to). So the agent's first frame waits for no tick, and the process
still wakes only 100 times a second however many calls run.

Sockets are drained on every tick: :meth:`MediaClock.add_reader` watches a
call's RTP socket with one selector for all calls, polled without blocking,
so a caller's packet waits at most one tick (10 ms, 5 on average) before it
is on its way to the model, without waking the process once per packet.
(A socket watched by the event loop wakes the process for every packet: 50
times a second per call, each call on its own 20 ms grid; that wake-up was
the largest single CPU cost per call, see ``bench/bench_calls.py``.)

Why two phases, measured (``bench/bench_latency.py``, ``bench/bench_calls.py``
at 20 calls, same machine and hour): one phase (20 ms ticks) left the end of
a caller's turn waiting 10 ms on average for the tick; four (5 ms) cut the
reply's delay over a naive relay to 3 ms but cost about 0.35 ms of CPU per
call-second more than before (a wake-up has a fixed price, shared by fewer
calls); two (10 ms) give 7 ms at the CPU of before.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import socket
from bisect import bisect_left
from collections.abc import Callable
from typing import Protocol

from controller.logs import kv
from controller.media.schedule import FRAME_PERIOD, FrameSchedule

log = logging.getLogger(__name__)

#: At most one "media clock stalled" warning per this many seconds.
STALL_WARNING_INTERVAL = 10.0
#: Ticks per frame period: 10 ms ticks for 20 ms frames (see the module docstring).
PHASES = 2
#: Upper bounds (seconds) of the buckets of :class:`Lateness`.
LATENESS_BOUNDS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class Lateness:
    """A histogram of how late the clock's ticks ran (cheap enough for every tick).

    ``counts[i]`` counts ticks at most ``bounds[i]`` late (and more than the
    bound before); the last count is everything later than the last bound.
    Exported by :mod:`controller.http.metrics`.
    """

    __slots__ = ("bounds", "counts", "total", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENESS_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one tick that ran ``seconds`` after its deadline."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += 1
        self.sum += seconds


class ClockSubscriber(Protocol):
    """Anything the :class:`MediaClock` ticks."""

    def tick(self, now: float) -> None:
        """Do this period's work; ``now`` is ``loop.time()``. Must not block."""
        ...


class MediaClock:
    """The process's one media clock, driving every call's media.

    Run :meth:`run` as one task for the life of the process (or use
    :meth:`start`/:meth:`stop`). Every tick (``period / phases``), after the
    deadline ``start + n * tick`` passes, it calls ``tick(now)`` on each
    subscriber of phase ``n % phases``, in registration order, then drains
    the sockets given to :meth:`add_reader` that have data; so each
    subscriber is ticked once per ``period``. :attr:`tick_index` is ``n``
    meanwhile (the subscriber's frame is due on that tick). A subscriber or
    reader that raises is logged (the first time with a traceback, then
    every 500th time) and counted in :attr:`subscriber_errors`; the clock and
    the others go on. When the event loop stalls for more than ``max_burst``
    periods, ticks are skipped rather than run back to back (:attr:`resyncs`,
    and a warning at most every :data:`STALL_WARNING_INTERVAL` seconds).

    Subscribers that need frame indices take a schedule from
    :meth:`new_schedule`: it shares the clock's deadlines of one phase
    exactly, so each tick of that phase makes exactly one of its frames due
    (more only after a stall).

    Args:
        period: the frame period in seconds.
        max_burst: stall policy, in frame periods (see :class:`FrameSchedule`).
        phases: ticks per period.
    """

    def __init__(
        self, *, period: float = FRAME_PERIOD, max_burst: int = 4, phases: int = PHASES
    ) -> None:
        if phases < 1:
            raise ValueError(f"phases must be at least 1, got {phases}")
        self.period = period
        self.max_burst = max_burst
        self.phases = phases
        #: Seconds between ticks.
        self.tick_period = period / phases
        self._phase_of: dict[int, int] = {}
        self._members: list[list[ClockSubscriber]] = [[] for _ in range(phases)]
        self._snapshots: list[tuple[ClockSubscriber, ...]] = [() for _ in range(phases)]
        self._count = 0
        self._selector = selectors.DefaultSelector()
        self._readers = 0
        self._errors: dict[int, int] = {}
        self._schedule: FrameSchedule | None = None
        self._past_resyncs = 0
        self._tick_index = 0
        # Set when a subscriber registers: an idle clock sleeps until then.
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Ticks run so far (every phase counts).
        self.ticks = 0
        #: Exceptions raised by subscribers and readers.
        self.subscriber_errors = 0
        #: How late each tick ran: the event loop's lag as the calls' media sees it.
        self.lateness = Lateness()

    # -- subscribers -----------------------------------------------------------------------

    def register(self, subscriber: ClockSubscriber, phase: int | None = None) -> None:
        """Tick ``subscriber`` once per period from now on, on ``phase``.

        Args:
            subscriber: what to tick.
            phase: ``0 <= phase < phases``; default: the phase of the next tick.
        """
        if not self._count:
            # The clock is idle (or about to be): start a fresh grid now
            # rather than hand out deadlines from before it went to sleep.
            self._reset_grid()
        if phase is None:
            phase = self._grid().next_index % self.phases
        self.unregister(subscriber)
        self._add(subscriber, phase)
        self._count += 1
        self._wake.set()

    def unregister(self, subscriber: ClockSubscriber) -> None:
        """Stop ticking ``subscriber`` (no error if it is not registered)."""
        phase = self._phase_of.pop(id(subscriber), None)
        if phase is None:
            return
        self._remove(subscriber, phase)
        self._count -= 1
        self._errors.pop(id(subscriber), None)

    def set_phase(self, subscriber: ClockSubscriber, phase: int) -> None:
        """Tick ``subscriber`` on ``phase`` from now on (it must be registered)."""
        old = self._phase_of.get(id(subscriber))
        if old is None or old == phase % self.phases:
            return
        self._remove(subscriber, old)
        self._add(subscriber, phase % self.phases)

    def phase(self, subscriber: ClockSubscriber) -> int | None:
        """The phase ``subscriber`` is ticked on, None if it is not registered."""
        return self._phase_of.get(id(subscriber))

    @property
    def subscribers(self) -> int:
        """Number of registered subscribers."""
        return self._count

    @property
    def tick_index(self) -> int:
        """The index of the current tick (the latest one run, between ticks) on the grid.

        Tick ``n`` is due at the grid's start ``+ n * tick_period``; it ticks
        the subscribers of phase ``n % phases``. The grid lasts as long as
        any subscriber is registered.
        """
        return self._tick_index

    def new_schedule(self, phase: int | None = None) -> FrameSchedule:
        """Return a frame schedule on the clock's deadlines of ``phase``.

        Its first frame is the next tick of that phase (default: the phase
        of the next tick). Must be called with an event loop running (the
        clock's grid starts on first use if :meth:`run` has not started yet).
        """
        if not self._count:
            self._reset_grid()
        grid = self._grid()
        phases = self.phases
        first_tick = grid.next_index
        if phase is not None:
            first_tick += (phase - first_tick) % phases
        return FrameSchedule(
            grid.deadline(first_tick % phases),
            self.period,
            max_burst=self.max_burst,
            first_index=first_tick // phases,
        )

    # -- sockets ---------------------------------------------------------------------------

    def add_reader(self, sock: socket.socket, callback: Callable[[], object]) -> None:
        """Call ``callback()`` on every tick on which ``sock`` has data to read.

        The selector is level-triggered: a callback that reads only part of
        what is waiting is called again on the next tick.

        Remove the reader with :meth:`remove_reader` before closing the socket.
        """
        self._selector.register(sock, selectors.EVENT_READ, callback)
        self._readers += 1

    def remove_reader(self, sock: socket.socket) -> None:
        """Stop watching ``sock`` (no error if it is not watched)."""
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            return
        self._readers -= 1

    # -- running ---------------------------------------------------------------------------

    @property
    def resyncs(self) -> int:
        """Stalls of the event loop long enough to make the clock skip ticks."""
        current = self._schedule.resyncs if self._schedule is not None else 0
        return self._past_resyncs + current

    async def run(self) -> None:
        """Tick the subscribers until cancelled."""
        loop = asyncio.get_running_loop()
        sleep = asyncio.sleep
        last_warning = -STALL_WARNING_INTERVAL
        phases = self.phases
        snapshots = self._snapshots
        while True:
            if not self._count:
                # No call: sleep until one registers, so an idle controller
                # does not wake 100 times a second for nothing.
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
            due = schedule.due(now)
            if not due:
                # Woke early: a loop whose timers have 1 ms granularity (uvloop)
                # rounds down; sleep what is left, but not a spin of 0 ms sleeps.
                early = schedule.next_deadline - loop.time()
                if early > 0:
                    await sleep(max(early, 0.001))
                continue
            if schedule.resyncs != resyncs and now - last_warning >= STALL_WARNING_INTERVAL:
                last_warning = now
                log.warning(
                    "media clock stalled; skipped ticks instead of bursting %s",
                    kv(skipped_total=schedule.skipped_frames, resyncs=schedule.resyncs),
                )
            if not self._count:
                continue  # the last call left while we slept
            self.ticks += 1
            self.lateness.observe(now - schedule.deadline(due.start))
            # The due frames first: their timing is what the callers hear.
            for index in due:
                self._tick_index = index
                for subscriber in snapshots[index % phases]:
                    try:
                        subscriber.tick(now)
                    except Exception:
                        self._subscriber_failed(subscriber)
            if self._readers:
                self._drain_sockets()

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

    # -- internals -------------------------------------------------------------------------

    def _add(self, subscriber: ClockSubscriber, phase: int) -> None:
        self._phase_of[id(subscriber)] = phase
        members = self._members[phase]
        members.append(subscriber)
        self._snapshots[phase] = tuple(members)

    def _remove(self, subscriber: ClockSubscriber, phase: int) -> None:
        members = self._members[phase]
        members.remove(subscriber)
        self._snapshots[phase] = tuple(members)

    def _drain_sockets(self) -> None:
        try:
            ready = self._selector.select(0)
        except OSError:  # e.g. a socket closed while still registered
            return
        for key, _ in ready:
            try:
                key.data()
            except Exception:
                self._subscriber_failed(key.data)

    def _reset_grid(self) -> None:
        if self._schedule is not None:
            self._past_resyncs += self._schedule.resyncs
        self._schedule = None

    def _grid(self) -> FrameSchedule:
        if self._schedule is None:
            start = asyncio.get_running_loop().time() + self.tick_period
            self._schedule = FrameSchedule(
                start, self.tick_period, max_burst=self.max_burst * self.phases
            )
            self._tick_index = -1
        return self._schedule

    def _subscriber_failed(self, subscriber: object) -> None:
        self.subscriber_errors += 1
        key = id(subscriber)
        count = self._errors.get(key, 0) + 1
        self._errors[key] = count
        if count == 1 or count % 500 == 0:
            log.exception(
                "media clock subscriber failed %s",
                kv(subscriber=type(subscriber).__name__, failures=count),
            )
