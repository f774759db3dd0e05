"""The resamplers of ``REALTIME_AUDIO=pcm24k``: delay, telephone-band quality and CPU, side by side.

Prints numbers only (no asserts); the table in ``controller/audio/resample.py``
comes from here. For every soxr quality recipe and phase response, and for
:class:`~controller.audio.resample.Fir3` (what calls use):

* **held**: the audio a stream holds back, fed 20 ms chunks as a call does
  (mean and worst over a second of them), in ms, per direction. What the
  caller's side holds delays the model's end-of-turn decision by as much;
* **3.4 kHz**: the gain at the top of the telephone band (dB);
* **>= 4.6 kHz**: the worst gain from 4.6 kHz up (what would alias into the
  band when going down to 8 kHz; images when going up);
* **CPU**: microseconds per 20 ms chunk, up (8 -> 24 kHz) and down.

    .venv/bin/python bench/bench_resample.py [--quick]

``--quick``: fewer iterations (rough CPU numbers; the rest is exact).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.audio.resample import Fir3  # noqa: E402

PHASES = {"linear": 0x00, "intermediate": 0x10, "minimum": 0x30}
QUALITIES = {"LQ": 1, "MQ": 2, "HQ": 4}

Process = Callable[[np.ndarray], np.ndarray]


def soxr_stream(in_rate: int, out_rate: int, recipe: int) -> Process:
    """A soxr stream with a raw recipe (quality | phase bits, as libsoxr defines them)."""
    from soxr import soxr_ext

    stream = soxr_ext.CSoxr(in_rate, out_rate, 1, soxr_ext.SOXR_INT16_I, recipe, False)

    def process(chunk: np.ndarray) -> np.ndarray:
        out: np.ndarray = stream.process_int16(np.ascontiguousarray(chunk.reshape(-1, 1)), False)
        return out[:, 0]

    return process


def soxr_pair(recipe: int, up: bool) -> Process:
    """The soxr stream of one direction of a call's ratio."""
    return soxr_stream(8000, 24000, recipe) if up else soxr_stream(24000, 8000, recipe)


def fir_stream(up: bool) -> Process:
    fir = Fir3(up=up, hold=not up)  # as the calls use it
    return fir.process


def held_ms(make: Callable[[], Process], in_rate: int, out_rate: int) -> tuple[float, float]:
    """Mean and worst audio held back over a second of 20 ms chunks (after the first 100 ms)."""
    process = make()
    n = in_rate // 50
    t = np.arange(in_rate) / in_rate
    x = np.rint(8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    fed = produced = 0
    held = []
    for start in range(0, len(x), n):
        chunk = x[start : start + n]
        produced += len(process(chunk))
        fed += len(chunk)
        held.append((fed / in_rate - produced / out_rate) * 1000)
    steady = held[5:]
    return float(np.mean(steady)), float(np.max(steady))


def gain_db(make: Callable[[], Process], in_rate: int, out_rate: int, freq: float) -> float:
    """Steady-state gain of a sine through the stream, in dB."""
    process = make()
    t = np.arange(in_rate) / in_rate
    amplitude = 8000.0
    x = np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    y = np.concatenate(
        [process(x[i : i + in_rate // 50]) for i in range(0, len(x), in_rate // 50)]
    ).astype(np.float64)
    y = y[len(y) // 4 : 3 * len(y) // 4]
    rms = float(np.sqrt(np.mean(y * y))) if len(y) else 0.0
    return float(20 * np.log10(max(rms, 1e-3) / (amplitude / np.sqrt(2))))


def cpu_us(make: Callable[[], Process], in_rate: int, iterations: int) -> float:
    process = make()
    chunk = np.rint(3000 * np.sin(np.arange(in_rate // 50))).astype(np.int16)
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(iterations):
            process(chunk)
        best = min(best, time.process_time() - start)
    return best / iterations * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer iterations, rough CPU")
    args = parser.parse_args(argv)
    iterations = 200 if args.quick else 5000
    if args.quick:
        print("quick mode: few iterations, rough CPU numbers")
    rows: list[tuple[str, Callable[[bool], Process]]] = []
    for quality, q in QUALITIES.items():
        for phase, p in PHASES.items():
            rows.append((f"soxr {quality} {phase}", functools.partial(soxr_pair, q | p)))
    rows.append(("Fir3 (73 taps)", fir_stream))
    print(
        f"{'resampler':<24} {'held up ms':>11} {'held down ms':>13} {'3.4 kHz dB':>10}"
        f" {'>=4.6 kHz dB':>12} {'CPU up us':>9} {'CPU down us':>11}"
    )
    for name, make in rows:
        up = functools.partial(make, True)
        down = functools.partial(make, False)
        up_mean, up_max = held_ms(up, 8000, 24000)
        down_mean, down_max = held_ms(down, 24000, 8000)
        band = min(gain_db(up, 8000, 24000, 3400.0), gain_db(down, 24000, 8000, 3400.0))
        stop = max(
            gain_db(down, 24000, 8000, freq) for freq in (4600.0, 5000.0, 6000.0, 8000.0, 11000.0)
        )
        up_cpu = cpu_us(up, 8000, iterations)
        down_cpu = cpu_us(down, 24000, iterations)
        print(
            f"{name:<24} {up_mean:5.1f}/{up_max:5.1f} {down_mean:6.1f}/{down_max:6.1f}"
            f" {band:10.2f} {stop:12.1f} {up_cpu:9.1f} {down_cpu:11.1f}"
        )
    print(
        "(held: mean/worst ms of audio a stream holds back, fed 20 ms chunks; Fir3 up as"
        " the caller's\n side uses it (hold=False: nothing held, the signal 1.5 ms late"
        " inside each chunk); gains\n in dB, >= 4.6 kHz = the worst from 4.6 to 11 kHz going"
        " down to 8 kHz, where it would alias;\n CPU per 20 ms chunk, best of three)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
