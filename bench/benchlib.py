"""Helpers the whole-system benchmarks share (not a benchmark itself).

Processes (the local model server, the controller under test), their CPU
and memory from ``/proc``, percentiles, the sandboxed Asterisk started
patiently while other sandboxes hold every port set.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.devtools.rig.audio import write_wav  # noqa: E402
from controller.devtools.rig.pool import free_port  # noqa: E402
from controller.devtools.rig.sandbox import Sandbox, SandboxError, start_sandbox  # noqa: E402

__all__ = ["free_port"]  # re-exported for the benchmarks

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The callers' turn pattern in bench_calls and bench_pool: this much tone, then silence.
CALLER_TONE_S = 1.5
CALLER_PAUSE_S = 2.5
CYCLE_S = CALLER_TONE_S + CALLER_PAUSE_S


def die_with_parent() -> None:
    """In a child (``preexec_fn``): get SIGTERM when the benchmark dies, so nothing lingers."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def int_list(text: str) -> list[int]:
    """An argparse type: a comma-separated list of positive integers (``--calls 1,5,10``)."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def proc_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + sys) of a process, from /proc; None if unknown."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    return total - values[3] - values[4], total


def proc_memory(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc/PID/status (0 if unknown)."""
    rss = hwm = 0.0
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return rss, hwm
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stop_process(proc: subprocess.Popen[str], timeout: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def write_conversation(path: Path, seconds: float, rate: int = 8000) -> Path:
    """Tone-and-pause cycles (8 kHz WAV) lasting at least ``seconds``."""
    n_tone = int(CALLER_TONE_S * rate)
    t = np.arange(n_tone) / rate
    tone = 0.3 * np.sin(2 * np.pi * 700.0 * t)  # about -13 dBFS: speech for the VAD
    fade = int(0.005 * rate)
    ramp = np.linspace(0.0, 1.0, fade)
    tone[:fade] *= ramp
    tone[-fade:] *= ramp[::-1]
    cycle = np.concatenate([tone, np.zeros(int(CALLER_PAUSE_S * rate))])
    return write_wav(path, np.tile(cycle, math.ceil(seconds / CYCLE_S)), rate)


def start_model_server(
    *,
    tone_hz: float,
    tone_ms: int,
    chunk_ms: int = 100,
    speed: float = 4.0,
    extra: Sequence[str] = (),
) -> tuple[subprocess.Popen[str], str]:
    """Start ``controller model-server`` (tone replies) on a free port; return it and its URL."""
    cmd = [
        sys.executable,
        *("-m", "controller", "model-server", "--port", "0", "--reply", "tone"),
        *("--tone-hz", str(tone_hz), "--tone-ms", str(tone_ms)),
        *("--chunk-ms", str(chunk_ms), "--speed", str(speed)),
        *("--transcript", "A tone.", "--input-transcript", "Hello."),
        *extra,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "... listening on ws://127.0.0.1:PORT/v1/realtime"
    match = re.search(r"ws://\S+/v1/realtime", line)
    if match is None:
        stop_process(proc)
        raise RuntimeError(f"the model server did not start: {line.strip()!r}")
    return proc, match.group(0)


def start_logged(
    cmd: Sequence[str], env: dict[str, str], log_path: Path
) -> tuple[subprocess.Popen[str], IO[str]]:
    """Start ``cmd`` with its stdout and stderr going to ``log_path``."""
    log = log_path.open("w")
    proc = subprocess.Popen(
        list(cmd),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent,
    )
    return proc, log


def wait_for_line(
    proc: subprocess.Popen[str], log_path: Path, pattern: str, timeout: float
) -> None:
    """Wait until ``log_path`` has a line matching ``pattern`` (the process must stay up)."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if regex.search(log_path.read_text(errors="replace")):
            return
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tail}")
        time.sleep(0.05)
    raise RuntimeError(f"no {pattern!r} in {log_path} within {timeout:g} s")


def start_sandbox_patiently(state_dir: Path, patience: float = 120.0) -> Sandbox:
    """:func:`start_sandbox`, waiting while other sandboxes hold every port set."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return start_sandbox(state_dir)
        except SandboxError as exc:
            if "in use" not in str(exc) or time.monotonic() > deadline:
                raise
            print(f"{Path(sys.argv[0]).name}: {exc}; retrying", file=sys.stderr)
            time.sleep(3.0)
