"""A call's audio conversions, chosen by ``REALTIME_AUDIO`` (pure; numpy only for ``pcm24k``).

``pcmu`` needs no conversion at all (:class:`Passthrough`), so choosing the
converters imports :mod:`controller.audio.resample` (numpy, the FIR tables)
only for ``pcm24k``: a ``pcmu`` controller starts without numpy, some 20 MiB
lighter. A controller configured for ``pcm24k`` imports it at start-up
(:func:`preload`), so no call waits for the import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from controller.audio.resample import Quality

__all__ = ["AudioConverter", "Passthrough", "converters_for", "preload"]


class AudioConverter(Protocol):
    """One direction of a call's audio: bytes in one format in, bytes in another out."""

    def convert(self, data: bytes) -> bytes:
        """Convert one chunk; may hold back a few ms of audio in filter state."""
        ...

    def flush(self) -> bytes:
        """Return whatever audio is held back, at the end of a continuous signal."""
        ...

    def reset(self) -> None:
        """Drop whatever audio is held back (on barge-in)."""
        ...


class Passthrough:
    """The ``pcmu`` mode: u-law bytes go through untouched in both directions."""

    __slots__ = ()

    def convert(self, data: bytes) -> bytes:
        """Return ``data`` itself."""
        return data

    def flush(self) -> bytes:
        """Return nothing: nothing is ever held back."""
        return b""

    def reset(self) -> None:
        """Do nothing: nothing is ever held back."""


def preload(audio_mode: str) -> None:
    """Import what ``audio_mode``'s converters need now (start-up), not during a call."""
    if audio_mode == "pcm24k":
        importlib.import_module("controller.audio.resample")


def converters_for(
    audio_mode: str, *, quality: Quality | None = None
) -> tuple[AudioConverter, AudioConverter]:
    """Return ``(caller_to_model, model_to_caller)`` for a ``REALTIME_AUDIO`` mode.

    Args:
        audio_mode: ``"pcmu"`` (passthrough) or ``"pcm24k"``.
        quality: for ``pcm24k``: None (default) for the low-delay
            :class:`~controller.audio.resample.Fir3`, or a soxr recipe
            (comparisons only).

    Raises:
        ValueError: unknown mode.
    """
    if audio_mode == "pcmu":
        return Passthrough(), Passthrough()
    if audio_mode == "pcm24k":
        from controller.audio.resample import Pcm24kToUlaw, UlawToPcm24k

        return UlawToPcm24k(quality=quality), Pcm24kToUlaw(quality=quality)
    raise ValueError(f"unknown audio mode {audio_mode!r}; expected 'pcmu' or 'pcm24k'")
