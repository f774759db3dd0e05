"""Whether this host can run the sandbox, and installing what it lacks.

Everything needs root (mount namespaces, chroot). Prerequisites that are
missing are reported in one line (:class:`~.common.SandboxError`).
:func:`check_prerequisites` checks Linux, root and the util-linux/coreutils
tools; building the root fs also needs debootstrap, which it can install
with apt-get.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .common import SYSTEM_PATH, Log, SandboxError, stderr, which

__all__ = ["check_prerequisites"]


def check_prerequisites(*, build: bool = False, install: bool = False, log: Log = stderr) -> None:
    """Raise :class:`SandboxError` (one line) if the host cannot run the sandbox.

    With ``build``, debootstrap is needed too; with ``install`` (and root), a
    missing debootstrap is installed with apt-get instead of reported.
    """
    if not sys.platform.startswith("linux"):
        raise SandboxError("asterisk sandbox: needs Linux (mount namespaces and chroot)")
    if os.geteuid() != 0:
        raise SandboxError(
            "asterisk sandbox: needs root (it uses mount namespaces and chroot); "
            "run as root, e.g. `sudo make test`"
        )
    packages = {
        "unshare": "util-linux",
        "nsenter": "util-linux",
        "setpriv": "util-linux",
        "mount": "mount",
        "chroot": "coreutils",
    }
    for tool, package in packages.items():
        if which(tool) is None:
            raise SandboxError(
                f"asterisk sandbox: `{tool}` not found; install it: apt-get install {package}"
            )
    if build and which("debootstrap") is None:
        if install and which("apt-get") is not None:
            log("asterisk sandbox: installing debootstrap (apt-get install debootstrap)")
            _apt_install(["debootstrap"])
        if which("debootstrap") is None:
            raise SandboxError(
                "asterisk sandbox: debootstrap is not installed (needed once to build the "
                "Asterisk root fs); install it: apt-get install debootstrap"
            )


def _apt_install(packages: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH=SYSTEM_PATH)
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise SandboxError(
            f"asterisk sandbox: apt-get install {' '.join(packages)} failed: {' '.join(tail)}"
        )
