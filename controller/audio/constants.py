"""G.711 constants that need no numpy: silence codes and u-law's linear values (pure).

The ``pcmu`` path never converts audio, so a ``pcmu`` controller imports
nothing heavier than this: :mod:`controller.audio.g711` (numpy tables) and
:mod:`controller.audio.resample` are loaded only for ``pcm24k``.
"""

from __future__ import annotations

from typing import Final

#: The u-law and A-law codes for a zero sample (what silence sounds like on the wire).
ULAW_SILENCE: Final = 0xFF
ALAW_SILENCE: Final = 0xD5
#: One 20 ms frame (160 samples at 8 kHz) of silence.
ULAW_SILENCE_FRAME: Final = bytes((ULAW_SILENCE,)) * 160
ALAW_SILENCE_FRAME: Final = bytes((ALAW_SILENCE,)) * 160


def ulaw_expand(code: int) -> int:
    """The linear sample of one u-law code (ITU-T G.191 ``ulaw_expand``)."""
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    return magnitude if code >= 0x80 else -magnitude


#: code -> linear sample, as :data:`controller.audio.g711.ULAW_DECODE_TABLE` (a tuple).
ULAW_LINEAR: Final = tuple(ulaw_expand(code) for code in range(256))
