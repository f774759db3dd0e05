"""CallMedia's API over a real UDP peer on 127.0.0.1, ticked by a running MediaClock."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from controller.errors import NoFreePortError
from controller.media.call_media import CallMedia, Cut, MediaSummary
from controller.media.clock import MediaClock
from tests.unit.udp import HOST, Peer, free_port_range, open_peer, taken_ports, wait_for

SILENCE_FRAME = b"\xff" * 160


@pytest.fixture
async def clock() -> AsyncIterator[MediaClock]:
    clock = MediaClock()
    clock.start()
    yield clock
    await clock.stop()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    peer = await open_peer()
    yield peer
    peer.close()


async def ticks(clock: MediaClock, count: int) -> None:
    start = clock.ticks
    await wait_for(lambda: clock.ticks >= start + count, f"{count} ticks")


def drain(peer: Peer) -> int:
    count = 0
    while not peer.received.empty():
        peer.received.get_nowait()
        count += 1
    return count


async def test_plays_out_at_20ms_and_fills_gaps(clock: MediaClock, peer: Peer) -> None:
    heard: list[bytes] = []
    media = await CallMedia.open(clock, HOST, free_port_range(), heard.append, gap_threshold=0.3)
    try:
        media.set_remote(*peer.address)
        assert media.remote_address == peer.address
        media.play("item_1", b"\x11" * 800)  # 100 ms = 5 frames
        packets = [await peer.next_packet() for _ in range(5)]
        assert [p.payload for p, _ in packets] == [b"\x11" * 160] * 5
        # Sent from the very socket Asterisk sends to (strict RTP).
        assert {source[:2] for _, source in packets} == {media.local_address}
        assert packets[0][0].marker and not any(p.marker for p, _ in packets[1:])
        seqs = [p.sequence_number for p, _ in packets]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(5)]
        await wait_for(lambda: media.played_ms("item_1") == 100, "played")
        # Nothing queued: nothing sent (checked again after some ticks).
        await ticks(clock, 3)
        assert peer.received.empty()

        # The peer sent no audio at all: the model gets silence at the real-time rate.
        await wait_for(lambda: len(heard) >= 10, "gap silence")
        assert set(heard) == {SILENCE_FRAME}

        # Real audio stops the filler (until the caller's side is quiet for 300 ms again).
        heard.clear()
        peer.send_rtp(media.local_address, 100, b"\x22" * 160)
        await wait_for(lambda: b"\x22" * 160 in heard, "real audio")
        filled = media.summary().gap_frames
        await asyncio.sleep(0.1)
        assert media.summary().gap_frames == filled

        # A second response after the pause: marker set, timestamp follows wall time.
        media.play("item_2", b"\x33" * 160)
        packet, _ = await peer.next_packet()
        assert packet.marker
        assert packet.sequence_number == (seqs[-1] + 1) & 0xFFFF
        assert (packet.timestamp - packets[-1][0].timestamp) % (1 << 32) > 160 * 3
        # It starts on the tick the audio came (a tick is 160 / phases samples).
        assert (packet.timestamp - packets[-1][0].timestamp) % (160 // clock.phases) == 0
        summary = media.summary()
        assert (summary.tx_packets, summary.played_frames, summary.rx_received) == (6, 6, 1)
        assert summary.gap_frames >= 10
    finally:
        media.close()
    assert clock.subscribers == 0


async def test_play_end_item_speaking_current_item_and_played_ms(
    clock: MediaClock, peer: Peer
) -> None:
    media = await CallMedia.open(clock, HOST, free_port_range(), lambda _: None, gap_threshold=None)
    try:
        media.set_remote(*peer.address)
        assert not media.speaking
        assert media.current_item is None
        media.play("item_a", b"\x11" * 880)  # 110 ms: five frames and a half
        media.end_item("item_a")
        media.play("item_b", b"\x22" * 320)  # 40 ms, starting mid-frame
        assert media.speaking

        first, _ = await peer.next_packet()
        assert first.payload == b"\x11" * 160
        assert media.current_item == "item_a"
        rest = [(await peer.next_packet())[0] for _ in range(7)]
        # The sixth frame holds the end of item_a and the start of item_b, without a gap.
        assert rest[4].payload == b"\x11" * 80 + b"\x22" * 80
        # The last frame is padded with silence.
        assert rest[6].payload == b"\x22" * 80 + b"\xff" * 80
        await wait_for(lambda: not media.speaking, "the queue to empty")
        assert media.played_ms("item_a") == 110
        assert media.played_ms("item_b") == 40
        assert media.played_ms("never_sent") == 0
        # The next tick finds nothing to play.
        await wait_for(lambda: media.current_item is None, "the current item to clear")
        summary = media.summary()
        assert (summary.tx_packets, summary.played_frames, summary.tx_padded) == (8, 8, 1)
        # item_b never ended: more of it may still be on its way, so it is cut
        # (all 40 ms received were heard); item_a ended and played in full.
        assert media.interrupt() == [Cut("item_b", 40, 40, 0, finished=False)]
        assert media.interrupt() == []  # nothing left to cut
    finally:
        media.close()


async def test_interrupt_stops_the_audio_and_reports_what_was_heard(
    clock: MediaClock, peer: Peer
) -> None:
    media = await CallMedia.open(clock, HOST, free_port_range(), lambda _: None, gap_threshold=None)
    try:
        media.set_remote(*peer.address)
        media.play("item_a", b"\x11" * 8000)  # 1 s
        for _ in range(3):
            await peer.next_packet()
        (cut,) = media.interrupt()
        assert not media.speaking
        assert media.current_item is None
        heard = media.played_ms("item_a")
        assert cut == Cut("item_a", heard, 1000, 1000 - heard, finished=False)
        assert 60 <= heard < 1000

        # Nothing more goes out: the peer gets exactly the frames counted as played.
        await ticks(clock, 5)
        assert 3 + drain(peer) == heard // 20

        # Deltas still in flight for the cut item are dropped, not played.
        media.play("item_a", b"\x11" * 800)
        assert not media.speaking
        await ticks(clock, 3)
        assert peer.received.empty()
        assert media.summary().tx_stale_bytes == 800

        # The next item plays again, as a new talkspurt.
        media.play("item_b", b"\x22" * 160)
        packet, _ = await peer.next_packet()
        assert packet.payload == b"\x22" * 160
        assert packet.marker
    finally:
        media.close()


async def test_early_packets_reach_the_call_once_the_remote_is_known(
    clock: MediaClock, peer: Peer
) -> None:
    heard: list[bytes] = []
    media = await CallMedia.open(clock, HOST, free_port_range(), heard.append, gap_threshold=None)
    try:
        assert media.remote_address is None
        for seq in range(3):
            peer.send_rtp(media.local_address, seq, bytes([seq + 1]) * 160)
        # Read on the ticks and kept: nothing is delivered before the remote is known.
        await ticks(clock, 5)
        assert heard == []
        # Nor sent: frames before the remote is known are counted.
        media.play("item_a", b"\x11" * 160)
        await wait_for(lambda: not media.speaking, "the frame to be due")
        media.set_remote(*peer.address)
        assert heard == [bytes([seq + 1]) * 160 for seq in range(3)]
        summary = media.summary()
        assert (summary.rx_received, summary.tx_unsent, summary.tx_packets) == (3, 1, 0)
    finally:
        media.close()


async def test_summary_counts_every_kind_of_packet(clock: MediaClock, peer: Peer) -> None:
    heard: list[bytes] = []
    media = await CallMedia.open(clock, HOST, free_port_range(), heard.append, gap_threshold=None)
    stranger = await open_peer()
    try:
        media.set_remote(*peer.address)
        to = media.local_address
        peer.send_rtp(to, 1, b"\x01" * 160)
        peer.send_rtp(to, 2, b"\x02" * 160)
        peer.send_rtp(to, 2, b"\x02" * 160)  # duplicate
        peer.send_rtp(to, 3, b"\x40", pt=13)  # comfort noise
        peer.send_rtp(to, 6, b"\x06" * 160)  # 4 and 5 lost
        peer.send_rtp(to, 7, b"\x07" * 160, pt=8)  # A-law: not ours
        assert peer.transport is not None
        peer.transport.sendto(b"\x00\x01garbage", to)
        stranger.send_rtp(to, 8, b"\x08" * 160)
        await wait_for(lambda: media.summary().rx_foreign == 1, "the foreign packet")
        await wait_for(lambda: media.summary().rx_bad == 2, "the bad packets")
        assert heard == [b"\x01" * 160, b"\x02" * 160, b"\x06" * 160]
        summary = media.summary()
        assert isinstance(summary, MediaSummary)
        assert summary.rx_received == 6
        assert summary.rx_duplicate == 1
        assert summary.rx_comfort_noise == 1
        assert summary.rx_lost == 2
        assert summary.rx_late == 0
        assert summary.callback_errors == summary.socket_errors == 0
        fields = summary.as_fields()
        assert list(fields) == [
            "rx_received",
            "rx_lost",
            "rx_late",
            "rx_duplicate",
            "rx_jitter_ms",
            "rx_foreign",
            "rx_comfort_noise",
            "rx_bad",
            "tx_packets",
            "tx_unsent",
            "tx_padded",
            "tx_overflow_bytes",
            "tx_stale_bytes",
            "played_frames",
            "gap_frames",
            "clock_resyncs",
            "socket_errors",
            "callback_errors",
            "underruns",
        ]
        assert fields["rx_received"] == 6 and fields["rx_bad"] == 2
        with pytest.raises(AttributeError):
            summary.rx_received = 0  # type: ignore[misc]
    finally:
        media.close()
        stranger.close()


async def test_close_is_idempotent_frees_the_port_and_keeps_the_summary(
    clock: MediaClock, peer: Peer
) -> None:
    media = await CallMedia.open(clock, HOST, free_port_range(), lambda _: None)
    media.set_remote(*peer.address)
    media.play("item_a", b"\x11" * 160)
    await peer.next_packet()
    assert clock.subscribers == 1
    port = media.local_address[1]
    media.close()
    media.close()
    assert clock.subscribers == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))
    assert media.summary().tx_packets == 1


async def test_open_without_a_free_port_registers_nothing(clock: MediaClock) -> None:
    with taken_ports(1) as (port,), pytest.raises(NoFreePortError):
        await CallMedia.open(clock, HOST, (port, port), lambda _: None)
    assert clock.subscribers == 0


async def test_first_frame_of_a_talkspurt_goes_out_at_once_then_the_grid_follows(
    clock: MediaClock, peer: Peer
) -> None:
    started: list[str] = []
    media = await CallMedia.open(
        clock,
        HOST,
        free_port_range(),
        lambda _: None,
        gap_threshold=None,
        on_item_started=lambda item, now: started.append(item),
    )
    try:
        media.set_remote(*peer.address)
        await ticks(clock, 2)
        media.play("item_a", b"\x11" * 480)  # 60 ms while idle
        # Sent before play() returned: no tick was waited for.
        assert media.summary().tx_packets == 1
        assert started == ["item_a"]
        packets = [(await peer.next_packet())[0] for _ in range(3)]
        assert [p.marker for p in packets] == [True, False, False]
        # The next frames follow on the call's 20 ms grid, started from the first one.
        steps = [
            (b.timestamp - a.timestamp) % (1 << 32)
            for a, b in zip(packets, packets[1:], strict=False)
        ]
        assert steps == [160, 160]
        # Audio queued while a frame is still playing does not start a new talkspurt.
        await wait_for(lambda: not media.speaking, "the queue to empty")
        media.play("item_b", b"\x22" * 160)
        assert media.summary().tx_packets in (3, 4)  # at once only if the last frame is over
        packet, _ = await peer.next_packet()
        assert packet.payload == b"\x22" * 160
    finally:
        media.close()


async def test_a_partial_frame_while_idle_waits_for_the_tick(clock: MediaClock, peer: Peer) -> None:
    media = await CallMedia.open(clock, HOST, free_port_range(), lambda _: None, gap_threshold=None)
    try:
        media.set_remote(*peer.address)
        media.play("item_a", b"\x11" * 80)  # less than a frame: the rest may follow
        assert media.summary().tx_packets == 0
        packet, _ = await peer.next_packet()
        assert packet.payload == b"\x11" * 80 + b"\xff" * 80
    finally:
        media.close()


async def test_a_backlog_is_drained_at_once(clock: MediaClock, peer: Peer) -> None:
    heard: list[bytes] = []
    media = await CallMedia.open(clock, HOST, free_port_range(), heard.append, gap_threshold=None)
    try:
        media.set_remote(*peer.address)
        # Ten packets at once (a stall upstream): one per tick at first, then
        # readable again on the next tick, so the rest comes in one go.
        await ticks(clock, 1)
        for seq in range(10):
            peer.send_rtp(media.local_address, seq, bytes([seq + 1]) * 160)
        start = clock.ticks
        await wait_for(lambda: len(heard) == 10, "all ten")
        # Not one per tick (ten ticks): the second tick finds it readable again.
        assert clock.ticks - start <= 5
        assert heard == [bytes([seq + 1]) * 160 for seq in range(10)]
    finally:
        media.close()
