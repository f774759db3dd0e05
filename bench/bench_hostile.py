"""How long one huge message from the model stalls the shared 20 ms media clock.

Run: ``.venv/bin/python bench/bench_hostile.py [--quick]`` (prints numbers,
asserts nothing). ``--quick`` tries fewer, smaller messages.

Every call's RTP is paced by one media clock in the controller's event loop,
so whatever one call's model session does in one go delays every call's
next frame. A peer in its own process (so its sending is not counted) sends
one ``response.output_audio.delta`` of the given size; this process receives
and handles it as a call does (parse, base64-decode, resample, queue for
playout) while the media clock ticks. Two numbers per case, the worst of
:data:`REPEATS` tries:

* ``blocked``: the longest time the event loop ran without a break (a 1 ms
  heartbeat task sees it), which is how late a tick is when it falls due
  just as that step begins;
* ``late``: how late the clock's ticks actually were (its longest gap
  between two ticks, minus the 20 ms period), which depends on where in the
  period the step fell.

Two ways of handling the message:

* ``whole``: no size limit, the delta handled in one step (the controller
  before ``REALTIME_MAX_MESSAGE_BYTES`` and :func:`split_audio_delta`);
* ``bounded``: the default limit (4 MiB): a bigger message closes the
  session before it is read; a smaller one is handled in steps of
  :data:`AUDIO_STEP_CHARS` with the clock running in between.

``idle`` is the same measurement with no message at all: the floor set by
this machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import multiprocessing
import os
import sys
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.server import ServerConnection, serve  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from controller.audio.convert import converters_for  # noqa: E402
from controller.call.conversation import (  # noqa: E402
    Conversation,
    ConversationConfig,
    Play,
    Playback,
)
from controller.config import Settings  # noqa: E402
from controller.errors import RealtimeConnectionError  # noqa: E402
from controller.media.clock import MediaClock  # noqa: E402
from controller.media.playout import Playout  # noqa: E402
from controller.realtime.events import build_session_update, split_audio_delta  # noqa: E402
from controller.realtime.session import MAX_MESSAGE_BYTES, connect_realtime  # noqa: E402

MIB = 2**20
SIZES_MIB = (1.0, 3.9, 16.0, 50.0)
QUICK_SIZES_MIB = (1.0, 8.0)
#: How long after a message is handled the clock is still watched.
SETTLE_SECONDS = 0.15
#: Tries per case; the worst is printed.
REPEATS = 3


# --- the peer (its own process) ---------------------------------------------------------------


def delta_message(nbytes: int) -> bytes:
    """A ``response.output_audio.delta`` message of about ``nbytes`` bytes."""
    audio = os.urandom(nbytes * 3 // 4 - 200)
    return json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "event_1",
            "response_id": "resp_1",
            "item_id": "item_1",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(audio).decode("ascii"),
        },
        separators=(",", ":"),
    ).encode()


def peer_main(conn: Connection, sizes: list[int]) -> None:
    """Serve Realtime sessions; send the prebuilt message of each size asked for over ``conn``."""
    messages = {size: delta_message(size) for size in sizes}
    latest: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        session = {"type": "realtime", "id": "sess_bench", "model": "bench"}
        await ws.send(json.dumps({"type": "session.created", "session": session}))
        await ws.recv()
        await ws.send(json.dumps({"type": "session.updated", "session": session}))
        latest.append(ws)
        await ws.wait_closed()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
            conn.send(next(iter(server.sockets)).getsockname()[1])
            while True:
                size = await loop.run_in_executor(None, conn.recv)
                with contextlib.suppress(ConnectionClosed):
                    await latest[-1].send(messages[size], text=True)

    asyncio.run(run())


# --- the controller side -----------------------------------------------------------------------


class Probe:
    """A media-clock subscriber that remembers the longest gap between two ticks,
    and a 1 ms heartbeat that remembers the longest time the loop was busy."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.worst = 0.0
        self.blocked = 0.0

    def tick(self, now: float) -> None:
        if self.last is not None:
            self.worst = max(self.worst, now - self.last)
        self.last = now

    def reset(self) -> None:
        self.last, self.worst, self.blocked = None, 0.0, 0.0

    async def heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.001)
            self.blocked = max(self.blocked, loop.time() - before - 0.001)


