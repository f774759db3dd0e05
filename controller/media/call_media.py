"""One call's media: RTP to and from Asterisk, paced by the shared media clock.

:class:`CallMedia` is the whole media API a call sees. It ties together the
call's :class:`~controller.rtp.endpoint.RtpEndpoint` (socket), its
:class:`~controller.media.playout.Playout` (the model's audio waiting to be
played), a :class:`~controller.media.schedule.FrameSchedule` on the
:class:`~controller.media.clock.MediaClock`'s grid, and a
:class:`~controller.media.gapfill.GapFiller`.

On every clock tick, :meth:`CallMedia.tick`:

1. drains the socket (:meth:`RtpEndpoint.poll`): every new, in-order PCMU
   payload from Asterisk goes to the call's ``on_audio``;
2. for each due frame, takes one frame from the playout and sends it
   (nothing is sent while the playout is empty; the RTP timestamp still
   follows the frame index);
3. when the caller's side has been quiet on the wire for ``gap_threshold``,
   feeds u-law silence frames to ``on_audio`` at the real-time rate.

The call queues the model's audio with :meth:`CallMedia.play`, cuts it on
barge-in with :meth:`CallMedia.interrupt`, and logs :meth:`CallMedia.summary`
when it ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

from controller.audio.g711 import ULAW_SILENCE_FRAME
from controller.media.clock import MediaClock
from controller.media.gapfill import GapFiller
from controller.media.playout import Cut, Playout
from controller.rtp.endpoint import RtpEndpoint
from controller.rtp.ports import bind_free_port

__all__ = ["CallMedia", "Cut", "MediaSummary"]

AudioCallback = Callable[[bytes], None]
ItemStartedCallback = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class MediaSummary:
    """Every counter of one call's media, for the end-of-call log line.

    Attributes:
        rx_received: valid RTP packets from Asterisk's address.
        rx_lost: packets the sequence numbers say were sent but never came.
        rx_late: packets that came after a later one (not delivered).
        rx_duplicate: packets seen twice (not delivered).
        rx_jitter_ms: RFC 3550 interarrival jitter, in milliseconds.
        rx_foreign: datagrams from any other address (dropped).
        rx_comfort_noise: comfort-noise packets (ignored).
        rx_bad: datagrams dropped for another reason: not RTP, an unexpected
            payload type, the first of a big sequence jump, or over the limit
            before Asterisk's address was known.
        tx_packets: RTP packets sent to Asterisk.
        tx_unsent: frames not sent (address not known yet, socket closed or
            a send error).
        tx_padded: frames whose end was padded with silence (end of an answer).
        tx_overflow_bytes: model audio dropped because the queue was full.
        tx_stale_bytes: model audio dropped because it came for an item
            already cut by :meth:`CallMedia.interrupt`.
        played_frames: frames that carried model audio.
        gap_frames: silence frames fed to the model while Asterisk sent nothing.
        clock_resyncs: stalls long enough to make this call skip frames.
        socket_errors: errors the socket reported (e.g. ICMP port unreachable).
        callback_errors: exceptions raised by the call's ``on_audio``.
        underruns: times the queue ran dry while the model was still sending
            the playing item (the caller heard a gap).
    """

    rx_received: int
    rx_lost: int
    rx_late: int
    rx_duplicate: int
    rx_jitter_ms: float
    rx_foreign: int
    rx_comfort_noise: int
    rx_bad: int
    tx_packets: int
    tx_unsent: int
    tx_padded: int
    tx_overflow_bytes: int
    tx_stale_bytes: int
    played_frames: int
    gap_frames: int
    clock_resyncs: int
    socket_errors: int
    callback_errors: int
    underruns: int

    def as_fields(self) -> dict[str, int | float]:
        """The counters as a flat dict, in field order, for one ``kv(...)`` log line."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


