"""Make test audio (tones with numpy, speech with espeak-ng + sox) and analyse recordings.

Files are 8 kHz mono 16-bit WAV unless said otherwise: what Asterisk plays
and records natively for u-law calls.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from controller.devtools.rig.wait import wait_for

Samples = npt.NDArray[np.float64]

#: Debian package providing each command the helpers use.
_PACKAGES = {"sox": "sox", "espeak-ng": "espeak-ng"}


def ensure_tools(*commands: str) -> None:
    """Make sure ``commands`` exist, installing their Debian packages (as root) if not.

    Raises:
        RuntimeError: one line naming what is missing when it cannot be installed.
    """
    missing = [c for c in commands if shutil.which(c) is None]
    if not missing:
        return
    packages = [_PACKAGES.get(c, c) for c in missing]
    if shutil.which("apt-get") is None or not _is_root():
        raise RuntimeError(
            f"missing {', '.join(missing)}; install them: apt-get install {' '.join(packages)}"
        )
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(cmd, env=env, capture_output=True, check=False)
    still = [c for c in commands if shutil.which(c) is None]
    if still:
        raise RuntimeError(f"could not install {', '.join(still)} (apt-get install failed)")


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


# -- making audio --------------------------------------------------------------------


def write_wav(path: str | Path, samples: Samples, rate: int = 8000) -> Path:
    """Write float samples in [-1, 1] as mono 16-bit PCM WAV."""
    path = Path(path)
    pcm = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    data = (pcm * 32767.0).round().astype("<i2").tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(data)
    return path


def make_tone(
    path: str | Path,
    freq: float = 1000.0,
    seconds: float = 2.0,
    *,
    rate: int = 8000,
    amplitude: float = 0.5,
) -> Path:
    """A sine tone WAV (with 5 ms fades so it does not click)."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    samples = amplitude * np.sin(2 * np.pi * freq * t)
    fade = min(n // 2, int(0.005 * rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        samples[:fade] *= ramp
        samples[n - fade :] *= ramp[::-1]
    return write_wav(path, samples, rate)


def make_tones(
    path: str | Path,
    parts: list[tuple[float, float]],
    *,
    rate: int = 8000,
    amplitude: float = 0.5,
) -> Path:
    """Tones one after the other, ``parts`` = ``[(freq, seconds), ...]``, phase-continuous."""
    chunks = []
    phase = 0.0
    for freq, seconds in parts:
        n = int(round(seconds * rate))
        chunks.append(phase + 2 * np.pi * freq * np.arange(n) / rate)
        phase += 2 * np.pi * freq * n / rate
    samples = amplitude * np.sin(np.concatenate(chunks))
    fade = min(len(samples) // 2, int(0.005 * rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        samples[:fade] *= ramp
        samples[len(samples) - fade :] *= ramp[::-1]
    return write_wav(path, samples, rate)


def make_silence(path: str | Path, seconds: float, *, rate: int = 8000) -> Path:
    return write_wav(path, np.zeros(int(round(seconds * rate))), rate)


def make_speech(
    path: str | Path, text: str, *, rate: int = 8000, voice: str = "en-us", speed: int = 160
) -> Path:
    """Speech from espeak-ng, converted with sox to ``rate`` Hz mono 16-bit WAV."""
    ensure_tools("espeak-ng", "sox")
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)],
            check=True,
            capture_output=True,
        )
    return path


# -- analysing audio ------------------------------------------------------------------


def read_wav(path: str | Path) -> tuple[Samples, int]:
    """Samples as float64 in [-1, 1] (first channel) and the sample rate."""
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        width = wav.getsampwidth()
        channels = wav.getnchannels()
        frames = wav.readframes(wav.getnframes())
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit WAV, expected 16-bit")
    data = np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0
    return data[::channels], rate


def rms(samples: Samples) -> float:
    return float(np.sqrt(np.mean(np.square(samples)))) if len(samples) else 0.0


def dbfs(value: float) -> float:
    return float(20 * np.log10(max(value, 1e-10)))


def dominant_frequency(samples: Samples, rate: int) -> float:
    """The strongest frequency (Hz) in ``samples`` (Hann window, parabolic peak fit)."""
    if len(samples) < 16:
        return 0.0
    windowed = (samples - np.mean(samples)) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(windowed))
    spectrum[0] = 0.0
    peak = int(np.argmax(spectrum))
    offset = 0.0
    if 0 < peak < len(spectrum) - 1:
        a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = a - 2 * b + c
        offset = 0.5 * (a - c) / denominator if denominator else 0.0
    return float((peak + offset) * rate / len(samples))


def band_dbfs(samples: Samples, rate: int, freq: float, *, width: float = 40.0) -> float:
    """Level (dBFS, RMS) of the part of ``samples`` within ``freq`` +- ``width`` Hz."""
    n = len(samples)
    if n < 2:
        return dbfs(0.0)
    spectrum = np.fft.rfft(samples)
    power = np.abs(spectrum) ** 2 * 2 / n**2
    bins = np.fft.rfftfreq(n, 1 / rate)
    band = (bins >= freq - width) & (bins <= freq + width)
    return dbfs(float(np.sqrt(np.sum(power[band]))))