async def measure(
    conn: Connection, port: int, clock: MediaClock, probe: Probe, size: int, *, bounded: bool
) -> tuple[float, float, str]:
    """``(blocked, late, outcome)`` (ms) while one message of ``size`` bytes is handled."""
    session = await connect_realtime(
        f"ws://127.0.0.1:{port}/v1/realtime",
        "sk-bench",
        "bench",
        max_message_bytes=MAX_MESSAGE_BYTES if bounded else 2**40,
    )
    await session.start(build_session_update(Settings(REALTIME_AUDIO="pcm24k")))
    conversation = Conversation(ConversationConfig(audio_bytes_per_ms=48), now=0.0, log=LOG)
    conversation.session_ready(0.0)
    _, to_caller = converters_for("pcm24k")
    playout = Playout()
    handled = asyncio.Event()
    outcome = "played"

    async def receive() -> None:
        nonlocal outcome
        try:
            async for event in session:
                pieces = split_audio_delta(event) if bounded else [event]
                for index, piece in enumerate(pieces):
                    if index:
                        await asyncio.sleep(0)
                    for action in conversation.model_event(piece, 0.0, Playback()):
                        if isinstance(action, Play):
                            playout.enqueue(action.item_id, to_caller.convert(action.audio))
                handled.set()
        except RealtimeConnectionError:
            outcome = "refused (1009)"
            handled.set()

    task = asyncio.create_task(receive())
    await asyncio.sleep(0.2)
    probe.reset()
    conn.send(size)
    await asyncio.wait_for(handled.wait(), 60)
    await asyncio.sleep(SETTLE_SECONDS)
    worst, blocked = probe.worst, probe.blocked
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await session.close()
    return blocked * 1000, max(worst - clock.period, 0.0) * 1000, outcome


LOG = logging.getLogger("bench.hostile")


async def run(sizes_mib: tuple[float, ...], conn: Connection, port: int) -> None:
    clock = MediaClock()
    probe = Probe()
    clock.register(probe)
    clock.start()
    heartbeat = asyncio.create_task(probe.heartbeat())
    try:
        await asyncio.sleep(0.3)
        probe.reset()
        await asyncio.sleep(1.0)
        idle_late = max(probe.worst - clock.period, 0) * 1000
        print(f"{'idle (no message)':>18} {probe.blocked * 1000:>13.1f} {idle_late:>10.1f}")
        for mib in sizes_mib:
            size = int(mib * MIB)
            row = []
            outcome = ""
            for bounded in (False, True):
                tries = [
                    await measure(conn, port, clock, probe, size, bounded=bounded)
                    for _ in range(REPEATS)
                ]
                row += [max(t[0] for t in tries), max(t[1] for t in tries)]
                outcome = tries[-1][2]
            cells = " ".join(f"{v:>10.1f}" for v in row)
            print(f"{f'{mib:g} MiB delta':>18} {cells}  {outcome}")
    finally:
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        await clock.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer, smaller messages")
    quick = parser.parse_args(argv).quick
    sizes_mib = QUICK_SIZES_MIB if quick else SIZES_MIB
    if quick:
        print("quick mode: fewer, smaller messages")
    logging.basicConfig(level=logging.WARNING)
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    peer = multiprocessing.get_context("spawn").Process(
        target=peer_main, args=(theirs, [int(m * MIB) for m in sizes_mib]), daemon=True
    )
    peer.start()
    try:
        port = ours.recv()
        print(f"one huge model message vs the 20 ms media clock (ms, worst of {REPEATS})")
        print(f"{'':>18} {'whole':>21} {'bounded':>21}")
        print(
            f"{'message':>18} {'blocked':>10} {'late':>10} {'blocked':>10} {'late':>10}  "
            "bounded outcome"
        )
        asyncio.run(run(sizes_mib, ours, port))
    finally:
        peer.kill()
        peer.join()


if __name__ == "__main__":
    main()
