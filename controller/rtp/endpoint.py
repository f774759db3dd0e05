"""Thin asyncio adapters for media: the UDP RTP endpoint, the media clock, per-call glue.

* :class:`RtpEndpoint` owns one call's UDP socket, bound on ``MEDIA_ADDRESS``
  at a free port of ``MEDIA_PORTS``. Asterisk sends its RTP to that address
  (``external_host``) and never re-targets, and strict RTP accepts only
  packets from it, so every packet we send leaves from this same socket
  (ari-notes §1). Inbound packets are accepted only from Asterisk's RTP
  socket (``UNICASTRTP_LOCAL_ADDRESS``/``PORT``), parsed, counted and the
  PCMU payloads handed to a callback.
* :class:`MediaClock` is the one 20 ms clock of the process. A timer per
  call would cost 200 timer handles and wake-ups per tick at 200 calls and
  drift apart; one task on a monotonic :class:`FrameSchedule` ticks every
  call's subscriber instead.
* :class:`CallMedia` ties one call together: on each tick it sends the
  playout's due frames to Asterisk and feeds the gap filler's silence to
  the model.

Nothing here logs per packet or per frame; each kind of anomaly is logged
once per endpoint and counted in :class:`~controller.rtp.stats.ReceiveStats`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import random
import socket
from collections.abc import Callable
from typing import Any, Protocol

from controller.audio.g711 import ULAW_SILENCE_FRAME
from controller.errors import MediaError, NoFreePortError, RtpParseError
from controller.logs import kv
from controller.rtp.gapfill import GapFiller
from controller.rtp.packet import PT_CN, PT_PCMU, RtpPacket
from controller.rtp.playout import FRAME_PERIOD, FrameSchedule, OutgoingStream, Playout
from controller.rtp.stats import ACCEPT, ReceiveStats

log = logging.getLogger(__name__)

AudioCallback = Callable[[bytes], None]

#: Packets kept while Asterisk's address is not known yet (500 ms of 20 ms frames).
EARLY_PACKETS = 25
#: Most datagrams read from one socket per tick (normally 1; more after a
#: stall or a flood, which then waits for the next tick rather than starving
#: the other calls).
MAX_POLL = 64
#: At most one "media clock stalled" warning per this many seconds.
STALL_WARNING_INTERVAL = 10.0


# --- Port allocation -------------------------------------------------------------


def bind_free_port(
    host: str, port_range: tuple[int, int], *, rng: random.Random | None = None
) -> socket.socket:
    """Bind a UDP socket on ``host`` at a free port of ``port_range``.

    Ports are tried in order from a random starting point, wrapping around,
    so that concurrent calls rarely race for the same port and a port freed
    by a call that just ended (which stray packets may still reach) is not
    handed out again at once. No ``SO_REUSEADDR``/``SO_REUSEPORT``: two
    calls must never share a port.

    Args:
        host: ``MEDIA_ADDRESS``, an IPv4 or IPv6 address of this host.
        port_range: ``MEDIA_PORTS`` as an inclusive ``(first, last)`` pair.
        rng: random source for the starting point.

    Returns:
        The bound, non-blocking socket.

    Raises:
        NoFreePortError: every port in the range is taken.
        MediaError: ``host`` is not an address of this host, or binding failed
            for another reason.
    """
    first, last = port_range
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    count = last - first + 1
    offset = (rng or random).randrange(count)
    for i in range(count):
        port = first + (offset + i) % count
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            if exc.errno == errno.EADDRNOTAVAIL:
                raise MediaError(f"MEDIA_ADDRESS {host} is not an address of this host") from exc
            raise MediaError(f"cannot bind UDP {host}:{port}: {exc.strerror}") from exc
        sock.setblocking(False)
        return sock
    raise NoFreePortError(f"no free UDP port in MEDIA_PORTS {first}-{last} on {host}")


# --- RTP endpoint ------------------------------------------------------------------


class RtpEndpoint:
    """One call's RTP socket toward Asterisk's UnicastRTP channel.

    Create it with :meth:`open`. The socket is *polled*, not registered with
    the event loop: :meth:`poll` drains it, and the call's :class:`CallMedia`
    calls it at the start of every media-clock tick. A socket watched by the
    loop wakes the process once per packet, 50 times a second per call (each
    call's packets arrive on their own 20 ms grid); polled on the shared
    clock, the whole process wakes 50 times a second however many calls run.
    That wake-up was the largest single CPU cost per call (measured with
    ``bench/bench_calls.py``). The price is up to one tick (20 ms, 10 ms on
    average) of extra latency on the caller's audio.

    Until :meth:`set_remote` is called, inbound
    datagrams are kept (up to :data:`EARLY_PACKETS`, the rest dropped and
    counted in ``stats.early``) and replayed through the normal checks once
    the remote address is known: Asterisk starts sending as soon as the
    channel is bridged, which normally comes after the externalMedia response
    has told us its address, but keeping the first 500 ms costs nothing and
    keeps the caller's first word if the order ever differs. Frames to send
    before the remote is known are dropped (counted in :attr:`unsent`).

    ``datagram_received`` never raises: a callback that fails is logged
    once and counted in :attr:`callback_errors`.

    Args:
        on_audio: called with each new, in-order PCMU payload from Asterisk
            (typically 160 bytes); it must not block.
        payload_type: the payload type to deliver (0 = PCMU); comfort noise
            (PT 13) and other types are counted and ignored.
        stream: the outgoing stream (SSRC, sequence numbers); a random one by default.
    """

    def __init__(
        self,
        on_audio: AudioCallback,
        *,
        payload_type: int = PT_PCMU,
        stream: OutgoingStream | None = None,
    ) -> None:
        self.on_audio = on_audio
        self.payload_type = payload_type
        self.stream = stream or OutgoingStream(payload_type=payload_type)
        self.stats = ReceiveStats()
        #: Frames not sent because the remote was unknown or the socket closed.
        self.unsent = 0
        #: Exceptions raised by ``on_audio``.
        self.callback_errors = 0
        #: Errors reported by the socket (e.g. ICMP port unreachable).
        self.socket_errors = 0
        self.remote: tuple[str, int] | None = None
        self.local_address: tuple[str, int] = ("", 0)
        self._sock: socket.socket | None = None
        self._time: Callable[[], float] = _zero_time
        self._early: list[tuple[bytes, tuple[Any, ...]]] | None = []
        self._logged: set[str] = set()
        self._closed: asyncio.Future[None] | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port_range: tuple[int, int],
        on_audio: AudioCallback,
        *,
        rng: random.Random | None = None,
        payload_type: int = PT_PCMU,
        stream: OutgoingStream | None = None,
    ) -> RtpEndpoint:
        """Bind a socket on ``host`` in ``port_range`` (read it with :meth:`poll`).

        Args:
            host: ``MEDIA_ADDRESS``.
            port_range: ``MEDIA_PORTS`` as ``(first, last)``.
            on_audio: see the class docstring.
            rng: random source for the port search.
            payload_type: see the class docstring.
            stream: see the class docstring.

        Raises:
            NoFreePortError: every port in the range is taken.
            MediaError: the socket could not be bound or set up.
        """
        loop = asyncio.get_running_loop()
        sock = bind_free_port(host, port_range, rng=rng)
        endpoint = cls(on_audio, payload_type=payload_type, stream=stream)
        sockname = sock.getsockname()
        endpoint.local_address = (sockname[0], sockname[1])
        endpoint._sock = sock
        endpoint._time = loop.time
        endpoint._closed = loop.create_future()
        return endpoint

    # -- receiving -----------------------------------------------------------------------

    def poll(self) -> int:
        """Receive every datagram waiting on the socket (at most :data:`MAX_POLL`).

        Returns:
            How many datagrams were read. Never raises.
        """
        sock = self._sock
        if sock is None:
            return 0
        recvfrom = sock.recvfrom
        count = 0
        while count < MAX_POLL:
            try:
                data, addr = recvfrom(2048)
            except BlockingIOError:
                break
            except OSError as exc:
                # e.g. ECONNREFUSED: an ICMP unreachable for an earlier send
                # (Asterisk's channel is gone). The error is consumed; go on.
                self.socket_errors += 1
                self._log_once("socket_error", "RTP socket error", error=exc)
                continue
            count += 1
            self.datagram_received(data, addr)
        return count

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """Check the source, parse, count, and deliver PCMU audio. Never raises."""
        try:
            remote = self.remote
            if remote is None:
                self._keep_early(data, addr)
            elif addr[1] != remote[1] or addr[0] != remote[0]:
                self.stats.foreign += 1
                self._log_once("foreign", "RTP from an unexpected address dropped", source=addr[0])
            else:
                self._receive(data)
        except Exception as exc:
            self.callback_errors += 1
            self._log_once("callback", "RTP audio callback failed", error=repr(exc), exc=exc)

    # -- API ---------------------------------------------------------------------------

    def set_remote(self, host: str, port: int) -> None:
        """Set Asterisk's RTP address (``UNICASTRTP_LOCAL_ADDRESS``/``_PORT``).

        From now on only datagrams from this address are accepted and all
        frames go to it. Datagrams kept while it was unknown are replayed.

        Raises:
            MediaError: ``host`` is not an IP address or ``port`` is out of range.
        """
        try:
            normalized = ipaddress.ip_address(host).compressed
        except ValueError as exc:
            raise MediaError(f"Asterisk's RTP address {host!r} is not an IP address") from exc
        if not 0 < port < 65536:
            raise MediaError(f"Asterisk's RTP port {port} is out of range")
        self.remote = (normalized, port)
        early, self._early = self._early, None
        for data, addr in early or ():
            self.datagram_received(data, addr)

    def send_frame(self, payload: bytes, frame_index: int) -> None:
        """Send one frame as RTP to Asterisk, stamped by :attr:`stream`.

        Args:
            payload: the u-law frame (160 bytes).
            frame_index: the frame's index on the call's :class:`FrameSchedule`;
                the RTP timestamp is derived from it.
        """
        sock = self._sock
        remote = self.remote
        if sock is None or remote is None:
            self.unsent += 1
            return
        try:
            sock.sendto(self.stream.packet(payload, frame_index), remote)
        except OSError as exc:
            # A full socket buffer (BlockingIOError) or an ICMP error: this
            # frame is lost, the call goes on.
            self.unsent += 1
            self.socket_errors += 1
            self._log_once("send_error", "RTP send failed", error=exc)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the socket is closed."""
        if self._closed is not None:
            await asyncio.shield(self._closed)

    # -- internals ------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        stats = self.stats
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError as exc:
            stats.parse_errors += 1
            self._log_once("parse", "invalid RTP datagram dropped", error=exc)
            return
        # Every packet of the stream (CN included) takes a sequence number,
        # so every one goes through the sequence bookkeeping (RFC 3550 §A.1).
        verdict = stats.update(packet.sequence_number, packet.timestamp, packet.ssrc, self._time())
        payload_type = packet.payload_type
        if payload_type != self.payload_type:
            if payload_type == PT_CN:
                stats.comfort_noise += 1
            else:
                stats.other_payload_type += 1
                self._log_once("pt", "RTP with an unexpected payload type ignored", pt=payload_type)
            return
        if verdict == ACCEPT and packet.payload:
            self.on_audio(packet.payload)

    def _keep_early(self, data: bytes, addr: tuple[Any, ...]) -> None:
        early = self._early
        if early is not None and len(early) < EARLY_PACKETS:
            early.append((data, addr))
        else:
            self.stats.early += 1

    def _log_once(
        self, key: str, message: str, exc: BaseException | None = None, **fields: object
    ) -> None:
        # One line per kind of anomaly per endpoint: never per packet.
        if key in self._logged:
            return
        self._logged.add(key)
        local = f"{self.local_address[0]}:{self.local_address[1]}"
        log.warning("%s %s", message, kv(local=local, **fields), exc_info=exc)


def _zero_time() -> float:
    return 0.0


# --- Media clock ------------------------------------------------------------------------


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


# --- One call's media ---------------------------------------------------------------------


class CallMedia:
    """One call's media path, ticked by the :class:`MediaClock`.

    Toward Asterisk: on every tick, one :meth:`Playout.next_frame` per due
    frame, sent by the endpoint (nothing is sent for an empty queue; the RTP
    timestamp still follows the frame index). Toward the model: each tick
    first drains the socket (:meth:`RtpEndpoint.poll`), every new PCMU payload
    goes to ``on_audio``, and when the caller's side goes quiet on the wire,
    the :class:`GapFiller` adds u-law silence frames through the same callback.

    Create it with :meth:`open`; :meth:`close` unregisters it and closes
    the socket.

    Args:
        clock: the process's media clock.
        endpoint: the call's RTP endpoint.
        on_audio: receives caller audio (u-law bytes), real or filled.
        playout: the model-audio queue (a default one if omitted).
        gap_threshold: silence to wait before filling; None disables the filler.
    """

    def __init__(
        self,
        clock: MediaClock,
        endpoint: RtpEndpoint,
        on_audio: AudioCallback,
        *,
        playout: Playout | None = None,
        gap_threshold: float | None = 0.100,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.clock = clock
        self.endpoint = endpoint
        self.on_audio = on_audio
        self.playout = playout or Playout()
        self.schedule = clock.new_schedule()
        self._time = loop.time
        self.gap_filler = (
            GapFiller(loop.time(), threshold=gap_threshold) if gap_threshold is not None else None
        )
        endpoint.on_audio = self._from_asterisk
        clock.register(self)

    @classmethod
    async def open(
        cls,
        clock: MediaClock,
        host: str,
        port_range: tuple[int, int],
        on_audio: AudioCallback,
        *,
        playout: Playout | None = None,
        gap_threshold: float | None = 0.100,
        rng: random.Random | None = None,
    ) -> CallMedia:
        """Bind the call's RTP socket and start ticking.

        Raises:
            NoFreePortError: every port in ``port_range`` is taken.
            MediaError: the socket could not be set up.
        """
        endpoint = await RtpEndpoint.open(host, port_range, on_audio, rng=rng)
        return cls(clock, endpoint, on_audio, playout=playout, gap_threshold=gap_threshold)

    @property
    def local_address(self) -> tuple[str, int]:
        """``(host, port)`` to pass as ``external_host``."""
        return self.endpoint.local_address

    def set_remote(self, host: str, port: int) -> None:
        """Set Asterisk's RTP address (see :meth:`RtpEndpoint.set_remote`)."""
        self.endpoint.set_remote(host, port)

    def tick(self, now: float) -> None:
        """Send the due frames and feed any gap silence. Called by the clock."""
        playout = self.playout
        endpoint = self.endpoint
        endpoint.poll()
        for index in self.schedule.due(now):
            frame = playout.next_frame()
            if frame is not None:
                endpoint.send_frame(frame, index)
        gap_filler = self.gap_filler
        if gap_filler is not None:
            for _ in range(gap_filler.frames_due(now)):
                self.on_audio(ULAW_SILENCE_FRAME)

    def close(self) -> None:
        """Stop ticking and close the socket (idempotent)."""
        self.clock.unregister(self)
        self.endpoint.close()

    def summary(self) -> dict[str, int | float]:
        """Counters of the call's media, flat, for one ``kv(...)`` log line at the end of a call."""
        rx = self.endpoint.stats.snapshot()
        playout = self.playout
        gap = self.gap_filler
        return {
            "rx_packets": rx.received,
            "rx_lost": rx.lost,
            "rx_late": rx.late,
            "rx_duplicate": rx.duplicate,
            "rx_jitter_ms": round(rx.jitter_ms, 1),
            "rx_foreign": rx.foreign,
            "rx_comfort_noise": rx.comfort_noise,
            "rx_bad": rx.parse_errors + rx.other_payload_type + rx.jumps + rx.early,
            "tx_packets": self.endpoint.stream.packets_sent,
            "tx_unsent": self.endpoint.unsent,
            "tx_padded": playout.frames_padded,
            "tx_overflow_bytes": playout.overflow_bytes,
            "tx_stale_bytes": playout.stale_bytes,
            "clock_resyncs": self.schedule.resyncs,
            "gap_frames": gap.filled_frames if gap is not None else 0,
        }

    def _from_asterisk(self, payload: bytes) -> None:
        if self.gap_filler is not None:
            self.gap_filler.audio_received(self._time())
        self.on_audio(payload)
