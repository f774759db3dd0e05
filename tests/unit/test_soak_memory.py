"""bench/soak.py's memory evidence: what it prints names what a run kept alive."""

from __future__ import annotations

import importlib.util
import sys
import tracemalloc
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_under_test", REPO / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class KeptPerCall:
    """Stands for whatever a leaking controller would keep for each call."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.payload = [bytes(600) for _ in range(3)]


def test_the_report_names_the_type_and_the_line_that_grew_per_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    soak = load_soak()
    memory = soak.Memory(4)
    try:
        memory.mark(0.0, placed=0)
        kept = [KeptPerCall(n) for n in range(500)]
        memory.report(placed=500)
    finally:
        tracemalloc.stop()
    out = capsys.readouterr().out
    assert "(500 calls placed since)" in out
    assert f"('{__name__}.KeptPerCall', 500)" in out
    assert "test_soak_memory.py" in out.split("grown allocations")[1]  # where they came from
    assert len(kept) == 500


def test_the_per_report_sample_shows_rss_beside_the_live_heap() -> None:
    sample = load_soak().Memory(0).sample()
    assert sample.startswith("rss=")
    assert "blocks=" in sample and "objects=" in sample