def frame_frequencies(
    samples: Samples, rate: int, *, frame_ms: int = 40, threshold_dbfs: float = -40.0
) -> npt.NDArray[np.float64]:
    """The dominant frequency of each active (above ``threshold_dbfs``) frame, in order."""
    size = max(16, rate * frame_ms // 1000)
    count = len(samples) // size
    out = [
        dominant_frequency(frame, rate)
        for frame in (samples[i * size : (i + 1) * size] for i in range(count))
        if rms(frame) > 10 ** (threshold_dbfs / 20)
    ]
    return np.asarray(out, dtype=np.float64)


def active_mask(
    samples: Samples, rate: int, *, threshold_dbfs: float = -40.0, frame_ms: int = 20
) -> npt.NDArray[np.bool_]:
    """Per 20 ms frame: True where the frame's RMS is above ``threshold_dbfs``."""
    size = max(1, rate * frame_ms // 1000)
    count = len(samples) // size
    frames = samples[: count * size].reshape(count, size) if count else np.zeros((0, size))
    levels = np.sqrt(np.mean(np.square(frames), axis=1)) if count else np.zeros(0)
    mask: npt.NDArray[np.bool_] = levels > 10 ** (threshold_dbfs / 20)
    return mask


def tone_levels(
    samples: Samples, rate: int, freq: float, *, frame_ms: int = 5
) -> npt.NDArray[np.float64]:
    """Per ``frame_ms`` frame: the level (dBFS of a sine) of the ``freq`` component.

    One DFT bin per frame, so other tones whose period divides the frame
    (e.g. 400, 600, 800, 1000 Hz in 5 ms frames) do not leak into it at all.
    Good to a frame (5 ms) for where a tone starts and stops.
    """
    size = max(1, rate * frame_ms // 1000)
    count = len(samples) // size
    if not count:
        return np.zeros(0)
    frames = samples[: count * size].reshape(count, size)
    probe = np.exp(-2j * np.pi * freq * np.arange(size) / rate)
    amplitude = 2.0 * np.abs(frames @ probe) / size
    levels: npt.NDArray[np.float64] = 20.0 * np.log10(np.maximum(amplitude, 1e-10))
    return levels


def tone_spans(
    samples: Samples,
    rate: int,
    freq: float,
    *,
    threshold_dbfs: float = -30.0,
    frame_ms: int = 5,
    bridge_ms: int = 30,
    min_ms: int = 15,
) -> list[tuple[float, float]]:
    """Where a ``freq`` tone is present: ``[(start_s, end_s), ...]`` in order.

    Frames at or above ``threshold_dbfs`` count; gaps up to ``bridge_ms``
    (a lost packet) do not split a span; spans shorter than ``min_ms`` (the
    splatter of another sound starting abruptly) are left out.
    """
    loud = tone_levels(samples, rate, freq, frame_ms=frame_ms) >= threshold_dbfs
    spans: list[tuple[float, float]] = []
    step = frame_ms / 1000
    for index in np.flatnonzero(loud).tolist():
        start, end = index * step, (index + 1) * step
        if spans and start - spans[-1][1] <= bridge_ms / 1000 + 1e-9:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return [(a, b) for a, b in spans if b - a >= min_ms / 1000 - 1e-9]


@dataclass(frozen=True)
class AudioStats:
    duration: float  # seconds of audio in the file
    active: float  # seconds above the silence threshold
    rms_dbfs: float  # of the whole file
    peak: float  # max |sample|, 0..1
    dominant_hz: float  # of the active part (0 if all silent)


def analyse(path: str | Path, *, threshold_dbfs: float = -40.0) -> AudioStats:
    """Duration, active (non-silent) time, level and dominant frequency of a WAV."""
    samples, rate = read_wav(path)
    mask = active_mask(samples, rate, threshold_dbfs=threshold_dbfs)
    size = max(1, rate // 50)
    active = (
        np.concatenate([samples[i * size : (i + 1) * size] for i in np.flatnonzero(mask)])
        if mask.any()
        else np.zeros(0)
    )
    return AudioStats(
        duration=len(samples) / rate,
        active=float(mask.sum()) * size / rate,
        rms_dbfs=dbfs(rms(samples)),
        peak=float(np.max(np.abs(samples))) if len(samples) else 0.0,
        dominant_hz=dominant_frequency(active, rate) if len(active) else 0.0,
    )


def wav_complete(path: str | Path) -> bool:
    """True once a WAV's header sizes match the file (Asterisk writes them on close)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    riff_size: int = struct.unpack_from("<I", data, 4)[0]
    if riff_size != len(data) - 8:
        return False
    offset = 12
    while offset + 8 <= len(data):
        chunk: bytes = data[offset : offset + 4]
        size: int = struct.unpack_from("<I", data, offset + 4)[0]
        if chunk == b"data":
            return offset + 8 + size == len(data)
        offset += 8 + size + (size & 1)
    return False


async def wait_recording(path: str | Path, timeout: float = 10.0) -> Path:
    """Wait until Asterisk has finished writing the WAV at ``path`` (host path)."""
    path = Path(path)
    await wait_for(lambda: wav_complete(path), timeout, what=f"a complete recording at {path}")
    return path


def gsm_duration(path: str | Path) -> float:
    """Duration of a raw GSM 06.10 file (Asterisk's .gsm prompts: 33 bytes per 20 ms)."""
    return Path(path).stat().st_size / 33 * 0.020
