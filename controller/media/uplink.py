"""When the caller's audio goes to the model: at once when it can change the model's mind (pure).

Every RTP packet of the caller's could go to the model as its own
``input_audio_buffer.append`` the moment it arrives: the least latency, and
twice the websocket messages of 40 ms chunks (each costs a frame and a
system call; it was the largest single cost of a call once the clock stopped
holding packets back, see ``bench/bench_scale.py``). Most of the audio does
not need it. What a caller hears as the agent's delay is the model's
turn detection changing its mind: speech starting (barge-in) and speech
ending (the end of a turn). So :class:`Uplink` sends a frame at once when it
can move that decision, and pairs the others into 40 ms chunks:

============================= ====================== ============================
the model hears speech        the frame is loud      the frame is quiet
============================= ====================== ============================
no (listening for a start)    at once: speech starts pair it
yes (waiting for the end)     pair it                at once: the turn may end
============================= ====================== ============================

The model says which state it is in (``input_audio_buffer.speech_started``
and ``speech_stopped``; the call passes them on). Loudness is judged per
frame, cheaply and roughly (u-law codes at or above -38 dBFS, see
:func:`is_voiced`); a frame judged wrong is only paired, at most 20 ms
later, as every frame used to be. A frame sent at once takes what was held
with it, so the audio stays in order.
"""

from __future__ import annotations

from typing import Final

#: A 20 ms u-law frame.
FRAME_BYTES: Final = 160
#: Frames are paired into chunks of this many bytes (40 ms) when they can wait.
HOLD_BYTES: Final = 2 * FRAME_BYTES
#: Samples at or above about -38 dBFS (u-law segment 2 and up) a frame needs to be voiced.
VOICED_SAMPLES: Final = 8


def _voiced_table() -> bytes:
    # u-law: the code's bits are inverted; bits 4-6 of the inverted code are the
    # segment (exponent). Segment >= 2 is a magnitude of at least 396 of 32768.
    return bytes(1 if ((~code & 0xFF) >> 4) & 0x07 >= 2 else 0 for code in range(256))


_VOICED = _voiced_table()


def is_voiced(ulaw: bytes) -> bool:
    """True when a u-law frame has speech-like level (cheap: two C passes over the bytes)."""
    return ulaw.translate(_VOICED).count(1) >= VOICED_SAMPLES


class Uplink:
    """Decide, frame by frame, what of the caller's audio to send to the model now.

    Feed every frame (real or filled silence) to :meth:`push`; send what it
    returns. Set :attr:`model_hears_speech` from the model's
    ``speech_started``/``speech_stopped`` events.

    Args:
        hold_bytes: the chunk size frames are paired up to (40 ms).
    """

    __slots__ = ("hold_bytes", "model_hears_speech", "_pending", "sent_at_once", "sent_held")

    def __init__(self, *, hold_bytes: int = HOLD_BYTES) -> None:
        self.hold_bytes = hold_bytes
        #: True between the model's ``speech_started`` and its ``speech_stopped``.
        self.model_hears_speech = False
        self._pending = bytearray()
        #: Chunks sent at once (they could move the turn detection) and sent full.
        self.sent_at_once = 0
        self.sent_held = 0

    def push(self, ulaw: bytes) -> bytes | None:
        """Take one frame; return the audio to send now (possibly with held frames), or None."""
        pending = self._pending
        if is_voiced(ulaw) != self.model_hears_speech:
            self.sent_at_once += 1
            if not pending:
                return ulaw
            pending += ulaw
            chunk = bytes(pending)
            pending.clear()
            return chunk
        pending += ulaw
        if len(pending) < self.hold_bytes:
            return None
        self.sent_held += 1
        chunk = bytes(pending)
        pending.clear()
        return chunk

    @property
    def held_bytes(self) -> int:
        """Audio held back, waiting for its pair."""
        return len(self._pending)
