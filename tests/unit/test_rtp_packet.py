"""RtpPacket: fixtures, round trips, and fuzzing (only RtpParseError may escape)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from controller.errors import MediaError, RtpParseError
from controller.rtp.packet import RTP_HEADER_STRUCT, RtpPacket

FIXTURES = json.loads((Path(__file__).parent.parent / "data" / "rtp" / "packets.json").read_text())


def fields_of(packet: RtpPacket) -> dict[str, object]:
    return {
        "payload_type": packet.payload_type,
        "sequence_number": packet.sequence_number,
        "timestamp": packet.timestamp,
        "ssrc": packet.ssrc,
        "marker": packet.marker,
        "csrc": list(packet.csrc),
        "extension_profile": packet.extension_profile,
        "extension": packet.extension.hex(),
        "padding": packet.padding,
        "payload": packet.payload.hex(),
    }


@pytest.mark.parametrize("case", FIXTURES["valid"], ids=lambda c: c["name"])
def test_fixture_parses(case):
    data = bytes.fromhex(case["hex"])
    packet = RtpPacket.parse(data)
    assert fields_of(packet) == case["fields"]
    assert isinstance(packet.payload, bytes)
    assert packet.serialize() == data


@pytest.mark.parametrize("case", FIXTURES["invalid"], ids=lambda c: c["name"])
def test_fixture_rejected_with_precise_message(case):
    with pytest.raises(RtpParseError) as info:
        RtpPacket.parse(bytes.fromhex(case["hex"]))
    assert case["error"] in str(info.value)
    # Callers may catch it as a ValueError or as a MediaError.
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MediaError)


def test_parse_accepts_bytearray_and_memoryview():
    data = bytes.fromhex(FIXTURES["valid"][3]["hex"])
    expected = RtpPacket.parse(data)
    assert RtpPacket.parse(bytearray(data)) == expected
    from_view = RtpPacket.parse(memoryview(data))
    assert from_view == expected
    assert type(from_view.payload) is bytes
    assert type(RtpPacket.parse(bytearray(data[:172])).payload) is bytes


def test_serialize_defaults_and_validation():
    assert RtpPacket(0, 1, 2, 3).serialize() == struct.pack("!BBHII", 0x80, 0, 1, 2, 3)
    assert RTP_HEADER_STRUCT.size == 12
    with pytest.raises(ValueError, match="payload_type 128"):
        RtpPacket(128, 0, 0, 0).serialize()
    with pytest.raises(ValueError, match="sequence_number 65536"):
        RtpPacket(0, 65536, 0, 0).serialize()
    with pytest.raises(ValueError, match="timestamp -1"):
        RtpPacket(0, 0, -1, 0).serialize()
    with pytest.raises(ValueError, match="ssrc"):
        RtpPacket(0, 0, 0, 1 << 32).serialize()
    with pytest.raises(ValueError, match="16 CSRCs"):
        RtpPacket(0, 0, 0, 0, csrc=tuple(range(16))).serialize()
    with pytest.raises(ValueError, match="multiple of 4"):
        RtpPacket(0, 0, 0, 0, extension_profile=1, extension=b"abc").serialize()
    with pytest.raises(ValueError, match="without an extension_profile"):
        RtpPacket(0, 0, 0, 0, extension=b"abcd").serialize()
    with pytest.raises(ValueError, match="padding 256"):
        RtpPacket(0, 0, 0, 0, padding=256).serialize()


# --- property tests -------------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)


def _normalize(packet: RtpPacket) -> RtpPacket:
    # Extension data only exists together with a profile.
    if packet.extension_profile is None:
        packet.extension = b""
    return packet


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrc=st.lists(u32, max_size=15).map(tuple),
    extension_profile=st.none() | st.integers(0, 0xFFFF),
    extension=st.binary(max_size=64).map(lambda b: b[: len(b) // 4 * 4]),
    padding=st.integers(0, 255),
).map(_normalize)


@given(packets)
def test_parse_serialize_round_trip(packet):
    assert RtpPacket.parse(packet.serialize()) == packet


@given(packets)
def test_serialize_parse_round_trip_on_wire_bytes(packet):
    data = packet.serialize()
    assert RtpPacket.parse(data).serialize() == data


@given(st.binary(max_size=200))
@example(b"\x80")
@example(b"\xa0" + bytes(11))
@example(b"\x9f" + bytes(11))
@example(b"\xbf" + bytes(80))
def test_parser_on_random_bytes_raises_only_rtp_parse_error(data):
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    # Whatever parses must serialize back to the same bytes, but for the
    # content of padding bytes, which serialize() writes as zeros.
    out = packet.serialize()
    assert len(out) == len(data)
    if packet.padding:
        assert out[: -packet.padding] == data[: -packet.padding]
        assert out[-1] == data[-1]
    else:
        assert out == data


@given(st.binary(min_size=12, max_size=200))
def test_parser_on_version_2_bytes(data):
    # Force V=2 so the fuzzer explores CSRC/extension/padding paths, not just the version check.
    data = bytes([(data[0] & 0x3F) | 0x80]) + data[1:]
    try:
        RtpPacket.parse(data)
    except RtpParseError:
        pass
