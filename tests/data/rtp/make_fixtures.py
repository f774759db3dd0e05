"""Write tests/data/rtp/packets.json: RTP datagrams assembled by hand, per RFC 3550 §5.1.

Each valid entry gives the datagram in hex and the fields it must parse to;
each invalid entry gives the datagram and a fragment of the expected error.
The bytes are built with struct here, independently of controller.rtp.packet,
so the fixture checks the parser instead of echoing it. Run from the repo root:

    .venv/bin/python tests/data/rtp/make_fixtures.py
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

HERE = Path(__file__).parent


def header(b0: int, b1: int, seq: int, ts: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", b0, b1, seq, ts, ssrc)


ULAW_FRAME = bytes((0x80 + i) % 256 for i in range(160))
valid = [
    {
        # What chan_rtp sends on the externalMedia leg: V=2, PT 0, 160 bytes.
        "name": "pcmu_plain",
        "hex": (header(0x80, 0x00, 0x1234, 0x89ABCDEF, 0x0BADCAFE) + ULAW_FRAME).hex(),
        "fields": {
            "payload_type": 0,
            "sequence_number": 0x1234,
            "timestamp": 0x89ABCDEF,
            "ssrc": 0x0BADCAFE,
            "marker": False,
            "csrc": [],
            "extension_profile": None,
            "extension": "",
            "padding": 0,
            "payload": ULAW_FRAME.hex(),
        },
    },
    {
        "name": "pcmu_marker_seq_wrap",
        "hex": (header(0x80, 0x80, 0xFFFF, 0xFFFFFF60, 0xFFFFFFFF) + b"\xff" * 160).hex(),
        "fields": {
            "payload_type": 0,
            "sequence_number": 0xFFFF,
            "timestamp": 0xFFFFFF60,
            "ssrc": 0xFFFFFFFF,
            "marker": True,
            "csrc": [],
            "extension_profile": None,
            "extension": "",
            "padding": 0,
            "payload": ("ff" * 160),
        },
    },
    {
        # Comfort noise (RFC 3389): one noise-level byte.
        "name": "comfort_noise",
        "hex": (header(0x80, 13, 7, 1120, 42) + b"\x40").hex(),
        "fields": {
            "payload_type": 13,
            "sequence_number": 7,
            "timestamp": 1120,
            "ssrc": 42,
            "marker": False,
            "csrc": [],
            "extension_profile": None,
            "extension": "",
            "padding": 0,
            "payload": "40",
        },
    },
    {
        # CC=2, X=1 (one-byte header extension profile 0xBEDE, RFC 8285), P=1 (4 bytes).
        "name": "csrc_extension_padding",
        "hex": (
            header(0x80 | 0x20 | 0x10 | 2, 0x80 | 8, 1, 2, 3)
            + struct.pack("!II", 0x11111111, 0x22222222)
            + struct.pack("!HH", 0xBEDE, 1)
            + bytes.fromhex("10aabbcc")
            + b"\xd5" * 80
            + b"\x00\x00\x00\x04"
        ).hex(),
        "fields": {
            "payload_type": 8,
            "sequence_number": 1,
            "timestamp": 2,
            "ssrc": 3,
            "marker": True,
            "csrc": [0x11111111, 0x22222222],
            "extension_profile": 0xBEDE,
            "extension": "10aabbcc",
            "padding": 4,
            "payload": "d5" * 80,
        },
    },
    {
        # An empty extension (length 0) and an empty payload are both legal.
        "name": "empty_extension_empty_payload",
        "hex": (header(0x90, 0, 9, 9, 9) + struct.pack("!HH", 0x1000, 0)).hex(),
        "fields": {
            "payload_type": 0,
            "sequence_number": 9,
            "timestamp": 9,
            "ssrc": 9,
            "marker": False,
            "csrc": [],
            "extension_profile": 0x1000,
            "extension": "",
            "padding": 0,
            "payload": "",
        },
    },
    {
        # Padding may take the whole rest of the packet.
        "name": "all_padding",
        "hex": (header(0xA0, 0, 5, 5, 5) + b"\x00\x00\x03").hex(),
        "fields": {
            "payload_type": 0,
            "sequence_number": 5,
            "timestamp": 5,
            "ssrc": 5,
            "marker": False,
            "csrc": [],
            "extension_profile": None,
            "extension": "",
            "padding": 3,
            "payload": "",
        },
    },
]

invalid = [
    {"name": "empty", "hex": "", "error": "truncated header: 0 bytes"},
    {
        "name": "short_header",
        "hex": header(0x80, 0, 1, 2, 3)[:11].hex(),
        "error": "truncated header: 11 bytes",
    },
    {"name": "version_1", "hex": (header(0x40, 0, 1, 2, 3) + b"x").hex(), "error": "version 1"},
    {
        "name": "version_0_stun_like",
        "hex": (b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + bytes(12)).hex(),
        "error": "version 0",
    },
    {
        "name": "truncated_csrc",
        "hex": (header(0x83, 0, 1, 2, 3) + bytes(8)).hex(),
        "error": "truncated CSRC list: 3 CSRCs need 24 bytes, got 20",
    },
    {
        "name": "truncated_extension_header",
        "hex": (header(0x90, 0, 1, 2, 3) + b"\xbe\xde").hex(),
        "error": "truncated header extension",
    },
    {
        "name": "truncated_extension_data",
        "hex": (header(0x90, 0, 1, 2, 3) + struct.pack("!HH", 0xBEDE, 2) + bytes(4)).hex(),
        "error": "2 words need 24 bytes, got 20",
    },
    {
        "name": "padding_zero",
        "hex": (header(0xA0, 0, 1, 2, 3) + b"\x00").hex(),
        "error": "padding length 0",
    },
    {
        "name": "padding_too_long",
        "hex": (header(0xA0, 0, 1, 2, 3) + b"\x00\x09").hex(),
        "error": "padding length 9 but only 2 bytes",
    },
    {
        "name": "padding_bit_no_bytes",
        "hex": header(0xA0, 0, 1, 2, 3).hex(),
        "error": "padding bit set but no bytes",
    },
]

(HERE / "packets.json").write_text(
    json.dumps({"valid": valid, "invalid": invalid}, indent=1) + "\n"
)
