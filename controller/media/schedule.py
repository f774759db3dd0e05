"""The 20 ms frame schedule: which frame indices are due at time ``now`` (pure).

chan_rtp does no pacing (ari-notes §1): whatever we send is played at once,
so the controller itself must send one 160-byte u-law frame every 20 ms on a
monotonic clock. :class:`FrameSchedule` says which frames are due.
Deadlines are ``start + n * period`` computed from the integer ``n``, so
there is no drift however long the call (never ``sleep(0.02)`` in a loop).
If the event loop stalls for more than ``max_burst`` frames, the schedule
resyncs (skips ahead and counts it) instead of sending a burst that Asterisk
would play back-to-back.

The :class:`~controller.media.clock.MediaClock` keeps one schedule as its
grid and hands each call a schedule on the same deadlines.
"""

from __future__ import annotations

from typing import Final

#: The frame period: 20 ms, 160 samples of G.711 at 8 kHz.
FRAME_PERIOD: Final = 0.020

_EMPTY_RANGE: Final = range(0)


class FrameSchedule:
    """A monotonic, drift-free schedule of frame deadlines.

    Frame ``n`` is due at ``start + n * period`` (computed from the integer
    ``n`` and the period in integer nanoseconds, so the 30000th deadline of a
    20 ms schedule is exactly ``start + 600.0``). :meth:`due` consumes the
    frames whose deadline has passed.

    Stall policy: when more than ``max_burst`` frames are due at once (the
    event loop was blocked for longer than ``max_burst - 1`` periods), only
    the newest one is produced; the older ones are skipped (counted in
    :attr:`skipped_frames`, and :attr:`resyncs` counts the event). A short
    hiccup is caught up instead, so the stream loses no time.

    Args:
        start: the deadline of frame 0, in seconds on a monotonic clock
            (e.g. ``loop.time()``); frame ``n`` is due at ``start + n * period``.
        period: the frame period in seconds.
        max_burst: most frames produced by one :meth:`due` call.
        first_index: the index of the first frame to produce. Schedules that
            share ``start`` and ``period`` share their deadlines exactly.
    """

    __slots__ = ("start", "period", "max_burst", "_period_ns", "_next", "resyncs", "skipped_frames")

    def __init__(
        self,
        start: float,
        period: float = FRAME_PERIOD,
        *,
        max_burst: int = 4,
        first_index: int = 0,
    ) -> None:
        period_ns = round(period * 1e9)
        if period_ns <= 0:
            raise ValueError(f"period must be positive, got {period}")
        if max_burst < 1:
            raise ValueError(f"max_burst must be at least 1, got {max_burst}")
        self.start = start
        self.period = period
        self.max_burst = max_burst
        self._period_ns = period_ns
        self._next = first_index
        #: Number of stalls that made the schedule skip frames.
        self.resyncs = 0
        #: Frames skipped by those resyncs.
        self.skipped_frames = 0

    def deadline(self, index: int) -> float:
        """Return the deadline of frame ``index``."""
        # One exact integer product, one correctly rounded division, one addition.
        return self.start + index * self._period_ns / 1e9

    @property
    def next_index(self) -> int:
        """The index of the next frame to produce."""
        return self._next

    @property
    def next_deadline(self) -> float:
        """The deadline of the next frame to produce."""
        return self.deadline(self._next)

    def due(self, now: float) -> range:
        """Return the indices of the frames to produce now, and consume them.

        Args:
            now: the current time on the same clock as ``start``.

        Returns:
            An empty range before the next deadline; normally one index;
            up to ``max_burst`` indices after a short hiccup; and only the
            newest index after a longer stall (see the class docstring).
        """
        first = self._next
        start = self.start
        period_ns = self._period_ns
        if now < start + first * period_ns / 1e9:
            return _EMPTY_RANGE
        if now < start + (first + 1) * period_ns / 1e9:
            # The common case: exactly one frame due.
            self._next = first + 1
            return range(first, first + 1)
        # Index of the newest deadline <= now; the loops fix float rounding.
        last = int((now - start) * 1e9 // period_ns)
        while self.deadline(last + 1) <= now:
            last += 1
        while self.deadline(last) > now:
            last -= 1
        self._next = last + 1
        count = last + 1 - first
        if count > self.max_burst:
            self.resyncs += 1
            self.skipped_frames += count - 1
            return range(last, last + 1)
        return range(first, last + 1)
