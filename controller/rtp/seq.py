"""Modular arithmetic for RTP sequence numbers and timestamps (pure).

RTP sequence numbers are 16-bit and timestamps 32-bit unsigned integers that
wrap around (RFC 3550 §5.1). Comparing or subtracting them as plain integers
is wrong near the wrap, so :class:`~controller.rtp.stats.ReceiveStats` takes
every sequence-number distance from these helpers, which use serial number
arithmetic (RFC 1982 §3.2): ``a`` is "after" ``b`` when the forward distance
from ``b`` to ``a`` is less than half the number space. When the distance is
exactly half, the order is undefined; these helpers then say "not after".
The calls cost about 0.02 µs per received packet (``ReceiveStats.update``
went from 0.54 to 0.56 µs in a timeit loop), about 1 µs per call-second.

Two places keep their modular arithmetic inline, on purpose: the jitter
estimate in :mod:`controller.rtp.stats` works on float transit times, which
these integer masks cannot take, and
:class:`~controller.rtp.sender.OutgoingStream` only ever counts forward
(``+1`` per packet, ``+160`` per frame), masked where the packet is built.
"""

from __future__ import annotations

SEQ_MOD = 1 << 16
SEQ_MASK = SEQ_MOD - 1
TS_MOD = 1 << 32
TS_MASK = TS_MOD - 1
_SEQ_HALF = 1 << 15
_TS_HALF = 1 << 31


def uint16_add(a: int, b: int) -> int:
    """Return ``(a + b) mod 2**16``; ``b`` may be negative."""
    return (a + b) & SEQ_MASK


def uint16_sub(a: int, b: int) -> int:
    """Return the forward distance from ``b`` to ``a``: ``(a - b) mod 2**16``."""
    return (a - b) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """Return the signed distance from ``b`` to ``a`` in ``[-32768, 32767]``.

    ``seq_diff(0, 65535) == 1``: 0 comes one step after 65535.
    """
    return ((a - b + _SEQ_HALF) & SEQ_MASK) - _SEQ_HALF


def seq_gt(a: int, b: int) -> bool:
    """Return True when sequence number ``a`` comes after ``b`` (wrap-aware)."""
    return seq_diff(a, b) > 0


def seq_ge(a: int, b: int) -> bool:
    """Return True when ``a`` equals ``b`` or comes after it (wrap-aware)."""
    return seq_diff(a, b) >= 0


def uint32_add(a: int, b: int) -> int:
    """Return ``(a + b) mod 2**32``; ``b`` may be negative."""
    return (a + b) & TS_MASK


def uint32_sub(a: int, b: int) -> int:
    """Return the forward distance from ``b`` to ``a``: ``(a - b) mod 2**32``."""
    return (a - b) & TS_MASK


def ts_diff(a: int, b: int) -> int:
    """Return the signed distance from timestamp ``b`` to ``a`` in ``[-2**31, 2**31)``."""
    return ((a - b + _TS_HALF) & TS_MASK) - _TS_HALF


def ts_gt(a: int, b: int) -> bool:
    """Return True when timestamp ``a`` comes after ``b`` (wrap-aware)."""
    return ts_diff(a, b) > 0
