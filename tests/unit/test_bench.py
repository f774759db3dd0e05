"""The benchmarks run to the end (in quick mode), so they cannot rot.

Every ``bench/bench_*.py`` takes ``--quick`` and prints its table. Only that
they finish and print their numbers is checked: the numbers themselves are
not asserted (timing claims live in the benchmarks). The ones that need the
sandboxed Asterisk (:data:`SANDBOX`) run in ``tests/e2e/test_bench_quick.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"\d+\.\d+"
#: Benchmarks that place real calls through the sandbox (root): run under tests/e2e.
SANDBOX = {"bench_calls.py", "bench_latency.py", "bench_ari_transport.py", "bench_pool.py"}
#: What each benchmark's quick run must print, beyond "quick mode".
PATTERNS: dict[str, list[str]] = {
    "bench_media.py": [
        rf"inbound pcmu: parse \+ stats \+ deliver +{NUMBER} +{NUMBER} +{NUMBER}x",
        rf"sendto \+ RtpEndpoint\.poll receive +{NUMBER}",
        r"pcmu +\d+ µs = +\d+\.\d% of the 5 ms budget",
        r"pcm24k +\d+ µs = +\d+\.\d% of the 5 ms budget",
    ],
    "bench_realtime.py": [
        rf"pcmu 20 ms \(160 B\) +{NUMBER} +{NUMBER} +{NUMBER}x",
        rf"pcm24k 100 ms \(4800 B\) +{NUMBER} +{NUMBER} +{NUMBER}x",
    ],
    "bench_hostile.py": [
        rf"idle \(no message\) +{NUMBER} +{NUMBER}",
        rf"1 MiB delta +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}  played",
        rf"8 MiB delta +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}  refused \(1009\)",
    ],
    "bench_memory.py": [
        rf"the fixed dependencies: {NUMBER} MiB over the interpreter's {NUMBER}",
        # pcmu needs neither numpy nor soxr.
        rf"^run, pcmu, auto +{NUMBER} +{NUMBER} +{NUMBER}  (?!.*numpy)(?!.*soxr).*$",
    ],
    "bench_resample.py": [
        rf"soxr MQ minimum +{NUMBER}/ *{NUMBER}",
        rf"Fir3 \(73 taps\) +{NUMBER}/ *{NUMBER}",
    ],
    "bench_scale.py": [rf"^ +10 +{NUMBER} +\d+% +{NUMBER}"],
}
BENCHMARKS = sorted(p.name for p in (REPO / "bench").glob("bench_*.py"))


def run_quick(script: str, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick", *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_benchmark_is_covered() -> None:
    assert set(BENCHMARKS) >= SANDBOX | set(PATTERNS)


#: These keep state in a fixed directory by default: the test gives each run its own.
STATE_DIR = {"bench_scale.py"}


@pytest.mark.parametrize("script", [b for b in BENCHMARKS if b not in SANDBOX])
def test_benchmark_runs_in_quick_mode(script: str, tmp_path: Path) -> None:
    extra = ["--state-dir", str(tmp_path)] if script in STATE_DIR else []
    result = run_quick(script, *extra)
    assert result.returncode == 0, result.stderr
    assert "quick mode" in result.stdout
    for pattern in PATTERNS.get(script, [rf"{NUMBER}"]):
        assert re.search(pattern, result.stdout, re.MULTILINE), (pattern, result.stdout)
