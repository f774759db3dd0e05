"""The sandbox's command line: build the root fs, start/stop/inspect a background sandbox.

Run it from the repository root as ``python3 -m asterisk.sandbox`` (or by
path, from anywhere, as ``python3 asterisk/sandbox.py``)::

    python3 -m asterisk.sandbox build     # build the cached root fs (once, ~1 min)
    python3 -m asterisk.sandbox start     # start in the background, print how to reach it
    python3 -m asterisk.sandbox status
    python3 -m asterisk.sandbox cli 'core show channels'
    python3 -m asterisk.sandbox stop
    python3 -m asterisk.sandbox run       # start, wait for Ctrl-C, stop

The background sandbox lives in one state directory (``--state-dir``,
``$ARI_REALTIME_SANDBOX_STATE`` or :data:`DEFAULT_CLI_STATE`); ``start``
leaves Asterisk running after the command exits, and the other commands
find it again from that directory (:meth:`Sandbox.attach`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from .common import SandboxError, tail
from .process import Sandbox
from .rootfs import STAMP_NAME, build_rootfs

__all__ = ["DEFAULT_CLI_STATE", "STATE_ENV", "main"]

#: Default state directory of the command line's background sandbox.
DEFAULT_CLI_STATE = Path("/var/tmp/ari-realtime/sandbox")
STATE_ENV = "ARI_REALTIME_SANDBOX_STATE"


def _cli_state(args: argparse.Namespace) -> Path:
    if args.state_dir:
        return Path(args.state_dir).absolute()
    value = os.environ.get(STATE_ENV, "").strip()
    return Path(value).absolute() if value else DEFAULT_CLI_STATE


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 on a :class:`SandboxError` (printed
        to stderr), 3 from ``status`` when no sandbox runs.
    """
    parser = argparse.ArgumentParser(
        prog="sandbox.py",
        description="Run the project's Asterisk 22 in a chroot + private mount namespace "
        "(no Docker). Needs root.",
    )
    parser.add_argument(
        "--state-dir",
        help=f"state directory of the background sandbox (default ${STATE_ENV} "
        f"or {DEFAULT_CLI_STATE})",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the cached root fs (if missing or stale)")
    build.add_argument("--force", action="store_true", help="rebuild even if present")
    sub.add_parser("start", help="start in the background and wait until ARI answers")
    sub.add_parser("stop", help="stop the background sandbox")
    sub.add_parser("status", help="say whether the background sandbox runs")
    cli = sub.add_parser("cli", help="run an Asterisk CLI command in the background sandbox")
    cli.add_argument("cli_command", nargs="+", help="e.g. 'core show channels'")
    sub.add_parser("run", help="start in the foreground; Ctrl-C stops it")
    args = parser.parse_args(argv)
    state = _cli_state(args)
    try:
        if args.command == "build":
            path = build_rootfs(force=args.force)
            print(f"root fs ready: {path} ({(path / STAMP_NAME).read_text().splitlines()[1]})")
        elif args.command == "start":
            with contextlib.suppress(SandboxError):
                box = Sandbox.attach(state)
                print(box.describe())
                return 0
            box = Sandbox(state).start()
            box._proc = None  # keep running after this process exits
            print(box.describe())
        elif args.command == "stop":
            try:
                box = Sandbox.attach(state)
            except SandboxError as exc:
                print(str(exc))
                return 0
            box.stop()
            print(f"stopped the sandbox in {state}")
        elif args.command == "status":
            try:
                print(Sandbox.attach(state).describe())
            except SandboxError as exc:
                print(str(exc))
                return 3
        elif args.command == "cli":
            sys.stdout.write(Sandbox.attach(state).cli(" ".join(args.cli_command)))
        elif args.command == "run":
            return _run_foreground(state)
    except SandboxError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


def _run_foreground(state: Path) -> int:
    stopping = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    with Sandbox(state, die_with_parent=True) as box:
        # Explicit handlers: a background job starts with SIGINT ignored.
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        print(box.describe(), flush=True)
        print("Ctrl-C stops it.", flush=True)
        while box.running and not stopping:
            time.sleep(0.2)
        if not box.running:
            print("Asterisk exited on its own:\n" + tail(box.log_path, 20), file=sys.stderr)
            return 1
    return 0
