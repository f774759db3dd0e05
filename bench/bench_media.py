"""Microbenchmarks of the media path: CPU per 20 ms frame, against naive baselines.

Prints numbers only (no asserts): timing claims live here, not in tests.
Each line is the best of several runs of many iterations, in microseconds of
CPU per 20 ms frame, and a projection per call-second (50 frames each way).
The naive baselines (pure Python, one sample at a time, no lookup tables,
a frozen dataclass per packet) run in the same process for comparison.

    .venv/bin/python bench/bench_media.py
"""

from __future__ import annotations

import asyncio
import platform
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.audio.g711 import ulaw_decode, ulaw_encode  # noqa: E402
from controller.audio.resample import Passthrough, Pcm24kToUlaw, UlawToPcm24k  # noqa: E402
from controller.media.playout import Playout  # noqa: E402
from controller.media.schedule import FrameSchedule  # noqa: E402
from controller.rtp.endpoint import RtpEndpoint  # noqa: E402
from controller.rtp.packet import RTP_HEADER_STRUCT, RtpPacket  # noqa: E402
from controller.rtp.sender import OutgoingStream  # noqa: E402
from controller.rtp.stats import ReceiveStats  # noqa: E402

FRAMES_PER_SECOND = 50
BUDGET_US_PER_CALL_SECOND = 5000.0


