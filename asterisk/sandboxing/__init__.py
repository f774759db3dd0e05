"""A sandboxed Asterisk 22 without Docker, for the tests and the demo, split by job.

Standard library only (it runs before any virtualenv exists). Import it as
:mod:`asterisk.sandbox`, which re-exports this package's API and is also the
command (``python3 -m asterisk.sandbox --help``). Everything needs root
(mount namespaces, chroot).

Modules:

- :mod:`.common`: :class:`SandboxError`, the progress log, host tool lookup,
  log tails, mount-safe deletion.
- :mod:`.prereqs`: whether the host can run the sandbox (and installing
  debootstrap).
- :mod:`.rootfs`: the cached Debian sid root fs with Asterisk: where it is,
  whether it is current, building it under a lock.
- :mod:`.conf`: where the Asterisk configuration comes from
  (:data:`CONF_DIR`) and a reader for ``.conf`` files.
- :mod:`.process`: :class:`Sandbox`, one Asterisk in its own mount namespace
  and state directory: start, stop, attach, CLI commands, logs.
- :mod:`.ari`: the tiny urllib ARI client behind :meth:`Sandbox.ari`.
- :mod:`.cli`: the command line (``build``, ``start``, ``status``, ``cli``,
  ``stop``, ``run``).
"""

from .common import SandboxError
from .conf import CONF_DIR, conf_sections
from .prereqs import check_prerequisites
from .process import SHARED_DIR_INSIDE, Sandbox
from .rootfs import DEFAULT_ROOTFS, RECIPE, build_rootfs, rootfs_path, rootfs_ready

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
