"""Calls carried by ``ari-realtime run --workers 1`` vs ``--workers 2`` on this machine.

Prints numbers only. The controller runs as the real command, in outbound
mode (``ARI_MODE=outbound``), against the sandboxed Asterisk 22 configured
for per-call websockets (``controller.devtools.rig.pool``); the local model
server (``controller model-server --reply tone``, 4x real time) runs in its
own process. Each phone plays a conversation: a 1.5 s tone ("the caller
speaks"), 2.5 s of silence, over and over; the model server answers every
turn with a 1.5 s tone, so audio flows both ways.

For each worker count and each step of ``--calls``: place N calls (staggered
over the 4 s cycle), wait until every call is answered and two cycles more, measure
for ``--seconds``, hang up, and read the records the workers wrote (SQLite,
one file shared by the workers). Printed per step:

* controller CPU: the supervisor and its workers (``/proc``), in ms per
  call-second, and the share of one core it used; Asterisk's and the
  machine's share, to judge what limits the machine;
* quality, from the records: turns whose first frame reached Asterisk, the
  p50 / p95 of ``first_frame_latency_ms`` (the caller's end of speech as
  the model heard it -> first agent frame sent), playout underruns, lost
  RTP, calls that did not reach a turn;
* how the calls were spread over the workers.

"Carried" is the largest step at which every call had its agent turns, the
p95 first-frame latency stayed under ``--latency-ms`` and no frame was late
(underruns). On a 2-core machine that also runs Asterisk, the model server and
the phones, this says where the *machine* stops, which is not the controller
alone: read the CPU columns with it.

    .venv/bin/python bench/bench_pool.py [--workers 1,2] [--calls 20,40,80] [--seconds 15]

Needs root (the sandbox) and the cached Asterisk root fs (built on first use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import (  # noqa: E402
    CYCLE_S,
    die_with_parent,
    machine_ticks,
    proc_cpu,
    start_model_server,
    write_conversation,
)

from controller.devtools.rig.ari import AriClient  # noqa: E402
from controller.devtools.rig.calls import Script, call_pbx, wait_no_channels  # noqa: E402
from controller.devtools.rig.pool import PASSWORD, PoolAsterisk, start_pool_sandbox  # noqa: E402
from controller.devtools.rig.wait import wait_for  # noqa: E402
from controller.records import CallRecord  # noqa: E402
from controller.store import open_store  # noqa: E402

WARMUP_TIMEOUT_S = 40.0
MEDIA_PORTS = "44000-44999"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == pid:
            found.append(int(entry.name))
    return found


def tree_cpu(pid: int) -> float:
    # A process gone meanwhile counts 0.
    return sum(proc_cpu(p) or 0.0 for p in (pid, *children(pid)))


@dataclass(frozen=True)
class Step:
    workers: int
    calls: int
    seconds: float
    controller_cpu: float
    asterisk_cpu: float
    machine_busy: float
    records: list[CallRecord]

    @property
    def ms_per_call_second(self) -> float:
        return self.controller_cpu * 1000 / (self.calls * self.seconds)

    def latencies(self) -> list[int]:
        return [
            t.first_frame_latency_ms
            for r in self.records
            for t in r.turns
            if t.first_frame_latency_ms is not None
        ]

    @property
    def silent_calls(self) -> int:
        return sum(1 for r in self.records if not r.turns)

    @property
    def underruns(self) -> int:
        return sum(r.media.playout_underruns for r in self.records)

    @property
    def lost(self) -> int:
        return sum(r.media.rtp_lost for r in self.records)

    def spread(self) -> str:
        counts: dict[str, int] = {}
        for r in self.records:
            worker = r.controller_id.rpartition("/")[2] if "/w" in r.controller_id else "w0"
            counts[worker] = counts.get(worker, 0) + 1
        return " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))

    def p(self, q: float) -> float:
        values = sorted(self.latencies())
        if not values:
            return math.nan
        return float(values[min(len(values) - 1, round(q * (len(values) - 1)))])

    def carried(self, latency_ms: float) -> bool:
        return self.silent_calls == 0 and self.p(0.95) < latency_ms and self.underruns == 0


async def run_step(
    pool: PoolAsterisk,
    ari: AriClient,
    model_url: str,
    workers: int,
    calls: int,
    seconds: float,
    play: str,
    state: Path,
) -> Step:
    box = pool.box
    database = state / f"calls-w{workers}-n{calls}.db"
    env = {
        **os.environ,
        "ARI_MODE": "outbound",
        "ARI_LISTEN": f"127.0.0.1:{pool.direct_port}",
        "ARI_URL": box.ari_url,
        "ARI_USER": box.ari_user,
        "ARI_PASSWORD": PASSWORD,
        "ARI_APP": "voicebot",
        "REALTIME_URL": model_url,
        "OPENAI_API_KEY": "sk-bench-local-model-server",
        "MEDIA_ADDRESS": "127.0.0.1",
        "MEDIA_PORTS": MEDIA_PORTS,
        "HTTP_LISTEN": "",
        "DATABASE_URL": f"sqlite://{database}",
        "CONTROLLER_ID": f"bench-w{workers}",
        "LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "controller", "run", "--workers", str(workers)),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        await asyncio.sleep(3.0)  # the workers start and listen
        phones = [
            await call_pbx(
                ari,
                "100",
                Script(delay=round(i * CYCLE_S / calls, 2), play=play, wait=5),
                rig_id=f"pool_{workers}_{calls}_{i}",
            )
            for i in range(calls)
        ]

        async def answered() -> bool:
            # Records are written at the start and the end of a call (turns at the end).
            if not database.exists():
                return False
            return len(await stored(database)) >= calls

        try:
            await wait_for(answered, WARMUP_TIMEOUT_S, interval=0.5, what=f"{calls} calls")
        except AssertionError:
            print(f"warning: workers={workers} x{calls}: not every call was answered in time")
        await asyncio.sleep(2 * CYCLE_S)  # every call into its conversation
        cpu0, ast0, (busy0, total0), t0 = (
            tree_cpu(proc.pid),
            proc_cpu(box.pid) or 0.0,
            machine_ticks(),
            time.monotonic(),
        )
        await asyncio.sleep(seconds)
        cpu1, ast1, (busy1, total1), t1 = (
            tree_cpu(proc.pid),
            proc_cpu(box.pid) or 0.0,
            machine_ticks(),
            time.monotonic(),
        )
        await asyncio.gather(*(ari.hangup(p["id"]) for p in phones), return_exceptions=True)
        await wait_no_channels(ari, timeout=30)
        await asyncio.sleep(1.0)  # the last records reach the file
        records = await stored(database)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 40)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return Step(
        workers=workers,
        calls=calls,
        seconds=t1 - t0,
        controller_cpu=cpu1 - cpu0,
        asterisk_cpu=(ast1 - ast0) / (t1 - t0),
        machine_busy=(busy1 - busy0) / max(1, total1 - total0),
        records=records,
    )


async def stored(database: Path) -> list[CallRecord]:
    store = await open_store(f"sqlite://{database}", create=False)
    try:
        return await store.list(limit=1000)
    finally:
        await store.close()


def print_step(step: Step, latency_ms: float) -> None:
    print(
        f"  {step.workers:>7} {step.calls:>5} {step.ms_per_call_second:>9.2f} "
        f"{step.controller_cpu / step.seconds:>8.0%} {step.asterisk_cpu:>8.0%} "
        f"{step.machine_busy:>8.0%} {len(step.latencies()):>6} {step.p(0.5):>7.0f} "
        f"{step.p(0.95):>7.0f} {step.underruns:>5} {step.lost:>6} {step.silent_calls:>6}  "
        f"{'yes' if step.carried(latency_ms) else 'no':>7}  {step.spread()}",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    pool = await asyncio.to_thread(start_pool_sandbox, state / "asterisk")
    model, model_url = start_model_server(tone_hz=440, tone_ms=1500)
    box = pool.box
    write_conversation(box.shared_dir / "bench-conversation.wav", 600)
    play = box.inside_path(box.shared_dir / "bench-conversation")
    print(f"machine: {os.cpu_count()} CPUs; Asterisk sandbox pid {box.pid}; model {model_url}")
    print(
        f"  {'workers':>7} {'calls':>5} {'ms/call-s':>9} {'ctl CPU':>8} {'Asterisk':>8} "
        f"{'machine':>8} {'turns':>6} {'p50 ms':>7} {'p95 ms':>7} {'under':>5} {'lost':>6} "
        f"{'silent':>6}  {'carried':>7}  spread"
    )
    results: list[Step] = []
    try:
        async with AriClient(box.ari_url, box.ari_user, box.ari_password) as ari:
            await pool.use_app(ari, "voicebot")
            for workers in args.workers:
                for calls in args.calls:
                    step = await run_step(
                        pool, ari, model_url, workers, calls, args.seconds, play, state
                    )
                    results.append(step)
                    print_step(step, args.latency_ms)
    finally:
        model.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            model.wait(timeout=10)
        await asyncio.to_thread(box.stop)
    print()
    carried = {
        w: max(
            (s.calls for s in results if s.workers == w and s.carried(args.latency_ms)), default=0
        )
        for w in args.workers
    }
    for workers, calls in carried.items():
        print(f"carried with --workers {workers}: {calls} calls (largest step that held)")
    if len(carried) == 2 and all(carried.values()):
        a, b = (carried[w] for w in args.workers)
        print(f"ratio --workers {args.workers[1]} / --workers {args.workers[0]}: {b / a:.2f}")
    per = {
        w: statistics.mean(s.ms_per_call_second for s in results if s.workers == w)
        for w in args.workers
    }
    for workers, ms in per.items():
        print(f"controller CPU with --workers {workers}: {ms:.2f} ms per call-second (mean)")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=_ints, default=[1, 2])
    parser.add_argument("--calls", type=_ints, default=[20, 40, 80])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--latency-ms", type=float, default=1500.0, help="p95 first-frame latency limit"
    )
    parser.add_argument(
        "--quick", action="store_true", help="--workers 1 and 2, 4 calls, 4 s: rough numbers"
    )
    args = parser.parse_args()
    if args.quick:
        args.calls, args.seconds = [4], 4.0
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
