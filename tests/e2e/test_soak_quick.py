"""bench/soak.py in its quick mode: it runs to the end and a short soak leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_soak_script_runs_and_a_short_soak_leaves_nothing_behind() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "soak.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "left behind: 0 channels, 0 bridges, 0 live records" in proc.stdout, proc.stdout
