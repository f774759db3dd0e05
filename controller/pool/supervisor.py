"""``ari-realtime run --workers N``: N controller processes on one host, kept running.

Each worker is an ordinary ``ari-realtime run`` child process (its own event
loop, media clock, RTP sockets and model sessions: one core's worth of
calls) in outbound mode. They all listen on ``ARI_LISTEN`` at once:
the listener binds with ``SO_REUSEPORT``, and the kernel spreads Asterisk's
per-call connections over them. What differs per worker
(:func:`worker_overrides`):

* ``CONTROLLER_ID``: ``<CONTROLLER_ID>/w<k>``, so the records say which
  worker served a call, and a restarted worker closes only its own
  predecessor's records as ``controller_crashed``;
* ``HTTP_LISTEN``: the port plus ``k`` (worker 0 keeps the port): each
  worker's metrics, live view and ``/healthz`` are its own; Prometheus
  scrapes them all. A load balancer checks ``/healthz`` on ``ARI_LISTEN``,
  which any live worker answers.

The supervisor restarts a worker that dies (at once, then backing off up to
:data:`MAX_BACKOFF` seconds while it keeps dying young), except for exit
status 2 (a bad setting: every worker would fail the same way), which stops
them all. SIGTERM/SIGINT are passed on to every worker: the first drains,
a second stops at once. Workers run in process groups of their own (so a
signal meant for the group reaches them once, through the supervisor; under
systemd use ``KillMode=mixed``) and get SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from controller.config import Settings
from controller.logs import kv

log = logging.getLogger("controller.supervisor")

#: Exit status of a worker that found a bad setting: restarting cannot help.
EXIT_BAD_SETTING = 2
#: Seconds a worker must live to count as healthy (its restart backoff resets).
HEALTHY_SECONDS = 30.0
MAX_BACKOFF = 10.0
#: Marks a worker process (its index); read for its first log line.
WORKER_ENV = "ARI_REALTIME_WORKER"


def parse_workers(text: str) -> int:
    """``--workers``: a whole number from 1 to 256, or ``auto`` (the cores this process may use).

    Raises:
        ValueError: anything else.
    """
    if text.strip().lower() == "auto":
        return available_cores()
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= 256:
        raise ValueError("must be a whole number from 1 to 256, or auto (one per core)")
    return count


def available_cores() -> int:
    """The cores this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_overrides(settings: Settings, index: int) -> dict[str, str]:
    """The settings worker ``index`` gets on top of the supervisor's (env names)."""
    env = {"CONTROLLER_ID": f"{settings.controller_id}/w{index}", WORKER_ENV: str(index)}
    address = settings.http_address
    if address is not None:
        host, port = address
        host = f"[{host}]" if ":" in host else host
        env["HTTP_LISTEN"] = f"{host}:{port + index}"
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Have the kernel send SIGTERM to this (child) process when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Worker:
    """One worker slot: its process while it runs, and its restart history."""

    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    backoff: float = 0.0
    restarts: int = 0
    exits: list[int] = field(default_factory=list)


class Supervisor:
    """Starts ``count`` workers and keeps them running until told to stop.

    Args:
        settings: the validated settings (``ARI_MODE=outbound``).
        count: how many workers.
        argv: the command line before ``run`` (e.g. ``["--env-file", "x"]``).
    """

    def __init__(self, settings: Settings, count: int, argv: Sequence[str] = ()) -> None:
        self.settings = settings
        self.workers = [Worker(i) for i in range(count)]
        self._argv = list(argv)
        self._stopping = 0
        self._changed = asyncio.Event()
        self._fatal = False
        self._watchers: set[asyncio.Task[None]] = set()

    def request_stop(self) -> None:
        """SIGTERM: the first asks every worker to drain, the second to stop at once."""
        self._stopping += 1
        log.info("passing the stop on to the workers %s", kv(times=self._stopping))
        for worker in self.workers:
            self._signal(worker, signal.SIGTERM)
        self._changed.set()

    def _signal(self, worker: Worker, sig: signal.Signals) -> None:
        process = worker.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    async def _start(self, worker: Worker) -> None:
        env = {**os.environ, **worker_overrides(self.settings, worker.index)}
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "controller",
            *self._argv,
            "run",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # Its own process group: a terminal's Ctrl-C (or a service manager
            # signalling the whole group) reaches the supervisor only, which
            # passes it on once. Twice would mean "stop at once", not "drain".
            start_new_session=True,
        )
        worker.started = time.monotonic()
        log.info("worker started %s", kv(worker=worker.index, pid=worker.process.pid))
        watcher = asyncio.get_running_loop().create_task(self._watch(worker, worker.process))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        worker.exits.append(code)
        lived = time.monotonic() - worker.started
        if self._stopping:
            log.info("worker stopped %s", kv(worker=worker.index, pid=process.pid, status=code))
        elif code == EXIT_BAD_SETTING:
            log.error(
                "worker found a bad setting; stopping every worker %s",
                kv(worker=worker.index, status=code),
            )
            self._fatal = True
            self.request_stop()
        else:
            how = f"signal {-code}" if code < 0 else f"status {code}"
            worker.backoff = (
                0.0 if lived >= HEALTHY_SECONDS else min(MAX_BACKOFF, max(0.5, worker.backoff * 2))
            )
            log.warning(
                "worker died; restarting %s",
                kv(worker=worker.index, pid=process.pid, exit=how, after_s=worker.backoff),
            )
            worker.restarts += 1
            worker.process = None
            await asyncio.sleep(worker.backoff)
            if not self._stopping:
                await self._start(worker)
        self._changed.set()

    def _running(self) -> int:
        return sum(
            1 for w in self.workers if w.process is not None and w.process.returncode is None
        )

    async def run(self) -> int:
        """Run until every worker has stopped; the exit status of the whole.

        Returns:
            0 after a requested stop, 2 when a worker found a bad setting.
        """
        log.info(
            "starting workers %s",
            kv(workers=len(self.workers), listen=self.settings.ari_listen),
        )
        for worker in self.workers:
            await self._start(worker)
        while True:
            self._changed.clear()
            if self._stopping and self._running() == 0:
                break
            await self._changed.wait()
        log.info("every worker has stopped")
        return EXIT_BAD_SETTING if self._fatal else 0


async def supervise(settings: Settings, count: int, argv: Sequence[str] = ()) -> int:
    """Run :class:`Supervisor` with SIGTERM/SIGINT handlers; return the exit status."""
    supervisor = Supervisor(settings, count, argv)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.request_stop)
    return await supervisor.run()
