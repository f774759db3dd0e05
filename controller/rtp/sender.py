"""The RTP stream we send to Asterisk: SSRC, sequence number and timestamp stamping (pure).

:class:`OutgoingStream` turns each 20 ms frame the playout hands out into an
RTP packet: constant random SSRC, sequence number +1 per packet sent,
timestamp derived from the frame's tick on the media clock (the clock ticks
several times per frame, so a talkspurt can start on any tick; see
:mod:`controller.media.clock`).

Nothing is sent while the model is silent (see :mod:`controller.media.playout`).
The RTP timestamp still advances with wall time across such a pause (it is
``base + samples_per_tick * tick``, and the clock's tick counts wall time,
frames sent or not), and the first packet after a pause carries the marker bit, as RFC 3551
§4.1 prescribes for the first packet of a talkspurt; the sequence number only
counts packets actually sent (RFC 3550 §5.1). The receiver therefore places
the new talkspurt correctly in time.
"""

from __future__ import annotations

import random
from typing import Final

from controller.rtp.packet import PT_PCMU, RTP_HEADER_STRUCT

#: Timestamp units per 20 ms frame at 8 kHz (G.711).
SAMPLES_PER_FRAME: Final = 160

_pack_header = RTP_HEADER_STRUCT.pack


class OutgoingStream:
    """Sequence number, timestamp and SSRC of the RTP stream we send to Asterisk.

    RFC 3550 §5.1: the initial sequence number and timestamp are random; the
    SSRC is random and constant for the call (ari-notes §1, asterisk#1324).
    The timestamp is ``base + samples_per_tick * tick``, so it follows wall
    time even across frames not sent; the marker bit is set on the first
    packet and on the first after a pause (RFC 3551 §4.1), i.e. whenever a
    packet's tick is not ``ticks_per_frame`` after the previous packet's.

    Args:
        payload_type: PT of every packet (0 = PCMU).
        samples_per_tick: timestamp units per tick of the caller's clock
            (160: one tick per 20 ms frame at 8 kHz; 80 for 10 ms ticks).
        ticks_per_frame: ticks from one frame to the next of a talkspurt.
        ssrc: a fixed SSRC, or None for a random one.
        rng: the random source for SSRC and initial values (tests pass a seeded one).
    """

    __slots__ = (
        "payload_type",
        "samples_per_tick",
        "ticks_per_frame",
        "ssrc",
        "sequence_number",
        "timestamp_base",
        "packets_sent",
        "last_tick",
    )

    def __init__(
        self,
        *,
        payload_type: int = PT_PCMU,
        samples_per_tick: int = SAMPLES_PER_FRAME,
        ticks_per_frame: int = 1,
        ssrc: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.SystemRandom()
        self.payload_type = payload_type
        self.samples_per_tick = samples_per_tick
        self.ticks_per_frame = ticks_per_frame
        self.ssrc = rng.getrandbits(32) if ssrc is None else ssrc
        #: Sequence number of the next packet.
        self.sequence_number = rng.getrandbits(16)
        self.timestamp_base = rng.getrandbits(32)
        self.packets_sent = 0
        #: The tick of the latest packet, None before the first.
        self.last_tick: int | None = None

    def timestamp(self, tick: int) -> int:
        """Return the RTP timestamp of a frame sent on ``tick``."""
        return (self.timestamp_base + self.samples_per_tick * tick) & 0xFFFFFFFF

    def packet(self, payload: bytes, tick: int) -> bytes:
        """Return the RTP packet carrying ``payload`` as the frame of ``tick``.

        Args:
            payload: the u-law frame.
            tick: the frame's tick on the media clock (its index on the
                clock's :class:`~controller.media.schedule.FrameSchedule`).
        """
        last = self.last_tick
        self.last_tick = tick
        sequence_number = self.sequence_number
        self.sequence_number = (sequence_number + 1) & 0xFFFF
        self.packets_sent += 1
        # Marker: first packet, or first after frames with nothing to send (RFC 3551 §4.1).
        if last is not None and last == tick - self.ticks_per_frame:
            b1 = self.payload_type
        else:
            b1 = self.payload_type | 0x80
        timestamp = (self.timestamp_base + self.samples_per_tick * tick) & 0xFFFFFFFF
        # One pack and one concatenation measured faster than pack_into a reused buffer.
        return _pack_header(0x80, b1, sequence_number, timestamp, self.ssrc) + payload
