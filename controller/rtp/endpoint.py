"""One call's UDP RTP socket toward Asterisk's UnicastRTP channel (a thin adapter).

:class:`RtpEndpoint` owns one call's UDP socket, bound on ``MEDIA_ADDRESS``
at a free port of ``MEDIA_PORTS`` (:func:`~controller.rtp.ports.bind_free_port`).
Asterisk sends its RTP to that address (``external_host``) and never
re-targets, and strict RTP accepts only packets from it, so every packet we
send leaves from this same socket (ari-notes §1). Inbound packets are
accepted only from Asterisk's RTP socket (``UNICASTRTP_LOCAL_ADDRESS``/
``PORT``), parsed, counted and the PCMU payloads handed to the callback
given when the endpoint was made.

Nothing here logs per packet; each kind of anomaly is logged once per
endpoint and counted in :class:`~controller.rtp.stats.ReceiveStats`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Callable
from typing import Any

from controller.errors import MediaError, RtpParseError
from controller.logs import kv
from controller.rtp.packet import PT_CN, PT_PCMU, RtpPacket
from controller.rtp.ports import bind_free_port
from controller.rtp.sender import OutgoingStream
from controller.rtp.stats import ACCEPT, ReceiveStats

log = logging.getLogger(__name__)

AudioCallback = Callable[[bytes], None]

#: Packets kept while Asterisk's address is not known yet (500 ms of 20 ms frames).
EARLY_PACKETS = 25
#: Most datagrams read from one socket per tick (normally 1; more after a
#: stall or a flood, which then waits for the next tick rather than starving
#: the other calls).
MAX_POLL = 64


class RtpEndpoint:
    """One call's RTP socket toward Asterisk's UnicastRTP channel.

    Create it with :meth:`open`. The socket is *polled*, not registered with
    the event loop: :meth:`poll` reads it, and the media clock calls it (through
    the call's :class:`~controller.media.call_media.CallMedia`) on every 10 ms
    tick on which the socket has data. A socket watched by the loop wakes the
    process once per packet, 50 times a second per call (each call's packets
    arrive on their own 20 ms grid); polled on the shared clock, the whole
    process wakes 100 times a second however many calls run. That wake-up
    was the largest single CPU cost per call (measured with
    ``bench/bench_calls.py``). The price is up to one tick (10 ms, 5 ms on
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
            (typically 160 bytes); it must not block. Fixed for the life of
            the endpoint (read it back as :attr:`on_audio`).
        sock: the bound, non-blocking UDP socket (see
            :func:`~controller.rtp.ports.bind_free_port`); None for an
            endpoint that only parses what is passed to :meth:`datagram_received`.
        time: the monotonic clock that stamps arrivals for the jitter
            statistics (``loop.time``).
        payload_type: the payload type to deliver (0 = PCMU); comfort noise
            (PT 13) and other types are counted and ignored.
        stream: the outgoing stream (SSRC, sequence numbers); a random one by default.
    """

    def __init__(
        self,
        on_audio: AudioCallback,
        *,
        sock: socket.socket | None = None,
        time: Callable[[], float] | None = None,
        payload_type: int = PT_PCMU,
        stream: OutgoingStream | None = None,
    ) -> None:
        self._on_audio = on_audio
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
        if sock is not None:
            sockname = sock.getsockname()
            self.local_address = (sockname[0], sockname[1])
        self._sock = sock
        self._time: Callable[[], float] = time or _zero_time
        self._early: list[tuple[bytes, tuple[Any, ...]]] | None = []
        self._logged: set[str] = set()

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
        return cls(on_audio, sock=sock, time=loop.time, payload_type=payload_type, stream=stream)

    @property
    def on_audio(self) -> AudioCallback:
        """The callback given at construction (read only: it is never rebound)."""
        return self._on_audio

    # -- receiving -----------------------------------------------------------------------

    def poll(self, limit: int = MAX_POLL) -> int:
        """Receive the datagrams waiting on the socket, at most ``limit``.

        Returns:
            How many datagrams were read. Never raises.
        """
        sock = self._sock
        if sock is None:
            return 0
        recvfrom = sock.recvfrom
        count = 0
        while count < limit:
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

    def send_frame(self, payload: bytes, tick: int) -> None:
        """Send one frame as RTP to Asterisk, stamped by :attr:`stream`.

        Args:
            payload: the u-law frame (160 bytes).
            tick: the frame's tick on the media clock; the RTP timestamp is
                derived from it (see :class:`~controller.rtp.sender.OutgoingStream`).
        """
        sock = self._sock
        remote = self.remote
        if sock is None or remote is None:
            self.unsent += 1
            return
        try:
            sock.sendto(self.stream.packet(payload, tick), remote)
        except OSError as exc:
            # A full socket buffer (BlockingIOError) or an ICMP error: this
            # frame is lost, the call goes on.
            self.unsent += 1
            self.socket_errors += 1
            self._log_once("send_error", "RTP send failed", error=exc)

    def close(self) -> None:
        """Close the socket now (idempotent); later frames are counted in :attr:`unsent`."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

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
            self._on_audio(packet.payload)

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
