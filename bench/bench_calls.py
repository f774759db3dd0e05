"""Whole-controller benchmark: the controller's CPU per call-second under real calls.

Prints numbers only (no asserts, no pass/fail). The product's budget is 5 ms
of controller CPU per call-second (one core carries 200 concurrent calls).

How it measures:

* The sandboxed Asterisk 22 (``controller.devtools.rig.sandbox.start_sandbox``, free ports
  picked) carries real calls: the rig's phone dials extension 100 over PJSIP,
  the PBX hands the call to the Stasis app, and the controller bridges it to
  an externalMedia RTP channel, exactly as in production.
* The local model server (``python -m controller model-server --reply tone``,
  100 ms deltas streamed 4x faster than real time, as the real API does) runs
  in a separate process, so its CPU is not counted.
* The controller runs in this process (:class:`Controller` with a
  ``call_factory`` that records the calls). Its CPU is
  ``resource.getrusage(RUSAGE_SELF)`` user + sys (every thread of the
  process, e.g. the resolver's executor) over a window of wall time.
* Each phone plays a conversation file: a 1.5 s tone ("the caller speaks"),
  then 2.5 s of silence, over and over. The model server's VAD ends each
  caller turn after 500 ms of silence and answers with a 1.5 s tone, which
  the controller plays out in real time during the caller's pause. So both
  directions carry speech a good part of the time, like a conversation. The
  calls are staggered over the 4 s cycle so their turns do not coincide.
* Per step: place N calls, wait until every call has had an agent reply
  (the conversation is flowing), measure for ``--seconds``, hang up, wait
  until everything is gone. The idle controller (registered, 0 calls) is
  measured over the same window length in the same run, per mode, and
  subtracted: ms per call-second = (CPU with calls - idle CPU) / (N * window).
* The benchmark's own ARI client (placing calls, polling for readiness,
  hanging up) shares this process and event loop, but does all its work
  outside the windows: during a window the benchmark only sleeps.

Also printed, to judge the numbers: the marginal cost of the calls added
since the previous step; the controller's kernel share and its event-loop
wake-ups (voluntary context switches) per call-second; Asterisk's and the
model server's CPU (from /proc) and the whole machine's busy share during
each window; agent turns per call; RTP packets per call-second each way; and
a floor measured first: the CPU a bare asyncio UDP receiver spends per packet
when woken once per packet (the machine's price of a wake-up, which a
controller woken by each caller packet pays 50 times per call-second).
``--profile FILE`` adds a cProfile (CPU-time clock) of the windows with calls.

    .venv/bin/python bench/bench_calls.py [--quick] [--calls 1,5,10,20] [--seconds 10]
                                          [--modes pcmu,pcm24k]

Needs root (the sandbox) and the cached Asterisk root fs (built on first use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import os
import platform
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import (  # noqa: E402
    CALLER_PAUSE_S,
    CALLER_TONE_S,
    CYCLE_S,
    int_list,
    loadavg,
    machine_ticks,
    proc_cpu,
    start_model_server,
    start_sandbox_patiently,
    stop_process,
    write_conversation,
)

from controller.app import Controller  # noqa: E402
from controller.call.call import Call  # noqa: E402
from controller.call.services import CallContext, CallServices  # noqa: E402
from controller.config import load_settings  # noqa: E402
from controller.devtools.rig.ari import AriClient  # noqa: E402
from controller.devtools.rig.calls import Script, call_pbx, wait_no_channels  # noqa: E402
from controller.devtools.rig.sandbox import Sandbox, SandboxError  # noqa: E402
from controller.devtools.rig.wait import wait_for  # noqa: E402
from controller.logs import RedactingFormatter  # noqa: E402
from controller.serve import Operations  # noqa: E402

BUDGET_MS_PER_CALL_SECOND = 5.0
#: The caller's turn pattern: this much tone, then this much silence, repeated.
#: Longest wait for N calls to be set up and have heard their first reply.
WARMUP_TIMEOUT_S = 30.0
#: UDP ports the controller binds for RTP (Asterisk's own are 20000-23999).
MEDIA_PORTS = "43000-43999"
DEFAULT_STATE = Path("/var/tmp/ari-realtime/bench-calls")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- measuring ---------------------------------------------------------------------------


def self_usage() -> tuple[float, float, int]:
    """(user, sys) CPU seconds and voluntary context switches of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_nvcsw


