"""What every part of the sandbox shares: its error, its progress log, host tools, files.

:class:`SandboxError` is the one exception the sandbox raises for anything
the caller can fix (one line saying what is wrong and what to do). The rest
are small host-side helpers used by more than one module: finding a host
tool also in the sbin directories (a user's PATH often lacks them), the tail
of a log file for error messages, and deleting a directory tree without ever
crossing into something mounted below it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "SYSTEM_PATH",
    "Log",
    "SandboxError",
    "mounts_under",
    "remove_tree",
    "stderr",
    "tail",
    "tool",
    "which",
]


class SandboxError(RuntimeError):
    """The sandbox cannot be built, started, reached or stopped.

    The message is one line saying what is wrong and what to do, optionally
    followed by the tail of Asterisk's log.
    """


Log = Callable[[str], None]


def stderr(msg: str) -> None:
    """The default :data:`Log`: print ``msg`` to stderr at once."""
    print(msg, file=sys.stderr, flush=True)


#: The PATH host tools are looked up in and run with (it has the sbin directories).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def which(tool: str) -> str | None:
    """``shutil.which`` that also looks in the sbin directories (not in a user's PATH)."""
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":" + SYSTEM_PATH)


def tool(name: str) -> str:
    """The path of host tool ``name``.

    Raises:
        SandboxError: if it is not installed.
    """
    path = which(name)
    if path is None:
        raise SandboxError(f"asterisk sandbox: `{name}` not found")
    return path


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, indented, without colour codes."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path}: no log)"
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    kept = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join(f"  | {line}" for line in kept) or f"({path} is empty)"


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    prefix = str(path.absolute()).rstrip("/")
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_bytes().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            point = _mountinfo_path(fields[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _mountinfo_path(field: bytes) -> str:
    """A path as ``/proc/*/mountinfo`` writes it, decoded like :class:`~pathlib.Path` does.

    Fields are separated by single spaces. The kernel writes a path's bytes
    as they are, except space, tab, newline and backslash, which become
    ``\\ooo`` octal escapes.
    """
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)
    return os.fsdecode(raw)


def remove_tree(path: Path) -> None:
    """``rm -rf --one-file-system``, refusing if anything is mounted below."""
    if not (path.exists() or path.is_symlink()):
        return
    mounted = mounts_under(path)
    if mounted:
        raise SandboxError(
            f"asterisk sandbox: refusing to delete {path}: still mounted: {', '.join(mounted)}"
        )
    subprocess.run([tool("rm"), "-rf", "--one-file-system", "--", str(path)], check=False)
