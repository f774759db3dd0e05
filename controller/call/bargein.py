"""Barge-in: when the caller talks over the agent (pure; clock passed in).

Theory of operation. The model streams its answer faster than real time;
the playout sends it to the caller at 20 ms a frame, so at any moment the
model has *sent* more audio than the caller has *heard*. When the caller
starts speaking (``input_audio_buffer.speech_started``):

1. The agent's audio must stop on the wire within one frame: flush the
   playout queue and drop later deltas of that response.
2. The model must be told what the caller actually heard, or its memory of
   the conversation includes words nobody heard:
   ``conversation.item.truncate`` with ``audio_end_ms`` = the milliseconds
   played of that item, clamped to the audio received (the server rejects
   more than it sent with ``invalid_value``). If playback of that item had
   already finished, nothing was cut and no truncate is sent.
3. ``response.cancel`` only if the session does not interrupt by itself
   (``interrupt_response`` false); otherwise the server has already
   cancelled and a cancel would only earn ``response_cancel_not_active``.

Phone lines echo the agent's own voice back, and echo can look like speech.
Two settings make barge-in robust against that: a minimum amount of caller
speech before an interruption counts (``BARGE_IN_MIN_MS``), and protecting
the greeting from interruption (``PROTECT_GREETING``). Either one means the
controller, not the server, decides when to interrupt, so the session is
configured with ``interrupt_response: false`` and the controller sends
``response.cancel`` itself.

The model says when speech starts, but says it stopped only after its
silence duration (500 ms by default): a 100 ms cough is still "speech" 300 ms
later. So the gate also asks whether the caller is still loud right now (the
controller checks the level of the caller's own audio with :func:`is_loud`,
only while a decision is pending), and a cough that is over never interrupts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.audio.constants import ULAW_LINEAR

#: A caller frame at or above this RMS level counts as the caller still talking.
LOUD_DBFS = -45.0
_LOUD_MEAN_SQUARE: float = (32768.0 * 10.0 ** (LOUD_DBFS / 20.0)) ** 2
# Each u-law code's squared sample: the frame's energy is one sum over its bytes
# (no numpy: a pcmu controller does not load it).
_SQUARES = tuple(sample * sample for sample in ULAW_LINEAR)


def is_loud(ulaw: bytes) -> bool:
    """True when u-law audio is at or above :data:`LOUD_DBFS` (RMS)."""
    if not ulaw:
        return False
    return sum(map(_SQUARES.__getitem__, ulaw)) >= _LOUD_MEAN_SQUARE * len(ulaw)


@dataclass(frozen=True)
class Truncation:
    """The ``conversation.item.truncate`` to send."""

    item_id: str
    audio_end_ms: int


def plan_truncation(
    item_id: str | None, played_ms: int, received_ms: int, finished: bool
) -> Truncation | None:
    """What to truncate after an interruption.

    Args:
        item_id: the assistant item that was playing, or None.
        played_ms: milliseconds of it the caller heard (the playout's count).
        received_ms: milliseconds of it the model sent.
        finished: True when every received millisecond had been played and
            the model had finished sending the item.

    Returns:
        The truncation, or None when there is nothing to cut.
    """
    if item_id is None or finished:
        return None
    return Truncation(item_id, max(0, min(played_ms, received_ms)))


class Decision(enum.Enum):
    """What to do about the caller's speech right now."""

    IGNORE = "ignore"  # the agent is silent, or its speech is protected
    INTERRUPT = "interrupt"  # stop the agent now
    WAIT = "wait"  # not enough speech yet; ask again on each tick


class BargeInGate:
    """Decides when caller speech interrupts the agent.

    Args:
        min_speech_ms: caller speech needed before it counts (0: at once).
        protect_greeting: the greeting is never interrupted.
    """

    def __init__(self, min_speech_ms: int = 0, protect_greeting: bool = False) -> None:
        self.min_speech_ms = min_speech_ms
        self.protect_greeting = protect_greeting
        self._speech_since: float | None = None

    @property
    def server_interrupts(self) -> bool:
        """True when the session may interrupt responses by itself."""
        return self.min_speech_ms == 0 and not self.protect_greeting

    @property
    def pending(self) -> bool:
        """True while caller speech has started and no decision has been made."""
        return self._speech_since is not None

    def speech_started(self, now: float, agent_speaking: bool, greeting: bool) -> Decision:
        """The model's VAD heard the caller start speaking at ``now`` (seconds)."""
        self._speech_since = now
        return self.poll(now, agent_speaking, greeting)

    def speech_stopped(self) -> None:
        """The caller stopped: speech shorter than the minimum never interrupts."""
        self._speech_since = None

    def poll(
        self, now: float, agent_speaking: bool, greeting: bool, caller_loud: bool = True
    ) -> Decision:
        """Ask again (each tick) while a decision is pending.

        ``caller_loud``: the caller's audio is loud right now. Speech that has
        lasted ``min_speech_ms`` interrupts only while it goes on; a cough that
        is already over waits for ``speech_stopped`` and never interrupts.
        """
        if self._speech_since is None or not agent_speaking:
            return Decision.IGNORE
        if greeting and self.protect_greeting:
            return Decision.IGNORE
        if caller_loud and (now - self._speech_since) * 1000 >= self.min_speech_ms:
            self._speech_since = None
            return Decision.INTERRUPT
        return Decision.WAIT
