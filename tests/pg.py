"""A throwaway PostgreSQL server for the tests: Debian's initdb and pg_ctl, no mocks.

:class:`PostgresServer` makes a cluster in a temporary directory, starts it
on a free port of 127.0.0.1 (and a unix socket in the same directory), with
password authentication, and deletes it afterwards. PostgreSQL refuses to
run as root, so as root it runs as ``nobody`` (through ``setpriv``). Durability
is off (``fsync=off``): the data is thrown away anyway, and it keeps the
tests fast.

Nothing here skips: when the server cannot be made, :class:`PostgresError`
says why (the tool missing, the log's tail), and the tests fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

#: The superuser of the test cluster and its password (long enough to be masked).
USER = "tester"
PASSWORD = "pg-test-secret-4711"


class PostgresError(RuntimeError):
    """The test PostgreSQL server could not be created, started or stopped."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` that has ``initdb``.

    Raises:
        PostgresError: PostgreSQL is not installed (``scripts/bootstrap.sh`` installs it).
    """
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise PostgresError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
            "run scripts/bootstrap.sh or apt-get install postgresql"
        )
    return Path(found[-1]).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One test cluster. Use :meth:`create`, then :meth:`destroy`."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = port
        self.host = "127.0.0.1"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._as_user = [
                "setpriv",
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                "--",
            ]

    @classmethod
    def create(cls) -> PostgresServer:
        """Make and start a new cluster.

        Raises:
            PostgresError: with the reason (and the server log's tail).
        """
        bindir = find_bindir()
        root = Path(tempfile.mkdtemp(prefix="ari-realtime-pg-"))
        server = cls(bindir, root, free_port())
        try:
            server._init()
            server.start()
        except BaseException:
            server.destroy()
            raise
        return server

    def _run(self, *args: str) -> None:
        cmd = [*self._as_user, *args]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
        except FileNotFoundError as exc:
            raise PostgresError(f"cannot run {cmd[0]}: {exc}") from None
        except subprocess.CalledProcessError as exc:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresError(
                f"{' '.join(args[:2])} failed (exit {exc.returncode}): "
                f"{(exc.stderr or exc.stdout).strip()[-2000:]}\n{log}"
            ) from None

    def _init(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_user:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={self.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "30",
            "-o",
            options,
        )

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut)."""
        self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w")

    def url(self, database: str = "postgres", *, password: str = PASSWORD) -> str:
        """A ``DATABASE_URL`` for ``database`` on this server."""
        return f"postgresql://{USER}:{password}@{self.host}:{self.port}/{database}"

    def destroy(self) -> None:
        """Stop the server if it runs and delete everything."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(PostgresError):
                self._run(
                    str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate"
                )
        shutil.rmtree(self.root, ignore_errors=True)
