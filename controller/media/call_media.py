"""One call's media: RTP to and from Asterisk, paced by the shared media clock.

:class:`CallMedia` is the whole media API a call sees. It ties together the
call's :class:`~controller.rtp.endpoint.RtpEndpoint` (socket), its
:class:`~controller.media.playout.Playout` (the model's audio waiting to be
played) and a :class:`~controller.media.gapfill.GapFiller`, on the
:class:`~controller.media.clock.MediaClock`.

* The clock drains the socket on every one of its ticks (10 ms) when it has
  data (:meth:`RtpEndpoint.poll`): every new, in-order PCMU payload from
  Asterisk goes to the call's ``on_audio`` at once.
* Once per 20 ms, on the call's phase of the clock, :meth:`CallMedia.tick`
  takes one frame from the playout and sends it (nothing is sent while the
  playout is empty; the RTP timestamp still follows the clock), and, when the
  caller's side has been quiet on the wire for ``gap_threshold``, feeds u-law
  silence frames to ``on_audio`` at the real-time rate.
* When the model's audio arrives while nothing is playing,
  :meth:`CallMedia.play` sends its first frame at once and moves the call to
  the phase of the current tick (the first frame is stamped as that tick's):
  the next frame goes out on that phase's next tick, 10 to 20 ms later
  (never later than a 20 ms grid from the first frame would have it, so the
  caller's side never runs dry), then one every 20 ms. The agent's first
  word waits for no tick.

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

from controller.audio.constants import ULAW_SILENCE_FRAME
from controller.media.clock import MediaClock
from controller.media.gapfill import GapFiller
from controller.media.playout import FRAME_BYTES, Cut, Playout
from controller.rtp.endpoint import MAX_POLL, RtpEndpoint
from controller.rtp.ports import bind_free_port
from controller.rtp.sender import SAMPLES_PER_FRAME, OutgoingStream

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
    playout queue, the gap filler) is internal.

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
        # The RTP timestamp follows the clock's ticks (several per frame).
        stream = OutgoingStream(
            samples_per_tick=SAMPLES_PER_FRAME // clock.phases, ticks_per_frame=clock.phases
        )
        # The endpoint delivers to _from_asterisk, which notes the arrival for
        # the gap filler before passing the audio on.
        self._endpoint = RtpEndpoint(self._from_asterisk, sock=sock, time=loop.time, stream=stream)
        self._playout = playout or Playout()
        self._gap_filler = (
            GapFiller(loop.time(), threshold=gap_threshold) if gap_threshold is not None else None
        )
        self._resyncs_before = clock.resyncs
        self._resyncs: int | None = None
        self._sock: socket.socket | None = sock
        self._last_read = -2
        clock.register(self)
        clock.add_reader(sock, self._read)

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
        """Queue u-law audio of one model item.

        When nothing was playing and a whole frame is queued, the first frame
        goes out now and the call's 20 ms grid starts from it (see the module
        docstring); otherwise the audio follows what is queued. Audio for an
        item already cut by :meth:`interrupt` is dropped, and audio beyond
        the queue's cap too (both counted in :meth:`summary`).
        """
        playout = self._playout
        idle = playout.idle
        playout.enqueue(item_id, ulaw)
        if idle and playout.buffered_bytes >= FRAME_BYTES:
            self._start_talkspurt()

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
        """Send this period's frame and feed any gap silence. Called by the clock."""
        frame = self._playout.next_frame()
        if frame is not None:
            self._endpoint.send_frame(frame, self._clock.tick_index)
        if self._playout.started:
            self._notify_started(now)
        gap_filler = self._gap_filler
        if gap_filler is not None:
            for _ in range(gap_filler.frames_due(now)):
                self._on_audio(ULAW_SILENCE_FRAME)

    def _start_talkspurt(self) -> None:
        """Send the first frame now and move the call's grid to the current tick."""
        clock = self._clock
        tick = clock.tick_index
        last = self._endpoint.stream.last_tick
        if last is not None and tick < last + clock.phases:
            return  # the previous frame is still playing: the next one follows it
        frame = self._playout.next_frame()
        if frame is None:
            return
        self._endpoint.send_frame(frame, tick)
        clock.set_phase(self, tick)
        self._notify_started(self._time())

    def _notify_started(self, now: float) -> None:
        started = self._playout.started
        callback = self._on_item_started
        if callback is not None:
            for item_id in started:
                callback(item_id, now)
        started.clear()

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
            clock_resyncs=self._clock_resyncs(),
            socket_errors=endpoint.socket_errors,
            callback_errors=endpoint.callback_errors,
            underruns=playout.underruns,
        )

    def close(self) -> None:
        """Stop ticking and close the socket (idempotent)."""
        clock = self._clock
        if self._resyncs is None:
            self._resyncs = clock.resyncs - self._resyncs_before
        clock.unregister(self)
        sock, self._sock = self._sock, None
        if sock is not None:
            clock.remove_reader(sock)
        self._endpoint.close()

    def _clock_resyncs(self) -> int:
        if self._resyncs is not None:
            return self._resyncs
        return self._clock.resyncs - self._resyncs_before

    def _read(self) -> None:
        # One datagram per tick (the clock calls again while more are waiting):
        # a packet comes every 20 ms, a tick every 10, so reading on until the
        # socket is empty would cost a second, failing, system call per packet.
        # Readable on two ticks in a row means a backlog (after a stall, or a
        # burst from Asterisk): then drain it all at once.
        tick = self._clock.tick_index
        backlog = tick - self._last_read <= 1
        self._last_read = tick
        self._endpoint.poll(MAX_POLL if backlog else 1)

    def _from_asterisk(self, payload: bytes) -> None:
        if self._gap_filler is not None:
            self._gap_filler.audio_received(self._time())
        self._on_audio(payload)
