"""Wrap-around arithmetic for sequence numbers and timestamps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.rtp import seq

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def test_examples_at_the_wrap():
    assert seq.uint16_add(65535, 1) == 0
    assert seq.uint16_add(0, -1) == 65535
    assert seq.uint16_sub(0, 65535) == 1
    assert seq.seq_diff(0, 65535) == 1
    assert seq.seq_diff(65535, 0) == -1
    assert seq.seq_gt(0, 65535)
    assert not seq.seq_gt(65535, 0)
    assert seq.seq_ge(5, 5)
    assert seq.uint32_add(0xFFFFFFFF, 160) == 159
    assert seq.uint32_sub(159, 0xFFFFFFFF) == 160
    assert seq.ts_diff(159, 0xFFFFFFFF) == 160
    assert seq.ts_gt(159, 0xFFFFFFFF)


def test_half_way_is_not_after_either_way():
    # RFC 1982: undefined at exactly half the space; we say "not after" both ways.
    assert seq.seq_diff(0x8000, 0) == -0x8000
    assert not seq.seq_gt(0x8000, 0)
    assert not seq.seq_gt(0, 0x8000)


@given(u16, st.integers(-0x7FFF, 0x7FFF))
def test_seq_diff_inverts_add(a, delta):
    b = seq.uint16_add(a, delta)
    assert 0 <= b <= 0xFFFF
    assert seq.seq_diff(b, a) == delta
    assert seq.seq_gt(b, a) == (delta > 0)


@given(u32, st.integers(-0x7FFFFFFF, 0x7FFFFFFF))
def test_ts_diff_inverts_add(a, delta):
    b = seq.uint32_add(a, delta)
    assert 0 <= b <= 0xFFFFFFFF
    assert seq.ts_diff(b, a) == delta
    assert seq.ts_gt(b, a) == (delta > 0)
