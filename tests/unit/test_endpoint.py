"""RtpEndpoint, MediaClock and CallMedia over real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest

from controller.errors import MediaError, NoFreePortError
from controller.rtp.endpoint import EARLY_PACKETS, CallMedia, MediaClock, RtpEndpoint
from controller.rtp.packet import RtpPacket

HOST = "127.0.0.1"
TIMEOUT = 5.0


class Peer(asyncio.DatagramProtocol):
    """Stands in for Asterisk's UnicastRTP socket: sends RTP, records what it gets."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[Any, ...]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received.put_nowait((data, addr))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send_rtp(self, to: tuple[str, int], seq: int, payload: bytes, pt: int = 0) -> None:
        assert self.transport is not None
        header = struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, seq * 160, 0xA5A5A5A5)
        self.transport.sendto(header + payload, to)

    async def next_packet(self) -> tuple[RtpPacket, tuple[Any, ...]]:
        async with asyncio.timeout(TIMEOUT):
            data, addr = await self.received.get()
        return RtpPacket.parse(data), addr


async def open_peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    return peer


@contextmanager
def taken_ports(count: int) -> Iterator[list[int]]:
    """Bind ``count`` UDP sockets on ephemeral ports and hold them."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, 0))
            socks.append(sock)
        yield [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port_range() -> tuple[int, int]:
    with taken_ports(1) as (port,):
        pass
    return port, port


async def wait_for(predicate, what: str) -> None:
    """Poll ``predicate`` until it holds; fail after TIMEOUT seconds."""
    for _ in range(int(TIMEOUT / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"timed out waiting for {what}")


# --- RtpEndpoint -------------------------------------------------------------------------


async def test_receives_from_asterisk_and_sends_back_from_the_same_socket():
    got: list[bytes] = []
    endpoint = await RtpEndpoint.open(HOST, free_port_range(), got.append)
    peer = await open_peer()
    try:
        endpoint.set_remote(*peer.address)
        for seq in range(65533, 65539):  # across the sequence wrap
            peer.send_rtp(endpoint.local_address, seq, bytes([seq & 0xFF]) * 160)
        # The endpoint reads its socket only when polled (each media-clock tick).
        await asyncio.sleep(0.05)
        assert got == []
        await wait_for(lambda: endpoint.poll() >= 0 and len(got) == 6, "six payloads")
        assert got == [bytes([s & 0xFF]) * 160 for s in range(65533, 65539)]
        snap = endpoint.stats.snapshot()
        assert (snap.received, snap.accepted, snap.lost, snap.foreign) == (6, 6, 0, 0)

        for index in range(3):
            endpoint.send_frame(bytes([index]) * 160, index)
        packets = [await peer.next_packet() for _ in range(3)]
        for i, (packet, source) in enumerate(packets):
            # Sent from the very socket Asterisk sends to (strict RTP, no re-targeting).
            assert source[:2] == endpoint.local_address
            assert packet.payload == bytes([i]) * 160
            assert packet.payload_type == 0
            assert packet.ssrc == endpoint.stream.ssrc
        seqs = [p.sequence_number for p, _ in packets]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(3)]
        assert [p.timestamp - packets[0][0].timestamp for p, _ in packets] == [0, 160, 320]
    finally:
        endpoint.close()
        await endpoint.wait_closed()
        assert peer.transport is not None
        peer.transport.close()


async def test_foreign_packets_are_counted_not_delivered(caplog):
    got: list[bytes] = []
    endpoint = await RtpEndpoint.open(HOST, free_port_range(), got.append)
    asterisk = await open_peer()
    stranger = await open_peer()
    try:
        endpoint.set_remote(*asterisk.address)
        with caplog.at_level(logging.WARNING, logger="controller.rtp.endpoint"):
            for seq in range(5):
                stranger.send_rtp(endpoint.local_address, seq, b"\x00" * 160)
            asterisk.send_rtp(endpoint.local_address, 1, b"\x01" * 160)
            await wait_for(
                lambda: endpoint.poll() >= 0 and len(got) == 1 and endpoint.stats.foreign == 5,
                "packets",
            )
        assert got == [b"\x01" * 160]
        # Logged once, not per packet.
        assert sum("unexpected address" in r.getMessage() for r in caplog.records) == 1
    finally:
        endpoint.close()
        for peer in (asterisk, stranger):
            assert peer.transport is not None
            peer.transport.close()


async def test_comfort_noise_other_types_and_garbage_are_ignored():
    got: list[bytes] = []
    endpoint = await RtpEndpoint.open(HOST, free_port_range(), got.append)
    peer = await open_peer()
    try:
        endpoint.set_remote(*peer.address)
        peer.send_rtp(endpoint.local_address, 1, b"\x01" * 160)
        peer.send_rtp(endpoint.local_address, 2, b"\x40", pt=13)  # comfort noise
        peer.send_rtp(endpoint.local_address, 3, b"\x02" * 160, pt=8)  # A-law: not ours
        assert peer.transport is not None
        peer.transport.sendto(b"\x00\x01garbage", endpoint.local_address)
        peer.send_rtp(endpoint.local_address, 4, b"\x04" * 160)
        await wait_for(lambda: endpoint.poll() >= 0 and len(got) == 2, "two payloads")
        snap = endpoint.stats.snapshot()
        assert got == [b"\x01" * 160, b"\x04" * 160]
        assert (snap.comfort_noise, snap.other_payload_type, snap.parse_errors) == (1, 1, 1)
        # CN and the A-law packet took sequence numbers: no loss is reported.
        assert snap.lost == 0
    finally:
        endpoint.close()
        assert peer.transport is not None
        peer.transport.close()


async def test_failing_callback_never_escapes_datagram_received():
    calls = 0

    def on_audio(payload: bytes) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    endpoint = RtpEndpoint(on_audio)
    endpoint.set_remote(HOST, 5004)
    packet = RtpPacket(0, 1, 160, 7, b"\xff" * 160).serialize()
    endpoint.datagram_received(packet, (HOST, 5004))
    endpoint.datagram_received(RtpPacket(0, 2, 320, 7, b"\xff" * 160).serialize(), (HOST, 5004))
    assert calls == 2
    assert endpoint.callback_errors == 2


async def test_early_packets_are_kept_until_the_remote_is_known():
    got: list[bytes] = []
    endpoint = RtpEndpoint(got.append)
    for seq in range(EARLY_PACKETS + 5):
        data = RtpPacket(0, seq, seq * 160, 9, bytes([seq]) * 160).serialize()
        endpoint.datagram_received(data, (HOST, 6000))
    endpoint.datagram_received(RtpPacket(0, 99, 0, 9, b"\x00").serialize(), (HOST, 6001))
    assert got == []
    assert endpoint.stats.early == 6
    endpoint.set_remote(HOST, 6000)
    # Replayed through the normal checks: the one from another port is foreign.
    assert got == [bytes([seq]) * 160 for seq in range(EARLY_PACKETS)]
    assert endpoint.stats.foreign == 0  # the 26th (other port) was over the limit
    # Sending before connection or remote is counted, not raised.
    endpoint.send_frame(b"\xff" * 160, 0)
    assert endpoint.unsent == 1


def test_set_remote_validation():
    endpoint = RtpEndpoint(lambda payload: None)
    with pytest.raises(MediaError, match="not an IP address"):
        endpoint.set_remote("asterisk.example", 4000)
    with pytest.raises(MediaError, match="out of range"):
        endpoint.set_remote(HOST, 70000)
    endpoint.set_remote("::ffff:127.0.0.1", 4000)
    assert endpoint.remote == ("::ffff:7f00:1", 4000)


async def test_no_free_port_names_the_range():
    with (
        taken_ports(1) as (port,),
        pytest.raises(NoFreePortError, match=f"MEDIA_PORTS {port}-{port} on {HOST}"),
    ):
        await RtpEndpoint.open(HOST, (port, port), lambda payload: None)


def _taken_beside_a_free_port() -> tuple[socket.socket, int]:
    """Hold a UDP port whose neighbour (port + 1) is free right now."""
    for _ in range(50):
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        taken.bind((HOST, 0))
        port = taken.getsockname()[1]
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((HOST, port + 1))
        except (OSError, OverflowError):  # taken, or port 65535 has no neighbour
            taken.close()
            continue
        finally:
            probe.close()
        return taken, port
    raise AssertionError("no UDP port with a free neighbour found in 50 tries")


async def test_port_search_skips_taken_ports():
    taken_sock, taken = _taken_beside_a_free_port()
    try:
        # A two-port range where one port is taken: every start offset lands on the free one.
        for seed in range(4):
            endpoint = await RtpEndpoint.open(
                HOST, (taken, taken + 1), lambda payload: None, rng=random.Random(seed)
            )
            assert endpoint.local_address[1] == taken + 1
            endpoint.close()
            await endpoint.wait_closed()
    finally:
        taken_sock.close()


async def test_address_not_on_this_host():
    # 192.0.2.0/24 is TEST-NET-1: never configured on a host.
    with pytest.raises(MediaError, match="not an address of this host"):
        await RtpEndpoint.open("192.0.2.1", (40000, 40010), lambda payload: None)


# --- MediaClock -------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.ticks: list[float] = []

    def tick(self, now: float) -> None:
        self.ticks.append(now)


class Failing:
    def __init__(self) -> None:
        self.calls = 0

    def tick(self, now: float) -> None:
        self.calls += 1
        raise ValueError("subscriber bug")


async def test_clock_ticks_subscribers_and_survives_a_failing_one(caplog):
    clock = MediaClock()
    good_before, bad, good_after = Recorder(), Failing(), Recorder()
    for subscriber in (good_before, bad, good_after):
        clock.register(subscriber)
    assert clock.subscribers == 3
    with caplog.at_level(logging.ERROR, logger="controller.rtp.endpoint"):
        clock.start()
        try:
            await wait_for(lambda: len(good_after.ticks) >= 10, "ten ticks")
        finally:
            await clock.stop()
    assert bad.calls >= 10
    assert clock.subscriber_errors == bad.calls
    assert len(good_before.ticks) >= 10
    # The failure is logged once with its traceback, not on every tick.
    failures = [r for r in caplog.records if "subscriber failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    # Ticks follow the schedule: strictly increasing, roughly one period apart on average.
    ticks = good_before.ticks
    assert all(b > a for a, b in zip(ticks, ticks[1:], strict=False))
    assert clock.ticks >= 10


async def test_clock_unregister_and_restart():
    clock = MediaClock()
    recorder = Recorder()
    clock.register(recorder)
    clock.start()
    try:
        await wait_for(lambda: len(recorder.ticks) >= 2, "two ticks")
        clock.unregister(recorder)
        clock.unregister(recorder)  # idempotent
        count = len(recorder.ticks)
        ticks_before = clock.ticks
        # With nothing to tick, the clock sleeps: an idle controller costs nothing.
        await asyncio.sleep(0.2)
        assert clock.ticks == ticks_before
        assert len(recorder.ticks) == count
        # A new subscriber wakes it on a fresh grid: no stall, no burst of ticks.
        later = Recorder()
        schedule = clock.new_schedule()
        clock.register(later)
        await wait_for(lambda: len(later.ticks) >= 3, "ticks after waking")
        assert clock.resyncs == 0
        # The new schedule shares the fresh grid: one frame per tick.
        assert len(schedule.due(later.ticks[0])) == 1
        assert len(schedule.due(later.ticks[2])) == 2
    finally:
        await clock.stop()
    await clock.stop()  # idempotent


async def test_schedule_from_the_clock_shares_its_grid():
    clock = MediaClock()
    schedule = clock.new_schedule()
    recorder = Recorder()
    frames: list[int] = []

    class Sub:
        def tick(self, now: float) -> None:
            frames.extend(schedule.due(now))
            recorder.tick(now)

    clock.register(Sub())
    clock.start()
    try:
        await wait_for(lambda: len(recorder.ticks) >= 10, "ten ticks")
    finally:
        await clock.stop()
    # One frame per tick, consecutive indices (a stall would show as a resync instead).
    if schedule.resyncs == 0:
        assert frames == list(range(frames[0], frames[0] + len(frames)))


async def test_clock_resyncs_after_a_stall_instead_of_bursting(caplog):
    clock = MediaClock()
    schedule = clock.new_schedule()
    bursts: list[int] = []

    class Blocker:
        def __init__(self) -> None:
            self.blocked = False

        def tick(self, now: float) -> None:
            bursts.append(len(schedule.due(now)))
            if not self.blocked and len(bursts) == 3:
                self.blocked = True
                time.sleep(0.3)  # a blocking call somewhere in the process

    clock.register(Blocker())
    with caplog.at_level(logging.WARNING, logger="controller.rtp.endpoint"):
        clock.start()
        try:
            await wait_for(lambda: len(bursts) >= 8, "ticks after the stall")
        finally:
            await clock.stop()
    assert clock.resyncs == 1
    assert schedule.resyncs == 1
    # Never more than max_burst frames at once; after the stall, one frame per tick again.
    assert max(bursts) <= clock.max_burst
    assert schedule.skipped_frames >= 10
    assert any("stalled" in r.getMessage() for r in caplog.records)


# --- CallMedia --------------------------------------------------------------------------


async def test_call_media_plays_out_at_20ms_and_fills_gaps():
    clock = MediaClock()
    clock.start()
    heard: list[bytes] = []
    peer = await open_peer()
    media = await CallMedia.open(clock, HOST, free_port_range(), heard.append, gap_threshold=0.1)
    try:
        media.set_remote(*peer.address)
        media.playout.enqueue("item_1", b"\x11" * 800)  # 100 ms = 5 frames
        packets = [await peer.next_packet() for _ in range(5)]
        assert [p.payload for p, _ in packets] == [b"\x11" * 160] * 5
        assert packets[0][0].marker and not any(p.marker for p, _ in packets[1:])
        seqs = [p.sequence_number for p, _ in packets]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(5)]
        await wait_for(lambda: media.playout.played_ms("item_1") == 100, "played")
        # Nothing queued: nothing sent (checked again after some ticks).
        ticks = clock.ticks
        await wait_for(lambda: clock.ticks >= ticks + 3, "ticks")
        assert peer.received.empty()

        # The peer sent no audio at all: the model gets silence at the real-time rate.
        await wait_for(lambda: len(heard) >= 10, "gap silence")
        assert set(heard) == {b"\xff" * 160}
        assert media.gap_filler is not None and media.gap_filler.gaps == 1

        # Real audio stops the filler.
        heard.clear()
        peer.send_rtp(media.local_address, 100, b"\x22" * 160)
        await wait_for(lambda: b"\x22" * 160 in heard, "real audio")
        assert media.gap_filler.filling is False

        # A second response after the pause: marker set, timestamp follows wall time.
        media.playout.enqueue("item_2", b"\x33" * 160)
        packet, _ = await peer.next_packet()
        assert packet.marker
        assert packet.sequence_number == (seqs[-1] + 1) & 0xFFFF
        assert (packet.timestamp - packets[-1][0].timestamp) % (1 << 32) > 160 * 3
        assert (packet.timestamp - packets[-1][0].timestamp) % 160 == 0
        summary = media.summary()
        assert summary["tx_packets"] == 6
        assert summary["rx_packets"] == 1
        assert summary["gap_frames"] >= 10
    finally:
        media.close()
        await media.endpoint.wait_closed()
        assert clock.subscribers == 0
        await clock.stop()
        assert peer.transport is not None
        peer.transport.close()
