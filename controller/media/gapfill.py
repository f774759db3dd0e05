"""Silence for the model while the caller's side sends no audio (pure).

Phones with silence suppression send nothing, or only comfort noise (PT 13,
which the endpoint ignores), while the caller is quiet; a Local channel in
``Wait()`` sends nothing at all. The model's turn detection (server VAD)
measures silence in the audio it *receives*, so with no audio at all it never
sees the end of the caller's speech and never answers.

:class:`GapFiller` watches when real audio last arrived. Once nothing has
come for more than ``threshold`` (100 ms: well above normal network jitter
on the Asterisk leg), it asks for one 20 ms silence frame per frame period,
from the clock's tick, until real audio arrives again. The first time it
also backfills the gap itself (the ``threshold`` already waited), so the
model's audio timeline keeps pace with wall time and its
``silence_duration_ms`` counts from when the caller actually went quiet,
not 100 ms later.
"""

from __future__ import annotations

import math

from controller.media.schedule import FRAME_PERIOD


class GapFiller:
    """Decide when to feed silence frames to the model (clock injected).

    Args:
        start: when the call's media started (seconds, monotonic clock).
            Until the first packet arrives the gap counts from here.
        threshold: how long without audio before filling starts.
        period: the frame period (20 ms).
        max_frames: most frames returned by one :meth:`frames_due` call,
            so a stalled event loop does not produce a flood; frames beyond
            it are skipped (counted in :attr:`skipped_frames`).
    """

    __slots__ = (
        "threshold",
        "period",
        "max_frames",
        "filled_frames",
        "skipped_frames",
        "gaps",
        "_last_audio",
        "_filling",
        "_gap_start",
        "_gap_frames",
    )

    def __init__(
        self,
        start: float,
        *,
        threshold: float = 0.100,
        period: float = FRAME_PERIOD,
        max_frames: int | None = None,
    ) -> None:
        self.threshold = threshold
        self.period = period
        self.max_frames = (
            max_frames if max_frames is not None else math.ceil(threshold / period) + 3
        )
        #: Silence frames produced so far.
        self.filled_frames = 0
        #: Frames not produced because of ``max_frames``.
        self.skipped_frames = 0
        #: Gaps detected so far.
        self.gaps = 0
        self._last_audio = start
        self._filling = False
        self._gap_start = start
        self._gap_frames = 0

    def audio_received(self, now: float) -> None:
        """Note that real audio arrived at ``now``; filling stops until the next gap."""
        self._last_audio = now
        self._filling = False

    @property
    def filling(self) -> bool:
        """True while the filler is producing silence."""
        return self._filling

    def frames_due(self, now: float) -> int:
        """Return how many 20 ms silence frames to feed the model now.

        Call it on every clock tick. Returns 0 while audio flows; once a gap
        is longer than ``threshold``, returns the frames that cover it (the
        backfill) and then about one per tick.
        """
        if not self._filling:
            if now - self._last_audio <= self.threshold:
                return 0
            self._filling = True
            self.gaps += 1
            self._gap_start = self._last_audio
            self._gap_frames = 0
        # Frames whose whole 20 ms lies inside the gap so far (the epsilon
        # keeps float error from losing a frame that ends exactly at ``now``).
        total = int((now - self._gap_start) / self.period + 1e-9)
        count = total - self._gap_frames
        if count <= 0:
            return 0
        if count > self.max_frames:
            self.skipped_frames += count - self.max_frames
            count = self.max_frames
        self._gap_frames = total
        self.filled_frames += count
        return count