def per_call_us(fn: Callable[[], object], iterations: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` CPU time of one call of ``fn``, in microseconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(iterations):
            fn()
        best = min(best, time.process_time() - start)
    return best / iterations * 1e6


# --- naive baselines -----------------------------------------------------------------


def naive_ulaw_expand(code: int) -> int:
    code = ~code & 0xFF
    t = ((code & 0x0F) << 3) + 0x84
    t <<= (code & 0x70) >> 4
    return 0x84 - t if code & 0x80 else t - 0x84


def naive_ulaw_compress(x: int) -> int:
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i, segno = absno >> 6, 1
    while i:
        segno += 1
        i >>= 1
    y = ((8 - segno) << 4) | (0x0F - ((absno >> segno) & 0x0F))
    return y | 0x80 if x >= 0 else y


def naive_decode(data: bytes) -> list[int]:
    return [naive_ulaw_expand(b) for b in data]


def naive_encode(samples: list[int]) -> bytes:
    return bytes(naive_ulaw_compress(x) for x in samples)


def naive_upsample3(samples: list[int], state: list[int]) -> list[int]:
    """Linear interpolation x3 (a poor filter, and still slow)."""
    out = []
    prev = state[0]
    for x in samples:
        out.append(prev + (x - prev) // 3)
        out.append(prev + 2 * (x - prev) // 3)
        out.append(x)
        prev = x
    state[0] = prev
    return out


def naive_downsample3(samples: list[int]) -> list[int]:
    """Average of three (a poor anti-alias filter, and still slow)."""
    return [(samples[i] + samples[i + 1] + samples[i + 2]) // 3 for i in range(0, len(samples), 3)]


@dataclass(frozen=True)
class NaivePacket:
    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes


def naive_parse(data: bytes) -> NaivePacket:
    b0 = data[0]
    b1 = data[1]
    return NaivePacket(
        version=b0 >> 6,
        padding=bool(b0 & 0x20),
        extension=bool(b0 & 0x10),
        csrc_count=b0 & 0x0F,
        marker=bool(b1 & 0x80),
        payload_type=b1 & 0x7F,
        sequence_number=struct.unpack("!H", data[2:4])[0],
        timestamp=struct.unpack("!I", data[4:8])[0],
        ssrc=struct.unpack("!I", data[8:12])[0],
        payload=data[12:],
    )


def naive_build(seq: int, ts: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + payload


# --- benchmarks --------------------------------------------------------------------------


async def endpoint_receive(packets: int = 20_000, batch: int = 50) -> float:
    """CPU per packet sent from a raw socket and received by an :class:`RtpEndpoint`."""
    got = 0
    target = 0
    arrived = asyncio.Event()

    def on_audio(payload: bytes) -> None:
        nonlocal got
        got += 1
        if got >= target:
            arrived.set()

    endpoint = await RtpEndpoint.open("127.0.0.1", (20000, 60000), on_audio)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.bind(("127.0.0.1", 0))
        endpoint.set_remote(*tx.getsockname()[:2])
        destination = endpoint.local_address
        header = RTP_HEADER_STRUCT.pack
        payload = b"\xff" * 160
        start = time.process_time()
        for base in range(0, packets, batch):
            target = base + batch
            arrived.clear()
            for seq in range(base, base + batch):
                tx.sendto(header(0x80, 0, seq & 0xFFFF, seq * 160, 1) + payload, destination)
            await arrived.wait()
        elapsed = time.process_time() - start
    endpoint.close()
    return elapsed / packets * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    speech8k = (rng.standard_normal(160) * 3000).astype(np.int16)
    ulaw_frame = ulaw_encode(speech8k)
    pcm24k_frame = (rng.standard_normal(480) * 3000).astype("<i2").tobytes()
    rtp_in = RtpPacket(0, 1, 160, 0x1234, ulaw_frame).serialize()

    # Inbound PCMU passthrough: parse, sequence stats, deliver (what RtpEndpoint does).
    stats = ReceiveStats()
    passthrough = Passthrough()
    seq_box = [0]

    def inbound_pcmu() -> None:
        packet = RtpPacket.parse(rtp_in)
        seq_box[0] = (seq_box[0] + 1) & 0xFFFF
        stats.update(seq_box[0], packet.timestamp, packet.ssrc, 0.0)
        passthrough.convert(packet.payload)

    def naive_inbound() -> None:
        naive_parse(rtp_in)

    # Outbound PCMU: schedule, playout queue, RTP header (what CallMedia.tick does).
    playout = Playout()
    stream = OutgoingStream()
    schedule = FrameSchedule(0.0)
    index_box = [0]

    def outbound_pcmu() -> None:
        if playout.buffered_bytes < 160:
            playout.enqueue("item", ulaw_frame * 50)
        i = index_box[0]
        for index in schedule.due(i * 0.02):
            frame = playout.next_frame()
            if frame is not None:
                stream.packet(frame, index)
        index_box[0] = i + 1

    queue: list[bytes] = []
    naive_out_seq = [0]

    def naive_outbound() -> None:
        if not queue:
            queue.extend(ulaw_frame for _ in range(50))
        frame = queue.pop(0)
        naive_out_seq[0] += 1
        naive_build(naive_out_seq[0] & 0xFFFF, naive_out_seq[0] * 160, 1, frame)

    up = UlawToPcm24k()
    up_state = [0]
    down = Pcm24kToUlaw()

    def naive_up() -> bytes:
        return struct.pack("<480h", *naive_upsample3(naive_decode(ulaw_frame), up_state))

    def naive_down() -> bytes:
        return naive_encode(naive_downsample3(list(struct.unpack("<480h", pcm24k_frame))))

    cases: list[tuple[str, Callable[[], object], int, Callable[[], object], int]] = [
        ("inbound pcmu: parse + stats + deliver", inbound_pcmu, 200_000, naive_inbound, 200_000),
        ("outbound pcmu: schedule + playout + header", outbound_pcmu, 200_000,
         naive_outbound, 200_000),
        ("RTP parse (160 B payload)", lambda: RtpPacket.parse(rtp_in), 300_000,
         lambda: naive_parse(rtp_in), 300_000),
        ("RTP build (OutgoingStream.packet)", lambda: stream.packet(ulaw_frame, 5), 300_000,
         lambda: naive_build(1, 2, 3, ulaw_frame), 300_000),
        ("g711 decode 160 samples", lambda: ulaw_decode(ulaw_frame), 200_000,
         lambda: naive_decode(ulaw_frame), 5_000),
        ("g711 encode 160 samples", lambda: ulaw_encode(speech8k), 200_000,
         lambda: naive_encode(speech8k.tolist()), 5_000),
        ("caller->model: ulaw 8k -> pcm 24k (MQ)", lambda: up.convert(ulaw_frame), 50_000,
         naive_up, 3_000),
        ("model->caller: pcm 24k -> ulaw 8k (MQ)", lambda: down.convert(pcm24k_frame), 50_000,
         naive_down, 3_000),
    ]  # fmt: skip
    rows: list[tuple[str, float, float | None]] = [
        (name, per_call_us(ours, ours_n), per_call_us(naive, naive_n))
        for name, ours, ours_n, naive, naive_n in cases
    ]

    # The kernel's share: one sendto and one recv of a 172-byte datagram over loopback.
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    destination = rx.getsockname()
    packet = stream.packet(ulaw_frame, 7)

    def send_and_drain() -> None:
        tx.sendto(packet, destination)
        rx.recv(2048)

    syscalls = per_call_us(send_and_drain, 50_000)
    rows.append(("sendto + recv syscalls (loopback, 172 B)", syscalls, None))
    rx.close()
    tx.close()
    # The same through asyncio: raw sendto in, RtpEndpoint (event loop, parse, stats) out.
    rows.append(("sendto + asyncio RtpEndpoint receive", asyncio.run(endpoint_receive()), None))

    print(f"Python {platform.python_version()} on {platform.machine()}, numpy {np.__version__}")
    print(f"{'per 20 ms frame':44} {'ours µs':>9} {'naive µs':>9} {'speed-up':>9}")
    for name, ours_us, naive_us in rows:
        if naive_us is None:
            print(f"{name:44} {ours_us:9.2f} {'-':>9} {'-':>9}")
        else:
            print(f"{name:44} {ours_us:9.2f} {naive_us:9.2f} {naive_us / ours_us:8.1f}x")

    print(
        "(naive = pure Python, one sample at a time, no tables; for the inbound, outbound and"
        "\n build rows it is a bare struct (un)pack with no sequence stats, schedule or per-item"
        "\n accounting, so a ratio below 1 is the price of that bookkeeping.)"
    )

    by_name = {name: ours_us for name, ours_us, _ in rows}
    # Inbound measured end to end through asyncio (includes the sender's sendto);
    # outbound: tick work plus one sendto (the sendto+recv pair counted at half).
    inbound = by_name["sendto + asyncio RtpEndpoint receive"]
    outbound = by_name[cases[1][0]] + syscalls / 2
    resampling = by_name[cases[6][0]] + by_name[cases[7][0]]
    print()
    print("per call-second, 50 frames each way (RTP I/O included; websocket/base64 not):")
    for label, per_frame in (
        ("pcmu", inbound + outbound),
        ("pcm24k", inbound + outbound + resampling),
    ):
        total = per_frame * FRAMES_PER_SECOND
        print(
            f"  {label:7} {total:7.0f} µs = {total / BUDGET_US_PER_CALL_SECOND:5.1%}"
            " of the 5 ms budget"
        )


if __name__ == "__main__":
    main()
