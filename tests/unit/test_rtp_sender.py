"""OutgoingStream: SSRC, sequence number, timestamp and marker of the packets we send."""

from __future__ import annotations

import random

from controller.rtp.packet import RtpPacket
from controller.rtp.sender import OutgoingStream


def test_outgoing_stream_sequence_timestamp_ssrc_and_marker():
    stream = OutgoingStream(rng=random.Random(1))
    ssrc = stream.ssrc
    first_seq = stream.sequence_number
    base = stream.timestamp_base
    packets = []
    for index in [0, 1, 2, 10, 11]:  # frames 3..9 had nothing to send
        packets.append(RtpPacket.parse(stream.packet(b"\xff" * 160, index)))
    assert [p.ssrc for p in packets] == [ssrc] * 5
    assert [p.payload_type for p in packets] == [0] * 5
    assert [p.sequence_number for p in packets] == [(first_seq + i) & 0xFFFF for i in range(5)]
    # The timestamp follows wall time across the pause (RFC 3550 §5.1).
    assert [p.timestamp for p in packets] == [
        (base + 160 * i) & 0xFFFFFFFF for i in [0, 1, 2, 10, 11]
    ]
    # Marker on the first packet and on the first after the pause (RFC 3551 §4.1).
    assert [p.marker for p in packets] == [True, False, False, True, False]
    assert stream.packets_sent == 5


def test_outgoing_stream_wraps():
    stream = OutgoingStream(ssrc=5, rng=random.Random(2))
    stream.sequence_number = 65535
    stream.timestamp_base = 0xFFFFFFFF - 159
    a = RtpPacket.parse(stream.packet(b"\x00" * 160, 0))
    b = RtpPacket.parse(stream.packet(b"\x00" * 160, 1))
    assert (a.sequence_number, b.sequence_number) == (65535, 0)
    assert (a.timestamp, b.timestamp) == (0xFFFFFF60, 0)
    assert a.ssrc == b.ssrc == 5


def test_outgoing_stream_other_payload_sizes():
    stream = OutgoingStream(rng=random.Random(3))
    packet = RtpPacket.parse(stream.packet(b"\x01" * 80, 0))
    assert packet.payload == b"\x01" * 80
    packet = RtpPacket.parse(stream.packet(b"\x02" * 160, 1))
    assert packet.payload == b"\x02" * 160


def test_random_ssrc_differs_between_streams():
    assert len({OutgoingStream().ssrc for _ in range(8)}) > 1


def test_outgoing_stream_on_a_clock_of_several_ticks_per_frame():
    # The media clock ticks every 5 ms: a frame is 4 ticks, 40 samples each.
    stream = OutgoingStream(samples_per_tick=40, ticks_per_frame=4, rng=random.Random(4))
    base = stream.timestamp_base
    ticks = [3, 7, 11, 30, 34]  # a talkspurt, a pause, one starting on another phase
    packets = [RtpPacket.parse(stream.packet(b"\xff" * 160, t)) for t in ticks]
    assert [p.timestamp for p in packets] == [(base + 40 * t) & 0xFFFFFFFF for t in ticks]
    assert [p.marker for p in packets] == [True, False, False, True, False]
    assert stream.last_tick == 34
