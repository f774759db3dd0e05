"""Soak: N concurrent calls for M minutes through the sandboxed Asterisk; prints leaks.

Not a test (no pass/fail): it prints what a long run leaves behind. The
controller runs in this process as ``ari-realtime run`` does (its record
store in a temporary SQLite file, no HTTP server), the local model server
answers every caller turn with a tone, and the rig's phone keeps N calls up:
each call plays a random pattern of "speech" (tones) and silence, sometimes
presses keys, and lasts a random time; some callers hang up mid-sentence,
some talk over the agent (barge-in). Every ``--every`` seconds, and at the
end, it prints: calls placed and ended, live calls, Asterisk's channels and
bridges, open file descriptors, asyncio tasks, RSS, and warnings/errors
logged. After the last call it waits for everything to go and prints what
is left (channels, bridges, records still live, fd and RSS growth).

    .venv/bin/python bench/soak.py [--calls 20] [--minutes 10] [--quick]

Needs root (the sandbox) and the cached Asterisk root fs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controller.app import Controller  # noqa: E402
from controller.config import load_settings  # noqa: E402
from controller.devtools.modelserver import ModelServer, ServerConfig  # noqa: E402
from controller.devtools.rig.ari import AriClient  # noqa: E402
from controller.devtools.rig.audio import make_tones  # noqa: E402
from controller.devtools.rig.calls import Script, call_pbx, playable  # noqa: E402
from controller.devtools.rig.sandbox import start_sandbox  # noqa: E402
from controller.devtools.rig.wait import wait_for  # noqa: E402
from controller.serve import Operations, serve  # noqa: E402
from controller.store import open_store  # noqa: E402

MEDIA_PORTS = "44000-44999"


class Counter(logging.Handler):
    """Counts warnings and errors the controller logs, by first word."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.levelname} {record.getMessage().split(' ', 1)[0]}"
        self.counts[key] = self.counts.get(key, 0) + 1


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def patterns(shared: Path, rng: random.Random, count: int) -> list[Path]:
    """Caller 'speech': tones and pauses of random lengths."""
    files = []
    for n in range(count):
        parts: list[tuple[float, float]] = []
        for _ in range(rng.randint(2, 5)):
            parts += [(rng.choice([400.0, 500.0, 650.0]), rng.uniform(0.6, 2.0))]
            parts += [(0.0, rng.uniform(0.3, 3.5))]  # short pauses make barge-ins
        files.append(make_tones(shared / f"soak-{n}.wav", parts))
    return files


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    state = Path(tempfile.mkdtemp(prefix="ari-realtime-soak-"))
    box = start_sandbox(state / "asterisk")
    # record_events off: the test peer keeps no event history (its memory is not ours).
    server = ModelServer(
        ServerConfig(
            reply="tone", tone_ms=1500, transcript="A tone.", speed=4.0, record_events=False
        )
    )
    counter = Counter()
    logging.getLogger("controller").addHandler(counter)
    logging.getLogger("controller").setLevel(logging.INFO)
    try:
        await server.start()
        files = [playable(box, f) for f in patterns(box.shared_dir, rng, 8)]
        settings = load_settings(
            ARI_URL=box.ari_url,
            ARI_USER=box.ari_user,
            ARI_PASSWORD=box.ari_password,
            ARI_APP=box.ari_app,
            REALTIME_URL=server.url,
            OPENAI_API_KEY="sk-soak-local-model-server",
            MEDIA_ADDRESS="127.0.0.1",
            MEDIA_PORTS=MEDIA_PORTS,
            DATABASE_URL=f"sqlite://{state}/calls.db",
            HTTP_LISTEN="",
            VAD_SILENCE_MS="400",
            BARGE_IN_MIN_MS="100",
        )
        up: list[tuple[Controller, Operations]] = []
        task = asyncio.create_task(serve(settings, None, started=lambda c, o: up.append((c, o))))
        await wait_for(lambda: up and up[0][0].ready.is_set(), 30, what="the controller")
        controller = up[0][0]
        async with AriClient(box.ari_url, box.ari_user, box.ari_password) as ari:
            placed = 0
            start_fd, start_rss = fds(), rss_mib()
            t0 = time.monotonic()
            end = t0 + args.minutes * 60
            next_report = t0

            async def one_call(n: int) -> None:
                script = Script(
                    delay=rng.uniform(0.2, 1.5),
                    play=rng.choice(files),
                    dtmf=rng.choice(["", "", "1", "42#"]) or None,
                    wait=rng.uniform(2.0, args.max_call_seconds),
                )
                phone = await call_pbx(ari, "100", script, rig_id=f"soak{n}")
                if rng.random() < 0.3:  # hang up mid-sentence
                    await asyncio.sleep(rng.uniform(1.0, 6.0))
                    await ari.hangup(phone["id"])

            pending: set[asyncio.Task[None]] = set()
            while time.monotonic() < end:
                while len(controller.calls) + len(pending) < args.calls:
                    placed += 1
                    t = asyncio.create_task(one_call(placed))
                    pending.add(t)
                    t.add_done_callback(pending.discard)
                    await asyncio.sleep(0.05)
                if time.monotonic() >= next_report:
                    next_report += args.every
                    await report(ari, controller, counter, placed, t0, start_fd, start_rss)
                await asyncio.sleep(0.5)
            print("soak: no new calls; waiting for the live ones to end")
            while controller.calls or pending:
                await asyncio.sleep(0.5)
                if time.monotonic() - end > args.max_call_seconds + 30:
                    print(f"soak: {len(controller.calls)} calls still live after the end!")
                    break
            await asyncio.sleep(2.0)
            await report(ari, controller, counter, placed, t0, start_fd, start_rss)
            channels, bridges = await ari.channels(), await ari.get("/bridges")
            controller.request_stop()
            await asyncio.wait_for(task, 60)
        store = await open_store(str(settings.database_url.get_secret_value()))
        try:
            records = await store.list(limit=1000)
        finally:
            await store.close()
        live = [r.id for r in records if r.status == "live"]
        outcomes: dict[str, int] = {}
        for record in records:
            outcomes[record.outcome or "-"] = outcomes.get(record.outcome or "-", 0) + 1
        print()
        print(f"soak: {placed} calls placed over {args.minutes:g} min, {args.calls} at a time")
        left = f"{len(channels)} channels, {len(bridges)} bridges, {len(live)} live records"
        print(f"  left behind: {left}")
        print(f"  records: {len(records)}; outcomes: {outcomes}")
        print(f"  fds: {start_fd} -> {fds()}; RSS: {start_rss:.1f} -> {rss_mib():.1f} MiB")
        print(f"  maxrss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")
        print(f"  warnings/errors logged: {counter.counts or 'none'}")
        return 0
    finally:
        await server.stop()
        box.stop()


async def report(
    ari: AriClient,
    controller: Controller,
    counter: Counter,
    placed: int,
    t0: float,
    start_fd: int,
    start_rss: float,
) -> None:
    channels, bridges = await ari.channels(), await ari.get("/bridges")
    tasks = len(asyncio.all_tasks())
    problems = sum(counter.counts.values())
    print(
        f"t={time.monotonic() - t0:6.0f}s placed={placed} live={len(controller.calls)} "
        f"channels={len(channels)} bridges={len(bridges)} fds={fds()} ({fds() - start_fd:+d}) "
        f"tasks={tasks} rss={rss_mib():.1f}MiB ({rss_mib() - start_rss:+.1f}) "
        f"warnings+errors={problems}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="concurrent calls (default 20)")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--every", type=float, default=30.0, help="report interval, s")
    parser.add_argument("--max-call-seconds", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=4711)
    parser.add_argument("--quick", action="store_true", help="3 calls for 20 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.minutes, args.every, args.max_call_seconds = 3, 1 / 3, 10.0, 8.0
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
