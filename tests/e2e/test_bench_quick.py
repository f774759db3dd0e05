"""The benchmarks that need the sandboxed Asterisk, in their quick modes: they run to the end
and print their tables (numbers are not judged; they cannot rot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("script", "expect"),
    [
        ("bench_calls.py", "ms/call-s"),
        ("bench_ari_transport.py", "websocket"),
        ("bench_pool.py", "workers"),
        ("bench_latency.py", "p50 ms"),
    ],
)
def test_a_sandbox_benchmark_runs_in_quick_mode(script: str, expect: str, tmp_path: Path) -> None:
    # bench_calls keeps its sandbox in a fixed state dir by default: use a fresh one.
    fixed_state = ("bench_calls.py", "bench_latency.py")
    extra = ["--state-dir", str(tmp_path)] if script in fixed_state else []
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick", *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert expect in proc.stdout, proc.stdout[-3000:]
