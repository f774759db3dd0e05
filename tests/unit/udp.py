"""A stand-in for Asterisk's RTP socket, and UDP port helpers, for the media unit tests."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest

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

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()


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
