"""bind_free_port: one UDP port of MEDIA_PORTS per call, over real sockets on 127.0.0.1."""

from __future__ import annotations

import random
import socket

import pytest

from controller.errors import MediaError, NoFreePortError
from controller.rtp.ports import bind_free_port
from tests.unit.udp import HOST, taken_ports


def test_binds_a_non_blocking_socket_in_the_range():
    with taken_ports(1) as (port,):
        pass
    sock = bind_free_port(HOST, (port, port))
    try:
        assert sock.getsockname() == (HOST, port)
        assert sock.getblocking() is False
        assert sock.type == socket.SOCK_DGRAM
    finally:
        sock.close()


def test_no_free_port_names_the_range():
    with (
        taken_ports(1) as (port,),
        pytest.raises(NoFreePortError, match=f"MEDIA_PORTS {port}-{port} on {HOST}"),
    ):
        bind_free_port(HOST, (port, port))


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


def test_port_search_skips_taken_ports():
    taken_sock, taken = _taken_beside_a_free_port()
    try:
        # A two-port range where one port is taken: every start offset lands on the free one.
        for seed in range(4):
            sock = bind_free_port(HOST, (taken, taken + 1), rng=random.Random(seed))
            assert sock.getsockname()[1] == taken + 1
            sock.close()
    finally:
        taken_sock.close()


def test_address_not_on_this_host():
    # 192.0.2.0/24 is TEST-NET-1: never configured on a host.
    with pytest.raises(MediaError, match="not an address of this host"):
        bind_free_port("192.0.2.1", (40000, 40010))
