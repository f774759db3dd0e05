#!/usr/bin/env python3
"""A sandboxed Asterisk 22 without Docker, for the tests and the demo.

Stdlib only, usable as a module and as a command (from the repository root;
``python3 asterisk/sandbox.py ...`` does the same from anywhere)::

    python3 -m asterisk.sandbox build     # build the cached root fs (once, ~1 min)
    python3 -m asterisk.sandbox start     # start in the background, print how to reach it
    python3 -m asterisk.sandbox status
    python3 -m asterisk.sandbox cli 'core show channels'
    python3 -m asterisk.sandbox stop
    python3 -m asterisk.sandbox run       # start, wait for Ctrl-C, stop

The code lives in the package :mod:`asterisk.sandboxing`, one module per job
(root fs, prerequisites, configuration, the Asterisk process, ARI, command
line; its docstring has the map). This module is the stable name: it
re-exports that API (``from asterisk.sandbox import Sandbox, SandboxError,
CONF_DIR, ...``) and runs its command line.
"""

from __future__ import annotations

import importlib
import sys

if __package__:  # imported as asterisk.sandbox, or run as python3 -m asterisk.sandbox
    from .sandboxing import (
        CONF_DIR,
        DEFAULT_ROOTFS,
        RECIPE,
        SHARED_DIR_INSIDE,
        Sandbox,
        SandboxError,
        build_rootfs,
        check_prerequisites,
        conf_sections,
        rootfs_path,
        rootfs_ready,
    )
    from .sandboxing.cli import main

__all__ = [
    "CONF_DIR",
    "DEFAULT_ROOTFS",
    "RECIPE",
    "SHARED_DIR_INSIDE",
    "Sandbox",
    "SandboxError",
    "build_rootfs",
    "check_prerequisites",
    "conf_sections",
    "rootfs_path",
    "rootfs_ready",
]

if __name__ == "__main__":
    if not __package__:
        # Run by path: sys.path[0] is this file's directory (not the repository
        # root), where the package is importable as top-level ``sandboxing``.
        main = importlib.import_module("sandboxing.cli").main
    sys.exit(main())
