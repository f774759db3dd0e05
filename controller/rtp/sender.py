"""The RTP stream we send to Asterisk: SSRC, sequence number and timestamp stamping (pure).

:class:`OutgoingStream` turns each 20 ms frame the playout hands out into an
RTP packet: constant random SSRC, sequence number +1 per packet sent,
timestamp derived from the frame's index on the media clock's schedule.

Nothing is sent while the model is silent (see :mod:`controller.media.playout`).
The RTP timestamp still advances with wall time across such a pause (it is
``base + 160 * frame_index``, and the index counts every due frame, sent or
not), and the first packet after a pause carries the marker bit, as RFC 3551
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
    The timestamp is ``base + samples_per_frame * frame_index``, so it follows
    wall time even across frames not sent; the marker bit is set on the first
    packet and on the first after a pause (RFC 3551 §4.1).

    Args:
        payload_type: PT of every packet (0 = PCMU).
        samples_per_frame: timestamp units per frame (160 for 20 ms at 8 kHz).
        ssrc: a fixed SSRC, or None for a random one.
        rng: the random source for SSRC and initial values (tests pass a seeded one).
    """

    __slots__ = (
        "payload_type",
        "samples_per_frame",
        "ssrc",
        "sequence_number",
        "timestamp_base",
        "packets_sent",
        "_last_index",
    )

    def __init__(
        self,
        *,
        payload_type: int = PT_PCMU,
        samples_per_frame: int = SAMPLES_PER_FRAME,
        ssrc: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.SystemRandom()
        self.payload_type = payload_type
        self.samples_per_frame = samples_per_frame
        self.ssrc = rng.getrandbits(32) if ssrc is None else ssrc
        #: Sequence number of the next packet.
        self.sequence_number = rng.getrandbits(16)
        self.timestamp_base = rng.getrandbits(32)
        self.packets_sent = 0
        self._last_index: int | None = None

    def timestamp(self, frame_index: int) -> int:
        """Return the RTP timestamp of frame ``frame_index``."""
        return (self.timestamp_base + self.samples_per_frame * frame_index) & 0xFFFFFFFF

    def packet(self, payload: bytes, frame_index: int) -> bytes:
        """Return the RTP packet carrying ``payload`` as frame ``frame_index``.

        Args:
            payload: the u-law frame.
            frame_index: the frame's index on the media clock's
                :class:`~controller.media.schedule.FrameSchedule`.
        """
        last = self._last_index
        self._last_index = frame_index
        sequence_number = self.sequence_number
        self.sequence_number = (sequence_number + 1) & 0xFFFF
        self.packets_sent += 1
        # Marker: first packet, or first after frames with nothing to send (RFC 3551 §4.1).
        b1 = self.payload_type if last == frame_index - 1 else self.payload_type | 0x80
        timestamp = (self.timestamp_base + self.samples_per_frame * frame_index) & 0xFFFFFFFF
        # One pack and one concatenation measured faster than pack_into a reused buffer.
        return _pack_header(0x80, b1, sequence_number, timestamp, self.ssrc) + payload