class CallMedia:
    """One call's media path, ticked by the :class:`MediaClock`.

    Create it with :meth:`open`; :meth:`close` stops the ticks and closes
    the socket. Everything else about the call's media (the endpoint, the
    playout queue, the schedule, the gap filler) is internal.

    Args:
        clock: the process's media clock.
        sock: the call's bound, non-blocking UDP socket (closed by :meth:`close`).
        on_audio: receives caller audio (u-law bytes), real or filled; it
            must not block.
        gap_threshold: silence to wait before filling; None disables the filler.
        playout: the model-audio queue (a default one if omitted).
    """

    def __init__(
        self,
        clock: MediaClock,
        sock: socket.socket,
        on_audio: AudioCallback,
        *,
        gap_threshold: float | None = 0.100,
        playout: Playout | None = None,
        on_item_started: ItemStartedCallback | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._clock = clock
        self._on_audio = on_audio
        self._on_item_started = on_item_started
        self._time = loop.time
        # The endpoint delivers to _from_asterisk, which notes the arrival for
        # the gap filler before passing the audio on.
        self._endpoint = RtpEndpoint(self._from_asterisk, sock=sock, time=loop.time)
        self._playout = playout or Playout()
        self._schedule = clock.new_schedule()
        self._gap_filler = (
            GapFiller(loop.time(), threshold=gap_threshold) if gap_threshold is not None else None
        )
        clock.register(self)

    @classmethod
    async def open(
        cls,
        clock: MediaClock,
        host: str,
        port_range: tuple[int, int],
        on_audio: AudioCallback,
        *,
        gap_threshold: float | None = 0.100,
        playout: Playout | None = None,
        rng: random.Random | None = None,
        on_item_started: ItemStartedCallback | None = None,
    ) -> CallMedia:
        """Bind the call's RTP socket and start ticking.

        Args:
            clock: the process's media clock.
            host: ``MEDIA_ADDRESS``.
            port_range: ``MEDIA_PORTS`` as ``(first, last)``.
            on_audio: see the class docstring.
            gap_threshold: see the class docstring.
            playout: see the class docstring.
            rng: random source for the port search.
            on_item_started: called with ``(item_id, now)`` on the tick that
                sends an item's first frame (where turn latency ends).

        Raises:
            NoFreePortError: every port in ``port_range`` is taken.
            MediaError: the socket could not be set up.
        """
        sock = bind_free_port(host, port_range, rng=rng)
        try:
            return cls(
                clock,
                sock,
                on_audio,
                gap_threshold=gap_threshold,
                playout=playout,
                on_item_started=on_item_started,
            )
        except BaseException:
            sock.close()
            raise

    # -- addresses ---------------------------------------------------------------------

    @property
    def local_address(self) -> tuple[str, int]:
        """``(host, port)`` of the call's socket, to pass as ``external_host``."""
        return self._endpoint.local_address

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """Asterisk's RTP address once :meth:`set_remote` was called, else None."""
        return self._endpoint.remote

    def set_remote(self, host: str, port: int) -> None:
        """Set Asterisk's RTP address (``UNICASTRTP_LOCAL_ADDRESS``/``_PORT``).

        From now on only packets from this address are accepted and all
        frames go to it; packets that came before are replayed through the
        same checks.

        Raises:
            MediaError: ``host`` is not an IP address or ``port`` is out of range.
        """
        self._endpoint.set_remote(host, port)

    # -- the model's audio -----------------------------------------------------------------

    def play(self, item_id: str, ulaw: bytes) -> None:
        """Queue u-law audio of one model item; it goes out from the next due frame.

        Audio for an item already cut by :meth:`interrupt` is dropped, and
        audio beyond the queue's cap too (both counted in :meth:`summary`).
        """
        self._playout.enqueue(item_id, ulaw)

    def end_item(self, item_id: str) -> None:
        """Note that the model finished sending ``item_id`` (``output_audio.done``)."""
        self._playout.end_item(item_id)

    def interrupt(self) -> list[Cut]:
        """Drop all queued model audio now (barge-in): nothing more of it goes out.

        Returns:
            One :class:`Cut` per item cut short, in queue order, with what
            the caller heard of it (``played_ms``, the ``audio_end_ms`` to
            truncate to) and what the model had sent (``received_ms``).
            Later audio for those items is dropped.
        """
        return self._playout.flush()

    @property
    def speaking(self) -> bool:
        """True while model audio is queued or playing."""
        return not self._playout.idle

    @property
    def current_item(self) -> str | None:
        """The item whose audio went out in the latest frame, None when nothing is playing."""
        return self._playout.current_item

    def played_ms(self, item_id: str) -> int:
        """Milliseconds of ``item_id`` sent to Asterisk so far, rounded down (0 if unknown)."""
        return self._playout.played_ms(item_id)

    # -- the clock -------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Read the socket, send the due frames and feed any gap silence. Called by the clock."""
        playout = self._playout
        endpoint = self._endpoint
        endpoint.poll()
        for index in self._schedule.due(now):
            frame = playout.next_frame()
            if frame is not None:
                endpoint.send_frame(frame, index)
        started = playout.started
        if started:
            callback = self._on_item_started
            if callback is not None:
                for item_id in started:
                    callback(item_id, now)
            started.clear()
        gap_filler = self._gap_filler
        if gap_filler is not None:
            for _ in range(gap_filler.frames_due(now)):
                self._on_audio(ULAW_SILENCE_FRAME)

    # -- end -------------------------------------------------------------------------------

    def summary(self) -> MediaSummary:
        """Return every counter of the call's media (valid after :meth:`close` too)."""
        endpoint = self._endpoint
        rx = endpoint.stats.snapshot()
        playout = self._playout
        gap = self._gap_filler
        return MediaSummary(
            rx_received=rx.received,
            rx_lost=rx.lost,
            rx_late=rx.late,
            rx_duplicate=rx.duplicate,
            rx_jitter_ms=round(rx.jitter_ms, 1),
            rx_foreign=rx.foreign,
            rx_comfort_noise=rx.comfort_noise,
            rx_bad=rx.parse_errors + rx.other_payload_type + rx.jumps + rx.early,
            tx_packets=endpoint.stream.packets_sent,
            tx_unsent=endpoint.unsent,
            tx_padded=playout.frames_padded,
            tx_overflow_bytes=playout.overflow_bytes,
            tx_stale_bytes=playout.stale_bytes,
            played_frames=playout.frames_audio,
            gap_frames=gap.filled_frames if gap is not None else 0,
            clock_resyncs=self._schedule.resyncs,
            socket_errors=endpoint.socket_errors,
            callback_errors=endpoint.callback_errors,
            underruns=playout.underruns,
        )

    def close(self) -> None:
        """Stop ticking and close the socket (idempotent)."""
        self._clock.unregister(self)
        self._endpoint.close()

    def _from_asterisk(self, payload: bytes) -> None:
        if self._gap_filler is not None:
            self._gap_filler.audio_received(self._time())
        self._on_audio(payload)
