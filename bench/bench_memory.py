"""Memory at start: what the fixed dependencies cost, what this project adds, the idle controller.

Prints numbers only (no asserts). Two measurements:

* **layers**: one fresh interpreter imports, in order, the standard
  library's networking (``ssl``, ``asyncio``), then each fixed dependency
  (pydantic and pydantic-settings, aiohttp's client and server, websockets,
  prometheus-client, aiosqlite), then the controller's own modules; the RSS
  after each step is printed with its increase. The dependencies' total is
  the baseline this project's own code is measured beside.
* **the idle controller**: ``ari-realtime run`` as an operator starts it
  (HTTP API, SQLite records, metrics) in ``pcmu`` (on uvloop, the default, and
  on asyncio's loop) and in ``pcm24k``, with
  Asterisk unreachable so no call arrives; RSS, its anonymous and
  file-backed parts (``/proc/PID/smaps_rollup``), and whether numpy and soxr
  were loaded (``pcmu`` needs neither).

What a call adds is measured under load by ``bench/bench_scale.py``
(``KiB/call``).

    .venv/bin/python bench/bench_memory.py [--quick]

``--quick`` is the same measurement (it takes seconds); the test suite runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import REPO, free_port, stop_process  # noqa: E402

#: (label, modules imported at that step). Dependencies first, then ours.
LAYERS: list[tuple[str, list[str]]] = [
    ("ssl + asyncio (standard library)", ["ssl", "asyncio"]),
    ("pydantic + pydantic-settings", ["pydantic", "pydantic.main", "pydantic_settings"]),
    ("aiohttp (client)", ["aiohttp"]),
    ("aiohttp.web (HTTP API server)", ["aiohttp.web"]),
    ("websockets (client)", ["websockets.asyncio.client"]),
    ("prometheus-client", ["prometheus_client"]),
    ("aiosqlite", ["aiosqlite"]),
    ("uvloop (EVENT_LOOP=auto)", ["uvloop"]),
    ("controller: settings", ["controller.config"]),
    ("controller: Realtime + ARI events", ["controller.realtime.events", "controller.ari.events"]),
    ("controller: the call", ["controller.call.call"]),
    ("controller: app, pool, HTTP, store", ["controller.app", "controller.serve"]),
    ("controller: the CLI", ["controller.cli"]),
]
#: The first layer that is this project's code.
FIRST_OURS = "controller: settings"

_LAYER_SCRIPT = """
import importlib, json, sys
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
layers = json.loads(sys.argv[1])
out = [["python", rss()]]
for label, modules in layers:
    for name in modules:
        importlib.import_module(name)
    out.append([label, rss()])
print(json.dumps(out))
"""


def measure_layers() -> list[tuple[str, float]]:
    """RSS (MiB) after each layer, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", _LAYER_SCRIPT, json.dumps(LAYERS)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [(label, float(value)) for label, value in json.loads(result.stdout)]


_IDLE_SCRIPT = """
import json, sys, threading, time
def report():
    time.sleep(float(sys.argv[1]))
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    loaded = [m for m in ("numpy", "soxr", "asyncpg", "uvloop") if m in sys.modules]
    print("MEMORY " + json.dumps({"fields": fields, "loaded": loaded}), flush=True)
threading.Thread(target=report, daemon=True).start()
from controller.cli import main
sys.exit(main(["run"]))
"""


def measure_idle(mode: str, loop: str, settle: float, state: Path) -> dict[str, object]:
    """Start ``ari-realtime run`` (Asterisk unreachable), read its memory after ``settle`` s."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ARI_", "REALTIME_"))},
        "PYTHONPATH": str(REPO),
        "ARI_URL": f"http://127.0.0.1:{free_port()}",
        "ARI_USER": "bench",
        "ARI_PASSWORD": "bench-memory-password",
        "OPENAI_API_KEY": "sk-bench-memory",
        "REALTIME_AUDIO": mode,
        "EVENT_LOOP": loop,
        "MEDIA_ADDRESS": "127.0.0.1",
        "HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "DATABASE_URL": f"sqlite://{state / f'{mode}-{loop}.db'}",
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", _IDLE_SCRIPT, str(settle)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + settle + 60
        for line in proc.stdout:
            if line.startswith("MEMORY "):
                found: dict[str, object] = json.loads(line[len("MEMORY ") :])
                return found
            if time.monotonic() > deadline:
                break
        raise RuntimeError(f"the {mode} controller printed no memory line (exit {proc.poll()})")
    finally:
        stop_process(proc)


def print_layers(layers: list[tuple[str, float]]) -> None:
    print(f"{'layer (imported in this order)':40} {'+MiB':>6} {'RSS MiB':>8}")
    previous = layers[0][1]
    print(f"{layers[0][0]:40} {'':>6} {previous:8.1f}")
    deps_end = previous
    for label, value in layers[1:]:
        if label == FIRST_OURS:
            deps_end = previous
        print(f"{label:40} {value - previous:6.1f} {value:8.1f}")
        previous = value
    python = layers[0][1]
    print(
        f"the fixed dependencies: {deps_end - python:.1f} MiB over the interpreter's {python:.1f};"
        f" this project's modules: {previous - deps_end:.1f} MiB more"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the same, stated as a smoke test")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds the idle controller runs first"
    )
    args = parser.parse_args(argv)
    if args.quick:
        print("quick mode: the same measurement, a shorter settle")
        args.settle = 1.5
    print(f"Python {sys.version.split()[0]}; RSS of fresh interpreters\n")
    print_layers(measure_layers())
    print()
    print(f"{'idle controller':24} {'RSS MiB':>8} {'anon':>6} {'file':>6}  loaded")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for mode, loop in (("pcmu", "auto"), ("pcmu", "asyncio"), ("pcm24k", "auto")):
            found = measure_idle(mode, loop, args.settle, Path(tmp))
            fields = found["fields"]
            assert isinstance(fields, dict)
            loaded = found["loaded"]
            assert isinstance(loaded, list)
            print(
                f"{f'run, {mode}, {loop}':24} {fields.get('Rss', 0.0):8.1f}"
                f" {fields.get('Anonymous', 0.0):6.1f}"
                f" {fields.get('Rss', 0.0) - fields.get('Anonymous', 0.0):6.1f}"
                f"  {', '.join(loaded) or '-'}"
            )
    print("(per call: bench/bench_scale.py's KiB/call column)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
