"""Barge-in arithmetic and the echo-robust interruption gate."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from controller.audio.g711 import ULAW_SILENCE_FRAME, ulaw_encode
from controller.call.bargein import BargeInGate, Decision, Truncation, is_loud, plan_truncation


def test_truncate_at_what_was_heard() -> None:
    assert plan_truncation("item_1", 1240, 5000, finished=False) == Truncation("item_1", 1240)


def test_truncate_is_clamped_to_what_the_model_sent() -> None:
    # The playout padded the last frame: it may count a little past the audio.
    assert plan_truncation("item_1", 5020, 5000, finished=False) == Truncation("item_1", 5000)


def test_nothing_to_truncate_after_playback_finished_or_without_an_item() -> None:
    assert plan_truncation("item_1", 5000, 5000, finished=True) is None
    assert plan_truncation(None, 0, 0, finished=False) is None


@given(st.integers(0, 10**7), st.integers(0, 10**7))
def test_truncate_never_exceeds_either_bound(played: int, received: int) -> None:
    t = plan_truncation("i", played, received, finished=False)
    assert t is not None
    assert 0 <= t.audio_end_ms <= min(played, received)
    assert t.audio_end_ms == min(played, received)


def test_default_gate_interrupts_at_once_and_lets_the_server_do_it() -> None:
    gate = BargeInGate()
    assert gate.server_interrupts
    assert gate.speech_started(10.0, agent_speaking=True, greeting=False) is Decision.INTERRUPT
    assert gate.speech_started(11.0, agent_speaking=False, greeting=False) is Decision.IGNORE


def test_minimum_speech_waits_and_short_noise_never_interrupts() -> None:
    gate = BargeInGate(min_speech_ms=300)
    assert not gate.server_interrupts
    assert gate.speech_started(10.0, True, False) is Decision.WAIT
    assert gate.poll(10.2, True, False) is Decision.WAIT
    gate.speech_stopped()  # a cough or an echo: 200 ms
    assert gate.poll(10.4, True, False) is Decision.IGNORE
    assert gate.speech_started(20.0, True, False) is Decision.WAIT
    assert gate.poll(20.3, True, False) is Decision.INTERRUPT
    assert gate.poll(20.4, True, False) is Decision.IGNORE  # decided once


def test_protected_greeting_is_not_interrupted_but_later_speech_is() -> None:
    gate = BargeInGate(protect_greeting=True)
    assert not gate.server_interrupts
    assert gate.speech_started(1.0, True, greeting=True) is Decision.IGNORE
    assert gate.speech_started(9.0, True, greeting=False) is Decision.INTERRUPT


#: 20 ms of a 400 Hz tone at -12 dBFS (the caller talking), and of silence.
LOUD_FRAME = ulaw_encode(
    (0.25 * 32767 * np.sin(2 * np.pi * 400 * np.arange(160) / 8000)).astype(np.int16)
)
QUIET_FRAME = ULAW_SILENCE_FRAME


def test_loudness_check_tells_talk_from_silence_and_line_noise() -> None:
    assert is_loud(LOUD_FRAME)
    assert not is_loud(QUIET_FRAME)
    hiss = (32767 * 10 ** (-60 / 20) * np.sin(np.arange(160))).astype(np.int16)
    assert not is_loud(ulaw_encode(hiss))
    assert not is_loud(b"")


def test_gate_waits_while_the_caller_is_quiet_even_after_the_minimum() -> None:
    gate = BargeInGate(min_speech_ms=300)
    assert gate.speech_started(10.0, True, False) is Decision.WAIT
    assert gate.pending
    # 400 ms later the model has not said "stopped" yet (its silence duration
    # is 500 ms), but the caller is quiet: a cough, not a barge-in.
    assert gate.poll(10.4, True, False, caller_loud=False) is Decision.WAIT
    gate.speech_stopped()
    assert gate.poll(10.6, True, False, caller_loud=False) is Decision.IGNORE
    assert not gate.pending
    # Talking that goes on past the minimum interrupts.
    gate.speech_started(20.0, True, False)
    assert gate.poll(20.2, True, False, caller_loud=True) is Decision.WAIT
    assert gate.poll(20.3, True, False, caller_loud=True) is Decision.INTERRUPT
