"""Playout queue: 20 ms frames, flush, played-ms accounting (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.media.playout import FRAME_BYTES, Cut, Playout

SILENCE = 0xFF


def drain(playout: Playout) -> list[bytes]:
    frames = []
    while (frame := playout.next_frame()) is not None:
        frames.append(frame)
    return frames


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
    assert discarded == [Cut("a", 40, 100, 60), Cut("b", 0, 50, 50)]
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
    assert playout.flush() == [Cut("a", 20, 20, 0)]
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


def test_an_item_running_dry_before_its_end_is_an_underrun_and_an_ended_one_is_not():
    playout = Playout()
    playout.enqueue("item_a", bytes(FRAME_BYTES))
    assert playout.next_frame() is not None
    assert playout.next_frame() is None  # the model is still sending item_a: a gap
    assert playout.next_frame() is None  # the same gap counts once
    assert playout.underruns == 1
    playout.enqueue("item_a", bytes(FRAME_BYTES))
    playout.end_item("item_a")
    assert playout.next_frame() is not None
    assert playout.next_frame() is None  # the item ended: silence, not an underrun
    assert playout.underruns == 1


def test_each_item_is_reported_once_when_its_first_frame_goes_out():
    playout = Playout()
    playout.enqueue("item_a", bytes(FRAME_BYTES + 80))
    playout.enqueue("item_b", bytes(FRAME_BYTES))
    assert playout.started == []  # nothing sent yet
    playout.next_frame()
    assert playout.started == ["item_a"]
    playout.started.clear()
    playout.next_frame()  # the rest of item_a and the start of item_b
    assert playout.started == ["item_b"]
    playout.started.clear()
    playout.next_frame()
    assert playout.started == []
