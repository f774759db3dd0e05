"""The benchmarks of ``make bench`` run to the end (in quick mode), so they cannot rot.

Only that they finish and print their numbers is checked: the numbers
themselves are not asserted (timing claims live in the benchmarks).
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


@pytest.mark.parametrize(
    ("script", "patterns"),
    [
        (
            "bench_media.py",
            [
                rf"inbound pcmu: parse \+ stats \+ deliver +{NUMBER} +{NUMBER} +{NUMBER}x",
                rf"sendto \+ RtpEndpoint\.poll receive +{NUMBER}",
                r"pcmu +\d+ µs = +\d+\.\d% of the 5 ms budget",
                r"pcm24k +\d+ µs = +\d+\.\d% of the 5 ms budget",
            ],
        ),
        (
            "bench_realtime.py",
            [
                rf"pcmu 20 ms \(160 B\) +{NUMBER} +{NUMBER} +{NUMBER}x",
                rf"pcm24k 100 ms \(4800 B\) +{NUMBER} +{NUMBER} +{NUMBER}x",
            ],
        ),
        (
            "bench_hostile.py",
            [
                rf"idle \(no message\) +{NUMBER} +{NUMBER}",
                rf"1 MiB delta +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}  played",
                rf"8 MiB delta +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}  refused \(1009\)",
            ],
        ),
    ],
)
def test_benchmark_runs_in_quick_mode(script: str, patterns: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "quick mode" in result.stdout
    for pattern in patterns:
        assert re.search(pattern, result.stdout), (pattern, result.stdout)
