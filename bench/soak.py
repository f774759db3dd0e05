"""Soak: N concurrent calls for M minutes through the sandboxed Asterisk; prints leaks.

Not a test (no pass/fail): it prints what a long run leaves behind. The
controller runs in this process as ``ari-realtime run`` does (its record
store in a temporary SQLite file, no HTTP server), the local model server
answers every caller turn with a tone (in its own process, so the memory
read here is the controller's and the rig's small ARI client's;
``--inproc-model`` puts it back in this process), and the rig's phone keeps
N calls up: each call plays a random pattern of "speech" (tones) and
silence, sometimes presses keys, and lasts a random time; some callers hang
up mid-sentence, some talk over the agent (barge-in). Every ``--every`` seconds, and at the
end, it prints: calls placed and ended, live calls, Asterisk's channels and
bridges, open file descriptors, asyncio tasks, warnings/errors logged, and
memory: RSS beside what is live in it (glibc's bytes in use and the free
bytes it holds, pymalloc's live blocks, gc's object count; with
``--tracemalloc`` the traced Python heap). After the last call it waits for
everything to go and prints what is left (channels, bridges, records still
live, fd and RSS growth) and what grew since the baseline taken after
``--warmup`` seconds: per call placed, by object type, by allocating
traceback (``--tracemalloc FRAMES``), and what ``malloc_trim(0)`` gives back.
The live view keeps the last 200 ended records (``LiveHub``), so take the
baseline after 200 calls have ended (``--warmup 210`` at 20 calls) to see
growth beyond that bound.

    .venv/bin/python bench/soak.py [--calls 20] [--minutes 10] [--quick]
        [--warmup 60] [--tracemalloc FRAMES] [--inproc-model]

Needs root (the sandbox) and the cached Asterisk root fs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import gc
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
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

sys.path.insert(0, str(REPO / "bench"))
from benchlib import start_model_server, stop_process  # noqa: E402

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


def type_counts() -> collections.Counter[str]:
    """Live objects the garbage collector tracks, by type name."""
    return collections.Counter(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
    )


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


LIBC = _libc()


def malloc_info() -> tuple[float, float] | None:
    """glibc's (bytes in use, free bytes it holds) in MiB; None without glibc 2.33+.

    Free-but-held memory counts in RSS: growth there is the allocator
    (fragmentation), not live data.
    """
    if LIBC is None or not hasattr(LIBC, "mallinfo2"):
        return None
    LIBC.mallinfo2.restype = _MallInfo2
    info = LIBC.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


def malloc_trim() -> bool:
    """Give glibc's free pages back to the system (False where there is no glibc)."""
    return LIBC is not None and bool(LIBC.malloc_trim(0))


