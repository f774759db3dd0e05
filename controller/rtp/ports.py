"""UDP port allocation for the RTP sockets, one port of ``MEDIA_PORTS`` per call."""

from __future__ import annotations

import errno
import ipaddress
import random
import socket

from controller.errors import MediaError, NoFreePortError


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
