"""One sandboxed Asterisk process: state directory, mounts, start, stop, talking to it.

Each run gets its own state directory. Asterisk runs in a private mount
namespace (``unshare --mount --propagation private``), chrooted into a
read-only bind mount of the cached root fs, with /proc and /dev bound in,
tmpfs on /run and /tmp, and the state directory's subdirectories bound
over /etc/asterisk, /var/spool/asterisk, /var/log/asterisk,
/var/lib/asterisk (AstDB) and /var/cache/asterisk. The cached root fs is
never written to, and two runs never share state. The mounts exist only in
Asterisk's namespace, so they vanish with the process.

/etc/asterisk is Debian's default configuration with the repository's
``asterisk/*.conf`` files on top (:data:`~.conf.CONF_DIR`, the same files
the Docker image uses), plus any ``extra_conf`` files the caller passes.
``/var/spool/asterisk/shared`` inside is :attr:`Sandbox.shared_dir` on the
host: tests put audio files there and read recordings back.

:class:`Sandbox` is the handle on one such process, whether this process
started it or another did (:meth:`Sandbox.attach`, as the command line
does); the /proc and port helpers here serve it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from .ari import ari_request
from .common import (
    SYSTEM_PATH,
    Log,
    SandboxError,
    mounts_under,
    remove_tree,
    stderr,
    tail,
    tool,
)
from .conf import CONF_DIR, conf_sections
from .prereqs import check_prerequisites
from .rootfs import ASTERISK_BIN, build_rootfs, rootfs_path, rootfs_ready

__all__ = ["SHARED_DIR_INSIDE", "Sandbox"]

#: Where the shared directory appears inside the sandbox.
SHARED_DIR_INSIDE = "/var/spool/asterisk/shared"

# Paths inside the sandbox that are bound to subdirectories of the state dir.
_BINDS: tuple[tuple[str, str], ...] = (
    ("/etc/asterisk", "etc"),
    ("/var/spool/asterisk", "spool"),
    ("/var/log/asterisk", "log"),
    ("/var/lib/asterisk", "lib"),
    ("/var/cache/asterisk", "cache"),
    ("/run/asterisk", "run"),
)
# Debian defaults that are not wanted: users.conf is deprecated (and warns).
_DROP_DEFAULTS = ("users.conf",)
_CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may contain spaces.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _proc_comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _port_in_use(kind: int, host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class Sandbox:
    """One sandboxed Asterisk: ``start()``/``stop()`` or ``with Sandbox() as ast:``.

    Args:
        state_dir: this run's state (config, spool, logs, AstDB). Default: a new
            temporary directory, deleted by :meth:`stop` unless ``keep_state``.
            A given directory is kept (and reset by :meth:`start`, except its
            ``spool/``).
        extra_conf: more files for /etc/asterisk, ``{"name.conf": "text"}``,
            written after the repo's files (same name: replaced). Both
            ``extensions.conf`` and ``pjsip.conf`` ``#tryinclude`` a
            ``*_local.conf`` for additions.
        conf_dir: where the repo's ``*.conf`` files are (default: :data:`CONF_DIR`).
        rootfs: the cached root fs (default :func:`rootfs_path`); built by
            :meth:`start` when missing.
        start_timeout: seconds to wait for ARI to answer.
        stop_timeout: seconds between SIGTERM and SIGKILL.
        keep_state: keep a temporary ``state_dir`` after :meth:`stop`.
        die_with_parent: have the kernel send Asterisk SIGTERM when the thread
            that called :meth:`start` exits (so a killed test run leaves no
            Asterisk behind). Only use it from a thread that lives as long as
            the sandbox (the main thread).
        log: where progress messages go (the root fs build); default stderr.
    """

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        extra_conf: Mapping[str, str] | None = None,
        conf_dir: str | Path | None = None,
        rootfs: str | Path | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        keep_state: bool = False,
        die_with_parent: bool = False,
        log: Log = stderr,
    ) -> None:
        self._temporary = state_dir is None
        self._state_arg = None if state_dir is None else Path(state_dir).absolute()
        self._state: Path | None = self._state_arg
        self.extra_conf = dict(extra_conf or {})
        self.conf_dir = Path(conf_dir).absolute() if conf_dir is not None else CONF_DIR
        self.rootfs = Path(rootfs).absolute() if rootfs is not None else rootfs_path().absolute()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.keep_state = keep_state
        self.die_with_parent = die_with_parent
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._pid_start: str | None = None
        self._http: tuple[str, int] = ("127.0.0.1", 8088)
        self._ari_user = "voicebot"
        self._ari_password = ""
        #: ERROR/WARNING lines Asterisk logged while starting (see :meth:`log_problems`).
        self.startup_problems: list[str] = []

    # -- attaching to a sandbox started by another process (the CLI) ---------

    @classmethod
    def attach(cls, state_dir: str | Path) -> Sandbox:
        """A handle on a sandbox another process started with this ``state_dir``.

        Raises:
            SandboxError: if no sandbox from that state dir is running.
        """
        box = cls(state_dir)
        state = box.state_dir
        try:
            pid_text, start = (state / "sandbox.pid").read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            raise SandboxError(f"asterisk sandbox: none running from {state}") from None
        if _proc_start_time(pid) != start or _proc_comm(pid) != "asterisk":
            raise SandboxError(f"asterisk sandbox: none running from {state} (stale pid {pid})")
        if not (state / "etc").is_dir():
            raise SandboxError(f"asterisk sandbox: none running from {state}")
        box._pid, box._pid_start = pid, start
        box._read_conf()
        return box

    # -- properties ------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        if self._state is None:
            raise SandboxError("asterisk sandbox: not started (no state directory yet)")
        return self._state

    @property
    def pid(self) -> int | None:
        """Asterisk's pid while it runs."""
        return self._pid if self.running else None

    @property
    def running(self) -> bool:
        if self._pid is None:
            return False
        if self._proc is not None:
            return self._proc.poll() is None
        return _proc_start_time(self._pid) == self._pid_start

    @property
    def ari_url(self) -> str:
        """Base URL of Asterisk's HTTP server, e.g. ``http://127.0.0.1:8088``
        (ARI lives under ``/ari``), as ARI_URL expects it."""
        host, port = self._http
        return f"http://{host}:{port}"

    @property
    def ari_user(self) -> str:
        return self._ari_user

    @property
    def ari_password(self) -> str:
        return self._ari_password

    @property
    def ari_app(self) -> str:
        """The Stasis app the dialplan sends calls to."""
        return "voicebot"

    @property
    def shared_dir(self) -> Path:
        """Host side of :data:`SHARED_DIR_INSIDE` (files for and from Asterisk)."""
        return self.state_dir / "spool" / "shared"

    @property
    def log_path(self) -> Path:
        """Asterisk's messages.log (host path)."""
        return self.state_dir / "log" / "messages.log"

    @property
    def console_path(self) -> Path:
        """Asterisk's stdout/stderr (host path)."""
        return self.state_dir / "console.log"

    def host_path(self, inside: str) -> Path:
        """Map a path inside the sandbox to the host.

        Bound directories (/etc/asterisk, /var/spool/asterisk and the shared
        dir in it, /var/log/asterisk, /var/lib/asterisk, /var/cache/asterisk,
        /run/asterisk) map into the state dir; anything else maps into the
        (read-only) root fs.
        """
        if not inside.startswith("/"):
            raise ValueError(f"not an absolute path: {inside!r}")
        norm = os.path.normpath(inside)
        if norm.startswith("/var/run/"):
            norm = norm[len("/var") :]
        for point, sub in _BINDS:
            if norm == point or norm.startswith(point + "/"):
                return self.state_dir / sub / norm[len(point) :].lstrip("/")
        return self.rootfs / norm.lstrip("/")

    def inside_path(self, host: str | Path) -> str:
        """Map a host path in the state dir (e.g. in :attr:`shared_dir`) to the
        path Asterisk sees."""
        path = Path(host).absolute()
        for point, sub in _BINDS:
            base = self.state_dir / sub
            if path == base or base in path.parents:
                rel = path.relative_to(base).as_posix()
                return point if rel == "." else f"{point}/{rel}"
        raise ValueError(f"{path} is not visible inside the sandbox")

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Sandbox:
        """Build the root fs if needed, start Asterisk, wait until ARI answers.

        Raises:
            SandboxError: prerequisites missing, ports taken, or Asterisk did
                not come up in time (with the tail of its log).
        """
        if self.running:
            return self
        check_prerequisites()
        if not rootfs_ready(self.rootfs):
            build_rootfs(self.rootfs, log=self._log)
        if self._temporary:
            self._state = Path(tempfile.mkdtemp(prefix="ari-realtime-asterisk-"))
        else:
            self._state = self._state_arg
            try:
                other: Sandbox | None = Sandbox.attach(self.state_dir)
            except SandboxError:
                other = None
            if other is not None:
                raise SandboxError(
                    f"asterisk sandbox: already running from {self.state_dir} (pid {other.pid})"
                )
        try:
            self._prepare_state()
            self._read_conf()
            self._check_ports()
            self._launch()
            self._wait_ready()
        except BaseException:
            if self._pid is not None:
                # Keep a temporary state dir: the error message points at its logs.
                self.keep_state = True
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Asterisk (SIGTERM, then SIGKILL after ``stop_timeout``) and clean up.

        Idempotent. Leaves no process and no mount behind.
        """
        pid = self._pid
        if pid is not None and self.running:
            self._signal(signal.SIGTERM)
            if not self._wait_exit(self.stop_timeout):
                self._signal(signal.SIGKILL)
                self._wait_exit(5.0)
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5.0)
            self._proc = None
        self._pid = None
        if self._state is not None:
            with contextlib.suppress(OSError):
                (self._state / "sandbox.pid").unlink()
            if self._temporary and not self.keep_state:
                remove_tree(self._state)
                self._state = None

    def _signal(self, sig: signal.Signals) -> None:
        if self._pid is not None and self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, sig)

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=0.05)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not self.running:
                return True
            time.sleep(0.05)
        return not self.running

    # -- start-up steps ------------------------------------------------------------

    def _prepare_state(self) -> None:
        state = self.state_dir
        state.mkdir(parents=True, exist_ok=True)
        root_mount = state / "root"
        if mounts_under(state):
            raise SandboxError(f"asterisk sandbox: {state} has mounts on it; is it in use?")
        # Reset everything but the spool (a caller may have put files there).
        for sub in ("etc", "log", "lib", "cache", "run", "root"):
            remove_tree(state / sub)
        for name in ("console.log", "launch.sh", "sandbox.pid"):
            with contextlib.suppress(FileNotFoundError):
                (state / name).unlink()
        for point, sub in _BINDS:
            template = self.rootfs / point.lstrip("/")
            if template.is_dir() and sub != "run":
                shutil.copytree(template, state / sub, symlinks=True, dirs_exist_ok=True)
            (state / sub).mkdir(exist_ok=True)
        root_mount.mkdir()
        # ARI stores recordings in /var/spool/asterisk/recording, which Debian
        # does not create (POST .../record then fails with HTTP 500).
        (state / "spool" / "recording").mkdir(exist_ok=True)
        self.shared_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.shared_dir, 0o777)
        etc = state / "etc"
        for name in _DROP_DEFAULTS:
            with contextlib.suppress(FileNotFoundError):
                (etc / name).unlink()
        confs = sorted(self.conf_dir.glob("*.conf"))
        if not confs:
            raise SandboxError(f"asterisk sandbox: no *.conf files in {self.conf_dir}")
        for conf in confs:
            shutil.copyfile(conf, etc / conf.name)
        for name, text in self.extra_conf.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"extra_conf: bad file name {name!r}")
            (etc / name).write_text(text)

    def _read_conf(self) -> None:
        etc = self.state_dir / "etc"
        host, port = "127.0.0.1", 8088
        with contextlib.suppress(OSError):
            for name, values in conf_sections((etc / "http.conf").read_text()):
                if name == "general":
                    host = values.get("bindaddr", host)
                    port = int(values.get("bindport", port))
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self._http = (host, port)
        with contextlib.suppress(OSError):
            for name, values in conf_sections((etc / "ari.conf").read_text()):
                plain = values.get("password_format", "plain") == "plain"
                if values.get("type") == "user" and plain and "password" in values:
                    self._ari_user, self._ari_password = name, values["password"]
                    break

    def _check_ports(self) -> None:
        etc = self.state_dir / "etc"
        host, port = self._http
        busy = []
        if _port_in_use(socket.SOCK_STREAM, host, port):
            busy.append(f"{host}:{port}/tcp (ARI)")
        for conf in sorted(etc.glob("pjsip*.conf")):
            for name, values in conf_sections(conf.read_text()):
                bind = values.get("bind", "")
                if values.get("type") == "transport" and ":" in bind:
                    addr, _, sip_port = bind.rpartition(":")
                    kind = socket.SOCK_DGRAM
                    if values.get("protocol", "udp") in ("tcp", "tls", "ws", "wss"):
                        kind = socket.SOCK_STREAM
                    if addr and sip_port.isdigit() and _port_in_use(kind, addr, int(sip_port)):
                        busy.append(f"{bind} (SIP transport {name})")
        if busy:
            raise SandboxError(
                "asterisk sandbox: already in use: "
                + ", ".join(busy)
                + "; another Asterisk or sandbox is running (`python3 -m asterisk.sandbox stop` "
                "stops the command line's one; `pgrep -a asterisk` lists them)"
            )

    def _launch(self) -> None:
        state = self.state_dir
        root = state / "root"
        q = shlex.quote
        lines = [
            "set -e",
            f"mount --bind {q(str(self.rootfs))} {q(str(root))}",
            f"mount -o remount,bind,ro {q(str(root))}",
            f"mount --rbind /dev {q(str(root / 'dev'))}",
            f"mount --bind /proc {q(str(root / 'proc'))}",
            f"mount -t tmpfs -o mode=0755 tmpfs {q(str(root / 'run'))}",
            f"mount -t tmpfs -o mode=1777 tmpfs {q(str(root / 'tmp'))}",
            f"mkdir -p {q(str(root / 'run/asterisk'))}",
        ]
        for point, sub in _BINDS:
            lines.append(f"mount --bind {q(str(state / sub))} {q(str(root / point.lstrip('/')))}")
        lines.append(f"exec chroot {q(str(root))} {ASTERISK_BIN} -f -n -vvv")
        script = "\n".join(lines) + "\n"
        (state / "launch.sh").write_text(script)
        cmd = [tool("unshare"), "--mount", "--propagation", "private", "/bin/sh", "-c", script]
        if self.die_with_parent:
            cmd = [tool("setpriv"), "--pdeathsig", "TERM", "--", *cmd]
        # The script runs host tools (mount, chroot); Asterisk inherits the same
        # environment, nothing else from ours.
        env = dict(_CHROOT_ENV, PATH=SYSTEM_PATH)
        with self.console_path.open("wb") as console:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=env,
                start_new_session=True,
            )
        self._pid = self._proc.pid
        # unshare, sh and chroot each exec the next: the pid becomes Asterisk's.
        self._pid_start = _proc_start_time(self._pid)
        (state / "sandbox.pid").write_text(f"{self._pid} {self._pid_start}\n")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error = "no answer yet"
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise SandboxError(
                    f"asterisk sandbox: Asterisk exited during start-up (status "
                    f"{self._proc.returncode}); state in {self.state_dir}\n" + self._log_tails()
                )
            try:
                self.ari("GET", "/asterisk/ping", timeout=1.0)
                break
            except SandboxError as exc:
                last_error = str(exc)
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"asterisk sandbox: ARI did not answer at {self.ari_url}/ari within "
                    f"{self.start_timeout:.0f} s ({last_error}); state in {self.state_dir}\n"
                    + self._log_tails()
                )
            time.sleep(0.05)
        if _proc_comm(self._pid or 0) != "asterisk":
            raise SandboxError(
                f"asterisk sandbox: pid {self._pid} is not Asterisk after start-up\n"
                + self._log_tails()
            )
        # ARI answers while later modules may still load; wait for all of them.
        self.cli("core waitfullybooted", timeout=max(1.0, deadline - time.monotonic()))
        self.startup_problems = self.log_problems()

    def _log_tails(self) -> str:
        return (
            f"console ({self.console_path}):\n{tail(self.console_path, 20)}\n"
            f"messages.log ({self.log_path}):\n{tail(self.log_path, 20)}"
        )

    # -- talking to it --------------------------------------------------------------

    def cli(self, command: str, *, timeout: float = 30.0) -> str:
        """Run an Asterisk CLI command (``asterisk -rx``) in the sandbox; return its output.

        Raises:
            SandboxError: if the sandbox is not running or the command fails.
        """
        pid = self.pid
        if pid is None:
            raise SandboxError("asterisk sandbox: not running")
        cmd = [tool("nsenter"), "-t", str(pid), "-m", "-r", "-w", ASTERISK_BIN, "-rx", command]
        try:
            result = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_CHROOT_ENV,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SandboxError(
                f"asterisk sandbox: CLI command {command!r} timed out after {timeout:.0f} s"
            ) from None
        if result.returncode != 0:
            raise SandboxError(
                f"asterisk sandbox: CLI command {command!r} failed (exit {result.returncode}): "
                + (result.stderr.strip() or result.stdout.strip())
            )
        return result.stdout

    def ari(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int | float] | None = None,
        body: Any = None,
        *,
        timeout: float = 10.0,
    ) -> Any:
        """A blocking ARI request (``path`` relative to ``/ari``); returns decoded JSON or None.

        See :func:`~.ari.ari_request`; this sandbox's URL and ARI account are filled in.

        Raises:
            SandboxError: on connection errors and HTTP error statuses.
        """
        return ari_request(
            self.ari_url,
            self.ari_user,
            self.ari_password,
            method,
            path,
            params,
            body,
            timeout=timeout,
        )

    def log_problems(self) -> list[str]:
        """ERROR and WARNING lines from messages.log so far (e.g. failed module loads)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if re.search(r"\] (ERROR|WARNING)\[", line)]

    def describe(self) -> str:
        """A few lines saying how to reach this sandbox."""
        return "\n".join(
            [
                f"Asterisk sandbox (pid {self.pid}), state in {self.state_dir}",
                f"  ARI_URL={self.ari_url}  ARI_USER={self.ari_user}  "
                f"ARI_PASSWORD={self.ari_password}  ARI_APP={self.ari_app}",
                "  SIP: PBX 127.0.0.1:5060 (endpoint tester), rig phone 127.0.0.1:5070 "
                "(endpoint phone)",
                f"  shared dir: {self.shared_dir} = {SHARED_DIR_INSIDE} inside",
                f"  log: {self.log_path}",
            ]
        )
