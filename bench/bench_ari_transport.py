"""REST requests of a call: over Asterisk's per-call websocket, or over HTTP to ARI_URL?

Prints numbers only. In outbound mode (``ARI_MODE=outbound``) a call's REST
requests can travel as ``RESTRequest``/``RESTResponse`` on the websocket
Asterisk opened for the call, or as ordinary HTTP requests to ``ARI_URL``
(aiohttp, keep-alive). This measures both against the sandboxed Asterisk 22,
on the same live call, alternating request by request so both see the same
machine load:

* ``GET /channels/{id}`` (a read, about 1 KB back),
* ``POST /channels/{id}/variable`` (a write, 204),
* ``GET /channels/{id}/variable`` (a small read),

each ``--requests`` times per transport, one at a time (a call's requests
are sequential), then the same with ``--calls`` calls doing it at once
(each on its own websocket; HTTP through one shared connection pool, as the
inbound controller does). Latency is the client's: from sending the request
to having its decoded body.

    .venv/bin/python bench/bench_ari_transport.py [--requests 300] [--calls 10] [--quick]

Needs root (the sandbox) and the cached Asterisk root fs (built on first use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controller.ari.events import StasisStart  # noqa: E402
from controller.ari.listener import AriListener  # noqa: E402
from controller.ari.percall import AriWebsocket, WebsocketAriClient  # noqa: E402
from controller.ari.rest import AriClient  # noqa: E402
from controller.devtools.rig.ari import AriClient as RigAri  # noqa: E402
from controller.devtools.rig.calls import Script, call_pbx, wait_nothing_left  # noqa: E402
from controller.devtools.rig.pool import PASSWORD, start_pool_sandbox  # noqa: E402

Request = Callable[[AriClient, str], Awaitable[Any]]


async def get_channel(ari: AriClient, channel: str) -> Any:
    return await ari.get_channel(channel)


async def set_variable(ari: AriClient, channel: str) -> Any:
    return await ari.set_variable(channel, "BENCH", "x" * 16)


async def get_variable(ari: AriClient, channel: str) -> Any:
    return await ari.get_variable(channel, "BENCH")


REQUESTS: dict[str, Request] = {
    "GET /channels/{id}": get_channel,
    "POST /channels/{id}/variable": set_variable,
    "GET /channels/{id}/variable": get_variable,
}


async def measure(
    ws: AriClient, http: AriClient, channel: str, count: int
) -> dict[tuple[str, str], list[float]]:
    """``{(request, transport): [ms, ...]}``, alternating the transports."""
    out: dict[tuple[str, str], list[float]] = {}
    for name, request in REQUESTS.items():
        for _ in range(3):  # warm-up (connections, caches)
            await request(ws, channel)
            await request(http, channel)
        for i in range(count):
            order = (
                (("websocket", ws), ("http", http))
                if i % 2
                else (("http", http), ("websocket", ws))
            )
            for transport, client in order:
                start = time.perf_counter()
                await request(client, channel)
                out.setdefault((name, transport), []).append((time.perf_counter() - start) * 1000)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(title: str, results: dict[tuple[str, str], list[float]]) -> None:
    print(f"\n{title}")
    print(f"  {'request':32} {'transport':10} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8}")
    for name in REQUESTS:
        medians = {}
        for transport in ("websocket", "http"):
            values = results.get((name, transport), [])
            if not values:
                continue
            medians[transport] = statistics.median(values)
            print(
                f"  {name:32} {transport:10} {statistics.median(values):10.3f} "
                f"{percentile(values, 0.9):8.3f} {percentile(values, 0.99):8.3f}"
            )
        if len(medians) == 2:
            print(f"  {'':32} {'http/ws':10} {medians['http'] / medians['websocket']:10.2f}x")


async def run(requests: int, calls: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="bench-ari-transport-"))
    pool = await asyncio.to_thread(start_pool_sandbox, state)
    box = pool.box
    channels: asyncio.Queue[tuple[AriWebsocket, str]] = asyncio.Queue()
    done = asyncio.Event()

    async def on_connection(connection: AriWebsocket) -> None:
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def read() -> None:
            async for event in connection.events():
                if isinstance(event, StasisStart) and not started.done():
                    started.set_result(event.channel.id)

        reader = asyncio.ensure_future(read())
        try:
            channel = await asyncio.wait_for(started, 10)
            await channels.put((connection, channel))
            await done.wait()
            with contextlib.suppress(Exception):
                await WebsocketAriClient(connection).hangup(channel)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.wait_closed(), 8)
        finally:
            reader.cancel()

    listener = AriListener(
        "127.0.0.1",
        pool.direct_port,
        user=box.ari_user,
        password=PASSWORD,
        on_connection=on_connection,
    )
    await listener.start()
    http = AriClient(box.ari_url, box.ari_user, box.ari_password)
    try:
        async with RigAri(box.ari_url, box.ari_user, box.ari_password) as rig:
            print(f"Asterisk sandbox at {box.ari_url}; per-call websockets to {listener.url}")
            await call_pbx(rig, "100", Script(wait=600), rig_id="transport0")
            connection, channel = await asyncio.wait_for(channels.get(), 15)
            ws = WebsocketAriClient(connection)
            report(
                f"one call, {requests} requests of each kind, one at a time",
                await measure(ws, http, channel, requests),
            )

            for i in range(1, calls):
                await call_pbx(rig, "100", Script(wait=600), rig_id=f"transport{i}")
            pairs = [(connection, channel)]
            for _ in range(1, calls):
                pairs.append(await asyncio.wait_for(channels.get(), 15))
            merged: dict[tuple[str, str], list[float]] = {}
            per_call = max(10, requests // calls)
            results = await asyncio.gather(
                *(measure(WebsocketAriClient(c), http, ch, per_call) for c, ch in pairs)
            )
            for result in results:
                for key, values in result.items():
                    merged.setdefault(key, []).extend(values)
            report(f"{calls} calls at once, {per_call} requests of each kind per call", merged)
            done.set()
            await wait_nothing_left(rig, timeout=20)
    finally:
        done.set()
        await http.close()
        await listener.close()
        await asyncio.to_thread(box.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="per kind, one call")
    parser.add_argument("--calls", type=int, default=10, help="calls at once, second run")
    parser.add_argument("--quick", action="store_true", help="a rough run of a few seconds")
    args = parser.parse_args()
    if args.quick:
        print("quick mode: numbers are rough")
        args.requests, args.calls = 30, 3
    asyncio.run(run(args.requests, args.calls))


if __name__ == "__main__":
    main()
