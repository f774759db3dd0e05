"""Fixtures of the HTTP layer's tests: the real aiohttp server on 127.0.0.1:0, a real client.

The store is the one seam: :func:`records` returns the ``RecordSource`` the
API reads, fed through the same :class:`~controller.records.Observers` as the
live hub and the metrics, as the controller does. Until the real store is
merged it is :class:`MemoryRecords` below; swapping in the real store is the
one line in :func:`records`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import pytest
from pydantic import SecretStr

from controller.errors import OutboundBusy
from controller.http import HttpServer, LiveHub, Metrics, create_app
from controller.outbound import OutboundPolicy, OutboundRequest
from controller.records import CallObserver, CallRecord, Direction, Observers, RecordSource

T0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
TOKEN = "operator-token-0123456789abcdef"


class Store(RecordSource, CallObserver, Protocol):
    """What the tests need of the store: it reads records, and observes calls to write them."""


class MemoryRecords:
    """A ``RecordSource`` (and call observer, like the store) kept in a dict."""

    def __init__(self) -> None:
        self.records: dict[str, CallRecord] = {}

    def call_started(self, record: CallRecord) -> None:
        self.records[record.id] = record.model_copy(deep=True)

    def call_event(self, call_id: str, kind: Any, data: dict[str, Any]) -> None:
        pass

    def call_ended(self, record: CallRecord) -> None:
        self.records[record.id] = record.model_copy(deep=True)

    async def get(self, call_id: str) -> CallRecord | None:
        return self.records.get(call_id)

    async def list(
        self,
        *,
        limit: int = 50,
        before: dt.datetime | None = None,
        direction: Direction | None = None,
        outcome: str | None = None,
    ) -> list[CallRecord]:
        found = [
            r
            for r in self.records.values()
            if (before is None or r.started_at < before)
            and (direction is None or r.direction == direction)
            and (outcome is None or r.outcome == outcome)
        ]
        return sorted(found, key=lambda r: r.started_at, reverse=True)[:limit]

    async def ping(self) -> bool:
        return True


@dataclass
class FakeController:
    """The controller side of the API: live call ids, and the health it reports."""

    live: set[str] = field(default_factory=set)
    checks: dict[str, bool] = field(
        default_factory=lambda: {"ari_connected": True, "app_registered": True}
    )
    hung_up: list[str] = field(default_factory=list)
    #: What may be dialled: the real policy; the calls it allowed, in order.
    policy: OutboundPolicy = field(
        default_factory=lambda: OutboundPolicy(["PJSIP/company@tester"], "PJSIP/{number}@trunk", 1)
    )
    dialled: list[str] = field(default_factory=list)

    def originate(self, request: OutboundRequest) -> str:
        dial = self.policy.dial_string(request)
        if len(self.dialled) >= self.policy.max_concurrent:
            raise OutboundBusy("1 outbound calls are live (OUTBOUND_MAX_CONCURRENT=1)")
        self.dialled.append(dial)
        return f"out{len(self.dialled)}"

    def hangup(self, call_id: str) -> bool:
        if call_id not in self.live:
            return False
        self.hung_up.append(call_id)
        return True

    def health(self) -> dict[str, bool]:
        return dict(self.checks)


@dataclass
class Stack:
    records: Store
    hub: LiveHub
    metrics: Metrics
    controller: FakeController
    observers: Observers
    server: HttpServer
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.server.url

    def start(self, record: CallRecord) -> CallRecord:
        self.controller.live.add(record.id)
        self.observers.call_started(record)
        return record

    def end(self, record: CallRecord, **changes: Any) -> CallRecord:
        final = record.model_copy(
            update={"status": "ended", "ended_at": T0 + dt.timedelta(minutes=5), **changes}
        )
        self.controller.live.discard(record.id)
        self.observers.call_ended(final)
        return final


def make_record(call_id: str, minute: int = 0, **fields: Any) -> CallRecord:
    """A live record that started ``minute`` minutes after :data:`T0`; ``fields`` override."""
    defaults: dict[str, Any] = {
        "started_at": T0 + dt.timedelta(minutes=minute),
        "answered_at": T0 + dt.timedelta(minutes=minute, seconds=1),
        "caller_number": "+4930123456",
        "dialled_number": "100",
    }
    return CallRecord(id=call_id, **{**defaults, **fields})


@pytest.fixture
def records() -> Store:
    """The store the API reads. The real store goes here, in this one line."""
    return MemoryRecords()


StackFactory = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


@pytest.fixture
def make_stack(records: Store) -> StackFactory:
    """Start the server and a client for it; ``store`` replaces the ``records`` fixture."""
    default_store = records

    @contextlib.asynccontextmanager
    async def start(
        *,
        token: str | None = None,
        hub: LiveHub | None = None,
        keepalive: float = 15.0,
        store: Store | None = None,
        controller: FakeController | None = None,
    ) -> AsyncIterator[Stack]:
        records = store or default_store
        hub = hub or LiveHub()
        metrics = Metrics()
        controller = controller or FakeController()
        observers = Observers([records, hub, metrics])
        app = create_app(
            records=records,
            live=hub,
            metrics=metrics,
            controller=controller,
            token=SecretStr(token) if token else None,
            keepalive=keepalive,
        )
        server = HttpServer(app, "127.0.0.1", 0)
        await server.start()
        try:
            # unsafe: keep cookies for an IP address, as browsers do
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(base_url=server.url, cookie_jar=jar) as http:
                yield Stack(records, hub, metrics, controller, observers, server, http)
        finally:
            await server.stop()

    return start


@pytest.fixture
async def stack(make_stack: StackFactory) -> AsyncIterator[Stack]:
    """A running server without a token."""
    async with make_stack() as running:
        yield running


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """Parse a ``text/event-stream`` body into ``(event, data)``; comments as ``(":", text)``."""
    kind, data = "message", list[str]()
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", list[str]()
        elif line.startswith(":"):
            yield ":", line[1:].strip()
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
