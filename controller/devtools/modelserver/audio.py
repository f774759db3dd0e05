"""Audio for the local model server: G.711, resampling, level, tone, WAV (pure).

Deliberately independent of ``controller.audio``: the test peer decodes what
the controller encodes with its own code, so a codec bug on one side cannot
hide behind the same bug on the other.
"""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

Samples = npt.NDArray[np.int16]

__all__ = [
    "AudioFormat",
    "Samples",
    "alaw_decode",
    "alaw_encode",
    "load_wav",
    "resample",
    "rms_dbfs",
    "tone",
    "ulaw_decode",
    "ulaw_encode",
]


# --- G.711 (ITU-T G.711 tables, computed once) --------------------------------


def _ulaw_table() -> Samples:
    codes = np.arange(256, dtype=np.int32)
    inv = ~codes & 0xFF
    sign = inv & 0x80
    exponent = (inv >> 4) & 0x07
    mantissa = inv & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> Samples:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


_ULAW_DECODE = _ulaw_table()
_ALAW_DECODE = _alaw_table()


def _encode_table(decode: Samples) -> npt.NDArray[np.uint8]:
    # For every 16-bit value, the code whose decoded value is nearest (ties
    # toward zero), chosen by magnitude among the positive codes (sign bit
    # 0x80 set in both laws) and mirrored for negative values, so the
    # encoder is symmetric and 0 encodes to the positive zero (u-law 0xFF,
    # A-law 0xD5) as in G.711.
    positive = np.arange(128, 256)
    levels = decode[positive].astype(np.int32)
    order = np.argsort(levels, kind="stable")
    sorted_levels = levels[order]
    magnitude = np.abs(np.arange(-32768, 32768, dtype=np.int32))
    idx = np.clip(np.searchsorted(sorted_levels, magnitude), 1, len(sorted_levels) - 1)
    lower = sorted_levels[idx - 1]
    upper = sorted_levels[idx]
    pick = np.where(magnitude - lower <= upper - magnitude, idx - 1, idx)
    codes = positive[order[pick]]
    negative = np.arange(-32768, 32768) < 0
    return np.where(negative, codes ^ 0x80, codes).astype(np.uint8)


_ULAW_ENCODE = _encode_table(_ULAW_DECODE)
_ALAW_ENCODE = _encode_table(_ALAW_DECODE)


def ulaw_decode(data: bytes) -> Samples:
    """G.711 u-law bytes to 16-bit samples."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(samples: Samples) -> bytes:
    """16-bit samples to G.711 u-law bytes."""
    return bytes(_ULAW_ENCODE[samples.astype(np.int32) + 32768])


def alaw_decode(data: bytes) -> Samples:
    """G.711 A-law bytes to 16-bit samples."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(samples: Samples) -> bytes:
    """16-bit samples to G.711 A-law bytes."""
    return bytes(_ALAW_ENCODE[samples.astype(np.int32) + 32768])


# --- formats -----------------------------------------------------------------


@dataclass(frozen=True)
class AudioFormat:
    """A session audio format: ``audio/pcmu``, ``audio/pcma`` (8 kHz) or ``audio/pcm`` (24 kHz)."""

    type: str
    rate: int

    @classmethod
    def from_session(cls, fmt: Any) -> AudioFormat:
        """The format of a session's ``audio.input.format`` / ``audio.output.format`` object."""
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind in ("audio/pcmu", "audio/pcma"):
            return cls(kind, 8000)
        return cls("audio/pcm", 24000)

    @property
    def bytes_per_sample(self) -> int:
        """1 for G.711, 2 for 16-bit PCM."""
        return 2 if self.type == "audio/pcm" else 1

    @property
    def bytes_per_ms(self) -> int:
        """8 for G.711 at 8 kHz, 48 for PCM at 24 kHz."""
        return self.rate * self.bytes_per_sample // 1000

    def decode(self, data: bytes) -> Samples:
        """Wire bytes to 16-bit samples at :attr:`rate` (a trailing odd byte is dropped)."""
        if self.type == "audio/pcmu":
            return ulaw_decode(data)
        if self.type == "audio/pcma":
            return alaw_decode(data)
        usable = len(data) - len(data) % 2
        return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)

    def encode(self, samples: Samples) -> bytes:
        """16-bit samples at :attr:`rate` to wire bytes."""
        if self.type == "audio/pcmu":
            return ulaw_encode(samples)
        if self.type == "audio/pcma":
            return alaw_encode(samples)
        return samples.astype("<i2").tobytes()


# --- signal helpers ------------------------------------------------------------


def resample(samples: Samples, src_rate: int, dst_rate: int) -> Samples:
    """Resample mono 16-bit audio (soxr, high quality)."""
    if src_rate == dst_rate or samples.size == 0:
        return samples
    out: npt.NDArray[np.float32] = np.asarray(
        soxr.resample(samples.astype(np.float32), src_rate, dst_rate), dtype=np.float32
    )
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def rms_dbfs(samples: Samples) -> float:
    """Root-mean-square level in dBFS (full-scale sine = -3 dBFS); -inf dB for silence."""
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    if rms == 0.0:
        return float("-inf")
    return 20.0 * float(np.log10(rms / 32768.0))


def tone(hz: float, ms: int, rate: int, *, level_dbfs: float = -12.0) -> Samples:
    """A sine tone with 10 ms fades at both ends (no clicks)."""
    n = int(rate * ms / 1000)
    t = np.arange(n, dtype=np.float64) / rate
    amplitude = min(32767.0, 32767.0 * 10.0 ** (level_dbfs / 20.0) * math.sqrt(2.0))
    signal: npt.NDArray[np.float64] = np.sin(2.0 * np.pi * hz * t) * amplitude
    fade = min(n // 2, rate // 100)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        signal[:fade] *= ramp
        signal[n - fade :] *= ramp[::-1]
    return np.rint(signal).astype(np.int16)


def load_wav(path: str | Path) -> tuple[Samples, int]:
    """Read a PCM WAV file (8- or 16-bit, any rate, channels mixed to mono).

    Raises:
        ValueError: not a PCM WAV file this function can read.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc})") from exc
    if width == 2:
        data = np.frombuffer(frames, dtype="<i2").astype(np.int32)
    elif width == 1:
        data = (np.frombuffer(frames, dtype=np.uint8).astype(np.int32) - 128) << 8
    else:
        raise ValueError(f"{path}: {8 * width}-bit WAV is not supported; use 16-bit PCM")
    if channels > 1:
        data = data[: data.size - data.size % channels].reshape(-1, channels).mean(axis=1)
    return np.clip(data, -32768, 32767).astype(np.int16), rate
