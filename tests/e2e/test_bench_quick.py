"""The benchmarks that place real calls through the sandbox run to the end in quick mode.

They start their own sandboxed Asterisk (free ports picked) beside the
session's, so they only need root; each takes about 15 seconds. Only that
they finish and print their table is checked (see tests/unit/test_bench.py).
"""

from __future__ import annotations

import re

import pytest

from tests.unit.test_bench import NUMBER, SANDBOX, run_quick

PATTERNS = {
    "bench_calls.py": rf"^ +2 +pcmu +{NUMBER} +\d+ +\d+ +{NUMBER}",
    "bench_latency.py": rf"^controller pcmu +\d+ +\d+ +{NUMBER} +{NUMBER}",
}


@pytest.mark.parametrize("script", sorted(SANDBOX))
def test_sandbox_benchmark_runs_in_quick_mode(script: str) -> None:
    result = run_quick(script, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "quick mode" in result.stdout
    assert re.search(PATTERNS[script], result.stdout, re.MULTILINE), result.stdout