@dataclass(frozen=True)
class Snapshot:
    wall: float
    user: float
    sys: float
    switches: int
    asterisk: float | None
    model: float | None
    busy: int
    total: int


def snapshot(asterisk_pid: int | None, model_pid: int | None) -> Snapshot:
    busy, total = machine_ticks()
    user, sys_, switches = self_usage()
    return Snapshot(
        time.monotonic(),
        user,
        sys_,
        switches,
        proc_cpu(asterisk_pid),
        proc_cpu(model_pid),
        busy,
        total,
    )


@dataclass(frozen=True)
class Window:
    """What happened between two snapshots."""

    wall: float
    cpu: float  # controller (this process), user + sys seconds
    sys: float  # of which in the kernel
    switches: int  # voluntary context switches (the event loop going to sleep)
    asterisk: float | None  # seconds
    model: float | None  # seconds
    machine_busy: float  # share of all CPUs, 0..1

    @classmethod
    def between(cls, a: Snapshot, b: Snapshot) -> Window:
        def delta(x: float | None, y: float | None) -> float | None:
            return None if x is None or y is None else y - x

        return cls(
            wall=b.wall - a.wall,
            cpu=b.user + b.sys - a.user - a.sys,
            sys=b.sys - a.sys,
            switches=b.switches - a.switches,
            asterisk=delta(a.asterisk, b.asterisk),
            model=delta(a.model, b.model),
            machine_busy=(b.busy - a.busy) / max(1, b.total - a.total),
        )


@dataclass(frozen=True)
class Row:
    calls: int
    mode: str
    window: Window
    idle: Window
    agent_turns: float  # per call, in the window
    rx_pps: float  # RTP packets per call-second, Asterisk -> controller
    tx_pps: float  # RTP packets per call-second, controller -> Asterisk
    dropped: int  # calls that ended during the window

    @property
    def idle_ms(self) -> float:
        """The idle controller's CPU over this window's length."""
        return self.idle.cpu / self.idle.wall * self.window.wall * 1000

    @property
    def ms_per_call_second(self) -> float:
        return (self.window.cpu * 1000 - self.idle_ms) / (self.calls * self.window.wall)


# --- a floor: what one event-loop wake-up per packet costs on this machine ---------------------

_SENDER = """
import socket, sys, time
port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
i = 0
while time.monotonic() - start < seconds:
    sock.sendto(bytes(172), ("127.0.0.1", port))
    i += 1
    time.sleep(max(0.0, start + i / rate - time.monotonic()))
"""


