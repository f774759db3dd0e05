"""RtpEndpoint over real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from controller.errors import MediaError, NoFreePortError
from controller.rtp.endpoint import EARLY_PACKETS, RtpEndpoint
from controller.rtp.packet import RtpPacket
from tests.unit.udp import HOST, free_port_range, open_peer, taken_ports, wait_for


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
        peer.close()


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
        asterisk.close()
        stranger.close()


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
        peer.close()


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


async def test_the_callback_is_the_one_given_at_construction():
    got: list[bytes] = []
    other: list[bytes] = []
    endpoint = await RtpEndpoint.open(HOST, free_port_range(), got.append)
    peer = await open_peer()
    try:
        assert endpoint.on_audio == got.append
        # Read only: nothing can swap the callback after construction.
        with pytest.raises(AttributeError):
            endpoint.on_audio = other.append  # type: ignore[misc]
        endpoint.set_remote(*peer.address)
        peer.send_rtp(endpoint.local_address, 1, b"\x01" * 160)
        await wait_for(lambda: endpoint.poll() >= 0 and len(got) == 1, "the payload")
        assert got == [b"\x01" * 160]
        assert other == []
    finally:
        endpoint.close()
        peer.close()


async def test_close_is_idempotent_and_later_frames_are_counted():
    endpoint = await RtpEndpoint.open(HOST, free_port_range(), lambda payload: None)
    endpoint.set_remote(HOST, 9)
    port = endpoint.local_address[1]
    endpoint.close()
    endpoint.close()
    assert endpoint.poll() == 0
    endpoint.send_frame(b"\xff" * 160, 0)
    assert endpoint.unsent == 1
    # The port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))


async def test_open_fails_cleanly_without_a_free_port():
    with taken_ports(1) as (port,), pytest.raises(NoFreePortError):
        await RtpEndpoint.open(HOST, (port, port), lambda payload: None)
