"""The benchmarks that place real calls through the sandbox run to the end in quick mode.

They start their own sandboxed Asterisk (free ports picked) beside the
session's, so they only need root. Only that they finish and print their
table is checked (see tests/unit/test_bench.py): numbers are not judged.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.test_bench import NUMBER, SANDBOX, run_quick

PATTERNS = {
    "bench_calls.py": rf"^ +2 +pcmu +{NUMBER} +\d+ +\d+ +{NUMBER}",
    "bench_latency.py": rf"^controller pcmu +\d+ +\d+ +{NUMBER} +{NUMBER}",
    "bench_ari_transport.py": r"websocket",
    "bench_pool.py": r"workers",
}
#: These keep their sandbox in a fixed state dir by default: each run gets a fresh one.
FIXED_STATE = {"bench_calls.py", "bench_latency.py"}


def test_every_sandbox_benchmark_has_a_pattern() -> None:
    assert set(PATTERNS) == SANDBOX


@pytest.mark.parametrize("script", sorted(SANDBOX))
def test_sandbox_benchmark_runs_in_quick_mode(script: str, tmp_path: Path) -> None:
    extra = ["--state-dir", str(tmp_path)] if script in FIXED_STATE else []
    result = run_quick(script, *extra, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(PATTERNS[script], result.stdout, re.MULTILINE), result.stdout[-3000:]
