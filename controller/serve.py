"""``ari-realtime run``: the controller and everything operators see around it.

:func:`serve` opens, in order, what a controller needs besides Asterisk:

1. the call-record store (``DATABASE_URL``); records a crashed run of this
   controller left open are closed as ``controller_crashed``;
2. the observers every call reports to: the store's :class:`RecordWriter`,
   the :class:`LiveHub` (live view and server-sent events), the Prometheus
   :class:`Metrics`, and the :class:`WebhookNotifier` when ``WEBHOOK_URL``
   is set;
3. the HTTP server (``HTTP_LISTEN``);

then runs the controller until it is asked to stop (the
:class:`~controller.app.Controller`, or with ``ARI_MODE=outbound`` the
:class:`~controller.pool.worker.PoolController`), and closes everything in
reverse order, writing what is still queued.

Nothing here is on the 20 ms media path: calls hand records and events to
bounded queues and go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable

from controller.agents import AgentsFile
from controller.app import Controller
from controller.config import Settings
from controller.http import LiveHub, Metrics, WebhookNotifier, http_server
from controller.http.server import HttpServer
from controller.logs import kv
from controller.pool.worker import PoolController
from controller.pricing import PriceTable, load_prices
from controller.records import Observers, UsageTotals
from controller.store import open_store
from controller.store.base import CallStore
from controller.store.retention import run_retention
from controller.store.writer import RecordWriter

log = logging.getLogger("controller.serve")

#: What ``ari-realtime run`` runs: inbound mode's controller or outbound mode's.
AnyController = Controller | PoolController

#: How long shutdown waits for queued records to reach the store.
FLUSH_SECONDS = 5.0


class Pricing:
    """Prices calls with the price table; warns once per model it cannot price."""

    def __init__(self, table: PriceTable) -> None:
        self.table = table
        self._warned: set[str] = set()

    def __call__(self, model: str, usage: UsageTotals) -> float:
        estimate = self.table.estimate(model, usage)
        if estimate.priced_as is None and model not in self._warned:
            self._warned.add(model)
            log.warning(
                "no price for this model: cost_usd is 0; add it to PRICES_FILE %s",
                kv(model=model, prices=self.table.source),
            )
        return estimate.usd


class Operations:
    """The store, the observers and the HTTP server of one controller process."""

    def __init__(self, settings: Settings, store: CallStore, pricing: Pricing) -> None:
        self.settings = settings
        self.store = store
        self.pricing = pricing
        self.writer = RecordWriter(store, store_transcripts=settings.store_transcripts)
        self.hub = LiveHub()
        self.metrics = Metrics()
        self.webhook: WebhookNotifier | None = None
        self.observers = Observers([self.writer, self.hub, self.metrics])
        if settings.webhook_url:
            self.webhook = WebhookNotifier(settings.webhook_url, metrics=self.metrics)
            self.observers.add(self.webhook)
        self.server: HttpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(cls, settings: Settings) -> Operations:
        """Open the store and close what a crashed run left open.

        Raises:
            ConfigError: a bad ``DATABASE_URL`` or ``PRICES_FILE``.
            StoreError: the store cannot be reached.
        """
        pricing = Pricing(load_prices(settings.prices_file or None))
        store = await open_store(settings.database_url.get_secret_value())
        try:
            closed = await store.close_crashed(settings.controller_id, dt.datetime.now(dt.UTC))
        except BaseException:
            await store.close()
            raise
        if closed:
            log.warning(
                "closed records a crashed run left open %s",
                kv(records=closed, outcome="controller_crashed"),
            )
        return cls(settings, store, pricing)

    async def start(self, controller: AnyController) -> None:
        """Start the writer, retention, metrics, webhook and the HTTP server.

        Raises:
            ConfigError: ``HTTP_LISTEN`` cannot be bound, or needs ``HTTP_TOKEN``.
        """
        self.metrics.watch_clock(controller.clock)
        self._tasks.append(asyncio.create_task(self.writer.run(), name="record-writer"))
        days = self.settings.records_retention_days
        if days:
            self._tasks.append(
                asyncio.create_task(run_retention(self.store, days), name="record-retention")
            )
        await self.metrics.start()
        if self.webhook is not None:
            await self.webhook.start()
        self.server = http_server(
            self.settings,
            records=self.store,
            live=self.hub,
            metrics=self.metrics,
            controller=controller,
        )
        if self.server is not None:
            await self.server.start()

    async def close(self) -> None:
        """Stop serving HTTP, deliver what is queued, close the store."""
        if self.server is not None:
            await self.server.stop()
        if self.webhook is not None:
            await self.webhook.stop()
        await self.metrics.stop()
        left = await self.writer.flush(FLUSH_SECONDS)
        if left:
            log.error("records not written at shutdown %s", kv(records=left))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()


@contextlib.asynccontextmanager
async def operations(settings: Settings) -> AsyncIterator[Operations]:
    """:meth:`Operations.open` ... :meth:`Operations.close` (without the HTTP server)."""
    ops = await Operations.open(settings)
    try:
        yield ops
    finally:
        await ops.close()


async def serve(
    settings: Settings,
    agents: AgentsFile | None,
    *,
    started: Callable[[Controller, Operations], None] | None = None,
    started_pool: Callable[[PoolController, Operations], None] | None = None,
) -> None:
    """Run the controller with its store and HTTP server until it is asked to stop.

    Args:
        settings: validated settings.
        agents: the parsed agents file, if any.
        started: called once everything is up (signal handlers, tests).
        started_pool: the same, when ``ARI_MODE=outbound`` runs a :class:`PoolController`.

    Raises:
        ConfigError: a bad setting found while opening (store, prices, HTTP).
        StoreError: the store cannot be reached at start.
        AriAuthError: Asterisk rejected the ARI credentials.
    """
    async with operations(settings) as ops:
        if settings.ari_mode == "outbound":
            pool = PoolController(
                settings,
                agents=agents,
                observers=ops.observers,
                cost=ops.pricing,
                model_errors=ops.metrics.model_error,
                records=ops.store,
            )
            await ops.start(pool)
            if started_pool is not None:
                started_pool(pool, ops)
            await pool.run()
            return
        controller = Controller(
            settings,
            agents=agents,
            observers=ops.observers,
            cost=ops.pricing,
            model_errors=ops.metrics.model_error,
        )
        await ops.start(controller)
        if started is not None:
            started(controller, ops)
        await controller.run()