class Memory:
    """What the process holds, sampled at each report: RSS against the live Python heap.

    RSS alone cannot tell a leak from the allocator keeping freed pages:
    ``sys.getallocatedblocks`` (pymalloc's live blocks) and gc's object count
    grow only with live Python objects; ``tracemalloc`` (``--tracemalloc``)
    adds the traced bytes and, at the end, where the growth was allocated.
    """

    def __init__(self, frames: int) -> None:
        self.frames = frames
        if frames:
            tracemalloc.start(frames)
        self.baseline: tracemalloc.Snapshot | None = None
        self.baseline_types: collections.Counter[str] = collections.Counter()
        self.baseline_at: tuple[float, int, float, int] | None = None  # t, placed, rss, blocks

    def sample(self) -> str:
        heap = ""
        if self.frames:
            heap = f"heap={tracemalloc.get_traced_memory()[0] / 2**20:.1f}MiB "
        malloc = malloc_info()
        if malloc is not None:
            heap += f"malloc={malloc[0]:.1f}+{malloc[1]:.1f}free "
        return (
            f"rss={rss_mib():.1f}MiB {heap}blocks={sys.getallocatedblocks()} "
            f"objects={len(gc.get_objects())}"
        )

    def mark(self, t: float, placed: int) -> None:
        """The baseline the end is compared with (after warm-up: caches filled, pools grown)."""
        gc.collect()
        if self.frames:
            # First: the snapshot stays alive, and its blocks must count in the baseline too.
            self.baseline = tracemalloc.take_snapshot()
        self.baseline_at = (t, placed, rss_mib(), sys.getallocatedblocks())
        self.baseline_types = type_counts()

    def report(self, placed: int) -> None:
        """After the last call: what grew since the baseline, per call placed since."""
        if self.baseline_at is None:
            return
        gc.collect()
        t0, placed0, rss0, blocks0 = self.baseline_at
        calls = max(placed - placed0, 1)
        rss, blocks = rss_mib(), sys.getallocatedblocks()
        print(f"  since the baseline at t={t0:.0f}s ({calls} calls placed since):")
        print(
            f"    RSS {rss0:.1f} -> {rss:.1f} MiB ({(rss - rss0) * 1024 / calls:+.1f} KiB/call); "
            f"pymalloc blocks {blocks0} -> {blocks} ({(blocks - blocks0) / calls:+.1f}/call)"
        )
        malloc = malloc_info()
        if malloc is not None:
            print(f"    malloc: {malloc[0]:.1f} MiB in use, {malloc[1]:.1f} MiB free but held")
        if self.frames:
            heap = tracemalloc.get_traced_memory()[0] / 2**20
            print(f"    live Python heap (tracemalloc): {heap:.1f} MiB")
        grown = type_counts()
        grown.subtract(self.baseline_types)
        top = [(name, n) for name, n in grown.most_common(8) if n > 0]
        print(f"    objects grown by type: {top or 'none'}")
        if self.baseline is not None:
            stats = tracemalloc.take_snapshot().compare_to(self.baseline, "traceback")
            print("    grown allocations (tracemalloc, by traceback):")
            for stat in stats[:10]:
                if stat.size_diff <= 0:
                    break
                # The allocating line first, then its callers.
                frames = " <- ".join(
                    f"{Path(f.filename).name}:{f.lineno}" for f in reversed(stat.traceback)
                )
                print(f"      {stat.size_diff / 1024:+8.1f} KiB {stat.count_diff:+6d} {frames}")
        before = rss_mib()
        if malloc_trim():
            print(f"    malloc_trim(0): RSS {before:.1f} -> {rss_mib():.1f} MiB")


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
    memory = Memory(args.tracemalloc)
    box = start_sandbox(state / "asterisk")
    # The model server runs in its own process, so the RSS read here is the
    # controller's (and the rig's ARI client's), not the test peer's.
    server: ModelServer | None = None
    server_proc: subprocess.Popen[str] | None = None
    counter = Counter()
    logging.getLogger("controller").addHandler(counter)
    logging.getLogger("controller").setLevel(logging.INFO)
    try:
        if args.inproc_model:
            # record_events off: the test peer keeps no event history (its memory is not ours).
            server = ModelServer(
                ServerConfig(
                    reply="tone", tone_ms=1500, transcript="A tone.", speed=4.0, record_events=False
                )
            )
            await server.start()
            model_url = server.url
        else:
            server_proc, model_url = start_model_server(tone_hz=440.0, tone_ms=1500)
        files = [playable(box, f) for f in patterns(box.shared_dir, rng, 8)]
        settings = load_settings(
            ARI_URL=box.ari_url,
            ARI_USER=box.ari_user,
            ARI_PASSWORD=box.ari_password,
            ARI_APP=box.ari_app,
            REALTIME_URL=model_url,
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
                    await report(ari, controller, counter, placed, t0, start_fd, start_rss, memory)
                    if memory.baseline_at is None and time.monotonic() - t0 >= args.warmup:
                        memory.mark(time.monotonic() - t0, placed)
                await asyncio.sleep(0.5)
            print("soak: no new calls; waiting for the live ones to end")
            while controller.calls or pending:
                await asyncio.sleep(0.5)
                if time.monotonic() - end > args.max_call_seconds + 30:
                    print(f"soak: {len(controller.calls)} calls still live after the end!")
                    break
            await asyncio.sleep(2.0)
            await report(ari, controller, counter, placed, t0, start_fd, start_rss, memory)
            channels, bridges = await ari.channels(), await ari.get("/bridges")
            # Compared while the controller is still up (idle, every call ended).
            print("memory, every call ended, the controller still up:")
            memory.report(placed)
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
        if server is not None:
            await server.stop()
        if server_proc is not None:
            stop_process(server_proc)
        box.stop()


async def report(
    ari: AriClient,
    controller: Controller,
    counter: Counter,
    placed: int,
    t0: float,
    start_fd: int,
    start_rss: float,
    memory: Memory,
) -> None:
    channels, bridges = await ari.channels(), await ari.get("/bridges")
    tasks = len(asyncio.all_tasks())
    problems = sum(counter.counts.values())
    print(
        f"t={time.monotonic() - t0:6.0f}s placed={placed} live={len(controller.calls)} "
        f"channels={len(channels)} bridges={len(bridges)} fds={fds()} ({fds() - start_fd:+d}) "
        f"tasks={tasks} {memory.sample()} ({rss_mib() - start_rss:+.1f}) "
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
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="memory baseline after this long, s"
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace Python allocations (this many frames each; slows the controller) "
        "and print where the growth since the baseline was allocated",
    )
    parser.add_argument(
        "--inproc-model",
        action="store_true",
        help="run the model server in this process (its memory then counts in the RSS)",
    )
    parser.add_argument("--quick", action="store_true", help="3 calls for 20 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.minutes, args.every, args.max_call_seconds = 3, 1 / 3, 10.0, 8.0
        args.warmup = 5.0
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
