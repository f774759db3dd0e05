"""Resampler: continuity across chunk edges, exact rate in the long run, the helpers."""

from __future__ import annotations

import numpy as np
import pytest

from controller.audio.convert import Passthrough, converters_for
from controller.audio.g711 import ulaw_decode, ulaw_encode
from controller.audio.resample import (
    Fir3,
    Pcm24kToUlaw,
    Resampler,
    UlawToPcm24k,
    fir3_filter,
)

RATES = [(8000, 24000), (24000, 8000)]


def sine(freq: float, rate: int, seconds: float, amplitude: float = 12000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def in_random_chunks(resampler: Resampler, x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = []
    pos = 0
    while pos < len(x):
        size = int(rng.integers(0, 900))  # includes empty chunks
        parts.append(resampler.process(x[pos : pos + size]))
        pos += size
    parts.append(resampler.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chunked_equals_one_go(in_rate, out_rate, seed):
    x = sine(440.0, in_rate, 2.0)
    whole = Resampler(in_rate, out_rate)
    expected = np.concatenate([whole.process(x), whole.flush()])
    chunked = in_random_chunks(Resampler(in_rate, out_rate), x, seed)
    assert len(chunked) == len(expected) == len(x) * out_rate // in_rate
    # soxr dithers its int16 output, so samples may differ by a couple of LSB (-80 dB),
    # never more: the filter state carries over chunk edges exactly.
    assert np.abs(chunked.astype(np.int32) - expected).max() <= 3


@pytest.mark.parametrize(("in_rate", "out_rate"), RATES)
def test_no_click_at_chunk_edges(in_rate, out_rate):
    x = sine(440.0, in_rate, 2.0)
    y = in_random_chunks(Resampler(in_rate, out_rate), x, 9).astype(np.int32)
    # The largest sample-to-sample step of a 440 Hz sine of amplitude A at rate R
    # is about 2*pi*440*A/R; a discontinuity at a chunk edge would be far larger.
    bound = 2 * np.pi * 440 * 12000 / out_rate * 1.05 + 4
    steady = y[out_rate // 10 : -out_rate // 10]
    assert np.abs(np.diff(steady)).max() <= bound


@pytest.mark.parametrize(("in_rate", "out_rate"), RATES)
def test_spectral_purity(in_rate, out_rate):
    x = sine(1000.0, in_rate, 1.0)
    y = in_random_chunks(Resampler(in_rate, out_rate), x, 4).astype(np.float64)
    y = y[out_rate // 10 : -out_rate // 10]
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / out_rate)
    tone = spectrum[np.abs(freqs - 1000.0) < 30].sum()
    rest = spectrum[np.abs(freqs - 1000.0) >= 30].sum()
    # Clicks at chunk edges would spread energy over the whole band.
    assert 10 * np.log10(rest / tone) < -60


@pytest.mark.parametrize(("in_rate", "out_rate"), RATES)
def test_output_length_tracks_the_rate_ratio(in_rate, out_rate):
    resampler = Resampler(in_rate, out_rate)
    frame = sine(300.0, in_rate, 0.020)
    ratio = out_rate / in_rate
    lag = 0.0
    for n in range(1, 3001):  # one minute of 20 ms chunks
        resampler.process(frame)
        lag = n * len(frame) * ratio - resampler.samples_out
        # Output never runs ahead of the input, and the held-back part stays under 100 ms.
        assert 0 <= lag <= 0.1 * out_rate
    tail = resampler.flush()
    # After the flush the count is exact: in * out_rate / in_rate, not one sample off.
    assert len(tail) == lag
    assert resampler.samples_in == 3000 * len(frame)
    assert resampler.samples_out == 3000 * len(frame) * out_rate // in_rate


def test_flush_then_reuse_and_reset():
    resampler = Resampler(8000, 24000)
    x = sine(500.0, 8000, 0.5)
    first = np.concatenate([resampler.process(x), resampler.flush()])
    second = np.concatenate([resampler.process(x), resampler.flush()])
    assert len(first) == len(second) == 12000
    assert np.abs(first.astype(np.int32) - second).max() <= 3
    resampler.process(x)
    resampler.reset()
    assert len(resampler.flush()) == 0


def test_rejects_wrong_dtype_and_rates():
    with pytest.raises(TypeError):
        Resampler(8000, 24000).process(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError):
        Resampler(0, 8000)


def test_loud_input_clips_and_is_counted():
    resampler = Resampler(24000, 8000)
    square = np.where(np.arange(24000) % 60 < 30, 32767, -32768).astype(np.int16)
    resampler.process(square)
    resampler.flush()
    assert resampler.clipped > 0


# --- the two directions of a call ----------------------------------------------------


def test_ulaw_to_pcm24k_and_back():
    caller = ulaw_encode(sine(700.0, 8000, 1.0))
    up = UlawToPcm24k()
    pcm = b"".join(up.convert(caller[i : i + 160]) for i in range(0, len(caller), 160))
    # Every 20 ms of the caller's comes out at once, whole (nothing held back:
    # the signal is 1.5 ms late inside it); the flush adds the filter's last 1.5 ms.
    assert len(pcm) == len(caller) * 3 * 2
    pcm += up.flush()
    assert len(pcm) == (len(caller) * 3 + 36) * 2
    down = Pcm24kToUlaw()
    # Odd-sized deltas: a sample split across two chunks must survive.
    back = b""
    for i in range(0, len(pcm), 999):
        back += down.convert(pcm[i : i + 999])
    back += down.flush()
    assert len(back) == len(caller) + 12
    original = ulaw_decode(caller).astype(np.float64)[800:-800]
    restored = ulaw_decode(back).astype(np.float64)[12:][800:-800]
    snr = 10 * np.log10(np.sum(original**2) / np.sum((original - restored) ** 2))
    assert snr > 25  # two G.711 quantizations and two resamplings


def test_pcm24k_to_ulaw_reset_drops_held_audio_and_odd_byte():
    down = Pcm24kToUlaw()
    down.convert(b"\x01" * 4801)
    down.reset()
    assert down.flush() == b""


def test_converters_for_modes():
    inbound, outbound = converters_for("pcmu")
    assert isinstance(inbound, Passthrough) and isinstance(outbound, Passthrough)
    frame = b"\x12" * 160
    assert inbound.convert(frame) is frame
    assert inbound.flush() == b""
    inbound.reset()
    inbound, outbound = converters_for("pcm24k", quality="LQ")
    assert isinstance(inbound, UlawToPcm24k)
    assert isinstance(inbound.resampler, Resampler) and inbound.resampler.quality == "LQ"
    assert isinstance(outbound, Pcm24kToUlaw)
    with pytest.raises(ValueError, match="pcm16k"):
        converters_for("pcm16k")


# --- Fir3: the low-delay 3:1 resampler the calls use ----------------------------------------


@pytest.mark.parametrize("up", [True, False])
@pytest.mark.parametrize("hold", [True, False])
def test_fir3_chunked_equals_one_go_and_the_reference(up, hold):
    rate = 8000 if up else 24000
    x = np.random.default_rng(5).normal(0, 3000, rate).astype(np.int16)
    whole = Fir3(up=up, hold=hold)
    expected = np.concatenate([whole.process(x), whole.flush()])
    chunked_fir = Fir3(up=up, hold=hold)
    rng = np.random.default_rng(6)
    parts, pos = [], 0
    while pos < len(x):
        size = int(rng.integers(0, 700))
        parts.append(chunked_fir.process(x[pos : pos + size]))
        pos += size
    parts.append(chunked_fir.flush())
    assert np.array_equal(np.concatenate(parts), expected)
    # The same as filtering the whole signal directly (zero-stuffed or decimated).
    h = fir3_filter()
    if up:
        stuffed = np.zeros(len(x) * 3)
        stuffed[::3] = x
        direct = np.convolve(stuffed, 3 * h)
    else:
        direct = np.convolve(x.astype(np.float64), h)[::3]
    delay = whole.delay_samples
    start = delay if hold else 0
    reference = np.clip(np.rint(direct[start : start + len(expected)]), -32768, 32767)
    assert np.array_equal(expected, reference)
    assert len(expected) == (len(x) * 3 if up else len(x) // 3) + (0 if hold else delay)


def test_fir3_holds_nothing_back_without_hold_and_only_its_delay_with_it():
    frame = sine(440.0, 8000, 0.020)
    streaming, aligned = Fir3(up=True, hold=False), Fir3(up=True, hold=True)
    assert streaming.delay_samples == 36  # 1.5 ms at 24 kHz
    for _ in range(10):
        assert len(streaming.process(frame)) == 480
    assert len(aligned.process(frame)) == 480 - 36
    assert len(aligned.process(frame)) == 480
    down = Fir3(up=False)
    assert down.delay_samples == 12  # 1.5 ms at 8 kHz
    assert len(down.process(sine(440.0, 24000, 0.100))) == 800 - 12


def test_fir3_telephone_band_is_flat_and_aliases_are_rejected():
    h = fir3_filter()

    def gain_db(freq: float) -> float:
        w = 2 * np.pi * freq / 24000
        return float(20 * np.log10(abs(np.sum(h * np.exp(-1j * w * np.arange(len(h)))))))

    for freq in (300.0, 1000.0, 2000.0, 3000.0, 3400.0):
        assert abs(gain_db(freq)) < 0.05, freq
    for freq in (4600.0, 5000.0, 6000.0, 8000.0, 11000.0):
        assert gain_db(freq) < -58, freq


def test_fir3_reset_and_errors():
    fir = Fir3(up=False)
    fir.process(sine(300.0, 24000, 0.1))
    fir.reset()
    assert len(fir.flush()) == 0
    with pytest.raises(TypeError):
        fir.process(np.zeros(10, dtype=np.float32))
    loud = np.where(np.arange(2400) % 6 < 3, 32767, -32768).astype(np.int16)
    fir.process(loud)
    assert fir.clipped > 0
