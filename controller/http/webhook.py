"""POST each ended call's record to ``WEBHOOK_URL`` (a ``CallObserver``).

:meth:`WebhookNotifier.call_ended` only serializes the record and puts it on
a bounded queue (a full queue drops the record, counted and logged): the
call's teardown never waits for the network. One task drains the queue,
one delivery at a time, in order.

A delivery is ``POST WEBHOOK_URL`` with the record as JSON (the same shape
as ``GET /calls/{id}``) and the headers ``Idempotency-Key: <call id>`` and
``User-Agent: ari-realtime``. A 2xx answer delivers it. Connection errors,
timeouts, 408, 429 and 5xx are retried with exponential backoff (1 s, 2 s,
4 s, ... capped) up to ``attempts`` tries in all; any other status fails at
once (retrying a 400 only repeats it). Each failed delivery is logged in one
WARNING line with the URL reduced to scheme, host and path (no credentials,
no query), and counted.

Credentials in the URL (``https://user:pass@host/...``) are sent as HTTP
basic auth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from controller.http.metrics import Metrics
from controller.logs import kv
from controller.records import CallRecord, LiveEventKind

log = logging.getLogger("controller.http.webhook")

#: Records waiting for delivery before new ones are dropped.
WEBHOOK_QUEUE = 1000
#: Statuses worth retrying: the receiver is busy or broken, not refusing this record.
_RETRY_STATUSES = frozenset({408, 425, 429})


def safe_url(url: str) -> str:
    """``url`` as it may be logged: scheme, host, port and path only."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass
class _Delivery:
    call_id: str
    body: bytes


class _Failure(Exception):
    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class WebhookNotifier:
    """Delivers ended calls' records to a URL, with retries, off the call's path.

    Args:
        url: the ``http(s)://`` URL to POST to (``WEBHOOK_URL``).
        metrics: where deliveries are counted (``ok``, ``failed``, ``dropped``), if given.
        attempts: tries per record, the first included.
        backoff: seconds before the first retry; doubled for each next one.
        max_backoff: the longest wait between two tries.
        timeout: seconds for one try (connect, send, answer).
        queue_size: records waiting before new ones are dropped.

    Raises:
        ValueError: when ``url`` is not http(s) (the settings check this first).
    """

    def __init__(
        self,
        url: str,
        *,
        metrics: Metrics | None = None,
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
        queue_size: int = WEBHOOK_QUEUE,
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("the webhook URL must be http:// or https://")
        self._url = url
        self._log_url = safe_url(url)
        self._metrics = metrics
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(maxsize=queue_size)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        #: Records delivered.
        self.delivered = 0
        #: Records given up on after their last try.
        self.failed = 0
        #: Records dropped because the queue was full (or left when stopped).
        self.dropped = 0

    # --- CallObserver -------------------------------------------------------------------

    def call_started(self, record: CallRecord) -> None:
        """Nothing: only ended calls are sent."""

    def call_event(self, call_id: str, kind: LiveEventKind, data: dict[str, Any]) -> None:
        """Nothing: only ended calls are sent."""

    def call_ended(self, record: CallRecord) -> None:
        """Queue the record for delivery (never waits)."""
        delivery = _Delivery(record.id, record.model_dump_json().encode())
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            self._count("dropped")
            log.warning(
                "webhook dropped %s",
                kv(call=record.id, url=self._log_url, reason="queue full"),
            )

    # --- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the delivery task (idempotent)."""
        if self._task is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"User-Agent": "ari-realtime"}
            )
            self._task = asyncio.create_task(self._run(), name="webhook")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Deliver what is queued for up to ``drain_timeout`` seconds, then stop.

        Records still queued (or being retried) then are counted as dropped.
        """
        task, self._task = self._task, None
        if task is None:
            return
        if drain_timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout):
                    await self._queue.join()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while not self._queue.empty():
            delivery = self._queue.get_nowait()
            self._queue.task_done()
            self._count("dropped")
            log.warning(
                "webhook dropped %s",
                kv(call=delivery.call_id, url=self._log_url, reason="controller stopping"),
            )
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def pending(self) -> int:
        """Records waiting for delivery."""
        return self._queue.qsize()

    # --- inside ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._deliver(delivery)
            except asyncio.CancelledError:
                self._count("dropped")
                log.warning(
                    "webhook dropped %s",
                    kv(call=delivery.call_id, url=self._log_url, reason="controller stopping"),
                )
                raise
            finally:
                self._queue.task_done()

    async def _deliver(self, delivery: _Delivery) -> None:
        reason = ""
        for attempt in range(1, self._attempts + 1):
            try:
                await self._post(delivery)
            except _Failure as failure:
                reason = failure.reason
                if not failure.retry or attempt == self._attempts:
                    break
                delay = min(self._max_backoff, self._backoff * 2 ** (attempt - 1))
                log.debug(
                    "webhook retry %s",
                    kv(call=delivery.call_id, url=self._log_url, attempt=attempt, error=reason),
                )
                await asyncio.sleep(delay)
            else:
                self._count("ok")
                return
        self._count("failed")
        log.warning(
            "webhook failed %s",
            kv(call=delivery.call_id, url=self._log_url, attempts=attempt, error=reason),
        )

    async def _post(self, delivery: _Delivery) -> None:
        assert self._session is not None
        headers = {"Content-Type": "application/json", "Idempotency-Key": delivery.call_id}
        try:
            async with self._session.post(self._url, data=delivery.body, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except TimeoutError:
            raise _Failure("timeout", retry=True) from None
        except aiohttp.ClientError as exc:
            # The class names the problem; its text may contain the URL.
            raise _Failure(type(exc).__name__, retry=True) from None
        except OSError as exc:
            raise _Failure(exc.strerror or type(exc).__name__, retry=True) from None
        if 200 <= status < 300:
            return
        raise _Failure(f"HTTP {status}", retry=status >= 500 or status in _RETRY_STATUSES)

    def _count(self, result: str) -> None:
        if result == "ok":
            self.delivered += 1
        elif result == "failed":
            self.failed += 1
        else:
            self.dropped += 1
        if self._metrics is not None:
            self._metrics.webhook_result(result)
