"""Energy voice activity detection for the local model server (pure).

The real ``server_vad`` is a model; this stand-in is deliberately simple and
predictable so tests can reason about it: audio is cut into 10 ms frames, a
frame is *voiced* when its RMS level is at or above ``threshold_dbfs``.

* Speech starts after ``min_speech_ms`` of consecutive voiced frames. As in
  the GA API, ``audio_start_ms`` is then moved back by ``prefix_padding_ms``
  (but not before the start of the input buffer).
* Speech stops after ``silence_duration_ms`` of consecutive unvoiced frames.
  ``audio_end_ms`` is the point where that silence was complete, as in the
  GA API; ``speech_end_ms`` is the end of the last voiced frame.

All times are milliseconds of input audio since the session started (the
clock of the audio itself, not the wall clock).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.devtools.modelserver.audio import Samples

__all__ = ["EnergyVad", "SpeechStarted", "SpeechStopped", "VadEvent"]

FRAME_MS = 10


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began; ``audio_start_ms`` includes the prefix padding."""

    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    """Speech ended; ``audio_end_ms`` includes the trailing silence."""

    audio_start_ms: int
    audio_end_ms: int
    speech_end_ms: int


VadEvent = SpeechStarted | SpeechStopped


class EnergyVad:
    """Frame-RMS voice activity detector with start and stop hysteresis."""

    def __init__(
        self,
        rate: int,
        *,
        threshold_dbfs: float = -40.0,
        silence_duration_ms: int = 500,
        prefix_padding_ms: int = 300,
        min_speech_ms: int = 30,
        origin_ms: int = 0,
        floor_ms: int = 0,
    ) -> None:
        """Create a detector.

        Args:
            rate: sample rate of the audio fed to :meth:`feed`.
            threshold_dbfs: frame RMS level at or above which a frame is voiced.
            silence_duration_ms: unvoiced audio that ends speech.
            prefix_padding_ms: audio before the first voiced frame included in the turn.
            min_speech_ms: voiced audio needed before speech starts.
            origin_ms: the time of the first sample fed (audio already seen).
            floor_ms: the start of the input buffer (speech cannot start earlier).
        """
        self.rate = rate
        self.frame = rate * FRAME_MS // 1000
        self.threshold_dbfs = threshold_dbfs
        self.silence_duration_ms = silence_duration_ms
        self.prefix_padding_ms = prefix_padding_ms
        self.min_speech_ms = min_speech_ms
        # Mean square of a frame at the threshold, to compare without a log.
        self._threshold_ms = (32768.0 * 10.0 ** (threshold_dbfs / 20.0)) ** 2
        self._carry = np.zeros(0, dtype=np.int16)
        self._pos_ms = origin_ms  # end of the last whole frame seen
        self._floor_ms = floor_ms  # speech cannot start before this (buffer start)
        self._voiced_run = 0
        self._silent_run = 0
        self._speaking = False
        self._start_ms = 0
        self._last_voiced_end = 0

    @property
    def speaking(self) -> bool:
        """True between a :class:`SpeechStarted` and its :class:`SpeechStopped`."""
        return self._speaking

    @property
    def position_ms(self) -> int:
        """Audio analysed so far, in ms (whole frames only)."""
        return self._pos_ms

    def reset(self, floor_ms: int | None = None) -> None:
        """Forget any speech in progress (buffer committed or cleared).

        Args:
            floor_ms: the new start of the input buffer (speech cannot start earlier).
        """
        self._voiced_run = 0
        self._silent_run = 0
        self._speaking = False
        self._floor_ms = self._pos_ms if floor_ms is None else floor_ms

    def feed(self, samples: Samples) -> list[VadEvent]:
        """Analyse more audio; return the speech start/stop events it caused."""
        events: list[VadEvent] = []
        data = np.concatenate((self._carry, samples)) if self._carry.size else samples
        whole = data.size - data.size % self.frame
        frames = data[:whole].reshape(-1, self.frame).astype(np.float64)
        self._carry = data[whole:].copy()
        if not frames.size:
            return events
        voiced = np.mean(frames * frames, axis=1) >= self._threshold_ms
        for is_voiced in voiced.tolist():
            self._pos_ms += FRAME_MS
            if is_voiced:
                self._voiced_run += FRAME_MS
                self._silent_run = 0
                self._last_voiced_end = self._pos_ms
                if not self._speaking and self._voiced_run >= self.min_speech_ms:
                    self._speaking = True
                    first_voiced = self._pos_ms - self._voiced_run
                    self._start_ms = max(self._floor_ms, first_voiced - self.prefix_padding_ms)
                    events.append(SpeechStarted(self._start_ms))
            else:
                self._voiced_run = 0
                self._silent_run += FRAME_MS
                if self._speaking and self._silent_run >= self.silence_duration_ms:
                    self._speaking = False
                    events.append(
                        SpeechStopped(self._start_ms, self._pos_ms, self._last_voiced_end)
                    )
                    self._floor_ms = self._pos_ms
        return events
