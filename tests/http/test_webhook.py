"""The webhook against a real local aiohttp receiver: retries, failures, the queue, the logs."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from controller.devtools.rig.wait import wait_for
from controller.http import Metrics, WebhookNotifier
from controller.http.webhook import safe_url
from controller.records import CallRecord, Observers
from tests.http.conftest import make_record


@dataclass
class Receiver:
    """A CRM-like receiver: answers each POST with the next status of ``statuses``."""

    statuses: list[int]
    delay: float = 0.0
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.statuses[min(len(self.posts), len(self.statuses)) - 1]
        return web.Response(status=status, text="ok" if status < 300 else "nope")


@pytest.fixture
async def serve() -> AsyncIterator[object]:
    runners: list[web.AppRunner] = []

    async def start(receiver: Receiver) -> Receiver:
        app = web.Application()
        app.router.add_post("/hooks/calls", receiver.handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        receiver.url = f"http://127.0.0.1:{port}/hooks/calls"
        return receiver

    yield start
    for runner in runners:
        await runner.cleanup()


def _final(call_id: str = "c1") -> CallRecord:
    return make_record(call_id, status="ended", outcome="caller_hung_up", cost_usd=0.01)


async def test_a_record_is_delivered_after_two_failures(serve) -> None:
    receiver = await serve(Receiver([500, 503, 204]))
    metrics = Metrics()
    notifier = WebhookNotifier(receiver.url, metrics=metrics, backoff=0.01)
    await notifier.start()
    try:
        record = _final()
        Observers([notifier]).call_ended(record)
        await wait_for(lambda: notifier.delivered == 1, 5, what="delivery")
    finally:
        await notifier.stop()
    assert len(receiver.posts) == 3
    for headers, body in receiver.posts:
        assert CallRecord.model_validate_json(body) == record
        assert headers["Content-Type"] == "application/json"
        assert headers["Idempotency-Key"] == "c1"  # the receiver can drop a repeat
        assert headers["User-Agent"] == "ari-realtime"
    assert notifier.failed == 0
    assert (
        metrics.registry.get_sample_value("ari_realtime_webhook_deliveries_total", {"result": "ok"})
        == 1
    )


async def test_a_receiver_that_always_fails_is_counted_and_logged_once_without_secrets(
    serve, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = await serve(Receiver([500]))
    metrics = Metrics()
    url = receiver.url.replace("http://", "http://crm:pa55word@") + "?key=s3cr3t-query"
    notifier = WebhookNotifier(url, metrics=metrics, attempts=3, backoff=0.01)
    caplog.set_level(logging.DEBUG, logger="controller.http.webhook")
    await notifier.start()
    try:
        notifier.call_ended(_final())
        await wait_for(lambda: notifier.failed == 1, 5, what="failure")
    finally:
        await notifier.stop()
    assert len(receiver.posts) == 3
    # Credentials in the URL are sent as basic auth, the query as given.
    auth = receiver.posts[0][0]["Authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"crm:pa55word"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    port = receiver.url.split(":")[2].split("/")[0]
    assert warnings == [
        f"webhook failed call=c1 url=http://127.0.0.1:{port}/hooks/calls attempts=3 "
        'error="HTTP 500"'
    ]
    # Only what the product logged: the test's own receiver logs its access lines.
    everything = "\n".join(
        caplog.handler.format(r) for r in caplog.records if r.name.startswith("controller")
    )
    assert "pa55word" not in everything and "s3cr3t" not in everything
    assert (
        metrics.registry.get_sample_value(
            "ari_realtime_webhook_deliveries_total", {"result": "failed"}
        )
        == 1
    )


async def test_a_refusal_is_not_retried(serve) -> None:
    receiver = await serve(Receiver([400, 200]))
    notifier = WebhookNotifier(receiver.url, backoff=0.01)
    await notifier.start()
    try:
        notifier.call_ended(_final())
        await wait_for(lambda: notifier.failed == 1, 5)
    finally:
        await notifier.stop()
    assert len(receiver.posts) == 1


async def test_an_unreachable_receiver_is_retried_then_counted(caplog) -> None:
    notifier = WebhookNotifier("http://127.0.0.1:9/hook", attempts=2, backoff=0.01)
    await notifier.start()
    try:
        notifier.call_ended(_final())
        await wait_for(lambda: notifier.failed == 1, 5)
    finally:
        await notifier.stop()
    assert "webhook failed call=c1 url=http://127.0.0.1:9/hook attempts=2 error=" in caplog.text


async def test_a_slow_receiver_never_delays_the_call_and_a_full_queue_drops(serve) -> None:
    receiver = await serve(Receiver([200], delay=0.3))
    notifier = WebhookNotifier(receiver.url, queue_size=2, timeout=5)
    await notifier.start()
    try:
        notifier.call_ended(_final("c0"))
        await wait_for(lambda: len(receiver.posts) == 1, 5)  # c0 is in flight
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(1, 5):
            notifier.call_ended(_final(f"c{i}"))
        assert loop.time() - started < 0.05  # call_ended only queues
        # c1 and c2 fill the queue, c3 and c4 are dropped.
        assert notifier.dropped == 2
        await wait_for(lambda: notifier.delivered == 3, 5)
    finally:
        await notifier.stop()
    assert [CallRecord.model_validate_json(b).id for _, b in receiver.posts] == ["c0", "c1", "c2"]


async def test_stop_delivers_what_is_queued_then_gives_up(serve) -> None:
    receiver = await serve(Receiver([200], delay=0.2))
    notifier = WebhookNotifier(receiver.url)
    await notifier.start()
    notifier.call_ended(_final("c1"))
    await notifier.stop(drain_timeout=2)
    assert notifier.delivered == 1

    stuck = await serve(Receiver([503]))
    notifier = WebhookNotifier(stuck.url, backoff=10)
    await notifier.start()
    notifier.call_ended(_final("c1"))
    notifier.call_ended(_final("c2"))
    await wait_for(lambda: len(stuck.posts) == 1, 5)
    await notifier.stop(drain_timeout=0.1)  # c1 waits for its retry, c2 for c1
    assert (notifier.delivered, notifier.failed, notifier.dropped) == (0, 0, 2)


def test_logged_urls_have_no_credentials_or_query() -> None:
    assert safe_url("https://u:p@crm.example:8443/a/b?token=x#f") == "https://crm.example:8443/a/b"
    assert safe_url("http://[::1]:80/h") == "http://[::1]:80/h"
    with pytest.raises(ValueError, match="http:// or https://"):
        WebhookNotifier("ftp://crm.example/")
