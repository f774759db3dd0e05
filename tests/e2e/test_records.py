"""Every call leaves a record: the store, the HTTP API, metrics, the webhook, a crash.

The controller runs as ``ari-realtime run`` does (:func:`controller.serve.serve`,
in this process), with a real SQLite file or a real PostgreSQL server, its
HTTP server on a free loopback port, and a real local webhook receiver. A
real PJSIP call from the rig's phone speaks a tone, hears the model server's
reply, and hangs up. For the crash, ``ari-realtime run`` is a subprocess
killed with SIGKILL mid-call, and the next start closes its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from controller.app import Controller
from controller.config import load_settings
from controller.devtools.modelserver import ModelServer
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import make_tone
from controller.devtools.rig.calls import Script, call_pbx, playable, wait_nothing_left
from controller.devtools.rig.sandbox import Sandbox
from controller.devtools.rig.wait import wait_for
from controller.serve import Operations, serve
from controller.store import open_store
from tests.e2e.conftest import controller_env

TOKEN = "e2e-records-token-0123456789"
VAD = {"VAD_PREFIX_MS": "100", "VAD_SILENCE_MS": "300"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server that keeps every record POSTed to it."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


async def test_a_call_leaves_a_complete_record_in_the_store_api_metrics_and_webhook(
    store_url: str,
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
) -> None:
    """Once with SQLite, once with PostgreSQL (``store_url``)."""
    database_url = store_url
    model_server.config.input_transcript = "Can I hear a tone?"
    model_server.config.transcript = "A tone."
    say = make_tone(asterisk.shared_dir / "records-say.wav", 500.0, 1.5)
    port = free_port()
    async with webhook_receiver() as (hook_url, hooked):
        env = controller_env(
            asterisk,
            model_server,
            DATABASE_URL=database_url,
            HTTP_LISTEN=f"127.0.0.1:{port}",
            HTTP_TOKEN=TOKEN,
            WEBHOOK_URL=hook_url,
            **VAD,
        )
        settings = load_settings(**env)
        up: list[tuple[Controller, Operations]] = []
        task = asyncio.create_task(serve(settings, None, started=lambda c, o: up.append((c, o))))
        await wait_for(lambda: up and up[0][0].ready.is_set(), 15, what="the controller")
        controller, ops = up[0]
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        try:
            phone = await call_pbx(
                ari, "100", Script(delay=1, play=playable(asterisk, say), wait=20), rig_id="rec"
            )
            await wait_for(lambda: controller.calls, 10, what="the call")
            (call,) = controller.calls.values()
            # Live: the API lists the call while it goes on.
            async with aiohttp.ClientSession(headers=auth) as http:
                live = await wait_for(
                    lambda: _get_json(http, f"{base}/calls/{call.call_id}"), 10, what="live record"
                )
                assert live["status"] == "live" and live["direction"] == "inbound"
                url = f"{base}/calls/{call.call_id}"
                await wait_for(lambda: _replied(http, url), 20, what="the agent's reply")
                await asyncio.sleep(2.0)  # the reply plays out
                assert await ari.hangup(phone["id"])
                await wait_for(lambda: not controller.calls, 10, what="the call to end")
                await wait_for(lambda: hooked, 10, what="the webhook")
                record = await wait_for(lambda: _ended(http, url), 10, what="the record")
                listed = await _get_json(http, f"{base}/calls?direction=inbound")
                metrics = await (await http.get(f"{base}/metrics")).text()
            async with aiohttp.ClientSession() as anonymous:
                refused = await anonymous.get(f"{base}/calls/{call.call_id}")
                assert refused.status == 401
        finally:
            controller.request_stop()
            await asyncio.wait_for(task, 30)
        await wait_nothing_left(ari)

    # The record: who, when, what was said, how fast, what it cost.
    assert record["id"] == call.call_id and record["outcome"] == "caller_hung_up"
    assert record["caller_channel_id"] == call.caller_channel_id
    assert record["dialled_number"] == "100" and record["profile"] == "default"
    assert record["started_at"] < record["answered_at"] < record["ended_at"]
    roles = [(line["role"], line["text"]) for line in record["transcript"]]
    assert ("caller", "Can I hear a tone?") in roles and ("agent", "A tone.") in roles
    (turn,) = [t for t in record["turns"] if t["caller_stopped_ms"] is not None]
    # The model answers after its VAD silence; the first frame leaves within ~2 ticks.
    assert 0 <= turn["response_latency_ms"] <= turn["first_audio_latency_ms"]
    assert turn["first_audio_latency_ms"] <= turn["first_frame_latency_ms"]
    assert turn["first_frame_latency_ms"] - turn["first_audio_latency_ms"] <= 100
    assert record["media"]["rtp_received"] > 50 and record["media"]["played_frames"] >= 70
    assert record["usage"]["output_audio_tokens"] > 0 and record["cost_usd"] > 0
    # The same record everywhere: the list, the webhook, the store itself.
    assert listed is not None and [c["id"] for c in listed["calls"]][:1] == [call.call_id]
    assert hooked[0]["id"] == call.call_id and hooked[0]["outcome"] == "caller_hung_up"
    store = await open_store(database_url)
    try:
        stored = await store.get(call.call_id)
    finally:
        await store.close()
    assert stored is not None and stored.transcript[-1].text == record["transcript"][-1]["text"]
    assert 'ari_realtime_calls_total{direction="inbound",outcome="caller_hung_up"} 1.0' in metrics
    assert TOKEN not in metrics


async def _get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    async with http.get(url) as response:
        if response.status != 200:
            return None
        data: dict[str, Any] = await response.json()
        return data


async def _replied(http: aiohttp.ClientSession, url: str) -> bool:
    """The live record has a turn whose first frame went out to the caller."""
    data = await _get_json(http, url)
    turns = data.get("turns", []) if data else []
    return any(t.get("first_frame_latency_ms") is not None for t in turns)


async def _ended(http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    data = await _get_json(http, url)
    return data if data is not None and data.get("status") == "ended" else None


async def test_a_controller_killed_mid_call_leaves_a_record_the_next_start_closes(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, tmp_path: Path
) -> None:
    database_url = f"sqlite://{tmp_path}/calls.db"
    env = {
        **os.environ,
        **controller_env(asterisk, model_server, DATABASE_URL=database_url, HTTP_LISTEN=""),
    }

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "controller", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    first = start()
    try:
        await wait_for(lambda: ari_registered(ari, asterisk.ari_app), 20, what="the app")
        phone = await call_pbx(ari, "100", Script(wait=30), rig_id="crash")
        store = await open_store(database_url)
        try:
            (live,) = await wait_for(lambda: store.list(), 15, what="the live record")
        finally:
            await store.close()
        assert live.status == "live" and live.outcome is None
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert first.stderr is not None
        first.stderr.close()
        second = start()
        try:
            store = await open_store(database_url)
            try:
                closed = await wait_for(
                    lambda: _crashed(store, live.id), 20, what="the record to be closed"
                )
            finally:
                await store.close()
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=30)
        assert second.returncode == 0, err.decode()
        assert b"closed records a crashed run left open" in err
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert closed.status == "ended" and closed.ended_at is not None
    # The caller it left in Stasis was handed back to the dialplan, and its
    # bridge and externalMedia channel deleted: nothing is left behind.
    await wait_nothing_left(ari)
    assert phone["id"] not in {c["id"] for c in await ari.channels()}


async def _crashed(store: Any, call_id: str) -> Any:
    record = await store.get(call_id)
    return record if record is not None and record.outcome == "controller_crashed" else None


async def ari_registered(ari: AriClient, app: str) -> bool:
    apps = await ari.get("/applications")
    return any(a.get("name") == app for a in apps or [])
