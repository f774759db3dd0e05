"""ReceiveStats: loss, late, duplicates, wrap, restarts (RFC 3550 §A.1, §A.8)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from controller.rtp.stats import (
    ACCEPT,
    DUPLICATE,
    JUMP,
    LATE,
    MAX_MISORDER,
    ReceiveStats,
)

SSRC = 0x1234


def feed(stats: ReceiveStats, seqs, ssrc=SSRC):
    return [stats.update(s & 0xFFFF, (s * 160) & 0xFFFFFFFF, ssrc, s * 0.02) for s in seqs]


def test_in_order_stream():
    stats = ReceiveStats()
    assert feed(stats, range(100, 200)) == [ACCEPT] * 100
    snap = stats.snapshot()
    assert (snap.received, snap.accepted, snap.expected, snap.lost) == (100, 100, 100, 0)
    assert snap.late == snap.duplicate == snap.jumps == snap.restarts == 0
    assert snap.ssrc == SSRC
    assert snap.loss_fraction == 0.0
    assert snap.jitter_ms == 0.0


def test_wrap_65535_to_0_is_not_a_loss():
    stats = ReceiveStats()
    assert feed(stats, [65533, 65534, 65535, 65536, 65537]) == [ACCEPT] * 5
    assert stats.lost == 0
    assert stats.expected == 5


def test_gap_across_wrap_counted_exactly():
    stats = ReceiveStats()
    # 65530..65535, then 3..9: lost 0, 1, 2 (3 packets) across the wrap.
    feed(stats, list(range(65530, 65536)) + list(range(65539, 65546)))
    assert stats.lost == 3
    assert stats.expected == 16
    assert stats.accepted == 13


def test_duplicates_and_late_packets():
    stats = ReceiveStats()
    verdicts = feed(stats, [1, 2, 4, 5, 3, 5, 3, 2, 6])
    assert verdicts == [
        ACCEPT,
        ACCEPT,
        ACCEPT,
        ACCEPT,
        LATE,
        DUPLICATE,
        DUPLICATE,
        DUPLICATE,
        ACCEPT,
    ]
    snap = stats.snapshot()
    assert snap.late == 1
    assert snap.duplicate == 3
    # The late packet filled the hole: nothing lost.
    assert snap.lost == 0
    assert snap.expected == 6


def test_late_packet_across_wrap():
    stats = ReceiveStats()
    verdicts = feed(stats, [65534, 0, 1, 65535])
    assert verdicts == [ACCEPT, ACCEPT, ACCEPT, LATE]
    assert stats.lost == 0
    assert stats.late == 1


def test_packet_older_than_the_first_is_late_but_not_negative_loss():
    stats = ReceiveStats()
    verdicts = feed(stats, [100, 101, 99])
    assert verdicts == [ACCEPT, ACCEPT, LATE]
    assert stats.lost == 0
    assert stats.expected == 2


def test_sender_restart_after_big_jump():
    stats = ReceiveStats()
    feed(stats, range(1000, 1010))
    # One stray packet far away is held, not believed ...
    assert feed(stats, [30000]) == [JUMP]
    assert feed(stats, [1010]) == [ACCEPT]
    # ... but two in a row mean the sender restarted (§A.1).
    assert feed(stats, [40000, 40001, 40002]) == [JUMP, ACCEPT, ACCEPT]
    snap = stats.snapshot()
    assert snap.jumps == 2
    assert snap.restarts == 1
    # First epoch 1000..1010 complete; second epoch starts at 40001.
    assert snap.expected == 11 + 2
    assert snap.lost == 0


def test_ssrc_change_restarts_at_once():
    stats = ReceiveStats()
    feed(stats, range(10, 20))
    assert feed(stats, [5000, 5001], ssrc=0x999) == [ACCEPT, ACCEPT]
    assert stats.restarts == 1
    assert stats.ssrc == 0x999
    assert stats.lost == 0
    assert stats.expected == 12


def test_lost_packets_in_two_epochs_are_summed():
    stats = ReceiveStats()
    feed(stats, [1, 2, 5])  # 2 lost
    feed(stats, [100, 103], ssrc=7)  # 2 lost
    assert stats.lost == 4


def test_jitter_follows_rfc3550_a8():
    stats = ReceiveStats()
    # Packets every 20 ms of media, arriving alternately 0 and 10 ms late.
    for i in range(200):
        stats.update(i, i * 160, SSRC, i * 0.02 + (0.010 if i % 2 else 0.0))
    # |D| = 10 ms each time, so J converges to 10 ms.
    assert abs(stats.jitter_ms - 10.0) < 0.01


def test_jitter_survives_timestamp_wrap():
    stats = ReceiveStats()
    base = 0xFFFFFFFF - 800
    for i in range(50):
        stats.update(i, (base + i * 160) & 0xFFFFFFFF, SSRC, i * 0.02)
    assert stats.jitter_ms < 1e-6


@given(
    st.integers(0, 0xFFFF),
    st.lists(st.booleans(), min_size=1, max_size=400),
    st.randoms(use_true_random=False),
)
def test_loss_and_reordering_model(start, keep, rnd: random.Random):
    """Drop, duplicate and locally reorder a stream; the counts come out exact."""
    sent = [start + i for i in range(len(keep))]
    arrived = [s for s, k in zip(sent, keep, strict=True) if k]
    if not arrived:
        return
    first = arrived[0]
    # Duplicate some packets right after themselves.
    stream = []
    for s in arrived:
        stream.append(s)
        if rnd.random() < 0.1:
            stream.append(s)
    # Swap some neighbours (never the first packet: it defines the base).
    for i in range(1, len(stream) - 1):
        if rnd.random() < 0.1 and stream[i] != stream[i + 1]:
            stream[i], stream[i + 1] = stream[i + 1], stream[i]
    stats = ReceiveStats()
    verdicts = feed(stats, stream)
    highest = max(arrived)
    unique = len(set(arrived))
    assert stats.expected == highest - first + 1
    assert stats.lost == (highest - first + 1) - unique
    assert stats.duplicate == len(stream) - unique
    assert verdicts.count(ACCEPT) + verdicts.count(LATE) == unique
    assert stats.late == verdicts.count(LATE)
    assert stats.received == len(stream)


def test_misorder_window_boundary():
    stats = ReceiveStats()
    feed(stats, range(300))
    # MAX_MISORDER - 1 behind is still "late/duplicate", not a jump.
    assert feed(stats, [299 - (MAX_MISORDER - 1)]) == [DUPLICATE]
    assert feed(stats, [299 - MAX_MISORDER]) == [JUMP]
