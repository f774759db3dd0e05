"""GapFiller: silence for the model while the caller's side sends nothing."""

from __future__ import annotations

import pytest

from controller.media.gapfill import GapFiller


def run(filler: GapFiller, start: float, end: float, audio_until: float | None = None) -> int:
    """Tick every 20 ms from start to end; real audio arrives each tick before audio_until."""
    frames = 0
    n = 0
    while (now := start + n * 0.020) <= end + 1e-9:
        if audio_until is not None and now < audio_until:
            filler.audio_received(now)
        frames += filler.frames_due(now)
        n += 1
    return frames


def test_no_filling_while_audio_flows():
    filler = GapFiller(0.0)
    assert run(filler, 0.0, 10.0, audio_until=11.0) == 0
    assert filler.gaps == 0


def test_silence_at_real_time_rate_with_backfill():
    filler = GapFiller(0.0)
    filler.audio_received(1.0)
    assert filler.frames_due(1.099) == 0  # under 100 ms: not yet
    assert not filler.filling
    # 120 ms after the last audio: the gap is detected and backfilled (6 frames).
    assert filler.frames_due(1.12) == 6
    assert filler.filling
    assert filler.frames_due(1.13) == 0
    assert filler.frames_due(1.14) == 1
    # Ten seconds of silence give ten seconds of frames: the model's clock keeps pace,
    # counted from the last real audio (1.0), not from when the gap was noticed.
    total = 7 + run(filler, 1.16, 11.14)
    assert total == round((11.14 - 1.0) / 0.020)
    assert filler.filled_frames == total
    assert filler.gaps == 1


def test_audio_stops_filling_and_a_new_gap_counts_again():
    filler = GapFiller(0.0)
    run(filler, 0.0, 1.0)
    assert filler.filling
    filler.audio_received(1.01)
    assert not filler.filling
    assert filler.frames_due(1.05) == 0
    assert filler.frames_due(1.2) > 0
    assert filler.gaps == 2


def test_nothing_ever_received_fills_from_the_start():
    # A Local channel in Wait() sends no RTP at all.
    filler = GapFiller(5.0)
    assert run(filler, 5.0, 6.0) == pytest.approx(50, abs=1)


def test_stall_is_bounded():
    filler = GapFiller(0.0, max_frames=8)
    assert filler.frames_due(3.0) == 8
    assert filler.skipped_frames == 150 - 8
    assert filler.frames_due(3.02) == 1
