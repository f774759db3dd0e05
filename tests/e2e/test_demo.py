"""`make demo` (the README's first command) works: a call end to end, its latency and cost.

It runs ``python -m controller demo`` as the Makefile does, beside the
session's sandbox (the demo takes the first free set of ports).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_places_a_call_and_reports_it() -> None:
    timeline = REPO / "demo-out" / "timeline.svg"
    timeline.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "controller", "demo"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "it is not a real model" in out
    # What the caller said reached the model, and the agent's answer came back.
    assert re.search(r"^ +t= *[\d.]+s +caller: .*shop opens tomorrow", out, re.MULTILINE), out
    assert re.search(r"^ +t= *[\d.]+s +agent: ", out, re.MULTILINE), out
    assert re.search(r"turn 0: .*first frame to the caller \d+ ms", out), out
    assert re.search(r"cost: \$\d+\.\d{4}", out), out
    assert timeline.read_text().startswith("<svg")
