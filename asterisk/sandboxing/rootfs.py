"""The cached Asterisk root file system: where it is, whether it is ready, building it.

Asterisk comes from Debian unstable (Asterisk is not in Debian 12):
``debootstrap --variant=minbase --include=asterisk sid`` builds a root file
system into a temporary directory, which is renamed into place once it is
complete and stamped. The cache lives outside the clone, in
``/var/cache/ari-realtime/rootfs`` (``ARI_REALTIME_ROOTFS`` overrides it) and
is reused as long as its stamp matches :data:`RECIPE`. Concurrent builders
serialise on a lock file next to it; sandboxes only ever read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .common import SYSTEM_PATH, Log, SandboxError, remove_tree, stderr, tail, tool
from .prereqs import check_prerequisites

__all__ = [
    "ASTERISK_BIN",
    "DEFAULT_MIRROR",
    "DEFAULT_ROOTFS",
    "MIRROR_ENV",
    "RECIPE",
    "ROOTFS_ENV",
    "STAMP_NAME",
    "build_rootfs",
    "rootfs_path",
    "rootfs_ready",
]

#: Default location of the cached root fs (outside the clone).
DEFAULT_ROOTFS = Path("/var/cache/ari-realtime/rootfs")
ROOTFS_ENV = "ARI_REALTIME_ROOTFS"
MIRROR_ENV = "ARI_REALTIME_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: What the cached root fs is built from. Changing it makes every cache stale.
RECIPE = "ari-realtime-rootfs 1: debootstrap --variant=minbase --include=asterisk sid"
STAMP_NAME = ".ari-realtime-rootfs"
#: Asterisk's binary, inside the root fs.
ASTERISK_BIN = "/usr/sbin/asterisk"


def rootfs_path() -> Path:
    """The cached root fs: ``$ARI_REALTIME_ROOTFS`` or :data:`DEFAULT_ROOTFS`."""
    value = os.environ.get(ROOTFS_ENV, "").strip()
    return Path(value) if value else DEFAULT_ROOTFS


def rootfs_ready(root: Path | None = None) -> bool:
    """True if ``root`` is a complete root fs built from the current :data:`RECIPE`."""
    root = rootfs_path() if root is None else root
    try:
        first = (root / STAMP_NAME).read_text().splitlines()[0]
    except (OSError, IndexError):
        return False
    return first == RECIPE and (root / ASTERISK_BIN.lstrip("/")).is_file()


def build_rootfs(
    root: Path | None = None,
    *,
    mirror: str | None = None,
    force: bool = False,
    install: bool = True,
    log: Log = stderr,
) -> Path:
    """Build the cached root fs if it is missing or stale, and return its path.

    debootstrap runs into a temporary directory next to ``root`` (inside a
    private mount namespace, so nothing it mounts can leak); the result is
    checked, stamped and renamed into place atomically. Concurrent callers
    serialise on a lock file; a failed build leaves nothing behind.
    """
    root = (rootfs_path() if root is None else root).absolute()
    if rootfs_ready(root) and not force:
        return root
    check_prerequisites(build=True, install=install, log=log)
    mirror = mirror or os.environ.get(MIRROR_ENV, "").strip() or DEFAULT_MIRROR
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root.parent / f".{root.name}.lock"):
        if rootfs_ready(root) and not force:
            return root
        build_log = root.parent / f"{root.name}.build.log"
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.build-", dir=root.parent))
        tmp.chmod(0o755)
        log(f"asterisk sandbox: building {root} with debootstrap (~1 min; log: {build_log})")
        started = time.monotonic()
        try:
            cmd = [
                tool("unshare"),
                "--mount",
                "--propagation",
                "private",
                tool("debootstrap"),
                "--variant=minbase",
                "--include=asterisk",
                "sid",
                str(tmp),
                mirror,
            ]
            with build_log.open("wb") as out:
                result = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(os.environ, PATH=SYSTEM_PATH, DEBIAN_FRONTEND="noninteractive"),
                    check=False,
                )
            if result.returncode != 0:
                raise SandboxError(
                    f"asterisk sandbox: debootstrap failed (exit {result.returncode}) "
                    f"building {root} from {mirror}; see {build_log}\n" + tail(build_log, 15)
                )
            _finish_rootfs(tmp)
            if root.exists() or root.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
                os.rename(root, old / "rootfs")
                remove_tree(old)
            os.rename(tmp, root)
        except BaseException:
            remove_tree(tmp)
            raise
        log(f"asterisk sandbox: built {root} in {time.monotonic() - started:.0f} s")
    return root


def _finish_rootfs(root: Path) -> None:
    """Check a fresh root fs, link sounds/en, and stamp it."""
    if not (root / ASTERISK_BIN.lstrip("/")).is_file():
        raise SandboxError(f"asterisk sandbox: {root} has no {ASTERISK_BIN} after debootstrap")
    sounds = root / "usr/share/asterisk/sounds"
    # Debian installs the English prompts as sounds/en_US_f_Allison; sounds/en
    # is an alternatives link that may be missing. Asterisk looks in sounds/en.
    if _resolve_in_root(root, "/usr/share/asterisk/sounds/en") is None:
        allison = sounds / "en_US_f_Allison"
        if not allison.is_dir():
            raise SandboxError(f"asterisk sandbox: no English prompts in {sounds}")
        link = sounds / "en"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("en_US_f_Allison")
    version = _dpkg_version(root, "asterisk")
    (root / STAMP_NAME).write_text(
        f"{RECIPE}\nasterisk={version}\nbuilt={time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
    )


def _dpkg_version(root: Path, package: str) -> str:
    try:
        status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return "unknown"
    for block in status.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", block, re.M):
            found = re.search(r"^Version: (.+)$", block, re.M)
            return found.group(1) if found else "unknown"
    return "unknown"


def _resolve_in_root(root: Path, path: str, depth: int = 0) -> Path | None:
    """Resolve ``path`` as the chroot would (absolute links stay inside ``root``)."""
    if depth > 20:
        return None
    current = root
    parts = [p for p in path.split("/") if p]
    for index, part in enumerate(parts):
        candidate = current / part
        if candidate.is_symlink():
            target = os.readlink(candidate)
            inside = target if target.startswith("/") else str(current.relative_to(root) / target)
            rest = "/".join(parts[index + 1 :])
            return _resolve_in_root(root, "/" + inside.lstrip("/") + "/" + rest, depth + 1)
        if not candidate.exists():
            return None
        current = candidate
    return current


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
