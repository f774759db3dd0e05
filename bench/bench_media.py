"""Microbenchmarks of the media path: CPU per 20 ms frame, against naive baselines.

Prints numbers only (no asserts): timing claims live here, not in tests.
Each line is the best of several runs of many iterations, in microseconds of
CPU per 20 ms frame, and a projection per call-second (50 frames each way).
The naive baselines (pure Python, one sample at a time, no lookup tables,
a frozen dataclass per packet) run in the same process for comparison.

    .venv/bin/python bench/bench_media.py [--quick]

``--quick`` runs about 2% of the iterations, twice instead of five times:
it finishes in a few seconds and its numbers are rough (a smoke test).
"""

from __future__ import annotations

import argparse
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

from controller.audio.convert import Passthrough  # noqa: E402
from controller.audio.g711 import ulaw_decode, ulaw_encode  # noqa: E402
from controller.audio.resample import Pcm24kToUlaw, UlawToPcm24k  # noqa: E402
from controller.media.playout import Playout  # noqa: E402
from controller.media.schedule import FrameSchedule  # noqa: E402
from controller.rtp.endpoint import RtpEndpoint  # noqa: E402
from controller.rtp.packet import RTP_HEADER_STRUCT, RtpPacket  # noqa: E402
from controller.rtp.sender import OutgoingStream  # noqa: E402
from controller.rtp.stats import ReceiveStats  # noqa: E402

FRAMES_PER_SECOND = 50
BUDGET_US_PER_CALL_SECOND = 5000.0
#: Share of the iterations run by ``--quick``.
QUICK_SCALE = 0.02
#: Longest wait for the last datagrams of :func:`endpoint_receive` to arrive.
DRAIN_TIMEOUT_S = 2.0


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


async def endpoint_receive(packets: int = 20_000, calls: int = 20) -> float:
    """CPU per packet sent from a raw socket and read by :meth:`RtpEndpoint.poll`.

    Driven as in production, where the media clock's tick polls every call's
    socket once per 20 ms and normally finds one packet: round after round,
    one packet goes to each of ``calls`` endpoints, then each endpoint is
    polled. The clock's own wake-up is shared by every call and not counted.
    Includes the sender's ``sendto``.
    """
    got = 0

    def on_audio(payload: bytes) -> None:
        nonlocal got
        got += 1

    endpoints = [
        await RtpEndpoint.open("127.0.0.1", (20000, 60000), on_audio) for _ in range(calls)
    ]
    rounds = max(packets // calls, 1)
    sent = rounds * calls
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.bind(("127.0.0.1", 0))
            for endpoint in endpoints:
                endpoint.set_remote(*tx.getsockname()[:2])
            destinations = [endpoint.local_address for endpoint in endpoints]
            header = RTP_HEADER_STRUCT.pack
            payload = b"\xff" * 160
            start = time.process_time()
            for seq in range(rounds):
                data = header(0x80, 0, seq & 0xFFFF, seq * 160, 1) + payload
                for destination in destinations:
                    tx.sendto(data, destination)
                for endpoint in endpoints:
                    endpoint.poll()
            elapsed = time.process_time() - start
            # Loopback normally delivers before sendto returns; poll for any stragglers.
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while got < sent and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
                for endpoint in endpoints:
                    endpoint.poll()
    finally:
        for endpoint in endpoints:
            endpoint.close()
    if got != sent:
        raise RuntimeError(f"endpoint_receive: {got} of {sent} packets delivered")
    return elapsed / sent * 1e6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few seconds: fewer iterations and repeats, rough numbers",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scale = QUICK_SCALE if args.quick else 1.0
    repeats = 2 if args.quick else 5

    def n(iterations: int) -> int:
        return max(int(iterations * scale), 50)

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
        ("caller->model: ulaw 8k -> pcm 24k (FIR)", lambda: up.convert(ulaw_frame), 50_000,
         naive_up, 3_000),
        ("model->caller: pcm 24k -> ulaw 8k (FIR)", lambda: down.convert(pcm24k_frame), 50_000,
         naive_down, 3_000),
    ]  # fmt: skip
    rows: list[tuple[str, float, float | None]] = [
        (name, per_call_us(ours, n(ours_n), repeats), per_call_us(naive, n(naive_n), repeats))
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

    syscalls = per_call_us(send_and_drain, n(50_000), repeats)
    rows.append(("sendto + recv syscalls (loopback, 172 B)", syscalls, None))
    rx.close()
    tx.close()
    # The same through the endpoint, read on the tick: raw sendto in, poll (parse, stats) out.
    inbound_name = "sendto + RtpEndpoint.poll receive"
    rows.append((inbound_name, asyncio.run(endpoint_receive(n(20_000))), None))

    print(f"Python {platform.python_version()} on {platform.machine()}, numpy {np.__version__}")
    if args.quick:
        print("quick mode: few iterations, rough numbers")
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
    # Inbound measured end to end through the endpoint (includes the sender's sendto);
    # outbound: tick work plus one sendto (the sendto+recv pair counted at half).
    inbound = by_name[inbound_name]
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
