"""Stateful resampling for the ``pcm24k`` mode (8 kHz <-> 24 kHz), and the two conversions (pure).

A resampler holds filter state, so the filter carries over from one chunk to
the next: resampling a signal in chunks of any size gives the same samples
as resampling it in one go, with no click at the chunk edges. Keep one per
call per direction; never share one between calls.

Latency is what decides here. Every millisecond a resampler holds back on
the caller's side delays the model's end-of-turn decision by as much.
Measured with 20 ms chunks (``bench/bench_resample.py``; mean and worst
audio held in the stream, response at 3.4 kHz, rejection at 4.6 kHz and
above, what aliases into the telephone band):

================================ =============== ============ ============
resampler                        held, mean/max  at 3.4 kHz   >= 4.6 kHz
================================ =============== ============ ============
soxr LQ (linear or minimum ph.)  20-22 / 37-40   -7.8 dB      -82 dB
soxr MQ linear phase             43 / 75 ms      flat         -82 dB
soxr MQ minimum phase            33 / 66 ms      flat         -82 dB
soxr MQ intermediate phase       80 / 140 ms     flat         -82 dB
soxr HQ minimum phase            30 / 59 ms      flat         -82 dB
:class:`Fir3` (73 taps, Kaiser)  1.5 / 1.5 ms    -0.01 dB     -59 dB
================================ =============== ============ ============

soxr holds its audio in blocks for its FFT filter, whatever the phase
response; the least it holds at telephone quality (flat to 3.4 kHz) is
30-33 ms on average per direction, twice that at worst. :class:`Fir3` is a
73-tap linear-phase FIR (windowed sinc, Kaiser beta 5.65, cut-off 4 kHz)
applied as three polyphase branches for the exact 3:1 ratio: it holds only
its group delay, 36 samples at 24 kHz (1.5 ms), is flat within 0.01 dB to
3.4 kHz and keeps what would alias into the telephone band 59 dB or more
down (below G.711's own quantisation noise). It costs a few microseconds
more per 20 ms than soxr (numpy convolutions; see the benchmark), which is
why it is only used for the one ratio a call needs. :class:`Resampler`
(soxr) does any other ratio. With ``pcmu`` the bytes pass through untouched
(:class:`~controller.audio.convert.Passthrough`; see
:func:`~controller.audio.convert.converters_for`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from controller.audio.g711 import (
    ULAW_DECODE_TABLE,
    Int16Array,
    array_to_pcm16,
    pcm16_to_array,
    ulaw_decode,
    ulaw_encode,
)

__all__ = ["Fir3", "Pcm24kToUlaw", "Quality", "Resampler", "UlawToPcm24k", "fir3_filter"]

Quality = Literal["LQ", "MQ", "HQ", "VHQ"]

_EMPTY = np.zeros(0, dtype=np.int16)
Float64Array = npt.NDArray[np.float64]

#: :class:`Fir3`'s filter: taps (6k + 1, so its delay is a whole number of
#: 8 kHz samples), Kaiser beta (about 60 dB of stopband) and cut-off.
FIR3_TAPS = 73
FIR3_BETA = 5.65
FIR3_CUTOFF_HZ = 4000.0


def fir3_filter(
    taps: int = FIR3_TAPS, beta: float = FIR3_BETA, cutoff_hz: float = FIR3_CUTOFF_HZ
) -> Float64Array:
    """The low-pass filter of :class:`Fir3` at 24 kHz (unit gain at DC)."""
    n = np.arange(taps) - (taps - 1) / 2
    h: Float64Array = np.sinc(2 * cutoff_hz / 24000 * n) * np.kaiser(taps, beta)
    result: Float64Array = h / h.sum()
    return result


class Fir3:
    """A stateful 3:1 polyphase FIR resampler, 8 kHz -> 24 kHz (``up``) or back (``down``).

    The same interface as :class:`Resampler` (one direction of one call).
    The filter delays the signal by :attr:`delay_samples` output samples
    (1.5 ms). Two ways to account for it:

    * ``hold=True`` (like soxr): output is aligned with input, so each chunk
      holds back the last 1.5 ms it cannot compute yet, and :meth:`flush`
      returns them; after a flush exactly three times (or a third of) the
      input since the previous flush has come out. Right for the model's
      audio: a response's first sample is not preceded by 1.5 ms of silence.
    * ``hold=False``: every chunk comes out whole at once (three times, or a
      third of, its length), the signal 1.5 ms late inside it; :meth:`flush`
      returns the filter's last 1.5 ms. Right for the caller's audio: a
      packet's worth of audio reaches the model with the packet. (Held-back
      samples would cost far more than 1.5 ms: the model's turn detection
      judges whole frames, and a frame that ends with the packet would wait
      for the next packet, 20 ms later, half the time.)

    Args:
        up: True for 8 kHz -> 24 kHz, False for 24 kHz -> 8 kHz.
        hold: see above.
    """

    __slots__ = (
        "up",
        "in_rate",
        "out_rate",
        "delay_samples",
        "_taps",
        "_branches",
        "_matrix",
        "_history",
        "_keep",
        "_hold",
        "_skip",
        "_stream_in",
        "_stream_out",
        "_clips",
        "samples_in",
        "samples_out",
    )

    def __init__(self, *, up: bool, hold: bool = True) -> None:
        h = fir3_filter()
        taps = self._taps = len(h)
        self.up = up
        self.in_rate, self.out_rate = (8000, 24000) if up else (24000, 8000)
        #: Output samples the filter holds back (its group delay).
        self.delay_samples = (taps - 1) // 2 if up else (taps - 1) // 6
        # Everything is computed as correlations (numpy's correlate is a little
        # cheaper than convolve): output = sum_k branch[k] * window[k].
        if up:
            # Output 3n + p = sum_j h[3j + p] x[n - j]: one correlation per branch,
            # with the branch reversed.
            width = -(-taps // 3)
            padded = [np.pad(3.0 * h[p::3], (0, width - len(h[p::3]))) for p in range(3)]
            self._branches = [branch[::-1].copy() for branch in padded]
            # The three branches side by side: one matrix product gives the
            # outputs interleaved (cheaper than three correlations and a scatter).
            self._matrix = np.stack(self._branches, axis=1)
            self._keep = width - 1
        else:
            # Output n = sum_r g[r] x[3n + r], g = h reversed: a correlation of each
            # input phase with its branch.
            g = h[::-1]
            self._branches = [g[q::3].copy() for q in range(3)]
            self._matrix = np.zeros((0, 3))
            self._keep = taps - 1
        self._hold = hold
        self._history: Float64Array = np.zeros(self._keep)
        self._skip = self.delay_samples if hold else 0
        self._stream_in = self._stream_out = 0
        self._clips = 0
        #: Samples fed in and produced since creation (for rate checks and metrics).
        self.samples_in = 0
        self.samples_out = 0

    def process(self, samples: Int16Array) -> Int16Array:
        """Resample one chunk (any length, may be empty; see :meth:`Resampler.process`)."""
        if samples.dtype != np.int16:
            raise TypeError(f"Fir3 takes int16 samples, got {samples.dtype}")
        return self.process_float(samples.astype(np.float64))

    def process_float(self, samples: Float64Array) -> Int16Array:
        """Like :meth:`process`, for samples already in float64 (on the int16 scale)."""
        self._stream_in += len(samples)
        self.samples_in += len(samples)
        return self._out(self._filter(samples))

    def flush(self) -> Int16Array:
        """Return the samples still held in the filter and start afresh."""
        ratio_out = self._stream_in * 3 if self.up else self._stream_in // 3
        if not self._hold:
            ratio_out += self.delay_samples
        tail = self._filter(np.zeros(self._keep + 3))
        out = self._out(tail, limit=ratio_out - self._stream_out)
        self._restart()
        return out

    def reset(self) -> None:
        """Drop the samples held in the filter (on barge-in) and start afresh."""
        self._restart()

    @property
    def delay(self) -> float:
        """Output samples the filter holds back."""
        return float(self.delay_samples)

    @property
    def clipped(self) -> int:
        """Output samples clipped to the int16 range so far."""
        return self._clips

    def _restart(self) -> None:
        self._history = np.zeros(self._keep)
        self._skip = self.delay_samples if self._hold else 0
        self._stream_in = self._stream_out = 0

    def _filter(self, x: Float64Array) -> Float64Array:
        data = np.concatenate((self._history, x))
        branches = self._branches
        correlate = np.correlate
        if self.up:
            count = len(x)
            self._history = data[count:]
            if not count:
                return np.zeros(0)
            # Row n is data[n : n + width]: a view on the (contiguous) data, no copy
            # (made directly: numpy's as_strided wrapper costs more than the product).
            itemsize = data.itemsize
            windows = np.ndarray(
                (count, len(data) - count + 1), np.float64, data, 0, (itemsize, itemsize)
            )
            out: Float64Array = (windows @ self._matrix).ravel()
            return out
        count = (len(data) - self._taps) // 3 + 1 if len(data) >= self._taps else 0
        if not count:
            self._history = data
            return np.zeros(0)
        out = correlate(data[0::3], branches[0], "valid")[:count]
        out += correlate(data[1::3], branches[1], "valid")[:count]
        out += correlate(data[2::3], branches[2], "valid")[:count]
        self._history = data[3 * count :]
        return out

    def _out(self, y: Float64Array, limit: int | None = None) -> Int16Array:
        skip = self._skip
        if skip:
            drop = min(skip, len(y))
            y = y[drop:]
            self._skip = skip - drop
        if limit is not None:
            y = y[: max(limit, 0)]
        if len(y) and (y.max() >= 32767.5 or y.min() < -32768.5):
            self._clips += int(np.count_nonzero((y >= 32767.5) | (y < -32768.5)))
            y = np.clip(y, -32768, 32767)
        # y is this call's own fresh array (or a slice of one): round it in place.
        out: Int16Array = np.rint(y, out=y).astype(np.int16)
        self._stream_out += len(out)
        self.samples_out += len(out)
        return out


class Resampler:
    """A stateful mono int16 resampler (one ``soxr.ResampleStream``).

    Args:
        in_rate: input sample rate in Hz.
        out_rate: output sample rate in Hz.
        quality: soxr quality recipe; see the module docstring for the trade-off
            (calls use :class:`Fir3` instead: far less delay).
    """

    __slots__ = (
        "in_rate",
        "out_rate",
        "quality",
        "_stream",
        "_clips_before",
        "samples_in",
        "samples_out",
    )

    def __init__(self, in_rate: int, out_rate: int, *, quality: Quality = "MQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        import soxr  # only here: a call's own ratio needs no soxr (see Fir3)

        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        # soxr's clip counter restarts at clear(); keep the total across streams.
        self._clips_before = 0
        #: Samples fed in and produced since creation (for rate checks and metrics).
        self.samples_in = 0
        self.samples_out = 0

    def process(self, samples: Int16Array) -> Int16Array:
        """Resample one chunk.

        Output lags input by the filter's delay (see :attr:`delay`), so a chunk
        may give fewer samples than ``len(samples) * out_rate / in_rate``,
        or none at all at the start; the total evens out over time.

        Args:
            samples: a 1-D int16 array of any length (may be empty).

        Returns:
            The resampled samples available so far (int16).
        """
        if samples.dtype != np.int16:
            raise TypeError(f"Resampler takes int16 samples, got {samples.dtype}")
        out: Int16Array = self._stream.resample_chunk(samples)
        self.samples_in += len(samples)
        self.samples_out += len(out)
        return out

    def flush(self) -> Int16Array:
        """Return the samples still held in the filter and start a fresh stream.

        Call it at the end of a continuous signal (e.g. the end of one model
        response), so its tail is heard; the next :meth:`process` starts
        from a clean filter state.
        """
        out: Int16Array = self._stream.resample_chunk(_EMPTY, last=True)
        self._clear()
        self.samples_out += len(out)
        return out

    def reset(self) -> None:
        """Drop the samples held in the filter (on barge-in) and start a fresh stream."""
        self._clear()

    def _clear(self) -> None:
        self._clips_before += int(self._stream.num_clips())
        self._stream.clear()

    @property
    def delay(self) -> float:
        """Output samples the filter currently holds back (soxr's ``delay()``)."""
        return float(self._stream.delay())

    @property
    def clipped(self) -> int:
        """Output samples clipped to the int16 range so far."""
        return self._clips_before + int(self._stream.num_clips())


AnyResampler = Fir3 | Resampler


#: u-law code -> its linear sample as float64 (what Fir3 filters).
_ULAW_TO_FLOAT = ULAW_DECODE_TABLE.astype(np.float64)


class UlawToPcm24k:
    """Caller to model in ``pcm24k`` mode: u-law 8 kHz -> PCM16 LE 24 kHz.

    Args:
        quality: None (default) for :class:`Fir3`, or a soxr recipe for
            :class:`Resampler` (for comparisons: far more delay).
    """

    __slots__ = ("resampler",)

    def __init__(self, *, quality: Quality | None = None) -> None:
        # Nothing held back: each packet's audio goes to the model with it.
        self.resampler: AnyResampler = (
            Fir3(up=True, hold=False)
            if quality is None
            else (Resampler(8000, 24000, quality=quality))
        )

    def convert(self, data: bytes) -> bytes:
        """Decode and resample one chunk of u-law bytes (typically 160 = 20 ms)."""
        resampler = self.resampler
        if isinstance(resampler, Fir3):
            samples = _ULAW_TO_FLOAT[np.frombuffer(data, dtype=np.uint8)]
            return array_to_pcm16(resampler.process_float(samples))
        return array_to_pcm16(resampler.process(ulaw_decode(data)))

    def flush(self) -> bytes:
        """Return the held-back tail as PCM16 bytes."""
        return array_to_pcm16(self.resampler.flush())

    def reset(self) -> None:
        """Drop the held-back audio."""
        self.resampler.reset()


class Pcm24kToUlaw:
    """Model to caller in ``pcm24k`` mode: PCM16 LE 24 kHz -> u-law 8 kHz.

    A chunk with an odd number of bytes keeps its last byte for the next one,
    so a sample split across two deltas is not lost or misaligned.

    Args:
        quality: None (default) for :class:`Fir3`, or a soxr recipe for
            :class:`Resampler` (for comparisons: far more delay).
    """

    __slots__ = ("resampler", "_carry")

    def __init__(self, *, quality: Quality | None = None) -> None:
        self.resampler: AnyResampler = (
            Fir3(up=False) if quality is None else (Resampler(24000, 8000, quality=quality))
        )
        self._carry = b""

    def convert(self, data: bytes) -> bytes:
        """Resample and encode one chunk of PCM16 bytes."""
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if len(data) & 1:
            self._carry = data[-1:]
            data = data[:-1]
        return ulaw_encode(self.resampler.process(pcm16_to_array(data)))

    def flush(self) -> bytes:
        """Return the held-back tail as u-law bytes (a dangling odd byte is dropped)."""
        self._carry = b""
        return ulaw_encode(self.resampler.flush())

    def reset(self) -> None:
        """Drop the held-back audio."""
        self._carry = b""
        self.resampler.reset()
