"""Receive statistics for one call's inbound RTP stream (pure).

Theory of operation
-------------------
:meth:`ReceiveStats.update` follows the sequence-number bookkeeping of
RFC 3550 §A.1, with three changes that suit a single, address-filtered
source (Asterisk's UnicastRTP socket):

* No probation (``MIN_SEQUENTIAL``): the remote address is already known and
  filtered by the endpoint, so the first packet is accepted at once.
* Duplicates and late (reordered) packets are told apart with a 128-packet
  window of "seen" bits behind the highest sequence number, so they are
  counted separately instead of showing up as negative loss, and a late
  packet that fills a gap reduces the loss count.
* An SSRC change restarts the bookkeeping immediately (Asterisk changes its
  SSRC when the media source behind the channel changes). A large jump in
  sequence numbers within one SSRC is treated as in §A.1: the first packet of
  the jump is discarded and remembered; if the next packet follows it, the
  sender restarted and the bookkeeping restarts there.

Loss is ``expected - unique received`` per epoch (§A.3), summed over epochs,
so it never goes negative. Interarrival jitter follows §A.8, in timestamp
units, with the arrival time passed in by the caller (no clock is read here).

Only packets with verdict :data:`ACCEPT` should be played or forwarded: they
are new and in order, possibly after a gap. Late packets are not delivered:
without a jitter buffer, audio played out of order sounds worse than a 20 ms
hole, and on a LAN leg to Asterisk reordering is rare.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from controller.rtp.seq import SEQ_MOD, uint16_add, uint16_sub

#: RFC 3550 §A.1 constants: largest forward jump still taken as a gap, and
#: largest backward step still taken as reordering rather than a restart.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
_WINDOW_BITS = 128
_WINDOW_MASK = (1 << _WINDOW_BITS) - 1


class SeqVerdict(IntEnum):
    """What :meth:`ReceiveStats.update` decided about one packet."""

    #: New and in order (possibly after a gap, or the first after a restart): deliver it.
    ACCEPT = 0
    #: Older than the newest packet and not seen before: count it, do not deliver it.
    LATE = 1
    #: Seen before: drop it.
    DUPLICATE = 2
    #: A big jump in sequence numbers: held as a possible restart, not delivered.
    JUMP = 3


ACCEPT = SeqVerdict.ACCEPT
LATE = SeqVerdict.LATE
DUPLICATE = SeqVerdict.DUPLICATE
JUMP = SeqVerdict.JUMP


@dataclass(frozen=True, slots=True)
class ReceiveStatsSnapshot:
    """A copy of the counters, for logs and the status API.

    Attributes:
        received: valid RTP packets from the expected source.
        accepted: packets delivered (verdict ACCEPT).
        expected: packets the sequence numbers say were sent (all epochs).
        lost: ``expected`` minus unique packets received; never negative.
        late: packets that arrived after a later one (not delivered).
        duplicate: packets seen twice.
        jumps: packets discarded as the first of a large sequence jump.
        restarts: times the bookkeeping restarted (sender restart, new SSRC).
        foreign: datagrams from an address other than Asterisk's (dropped).
        comfort_noise: PT 13 packets (ignored).
        other_payload_type: packets with a PT other than the expected one (ignored).
        parse_errors: datagrams that are not valid RTP.
        early: datagrams dropped because they came before the remote address
            was known and the early buffer was full.
        jitter_ms: RFC 3550 §A.8 interarrival jitter, in milliseconds.
        ssrc: the current SSRC, or None before the first packet.
    """

    received: int
    accepted: int
    expected: int
    lost: int
    late: int
    duplicate: int
    jumps: int
    restarts: int
    foreign: int
    comfort_noise: int
    other_payload_type: int
    parse_errors: int
    early: int
    jitter_ms: float
    ssrc: int | None

    @property
    def loss_fraction(self) -> float:
        """``lost / expected`` (0.0 when nothing was expected)."""
        return self.lost / self.expected if self.expected else 0.0


class ReceiveStats:
    """Per-call receive statistics (RFC 3550 §A.1, §A.3, §A.8).

    The endpoint calls :meth:`update` for every valid packet from Asterisk
    and increments the plain counters (``foreign``, ``comfort_noise``,
    ``other_payload_type``, ``parse_errors``, ``early``) itself.

    Args:
        clock_rate: the RTP clock rate of the stream, for jitter (8000 for G.711).
    """

    __slots__ = (
        "clock_rate",
        "received",
        "accepted",
        "late",
        "duplicate",
        "jumps",
        "restarts",
        "foreign",
        "comfort_noise",
        "other_payload_type",
        "parse_errors",
        "early",
        "ssrc",
        "_base",
        "_max",
        "_unique",
        "_bad_seq",
        "_window",
        "_past_expected",
        "_past_unique",
        "_jitter",
        "_transit",
    )

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.received = 0
        self.accepted = 0
        self.late = 0
        self.duplicate = 0
        self.jumps = 0
        self.restarts = 0
        self.foreign = 0
        self.comfort_noise = 0
        self.other_payload_type = 0
        self.parse_errors = 0
        self.early = 0
        self.ssrc: int | None = None
        # Current epoch: extended (unwrapped) base and highest sequence numbers.
        self._base = 0
        self._max = 0
        self._unique = 0
        self._bad_seq = -1
        self._window = 0
        # Closed epochs.
        self._past_expected = 0
        self._past_unique = 0
        self._jitter = 0.0
        self._transit: float | None = None

    def update(self, sequence_number: int, timestamp: int, ssrc: int, arrival: float) -> SeqVerdict:
        """Account for one packet and say whether to deliver it.

        Args:
            sequence_number: the packet's 16-bit sequence number.
            timestamp: the packet's 32-bit RTP timestamp.
            ssrc: the packet's SSRC.
            arrival: when it arrived, in seconds on a monotonic clock.

        Returns:
            The verdict; deliver the payload only for :data:`ACCEPT`.
        """
        self.received += 1
        if ssrc != self.ssrc:
            if self.ssrc is not None:
                self.restarts += 1
            self.ssrc = ssrc
            self._restart(sequence_number)
            self._jitter_update(timestamp, arrival)
            self.accepted += 1
            return ACCEPT
        # Forward distance from the highest sequence number so far (wrap-aware).
        udelta = uint16_sub(sequence_number, self._max)
        if 0 < udelta < MAX_DROPOUT:
            # In order, with a permissible gap (§A.1). Extended arithmetic handles the wrap.
            self._max += udelta
            self._window = ((self._window << udelta) | 1) & _WINDOW_MASK
            self._unique += 1
            self._bad_seq = -1
            self._jitter_update(timestamp, arrival)
            self.accepted += 1
            return ACCEPT
        if udelta == 0:
            self.duplicate += 1
            return DUPLICATE
        if udelta <= SEQ_MOD - MAX_MISORDER:
            # A large jump (§A.1): a restart if the next packet follows this one.
            if sequence_number == self._bad_seq:
                self.restarts += 1
                self._restart(sequence_number)
                self._jitter_update(timestamp, arrival)
                self.accepted += 1
                return ACCEPT
            self._bad_seq = uint16_add(sequence_number, 1)
            self.jumps += 1
            return JUMP
        # Behind the highest sequence number by 1..MAX_MISORDER: late or duplicate.
        back = uint16_sub(self._max, sequence_number)
        bit = 1 << back
        if back > self._max - self._base:
            # Older than the first packet of this epoch: never expected, so no effect on loss.
            self.late += 1
            return LATE
        if self._window & bit:
            self.duplicate += 1
            return DUPLICATE
        self._window |= bit
        self._unique += 1
        self.late += 1
        return LATE

    def _restart(self, sequence_number: int) -> None:
        if self._unique:
            self._past_expected += self._max - self._base + 1
            self._past_unique += self._unique
        self._base = self._max = sequence_number
        self._unique = 1
        self._window = 1
        self._bad_seq = -1
        self._transit = None

    def _jitter_update(self, timestamp: int, arrival: float) -> None:
        # RFC 3550 §A.8: J += (|D| - J) / 16, in timestamp units. The 32-bit
        # wrap of the timestamp cancels out in the difference of transits
        # except at the wrap itself, which the modulo below takes care of
        # (on floats: seq.ts_diff masks integers).
        transit = arrival * self.clock_rate - timestamp
        if self._transit is not None:
            d = abs((transit - self._transit + 2**31) % 2**32 - 2**31)
            self._jitter += (d - self._jitter) / 16.0
        self._transit = transit

    @property
    def expected(self) -> int:
        """Packets expected from the sequence numbers, over all epochs (§A.3)."""
        current = self._max - self._base + 1 if self._unique else 0
        return self._past_expected + current

    @property
    def lost(self) -> int:
        """Packets expected but never received, over all epochs (never negative)."""
        return self.expected - self._past_unique - self._unique

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter (§A.8) in milliseconds."""
        return self._jitter * 1000.0 / self.clock_rate

    def snapshot(self) -> ReceiveStatsSnapshot:
        """Return a copy of all counters."""
        return ReceiveStatsSnapshot(
            received=self.received,
            accepted=self.accepted,
            expected=self.expected,
            lost=self.lost,
            late=self.late,
            duplicate=self.duplicate,
            jumps=self.jumps,
            restarts=self.restarts,
            foreign=self.foreign,
            comfort_noise=self.comfort_noise,
            other_payload_type=self.other_payload_type,
            parse_errors=self.parse_errors,
            early=self.early,
            jitter_ms=self.jitter_ms,
            ssrc=self.ssrc,
        )