async def _wakeup_floor(rate: float, seconds: float) -> tuple[float, float]:
    """CPU per packet of a bare asyncio UDP receiver that does nothing with them."""
    loop = asyncio.get_running_loop()
    got = [0]

    class Counter(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            got[0] += 1

    transport, _ = await loop.create_datagram_endpoint(Counter, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SENDER, str(port), str(rate), str(seconds + 1.0)
    )
    try:
        await asyncio.sleep(0.5)
        user0, sys0, switches0 = self_usage()
        got0 = got[0]
        await asyncio.sleep(seconds)
        user1, sys1, switches1 = self_usage()
        packets = max(1, got[0] - got0)
    finally:
        await sender.wait()
        transport.close()
    return (user1 + sys1 - user0 - sys0) / packets * 1e6, (switches1 - switches0) / packets


def wakeup_floor() -> tuple[float, float]:
    """(µs of CPU, context switches) per packet: 500 packets/s, one per wake-up."""
    return asyncio.run(_wakeup_floor(500.0, 2.0))


# --- one controller, one mode --------------------------------------------------------------


class Bench:
    def __init__(
        self, args: argparse.Namespace, box: Sandbox, model_url: str, model_pid: int
    ) -> None:
        self.args = args
        self.box = box
        self.model_url = model_url
        self.model_pid = model_pid
        self.play = box.inside_path(box.shared_dir / "bench-conversation")  # no extension
        #: With ``--profile``: cProfile, enabled only during the windows with calls.
        self.profiler: cProfile.Profile | None = (
            cProfile.Profile(time.process_time) if args.profile else None
        )

    def snap(self) -> Snapshot:
        return snapshot(self.box.pid, self.model_pid)

    async def run_mode(self, ari: AriClient, mode: str) -> list[Row]:
        box = self.box
        settings = load_settings(
            ARI_URL=box.ari_url,
            ARI_USER=box.ari_user,
            ARI_PASSWORD=box.ari_password,
            ARI_APP=box.ari_app,
            REALTIME_URL=self.model_url,
            OPENAI_API_KEY="sk-bench-local-model-server",
            MEDIA_ADDRESS="127.0.0.1",
            MEDIA_PORTS=MEDIA_PORTS,
            REALTIME_AUDIO=mode,
            # The whole product: records to a store, live hub, metrics (no HTTP port).
            DATABASE_URL=f"sqlite://{tempfile.mkdtemp(prefix='bench-calls-')}/calls.db",
            HTTP_LISTEN="",
        )
        calls: list[Call] = []

        def factory(context: CallContext, services: CallServices) -> Call:
            call = Call(context, services)
            calls.append(call)
            return call

        ops = await Operations.open(settings)
        controller = Controller(
            settings,
            call_factory=factory,
            observers=ops.observers,
            cost=ops.pricing,
            model_errors=ops.metrics.model_error,
        )
        await ops.start(controller)
        task = asyncio.create_task(controller.run(), name=f"controller-{mode}")
        rows: list[Row] = []
        try:
            await asyncio.wait_for(controller.ready.wait(), 15)
            await asyncio.sleep(1.0)  # let start-up settle
            a = self.snap()
            await asyncio.sleep(self.args.seconds)
            idle = Window.between(a, self.snap())
            for n in self.args.calls:
                calls.clear()
                rows.append(await self.run_calls(ari, controller, calls, mode, n, idle))
        finally:
            controller.request_stop()
            try:
                await asyncio.wait_for(task, 20)
            except TimeoutError:
                task.cancel()
            await ops.close()
        return rows

    async def run_calls(
        self,
        ari: AriClient,
        controller: Controller,
        calls: list[Call],
        mode: str,
        n: int,
        idle: Window,
    ) -> Row:
        # Everything here but the sleep in the middle is the benchmark's own
        # ARI work, done outside the measured window.
        phones = await asyncio.gather(
            *(
                call_pbx(
                    ari,
                    "100",
                    Script(delay=round(i * CYCLE_S / n, 2), play=self.play, wait=5),
                    rig_id=f"bench_{mode}_{n}_{i}",
                )
                for i in range(n)
            )
        )
        try:

            def flowing() -> bool:
                return (
                    len(calls) >= n
                    and controller.clock.subscribers >= n
                    and all(any(line.role == "agent" for line in c.transcript) for c in calls)
                )

            try:
                await wait_for(flowing, WARMUP_TIMEOUT_S, interval=0.1, what=f"{n} calls")
            except AssertionError:
                replied = sum(any(x.role == "agent" for x in c.transcript) for c in calls)
                print(
                    f"warning: {mode} x{n}: after {WARMUP_TIMEOUT_S:g} s, {len(calls)} calls "
                    f"reached the controller and {replied} heard a reply; measuring anyway",
                    file=sys.stderr,
                )
            live = list(calls)
            rx0, tx0 = rtp_counts(live)
            a = self.snap()
            if self.profiler is not None:
                self.profiler.enable()
            await asyncio.sleep(self.args.seconds)  # the measured window
            if self.profiler is not None:
                self.profiler.disable()
            b = self.snap()
            rx1, tx1 = rtp_counts(live)
            dropped = sum(1 for c in live if c.end_reason)
        finally:
            await asyncio.gather(*(ari.hangup(p["id"]) for p in phones), return_exceptions=True)
        window = Window.between(a, b)
        t0, t1 = a.wall, b.wall
        turns = sum(
            1
            for c in live
            for line in c.transcript
            if line.role == "agent" and t0 <= c.started + line.at <= t1
        )
        await wait_for(lambda: not controller.calls, 20, what="the controller's calls to end")
        await wait_no_channels(ari, 20)
        per_call_second = max(1, len(live)) * window.wall
        return Row(
            calls=max(1, len(live)),
            mode=mode,
            window=window,
            idle=idle,
            agent_turns=turns / max(1, len(live)),
            rx_pps=(rx1 - rx0) / per_call_second,
            tx_pps=(tx1 - tx0) / per_call_second,
            dropped=dropped,
        )


def rtp_counts(calls: list[Call]) -> tuple[int, int]:
    """RTP packets received from / sent to Asterisk, summed over ``calls``."""
    rx = tx = 0
    for call in calls:
        media = call.media
        if media is not None:
            summary = media.summary()
            rx += summary.rx_received
            tx += summary.tx_packets
    return rx, tx


async def run_bench(
    args: argparse.Namespace, box: Sandbox, model_url: str, model_pid: int
) -> tuple[list[Row], cProfile.Profile | None]:
    bench = Bench(args, box, model_url, model_pid)
    rows: list[Row] = []
    async with AriClient(box.ari_url, box.ari_user, box.ari_password) as ari:
        try:
            for mode in args.modes:
                rows += await bench.run_mode(ari, mode)
        finally:
            with contextlib.suppress(Exception):
                await ari.hangup_all()
    return rows, bench.profiler


# --- output ----------------------------------------------------------------------------------


def _pct(seconds: float | None, wall: float) -> str:
    return "-" if seconds is None else f"{seconds / wall:.0%}"


def print_report(
    rows: list[Row], args: argparse.Namespace, load_before: str, floor: tuple[float, float]
) -> None:
    print()
    print(
        f"Python {platform.python_version()} on {platform.machine()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs; load average {load_before} before, {loadavg()} after"
    )
    print(
        f"caller: {CALLER_TONE_S:g} s tone + {CALLER_PAUSE_S:g} s silence, repeated; model: "
        f"{args.reply_ms} ms tone per turn in {args.chunk_ms} ms deltas at {args.speed:g}x"
    )
    if args.profile:
        print("NOTE: --profile was on: the CPU numbers include cProfile's overhead")
    print()
    print(
        f"{'calls':>5} {'mode':>7} {'window s':>8} {'ctrl CPU ms':>11} {'idle CPU ms':>11}"
        f" {'ms/call-s':>9} {'% budget':>8} {'marginal':>8}"
    )
    previous: dict[str, Row] = {}
    for r in rows:
        before = previous.get(r.mode)
        marginal = "-"
        if before is not None and r.calls != before.calls:
            extra_ms = r.window.cpu / r.window.wall - before.window.cpu / before.window.wall
            marginal = f"{extra_ms * 1000 / (r.calls - before.calls):.2f}"
        previous[r.mode] = r
        print(
            f"{r.calls:5d} {r.mode:>7} {r.window.wall:8.2f} {r.window.cpu * 1000:11.0f}"
            f" {r.idle_ms:11.0f} {r.ms_per_call_second:9.2f}"
            f" {r.ms_per_call_second / BUDGET_MS_PER_CALL_SECOND:8.0%} {marginal:>8}"
        )
    print(
        f"(ms/call-s = (ctrl CPU - idle CPU) / (calls x window); budget "
        f"{BUDGET_MS_PER_CALL_SECOND:g} ms per call-second;\n marginal = ms per call-second "
        "each call added since the previous row of the same mode costs)"
    )
    print()
    print("during each window (to judge the numbers above):")
    print(
        f"{'calls':>5} {'mode':>7} {'ctrl CPU':>8} {'of it sys':>9} {'sleeps':>6}"
        f" {'Asterisk':>8} {'model srv':>9} {'machine':>7} {'turns':>5}"
        f" {'rx pkt/s':>8} {'tx pkt/s':>8} {'ended':>5}"
    )
    for r in rows:
        w = r.window
        idle_switches = r.idle.switches / r.idle.wall * w.wall
        sleeps = (w.switches - idle_switches) / (r.calls * w.wall)
        print(
            f"{r.calls:5d} {r.mode:>7} {_pct(w.cpu, w.wall):>8} {w.sys / max(w.cpu, 1e-9):9.0%}"
            f" {sleeps:6.0f} {_pct(w.asterisk, w.wall):>8} {_pct(w.model, w.wall):>9}"
            f" {w.machine_busy:7.0%} {r.agent_turns:5.1f} {r.rx_pps:8.1f} {r.tx_pps:8.1f}"
            f" {r.dropped:5d}"
        )
    idles = {r.mode: r.idle for r in rows}
    for mode, idle in idles.items():
        print(
            f"{'idle':>5} {mode:>7} {_pct(idle.cpu, idle.wall):>8}"
            f" {idle.sys / max(idle.cpu, 1e-9):9.0%} {idle.switches / idle.wall:6.0f}"
            f" {_pct(idle.asterisk, idle.wall):>8} {_pct(idle.model, idle.wall):>9}"
            f" {idle.machine_busy:7.0%}"
        )
    print(
        "(CPU columns in % of one core; of it sys = the controller's share in the kernel;"
        "\n sleeps = the controller's voluntary context switches (event loop wake-ups) per"
        " call-second,\n idle subtracted (idle row: per second); machine = busy share of all"
        f" {os.cpu_count()} CPUs (tick-sampled,\n includes other users of the box);"
        f" turns = agent replies per call in the window (about window / {CYCLE_S:g} s);"
        "\n rx/tx pkt/s = RTP per call-second Asterisk -> controller / controller -> Asterisk;"
        "\n ended = calls that ended during the window (0 expected))"
    )
    floor_us, floor_switches = floor
    print()
    print(
        f"floor on this machine: a bare asyncio UDP receiver woken once per packet (500/s,"
        f" sender in\n another process) spends {floor_us:.0f} µs of CPU per packet"
        f" ({floor_switches:.2f} context switches each);\n at 50 inbound packets per call-second"
        f" that alone is {floor_us * 50 / 1000:.2f} ms per call-second"
        f" ({floor_us * 50 / 1000 / BUDGET_MS_PER_CALL_SECOND:.0%} of the budget)"
    )


# --- main ------------------------------------------------------------------------------------


def _modes(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v not in ("pcmu", "pcm24k") for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of pcmu, pcm24k")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="2 calls, pcmu, 3 s windows (a smoke test)"
    )
    parser.add_argument(
        "--calls",
        type=int_list,
        default=[1, 5, 10, 20],
        help="concurrent calls per step, comma-separated (default: 1,5,10,20)",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measurement window (default: %(default)s)"
    )
    parser.add_argument(
        "--modes",
        type=_modes,
        default=["pcmu", "pcm24k"],
        help="REALTIME_AUDIO modes, comma-separated (default: pcmu,pcm24k)",
    )
    parser.add_argument(
        "--reply-ms", type=int, default=1500, help="model reply per turn (default: %(default)s)"
    )
    parser.add_argument(
        "--chunk-ms", type=int, default=100, help="audio per model delta (default: %(default)s)"
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=4.0,
        help="model streaming speed vs real time (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the controller's log level; logs go to a file (default: %(default)s)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="cProfile the controller (CPU time, not wall time) during the windows with calls, "
        "write the pstats to FILE and print the top functions (inflates the CPU numbers)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE,
        help="the sandbox's state and the controller log (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.seconds, args.modes = [2], 3.0, ["pcmu"]
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    return args


def setup_file_logging(path: Path, level: str) -> None:
    """The controller logs as in production (one line per event), but to a file."""
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(RedactingFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("websockets", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.INFO))


def main() -> int:
    args = parse_args()
    if args.quick:
        print("quick mode: 2 calls, pcmu, 3 s windows, rough numbers")
    load_before = loadavg()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.state_dir / "controller.log"
    setup_file_logging(log_path, args.log_level)
    per_step = WARMUP_TIMEOUT_S + args.seconds + 2 * CYCLE_S
    print(
        f"bench_calls: modes {','.join(args.modes)}, calls {','.join(map(str, args.calls))}, "
        f"window {args.seconds:g} s; controller log: {log_path}",
        file=sys.stderr,
    )
    server: subprocess.Popen[str] | None = None
    box: Sandbox | None = None
    try:
        floor = wakeup_floor()
        server, url = start_model_server(
            tone_hz=440, tone_ms=args.reply_ms, chunk_ms=args.chunk_ms, speed=args.speed
        )
        box = start_sandbox_patiently(args.state_dir)
        write_conversation(box.shared_dir / "bench-conversation.wav", per_step)
        rows, profiler = asyncio.run(run_bench(args, box, url, server.pid))
    except KeyboardInterrupt:
        print("bench_calls: interrupted", file=sys.stderr)
        return 130
    except (SandboxError, RuntimeError, AssertionError) as exc:
        print(f"bench_calls: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            stop_process(server)
        if box is not None:
            box.stop()
    print_report(rows, args, load_before, floor)
    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"\ncProfile (CPU time) of the windows with calls ({args.profile}), top 30:")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
