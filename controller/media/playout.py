"""The queue of the model's audio toward Asterisk: 20 ms frames, flush, played-ms (pure).

Theory of operation
-------------------
:class:`Playout` is the queue of u-law bytes the model sent, tagged with the
conversation item they belong to. On every due frame of the call's
:class:`~controller.media.schedule.FrameSchedule`, :meth:`Playout.next_frame`
hands out exactly 160 bytes and counts, per item, the bytes actually handed
out, so barge-in can tell the model how much the caller heard
(``conversation.item.truncate`` ``audio_end_ms``). The
:class:`~controller.media.call_media.CallMedia` of the call sends each frame
through the endpoint, stamped by :class:`~controller.rtp.sender.OutgoingStream`.

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

The RTP timestamp keeps wall time across the pause and the next talkspurt
carries the marker bit (see :mod:`controller.rtp.sender`). Set
``idle_silence=True`` where a continuous stream is wanted anyway (e.g. a
two-party bridge relaying our packets 1:1 to a carrier whose SBC drops calls
after seconds of one-way silence); it costs one packet per 20 ms per call.

A partial last frame (the end of a response) is padded with u-law silence;
only the real audio bytes count as played.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from controller.audio.constants import ULAW_SILENCE

#: One 20 ms frame of G.711 at 8 kHz.
FRAME_BYTES: Final = 160
#: u-law bytes per millisecond of audio (8 kHz, one byte per sample).
BYTES_PER_MS: Final = 8


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
class Cut:
    """One item cut short by :meth:`Playout.flush`.

    Attributes:
        item_id: the Realtime conversation item id.
        played_ms: what the caller heard, rounded down: the ``audio_end_ms``
            for ``conversation.item.truncate`` (it never exceeds what the
            model sent).
        received_ms: what the model had sent so far, rounded down.
        discarded_ms: what was queued and is now thrown away.
        finished: the model had sent all of the item and all of it was
            played before the cut, so there is nothing to truncate. (The
            flush never cuts such an item, so this is False in practice;
            it is here so the caller need not know that.)
    """

    item_id: str
    played_ms: int
    received_ms: int
    discarded_ms: int
    finished: bool = False


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
        "underruns",
        "started",
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
        #: Times the queue ran dry while the playing item was still arriving
        #: (the model sent slower than real time: the caller hears a gap).
        self.underruns = 0
        #: Items whose first frame went out since the owner last cleared this
        #: (the owner reads and clears it; turn latency ends there).
        self.started: list[str] = []
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

        Call it once per due frame of the call's
        :class:`~controller.media.schedule.FrameSchedule`. A partial
        last frame is padded with u-law silence; only the audio bytes count
        as played. With ``idle_silence`` an empty queue gives a silence frame.
        """
        buffer = self._buffer
        available = len(buffer)
        if not available:
            current = self._current
            if current is not None and not current.ended and not current.flushed:
                self.underruns += 1
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
            if not item.played_bytes:
                self.started.append(item.item_id)
            if remaining <= take:
                item.played_bytes += remaining
                take -= remaining
                segments.popleft()
            else:
                item.played_bytes += take
                segment.remaining = remaining - take
                take = 0
        return frame

    def flush(self) -> list[Cut]:
        """Discard all queued audio at once (barge-in) and close the items involved.

        The items cut short are those with audio still queued, the one
        playing (unless it finished), and the newest item if it has not
        ended (its audio may still be arriving, even if everything received
        so far was played). They are marked flushed: audio that arrives for
        them later is dropped (counted in :attr:`stale_bytes`), so deltas
        already in flight when the caller interrupted are never played.

        Returns:
            One :class:`Cut` per item cut short, in queue order; its
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
            finished = item.finished
            item.flushed = True
            result.append(
                Cut(
                    item.item_id,
                    item.played_ms,
                    item.received_ms,
                    discarded // BYTES_PER_MS,
                    finished,
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
