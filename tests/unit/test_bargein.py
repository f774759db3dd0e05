"""Barge-in arithmetic and the echo-robust interruption gate."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.call.bargein import BargeInGate, Decision, Truncation, plan_truncation


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
