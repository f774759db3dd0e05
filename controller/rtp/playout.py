"""Playout of the model's audio toward Asterisk: 20 ms frames, flush, played-ms (pure).

Theory of operation
-------------------
chan_rtp does no pacing (ari-notes §1): whatever we send is played at once,
so the controller itself must send one 160-byte u-law frame every 20 ms on a
monotonic clock. Three pure pieces do that here, and
:mod:`controller.rtp.endpoint` drives them from one clock for every call:

* :class:`FrameSchedule` says which frame indices are due at time ``now``.
  Deadlines are ``start + n * period`` computed from the integer ``n``, so
  there is no drift however long the call (never ``sleep(0.02)`` in a loop).
  If the event loop stalls for more than ``max_burst`` frames, the schedule
  resyncs (skips ahead and counts it) instead of sending a burst that
  Asterisk would play back-to-back.
* :class:`Playout` is the queue of u-law bytes the model sent, tagged with
  the conversation item they belong to. :meth:`Playout.next_frame` hands out
  exactly 160 bytes per due frame and counts, per item, the bytes actually
  handed out, so barge-in can tell the model how much the caller heard
  (``conversation.item.truncate`` ``audio_end_ms``).
* :class:`OutgoingStream` stamps frames as RTP: constant random SSRC,
  sequence number +1 per packet sent, timestamp derived from the frame index.

Empty queue: no packet
~~~~~~~~~~~~~~~~~~~~~~
When the model is not speaking, :meth:`Playout.next_frame` returns None and
nothing is sent (unless ``idle_silence=True``). Reasons:

* The caller hears the same thing: Asterisk's bridge has nothing from us to
  pass on or mix, exactly as when a phone uses silence suppression
  (RFC 3551 §4.1), which every SIP endpoint handles.
* It saves CPU: the agent listens about half the time, and each frame not
  sent saves its tick work and a ``sendto`` (about 5 µs together, see
  ``bench/bench_media.py``), i.e. 0.25 ms per silent call-second, 5% of the
  5 ms budget; at 200 calls up to 10,000 system calls a second.
* Nothing on the UnicastRTP leg needs a continuous stream: chan_rtp has no
  media timeout and Asterisk has locked onto our address already (strict RTP
  only checks the source).

The RTP timestamp still advances with wall time while nothing is sent (it is
``base + 160 * frame_index``, and the index counts every due frame, sent or
not), and the first packet after a pause carries the marker bit, as RFC 3551
§4.1 prescribes for the first packet of a talkspurt; the sequence number only
counts packets actually sent (RFC 3550 §5.1). The receiver therefore places
the new talkspurt correctly in time. Set ``idle_silence=True`` where a
continuous stream is wanted anyway (e.g. a two-party bridge relaying our
packets 1:1 to a carrier whose SBC drops calls after seconds of one-way
silence); it costs one packet per 20 ms per call.

A partial last frame (the end of a response) is padded with u-law silence;
only the real audio bytes count as played.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Final

from controller.audio.g711 import ULAW_SILENCE
from controller.rtp.packet import PT_PCMU, RTP_HEADER_STRUCT

#: One 20 ms frame of G.711 at 8 kHz.
FRAME_BYTES: Final = 160
FRAME_PERIOD: Final = 0.020
#: u-law bytes per millisecond of audio (8 kHz, one byte per sample).
BYTES_PER_MS: Final = 8

_EMPTY_RANGE: Final = range(0)
_pack_header = RTP_HEADER_STRUCT.pack


# --- Schedule ------------------------------------------------------------------


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


# --- Outgoing RTP ---------------------------------------------------------------


class OutgoingStream:
    """Sequence number, timestamp and SSRC of the RTP stream we send to Asterisk.

    RFC 3550 §5.1: the initial sequence number and timestamp are random; the
    SSRC is random and constant for the call (ari-notes §1, asterisk#1324).
    The timestamp is ``base + samples_per_frame * frame_index``, so it follows
    wall time even across frames not sent; the marker bit is set on the first
    packet and on the first after a pause (RFC 3551 §4.1).

    Args:
        payload_type: PT of every packet (0 = PCMU).
        samples_per_frame: timestamp units per frame (160 for 20 ms at 8 kHz).
        ssrc: a fixed SSRC, or None for a random one.
        rng: the random source for SSRC and initial values (tests pass a seeded one).
    """

    __slots__ = (
        "payload_type",
        "samples_per_frame",
        "ssrc",
        "sequence_number",
        "timestamp_base",
        "packets_sent",
        "_last_index",
    )

    def __init__(
        self,
        *,
        payload_type: int = PT_PCMU,
        samples_per_frame: int = FRAME_BYTES,
        ssrc: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.SystemRandom()
        self.payload_type = payload_type
        self.samples_per_frame = samples_per_frame
        self.ssrc = rng.getrandbits(32) if ssrc is None else ssrc
        #: Sequence number of the next packet.
        self.sequence_number = rng.getrandbits(16)
        self.timestamp_base = rng.getrandbits(32)
        self.packets_sent = 0
        self._last_index: int | None = None

    def timestamp(self, frame_index: int) -> int:
        """Return the RTP timestamp of frame ``frame_index``."""
        return (self.timestamp_base + self.samples_per_frame * frame_index) & 0xFFFFFFFF

    def packet(self, payload: bytes, frame_index: int) -> bytes:
        """Return the RTP packet carrying ``payload`` as frame ``frame_index``.

        Args:
            payload: the u-law frame.
            frame_index: the frame's index on the :class:`FrameSchedule`.
        """
        last = self._last_index
        self._last_index = frame_index
        sequence_number = self.sequence_number
        self.sequence_number = (sequence_number + 1) & 0xFFFF
        self.packets_sent += 1
        # Marker: first packet, or first after frames with nothing to send (RFC 3551 §4.1).
        b1 = self.payload_type if last == frame_index - 1 else self.payload_type | 0x80
        timestamp = (self.timestamp_base + self.samples_per_frame * frame_index) & 0xFFFFFFFF
        # One pack and one concatenation measured faster than pack_into a reused buffer.
        return _pack_header(0x80, b1, sequence_number, timestamp, self.ssrc) + payload


# --- Playout queue ---------------------------------------------------------------


@dataclass(slots=True)
class ItemPlayback:
    """What happened to one model item's audio. Read it; do not modify it.

    Attributes:
        item_id: the Realtime conversation item id.
        received_bytes: u-law bytes accepted into the queue.
        played_bytes: bytes handed out in frames (sent to Asterisk).
        dropped_bytes: bytes refused (queue full, or item already flushed).
        ended: :meth:`Playout.end_item` was called: no more audio will come.
        flushed: :meth:`Playout.flush` discarded the item (barge-in).
    """

    item_id: str
    received_bytes: int = 0
    played_bytes: int = 0
    dropped_bytes: int = 0
    ended: bool = False
    flushed: bool = False

    @property
    def played_ms(self) -> int:
        """Milliseconds played, rounded down (never more than the caller heard)."""
        return self.played_bytes // BYTES_PER_MS

    @property
    def received_ms(self) -> int:
        """Milliseconds accepted into the queue, rounded down."""
        return self.received_bytes // BYTES_PER_MS

    @property
    def queued_bytes(self) -> int:
        """Bytes accepted but not played yet."""
        return 0 if self.flushed else self.received_bytes - self.played_bytes

    @property
    def finished(self) -> bool:
        """True once the item ended and all its audio was played (not flushed)."""
        return self.ended and not self.flushed and self.played_bytes == self.received_bytes


class _Segment:
    # A run of consecutive queued bytes of one item.
    __slots__ = ("item", "remaining")

    def __init__(self, item: ItemPlayback, remaining: int) -> None:
        self.item = item
        self.remaining = remaining


@dataclass(frozen=True, slots=True)
class Discarded:
    """One item cut short by :meth:`Playout.flush`.

    Attributes:
        item_id: the Realtime conversation item id.
        played_ms: what the caller heard, rounded down: the ``audio_end_ms``
            for ``conversation.item.truncate`` (it never exceeds what the
            model sent).
        received_ms: what the model had sent so far, rounded down.
        discarded_ms: what was queued and is now thrown away.
    """

    item_id: str
    played_ms: int
    received_ms: int
    discarded_ms: int


class Playout:
    """The queue of the model's u-law audio, handed out in 20 ms frames.

    Items follow each other without a gap (a frame may hold the end of one
    item and the start of the next). Memory is bounded: at most
    ``max_buffered_ms`` of audio is queued; what does not fit is dropped
    (tail drop), counted in :attr:`overflow_bytes` and in the item's
    ``dropped_bytes``, and :meth:`enqueue` returns how much it took. A
    model sends audio faster than real time, so the cap must hold a whole
    long answer; the default, two minutes, is 960 kB per call.

    Args:
        max_buffered_ms: cap on queued audio.
        idle_silence: when True, :meth:`next_frame` returns a silence frame
            instead of None when the queue is empty (see the module docstring).
        max_items: how many finished items to remember for :meth:`played_ms`.
    """

    __slots__ = (
        "max_buffered_bytes",
        "idle_silence",
        "max_items",
        "frames_audio",
        "frames_padded",
        "frames_idle",
        "overflow_bytes",
        "stale_bytes",
        "_buffer",
        "_segments",
        "_items",
        "_current",
        "_latest",
        "_pad",
    )

    def __init__(
        self,
        *,
        max_buffered_ms: int = 120_000,
        idle_silence: bool = False,
        max_items: int = 64,
    ) -> None:
        if max_buffered_ms <= 0:
            raise ValueError(f"max_buffered_ms must be positive, got {max_buffered_ms}")
        self.max_buffered_bytes = max_buffered_ms * BYTES_PER_MS
        self.idle_silence = idle_silence
        self.max_items = max_items
        #: Frames carrying model audio (including padded ones).
        self.frames_audio = 0
        #: Frames whose end was padded with silence (end of the queue).
        self.frames_padded = 0
        #: Due frames with nothing to play.
        self.frames_idle = 0
        #: Bytes dropped because the queue was full.
        self.overflow_bytes = 0
        #: Bytes dropped because their item had been flushed (late deltas after barge-in).
        self.stale_bytes = 0
        self._buffer = bytearray()
        # Which item each run of bytes in _buffer belongs to, in queue order.
        self._segments: deque[_Segment] = deque()
        self._items: dict[str, ItemPlayback] = {}
        self._current: ItemPlayback | None = None
        self._latest: ItemPlayback | None = None
        self._pad = bytes((ULAW_SILENCE,)) * FRAME_BYTES

    # -- input ---------------------------------------------------------------------

    def enqueue(self, item_id: str, ulaw: bytes) -> int:
        """Queue u-law audio of one model item.

        Args:
            item_id: the Realtime item id the audio belongs to.
            ulaw: u-law bytes, any length.

        Returns:
            The number of bytes accepted: less than ``len(ulaw)`` when the
            queue is full, 0 when the item was flushed already.
        """
        item = self._items.get(item_id)
        if item is None:
            item = self._new_item(item_id)
        size = len(ulaw)
        if item.flushed:
            item.dropped_bytes += size
            self.stale_bytes += size
            return 0
        room = self.max_buffered_bytes - len(self._buffer)
        accepted = size if size <= room else max(room, 0)
        if accepted < size:
            item.dropped_bytes += size - accepted
            self.overflow_bytes += size - accepted
        if not accepted:
            return 0
        self._buffer += ulaw if accepted == size else ulaw[:accepted]
        item.received_bytes += accepted
        segments = self._segments
        if segments and segments[-1].item is item:
            segments[-1].remaining += accepted
        else:
            segments.append(_Segment(item, accepted))
        return accepted

    def end_item(self, item_id: str) -> None:
        """Mark that no more audio will come for ``item_id`` (e.g. ``output_audio.done``)."""
        item = self._items.get(item_id)
        if item is None:
            item = self._new_item(item_id)
        item.ended = True

    # -- output --------------------------------------------------------------------

    def next_frame(self) -> bytes | None:
        """Return the next 20 ms frame, exactly 160 bytes, or None when there is nothing to play.

        Call it once per due frame of the :class:`FrameSchedule`. A partial
        last frame is padded with u-law silence; only the audio bytes count
        as played. With ``idle_silence`` an empty queue gives a silence frame.
        """
        buffer = self._buffer
        available = len(buffer)
        if not available:
            self._current = None
            self.frames_idle += 1
            return self._pad if self.idle_silence else None
        if available >= FRAME_BYTES:
            frame = bytes(buffer[:FRAME_BYTES])
            take = FRAME_BYTES
        else:
            frame = bytes(buffer) + self._pad[available:]
            take = available
            self.frames_padded += 1
        # Deleting from the front of a bytearray is O(1) in CPython (it moves the start).
        del buffer[:take]
        self.frames_audio += 1
        segments = self._segments
        while take:
            segment = segments[0]
            item = segment.item
            remaining = segment.remaining
            self._current = item
            if remaining <= take:
                item.played_bytes += remaining
                take -= remaining
                segments.popleft()
            else:
                item.played_bytes += take
                segment.remaining = remaining - take
                take = 0
        return frame

    def flush(self) -> list[Discarded]:
        """Discard all queued audio at once (barge-in) and close the items involved.

        The items cut short are those with audio still queued, the one
        playing (unless it finished), and the newest item if it has not
        ended (its audio may still be arriving, even if everything received
        so far was played). They are marked flushed: audio that arrives for
        them later is dropped (counted in :attr:`stale_bytes`), so deltas
        already in flight when the caller interrupted are never played.

        Returns:
            One :class:`Discarded` per item cut short, in queue order; its
            ``played_ms`` is the ``audio_end_ms`` to truncate the item to.
        """
        cut: dict[str, ItemPlayback] = {}
        current = self._current
        if current is not None and not current.finished:
            cut[current.item_id] = current
        for segment in self._segments:
            cut[segment.item.item_id] = segment.item
        latest = self._latest
        if latest is not None and not latest.ended:
            cut[latest.item_id] = latest
        result = []
        for item in cut.values():
            if item.flushed:
                continue
            discarded = item.received_bytes - item.played_bytes
            item.flushed = True
            result.append(
                Discarded(
                    item.item_id,
                    item.played_ms,
                    item.received_ms,
                    discarded // BYTES_PER_MS,
                )
            )
        self._buffer.clear()
        self._segments.clear()
        self._current = None
        return result

    # -- state -----------------------------------------------------------------------

    def item(self, item_id: str) -> ItemPlayback | None:
        """Return the playback record of ``item_id``, or None if unknown (or forgotten)."""
        return self._items.get(item_id)

    def played_ms(self, item_id: str) -> int:
        """Return the milliseconds of ``item_id`` played so far, rounded down (0 if unknown)."""
        item = self._items.get(item_id)
        return item.played_bytes // BYTES_PER_MS if item is not None else 0

    @property
    def current_item(self) -> str | None:
        """The item whose audio was in the last frame handed out, None when idle."""
        return self._current.item_id if self._current is not None else None

    @property
    def buffered_bytes(self) -> int:
        """Bytes queued and not yet played."""
        return len(self._buffer)

    @property
    def buffered_ms(self) -> int:
        """Milliseconds queued and not yet played, rounded down."""
        return len(self._buffer) // BYTES_PER_MS

    @property
    def idle(self) -> bool:
        """True when nothing is queued."""
        return not self._buffer

    def _new_item(self, item_id: str) -> ItemPlayback:
        items = self._items
        if len(items) >= self.max_items:
            # Forget the oldest items that have nothing queued any more.
            queued = {id(segment.item) for segment in self._segments}
            for old_id in list(items):
                if len(items) < self.max_items:
                    break
                old = items[old_id]
                if id(old) not in queued and old is not self._current and old is not self._latest:
                    del items[old_id]
        item = ItemPlayback(item_id)
        items[item_id] = item
        self._latest = item
        return item
