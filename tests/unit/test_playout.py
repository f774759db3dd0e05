"""Playout queue, frame schedule and outgoing RTP stream, with an injected clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.rtp.packet import RtpPacket
from controller.rtp.playout import (
    FRAME_BYTES,
    Discarded,
    FrameSchedule,
    OutgoingStream,
    Playout,
)

SILENCE = 0xFF


def drain(playout: Playout) -> list[bytes]:
    frames = []
    while (frame := playout.next_frame()) is not None:
        frames.append(frame)
    return frames


# --- FrameSchedule -------------------------------------------------------------------


def test_no_drift_over_ten_minutes():
    start = 12345.678  # an arbitrary loop.time()
    schedule = FrameSchedule(start)
    assert schedule.deadline(30000) == start + 600.0
    rng = random.Random(7)
    produced: list[int] = []
    now = start
    # Wake up 0..3 ms after each deadline, like a real event loop.
    for n in range(30000):
        now = schedule.deadline(n) + rng.uniform(0.0, 0.003)
        produced.extend(schedule.due(now))
    assert produced == list(range(30000))
    assert schedule.next_deadline == start + 600.0
    elapsed = schedule.next_deadline - start
    assert len(produced) == round(elapsed / 0.020)
    assert schedule.resyncs == 0


def test_coarse_ticks_produce_exactly_elapsed_over_period():
    start = 1000.0
    schedule = FrameSchedule(start, max_burst=10)
    count = 0
    # Tick every 70 ms for 600 s: frames still match wall time exactly.
    for k in range(1, 8572):
        count += len(schedule.due(start + k * 0.070))
    now = start + 8571 * 0.070
    assert count == int((now - start) / 0.020) + 1
    assert schedule.resyncs == 0


def test_nothing_due_before_the_first_deadline():
    schedule = FrameSchedule(10.0)
    assert not schedule.due(9.999)
    assert list(schedule.due(10.0)) == [0]
    assert not schedule.due(10.0)
    assert not schedule.due(10.019)
    assert list(schedule.due(10.020)) == [1]


def test_short_hiccup_is_caught_up():
    schedule = FrameSchedule(0.0, max_burst=4)
    assert list(schedule.due(0.0)) == [0]
    # Three periods late: frames 1..4 due at once, within the burst limit.
    assert list(schedule.due(0.085)) == [1, 2, 3, 4]
    assert schedule.resyncs == 0


def test_long_stall_resyncs_instead_of_bursting():
    schedule = FrameSchedule(0.0, max_burst=4)
    assert list(schedule.due(0.0)) == [0]
    # Blocked for a second: only the newest frame, on the same grid.
    assert list(schedule.due(1.005)) == [50]
    assert schedule.resyncs == 1
    assert schedule.skipped_frames == 49
    assert list(schedule.due(1.020)) == [51]
    assert schedule.deadline(51) == pytest.approx(1.02)


def test_schedules_sharing_a_grid_agree():
    clock = FrameSchedule(500.0)
    clock.due(500.5)
    call = FrameSchedule(500.0, first_index=clock.next_index)
    for k in range(26, 1000):
        now = clock.deadline(k)  # exactly on the deadline: the worst case
        assert len(clock.due(now)) == 1
        assert len(call.due(now)) == 1


def test_schedule_validation():
    with pytest.raises(ValueError):
        FrameSchedule(0.0, period=0.0)
    with pytest.raises(ValueError):
        FrameSchedule(0.0, max_burst=0)


# --- Playout --------------------------------------------------------------------------


def test_frames_are_exactly_160_bytes_and_partial_last_frame_is_padded():
    playout = Playout()
    audio = bytes(range(100)) * 5  # 500 bytes = 62.5 ms
    playout.enqueue("item_a", audio)
    frames = drain(playout)
    assert [len(f) for f in frames] == [160, 160, 160, 160]
    assert b"".join(frames)[:500] == audio
    assert frames[-1][20:] == bytes([SILENCE]) * 140
    assert playout.frames_padded == 1
    item = playout.item("item_a")
    assert item is not None
    assert item.played_bytes == 500
    # 62.5 ms rounds down: never claim more than the caller heard.
    assert playout.played_ms("item_a") == 62
    assert item.received_ms == 62


def test_empty_queue_yields_none_by_default_and_silence_on_request():
    playout = Playout()
    assert playout.next_frame() is None
    assert playout.frames_idle == 1
    assert playout.idle
    assert playout.current_item is None
    silent = Playout(idle_silence=True)
    assert silent.next_frame() == bytes([SILENCE]) * FRAME_BYTES


def test_played_ms_is_exact_per_item_across_frame_boundaries():
    playout = Playout()
    playout.enqueue("a", b"\x01" * 200)  # 25 ms
    playout.enqueue("b", b"\x02" * 180)  # 22.5 ms
    playout.enqueue("a", b"\x03" * 8)  # interleaved again: 1 ms more of a
    first = playout.next_frame()
    assert first == b"\x01" * 160
    assert playout.current_item == "a"
    assert playout.played_ms("a") == 20
    second = playout.next_frame()
    # The end of a and the start of b share a frame: no gap between items.
    assert second == b"\x01" * 40 + b"\x02" * 120
    assert playout.current_item == "b"
    assert playout.played_ms("a") == 25
    assert playout.played_ms("b") == 15
    third = playout.next_frame()
    assert third == b"\x02" * 60 + b"\x03" * 8 + bytes([SILENCE]) * 92
    assert playout.played_ms("b") == 22
    assert playout.item("b").played_bytes == 180  # type: ignore[union-attr]
    assert playout.played_ms("a") == 26
    assert playout.next_frame() is None
    assert playout.played_ms("unknown") == 0


def test_flush_empties_everything_at_once_and_reports_what_was_heard():
    playout = Playout()
    playout.enqueue("a", b"\x01" * 800)  # 100 ms
    playout.enqueue("b", b"\x02" * 400)
    playout.next_frame()
    playout.next_frame()  # 40 ms of a heard
    discarded = playout.flush()
    assert discarded == [Discarded("a", 40, 100, 60), Discarded("b", 0, 50, 50)]
    assert playout.idle
    assert playout.buffered_bytes == 0
    assert playout.next_frame() is None
    # Deltas still in flight for the flushed items are never played.
    assert playout.enqueue("a", b"\x01" * 160) == 0
    assert playout.enqueue("b", b"\x02" * 16) == 0
    assert playout.stale_bytes == 176
    assert playout.next_frame() is None
    # A new response plays normally.
    assert playout.enqueue("c", b"\x04" * 160) == 160
    assert playout.next_frame() == b"\x04" * 160


def test_flush_includes_a_streaming_item_whose_audio_was_all_played():
    playout = Playout()
    playout.enqueue("a", b"\x01" * 160)
    playout.next_frame()
    assert playout.next_frame() is None  # underrun: the model is slower than real time
    assert playout.flush() == [Discarded("a", 20, 20, 0)]
    assert playout.enqueue("a", b"\x01" * 160) == 0


def test_finished_item_is_not_reported_by_flush():
    playout = Playout()
    playout.enqueue("a", b"\x01" * 320)
    playout.end_item("a")
    drain(playout)
    item = playout.item("a")
    assert item is not None and item.finished
    assert playout.flush() == []
    assert playout.played_ms("a") == 40


def test_flush_twice_reports_once():
    playout = Playout()
    playout.enqueue("a", b"\x01" * 320)
    assert len(playout.flush()) == 1
    assert playout.flush() == []


def test_memory_cap_drops_the_tail_and_counts_it():
    playout = Playout(max_buffered_ms=100)  # 800 bytes
    assert playout.enqueue("a", b"\x01" * 600) == 600
    assert playout.enqueue("a", b"\x02" * 600) == 200
    assert playout.enqueue("b", b"\x03" * 10) == 0
    assert playout.overflow_bytes == 410
    assert playout.buffered_ms == 100
    item = playout.item("a")
    assert item is not None
    assert (item.received_bytes, item.dropped_bytes) == (800, 400)
    playout.next_frame()
    assert playout.enqueue("b", b"\x03" * 200) == 160
    frames = drain(playout)
    assert b"".join(frames).count(b"\x03") == 160


def test_item_history_is_bounded():
    playout = Playout(max_items=4)
    for i in range(10):
        playout.enqueue(f"i{i}", b"\x01" * 160)
        playout.end_item(f"i{i}")
        playout.next_frame()
    assert playout.played_ms("i9") == 20
    assert playout.item("i0") is None
    assert len(playout._items) <= 4


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 700)), max_size=30))
def test_played_bytes_add_up(chunks):
    playout = Playout()
    expected: dict[str, int] = {}
    total = 0
    for item_id, size in chunks:
        playout.enqueue(item_id, b"\x10" * size)
        expected[item_id] = expected.get(item_id, 0) + size
        total += size
    frames = drain(playout)
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert len(frames) == -(-total // FRAME_BYTES)
    for item_id, size in expected.items():
        item = playout.item(item_id)
        assert item is not None
        assert item.played_bytes == size == item.received_bytes


# --- OutgoingStream -------------------------------------------------------------------


def test_outgoing_stream_sequence_timestamp_ssrc_and_marker():
    stream = OutgoingStream(rng=random.Random(1))
    ssrc = stream.ssrc
    first_seq = stream.sequence_number
    base = stream.timestamp_base
    packets = []
    for index in [0, 1, 2, 10, 11]:  # frames 3..9 had nothing to send
        packets.append(RtpPacket.parse(stream.packet(b"\xff" * 160, index)))
    assert [p.ssrc for p in packets] == [ssrc] * 5
    assert [p.payload_type for p in packets] == [0] * 5
    assert [p.sequence_number for p in packets] == [(first_seq + i) & 0xFFFF for i in range(5)]
    # The timestamp follows wall time across the pause (RFC 3550 §5.1).
    assert [p.timestamp for p in packets] == [
        (base + 160 * i) & 0xFFFFFFFF for i in [0, 1, 2, 10, 11]
    ]
    # Marker on the first packet and on the first after the pause (RFC 3551 §4.1).
    assert [p.marker for p in packets] == [True, False, False, True, False]
    assert stream.packets_sent == 5


def test_outgoing_stream_wraps():
    stream = OutgoingStream(ssrc=5, rng=random.Random(2))
    stream.sequence_number = 65535
    stream.timestamp_base = 0xFFFFFFFF - 159
    a = RtpPacket.parse(stream.packet(b"\x00" * 160, 0))
    b = RtpPacket.parse(stream.packet(b"\x00" * 160, 1))
    assert (a.sequence_number, b.sequence_number) == (65535, 0)
    assert (a.timestamp, b.timestamp) == (0xFFFFFF60, 0)
    assert a.ssrc == b.ssrc == 5


def test_outgoing_stream_other_payload_sizes():
    stream = OutgoingStream(rng=random.Random(3))
    packet = RtpPacket.parse(stream.packet(b"\x01" * 80, 0))
    assert packet.payload == b"\x01" * 80
    packet = RtpPacket.parse(stream.packet(b"\x02" * 160, 1))
    assert packet.payload == b"\x02" * 160


def test_random_ssrc_differs_between_streams():
    assert len({OutgoingStream().ssrc for _ in range(8)}) > 1
