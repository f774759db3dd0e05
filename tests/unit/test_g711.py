"""G.711 codecs: every code, every sample, against three independent references.

1. A scalar transcription of the ITU-T G.191 STL reference (``g711.c``),
   written here loop by loop, checked on all 256 codes and all 65536 samples.
2. ``tests/data/g711/reference.json``, generated once from CPython's
   ``audioop`` (so this test keeps working on Python 3.13, where it is gone).
3. ``audioop`` itself, when importable (Python <= 3.12).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.audio import g711

DATA = Path(__file__).parent.parent / "data" / "g711" / "reference.json"
REFERENCE = json.loads(DATA.read_text())
ALL_SAMPLES = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)


def _audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            return None
    return audioop


# --- scalar G.191 reference ------------------------------------------------------


def stl_ulaw_compress(x: int) -> int:
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    if absno > 0x1FFF:
        absno = 0x1FFF
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x0008 - segno
    low_nibble = 0x000F - ((absno >> segno) & 0x000F)
    y = (high_nibble << 4) | low_nibble
    if x >= 0:
        y |= 0x0080
    return y


def stl_ulaw_expand(y: int) -> int:
    sign = -1 if y < 0x0080 else 1
    mantissa = ~y
    exponent = (mantissa >> 4) & 0x0007
    segment = exponent + 1
    mantissa &= 0x000F
    step = 4 << segment
    return sign * ((0x0080 << exponent) + step * mantissa + step // 2 - 4 * 33)


def stl_alaw_compress(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x0080
    return ix ^ 0x0055


def stl_alaw_expand(y: int) -> int:
    ix = (y ^ 0x0055) & 0x007F
    iexp = ix >> 4
    mant = ix & 0x000F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x0008
    if iexp > 1:
        mant <<= iexp - 1
    return mant if y > 127 else -mant


# --- decode: all 256 codes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("decode", "table", "scalar", "key"),
    [
        (g711.ulaw_decode, g711.ULAW_DECODE_TABLE, stl_ulaw_expand, "ulaw_decode"),
        (g711.alaw_decode, g711.ALAW_DECODE_TABLE, stl_alaw_expand, "alaw_decode"),
    ],
)
def test_decode_all_codes(decode, table, scalar, key):
    decoded = decode(bytes(range(256)))
    assert decoded.dtype == np.int16
    assert decoded.tolist() == table.tolist()
    assert decoded.tolist() == [scalar(code) for code in range(256)]
    assert decoded.tolist() == REFERENCE[key]


def test_decode_known_values():
    # ITU-T G.711 Tables 2a/2b end points, in 16-bit units.
    ulaw = g711.ULAW_DECODE_TABLE
    alaw = g711.ALAW_DECODE_TABLE
    assert (ulaw[0x00], ulaw[0x80], ulaw[0x7F], ulaw[0xFF]) == (-32124, 32124, 0, 0)
    assert (alaw[0x2A], alaw[0xAA], alaw[0x55], alaw[0xD5]) == (-32256, 32256, -8, 8)


def test_silence_constants():
    assert g711.ULAW_DECODE_TABLE[g711.ULAW_SILENCE] == 0
    assert g711.ulaw_encode(np.zeros(1, np.int16)) == bytes([g711.ULAW_SILENCE])
    assert g711.alaw_encode(np.zeros(1, np.int16)) == bytes([g711.ALAW_SILENCE])
    assert g711.ULAW_SILENCE_FRAME == b"\xff" * 160
    assert g711.ALAW_SILENCE_FRAME == b"\xd5" * 160


# --- encode: all 65536 samples -------------------------------------------------------


@pytest.mark.parametrize(
    ("encode", "scalar"),
    [(g711.ulaw_encode, stl_ulaw_compress), (g711.alaw_encode, stl_alaw_compress)],
)
def test_encode_all_samples_match_g191(encode, scalar):
    encoded = encode(ALL_SAMPLES)
    expected = bytes(scalar(int(x)) for x in ALL_SAMPLES)
    assert encoded == expected


def test_alaw_encode_matches_committed_reference():
    encoded = g711.alaw_encode(ALL_SAMPLES)
    assert hashlib.sha256(encoded).hexdigest() == REFERENCE["alaw_encode_sha256"]


def sun_ulaw_from_ours() -> bytes:
    """audioop's u-law encoder, derived from ours: for x < 0 it equals ours at x - 4.

    audioop takes the magnitude of a negative sample as ``-(x >> 2)``; G.191
    as ``(~x) >> 2``, one less. The four most negative samples clip alike.
    """
    ours = np.frombuffer(g711.ulaw_encode(ALL_SAMPLES), dtype=np.uint8)
    x = ALL_SAMPLES.astype(np.int32)
    shifted = np.clip(x - 4, -32768, 32767).astype(np.int16)
    ours_shifted = np.frombuffer(g711.ulaw_encode(shifted), dtype=np.uint8)
    return np.where(x < 0, ours_shifted, ours).astype(np.uint8).tobytes()


def test_ulaw_encode_matches_committed_reference_up_to_rounding_rule():
    assert hashlib.sha256(sun_ulaw_from_ours()).hexdigest() == REFERENCE["ulaw_encode_sha256"]


def test_against_audioop_when_available():
    audioop = _audioop()
    if audioop is None:
        pytest.skip("audioop is not available on this Python (>= 3.13)")
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).astype("<i2").tobytes() == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes).astype("<i2").tobytes() == audioop.alaw2lin(codes, 2)
    pcm = ALL_SAMPLES.astype("<i2").tobytes()
    assert g711.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(pcm, 2)
    assert sun_ulaw_from_ours() == audioop.lin2ulaw(pcm, 2)
    # Non-negative samples: identical without any adjustment.
    positive = ALL_SAMPLES[ALL_SAMPLES >= 0]
    assert g711.ulaw_encode(positive) == audioop.lin2ulaw(positive.astype("<i2").tobytes(), 2)


# --- properties -----------------------------------------------------------------------


def test_round_trip_every_code():
    for code in range(256):
        sample = g711.ULAW_DECODE_TABLE[code : code + 1]
        # u-law has two zeros: 0x7F ("negative zero") decodes to 0, which encodes as 0xFF.
        expected = 0xFF if code == 0x7F else code
        assert g711.ulaw_encode(sample) == bytes([expected]), hex(code)
        assert g711.alaw_encode(g711.ALAW_DECODE_TABLE[code : code + 1]) == bytes([code])


@pytest.mark.parametrize(
    ("encode", "table"),
    [(g711.ulaw_encode, g711.ULAW_DECODE_TABLE), (g711.alaw_encode, g711.ALAW_DECODE_TABLE)],
)
def test_monotonic(encode, table):
    # Decoded levels sorted by code magnitude are strictly increasing ...
    levels = np.unique(table)
    assert len(levels) == (255 if table is g711.ULAW_DECODE_TABLE else 256)
    # ... and encode then decode never goes down as the input goes up.
    ramp = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    decoded = table[np.frombuffer(encode(ramp), dtype=np.uint8)].astype(np.int32)
    assert np.all(np.diff(decoded) >= 0)
    # Quantization error is bounded by half the largest step (plus the clip at the ends).
    error = np.abs(decoded - ramp.astype(np.int32))
    assert error.max() <= 1024


@given(st.binary(max_size=512))
def test_decode_encode_is_identity_on_codes(data):
    # u-law maps 0x7F to 0xFF; every other byte survives.
    expected_ulaw = data.replace(b"\x7f", b"\xff")
    assert g711.ulaw_encode(g711.ulaw_decode(data)) == expected_ulaw
    assert g711.alaw_encode(g711.alaw_decode(data)) == data


@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_bytes_helpers(values):
    samples = np.array(values, dtype=np.int16)
    pcm = samples.astype("<i2").tobytes()
    assert g711.pcm16_to_array(pcm).tolist() == values
    assert g711.array_to_pcm16(samples) == pcm
    assert g711.pcm16_to_ulaw(pcm) == g711.ulaw_encode(samples)
    ulaw = g711.ulaw_encode(samples)
    assert g711.ulaw_to_pcm16(ulaw) == g711.ulaw_decode(ulaw).astype("<i2").tobytes()


def test_odd_pcm_length_rejected():
    with pytest.raises(ValueError):
        g711.pcm16_to_array(b"\x00\x01\x02")


def test_tables_are_read_only():
    with pytest.raises(ValueError):
        g711.ULAW_ENCODE_TABLE[0] = 1
