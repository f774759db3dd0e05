"""G.711 u-law and A-law codecs with numpy lookup tables (pure).

Decoding indexes a 256-entry int16 table with the code bytes; encoding views
the int16 samples as uint16 and indexes a 65536-entry uint8 table. Both are
one vectorised gather, with no Python loop per sample. ``audioop`` (removed in
Python 3.13) is not used.

The tables are computed once, at import, from the ITU-T G.191 Software Tool
Library reference implementation of G.711 (``g711.c``: ``ulaw_compress``,
``ulaw_expand``, ``alaw_compress``, ``alaw_expand``), vectorised. Its encoder
takes the one's complement of negative samples (``~x``), so, for u-law, a
negative input exactly on a decision level may round one step differently
from the Sun/CCITT code that ``audioop`` used; decoding is identical.

Linear samples are 16-bit signed, native byte order inside arrays and
little-endian in ``bytes`` (the Realtime API's ``audio/pcm``).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from controller.audio.constants import (
    ALAW_SILENCE,
    ALAW_SILENCE_FRAME,
    ULAW_SILENCE,
    ULAW_SILENCE_FRAME,
)

__all__ = [
    "ALAW_DECODE_TABLE",
    "ALAW_ENCODE_TABLE",
    "ALAW_SILENCE",
    "ALAW_SILENCE_FRAME",
    "ULAW_DECODE_TABLE",
    "ULAW_ENCODE_TABLE",
    "ULAW_SILENCE",
    "ULAW_SILENCE_FRAME",
    "alaw_decode",
    "alaw_encode",
    "array_to_pcm16",
    "pcm16_to_array",
    "pcm16_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_pcm16",
]

_PCM16LE = np.dtype("<i2")

Int16Array = npt.NDArray[np.int16]
UInt8Array = npt.NDArray[np.uint8]


def _ulaw_expand(codes: npt.NDArray[np.int32]) -> Int16Array:
    # G.191 ulaw_expand: sign from bit 7; the rest is the one's complement
    # of segment (3 bits) and mantissa (4 bits); reconstruct mid-step, minus bias.
    sign: npt.NDArray[np.int32] = np.where(codes < 0x80, -1, 1).astype(np.int32)
    inverted = ~codes
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    step = 4 << (exponent + 1)
    magnitude: npt.NDArray[np.int32] = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    return (sign * magnitude).astype(np.int16)


def _ulaw_compress(x: npt.NDArray[np.int32]) -> UInt8Array:
    # G.191 ulaw_compress: 14-bit magnitude (one's complement for negatives) + bias 33.
    absno: npt.NDArray[np.int32] = np.where(x < 0, (~x) >> 2, x >> 2) + 33
    absno = np.minimum(absno, 0x1FFF)
    # segno = 1 + bit length of (absno >> 6), which is at most 127.
    bit_length = np.zeros(128, dtype=np.int32)
    for bits in range(1, 8):
        bit_length[1 << (bits - 1) : 1 << bits] = bits
    segno = 1 + bit_length[absno >> 6]
    high_nibble = 0x08 - segno
    low_nibble = 0x0F - ((absno >> segno) & 0x0F)
    code = (high_nibble << 4) | low_nibble
    signed: npt.NDArray[np.int32] = np.where(x >= 0, code | 0x80, code)
    return signed.astype(np.uint8)


def _alaw_expand(codes: npt.NDArray[np.int32]) -> Int16Array:
    # G.191 alaw_expand: even bits inverted (0x55), 3-bit segment, 4-bit mantissa.
    ix = (codes ^ 0x55) & 0x7F
    exponent = ix >> 4
    mantissa = ix & 0x0F
    mantissa = np.where(exponent > 0, mantissa + 16, mantissa)
    mantissa = (mantissa << 4) + 0x08
    mantissa = np.where(exponent > 1, mantissa << np.maximum(exponent - 1, 0), mantissa)
    return np.where(codes > 127, mantissa, -mantissa).astype(np.int16)


def _alaw_compress(x: npt.NDArray[np.int32]) -> UInt8Array:
    # G.191 alaw_compress: 12-bit magnitude (one's complement for negatives),
    # segment = position of the leading one above bit 4, mantissa = next 4 bits.
    ix = np.where(x < 0, (~x) >> 4, x >> 4)
    exponent = np.zeros_like(ix)
    mantissa = ix.copy()
    big = ix > 15
    for exp in range(1, 8):
        # ix in [16 << (exp-1), 32 << (exp-1)) has segment exp.
        in_segment = big & (ix >= (16 << (exp - 1))) & (ix < (32 << (exp - 1)))
        exponent = np.where(in_segment, exp, exponent)
        mantissa = np.where(in_segment, (ix >> (exp - 1)) - 16, mantissa)
    code = (exponent << 4) + mantissa
    code = np.where(x >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


_ALL_CODES = np.arange(256, dtype=np.int32)
# Index i of the encode tables is the uint16 view of the int16 sample.
_ALL_SAMPLES = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32)

#: code -> int16 sample.
ULAW_DECODE_TABLE: Final[Int16Array] = _ulaw_expand(_ALL_CODES)
ALAW_DECODE_TABLE: Final[Int16Array] = _alaw_expand(_ALL_CODES)
#: uint16 view of an int16 sample -> code.
ULAW_ENCODE_TABLE: Final[UInt8Array] = _ulaw_compress(_ALL_SAMPLES)
ALAW_ENCODE_TABLE: Final[UInt8Array] = _alaw_compress(_ALL_SAMPLES)
for _table in (ULAW_DECODE_TABLE, ALAW_DECODE_TABLE, ULAW_ENCODE_TABLE, ALAW_ENCODE_TABLE):
    _table.flags.writeable = False
del _table


def ulaw_decode(data: bytes) -> Int16Array:
    """Decode u-law bytes to int16 samples (one per byte).

    Args:
        data: u-law codes (bytes, bytearray or memoryview).

    Returns:
        A new int16 array of ``len(data)`` samples.
    """
    return ULAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> Int16Array:
    """Decode A-law bytes to int16 samples (one per byte).

    Args:
        data: A-law codes.

    Returns:
        A new int16 array of ``len(data)`` samples.
    """
    return ALAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(samples: Int16Array) -> bytes:
    """Encode int16 samples to u-law bytes.

    Args:
        samples: a 1-D int16 array (any length).

    Returns:
        One code byte per sample.
    """
    return ULAW_ENCODE_TABLE[samples.view(np.uint16)].tobytes()


def alaw_encode(samples: Int16Array) -> bytes:
    """Encode int16 samples to A-law bytes.

    Args:
        samples: a 1-D int16 array (any length).

    Returns:
        One code byte per sample.
    """
    return ALAW_ENCODE_TABLE[samples.view(np.uint16)].tobytes()


def pcm16_to_array(data: bytes) -> Int16Array:
    """View little-endian PCM16 bytes as an int16 array (no copy on little-endian hosts).

    Args:
        data: PCM16 LE bytes; the length must be even.

    Returns:
        A read-only int16 array sharing memory with ``data`` when possible.

    Raises:
        ValueError: ``data`` has an odd length.
    """
    return np.frombuffer(data, dtype=_PCM16LE).astype(np.int16, copy=False)


def array_to_pcm16(samples: Int16Array) -> bytes:
    """Return int16 samples as little-endian PCM16 bytes."""
    return samples.astype(_PCM16LE, copy=False).tobytes()


def ulaw_to_pcm16(data: bytes) -> bytes:
    """Decode u-law bytes straight to little-endian PCM16 bytes."""
    return array_to_pcm16(ulaw_decode(data))


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Encode little-endian PCM16 bytes straight to u-law bytes.

    Raises:
        ValueError: ``data`` has an odd length.
    """
    return ulaw_encode(pcm16_to_array(data))
