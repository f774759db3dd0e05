"""Outbound mode end to end: Asterisk opens a websocket per call to the controller.

The sandbox here is this module's own (tests/e2e/pool.py): its ari.conf and
websocket_client.conf send ``Stasis(voicebot)`` to per-call websockets, and
nothing is ever registered with Asterisk. The controller runs in this
process (:class:`~controller.pool.worker.PoolController`) with
``ARI_MODE=outbound``; the caller is the rig's phone over real SIP, the
model the local GA model server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from controller.call.call import Call
from controller.call.services import CallContext, CallServices
from controller.config import load_settings
from controller.devtools.modelserver import ModelServer
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import read_wav, tone_spans, wait_recording, write_wav
from controller.devtools.rig.calls import (
    Script,
    call_pbx,
    playable,
    rig_result,
    set_phone_script,
    wait_nothing_left,
    wait_rig_done,
)
from controller.devtools.rig.wait import wait_for
from controller.outbound import OutboundRequest
from controller.pool.worker import PoolController
from tests.e2e.conftest import MEDIA_PORTS
from tests.e2e.pool import PASSWORD, PoolAsterisk, start_pool_sandbox

AGENT_HZ = 1000.0
CALLER_HZ = 400.0


@pytest.fixture(scope="module")
def pool_asterisk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolAsterisk]:
    """This module's Asterisk, with per-call websocket templates (see tests/e2e/pool.py)."""
    try:
        pool = start_pool_sandbox(tmp_path_factory.mktemp("pool-asterisk"))
    except Exception as exc:
        pytest.fail(f"cannot start the pool Asterisk sandbox: {exc}", pytrace=False)
    try:
        yield pool
    finally:
        pool.box.stop()


@pytest.fixture
async def pool_ari(pool_asterisk: PoolAsterisk) -> AsyncIterator[AriClient]:
    box = pool_asterisk.box
    async with AriClient(box.ari_url, box.ari_user, box.ari_password) as client:
        await pool_asterisk.use_app(client, "voicebot")
        try:
            yield client
        finally:
            await client.hangup_all()


def pool_env(
    pool: PoolAsterisk, model_server: ModelServer, port: int, **extra: str
) -> dict[str, str]:
    box = pool.box
    return {
        "ARI_MODE": "outbound",
        "ARI_LISTEN": f"127.0.0.1:{port}",
        "ARI_URL": box.ari_url,
        "ARI_USER": box.ari_user,
        "ARI_PASSWORD": PASSWORD,
        "ARI_APP": "voicebot",
        "REALTIME_URL": model_server.url,
        "OPENAI_API_KEY": "sk-test-not-a-real-key-0123456789",
        "MEDIA_ADDRESS": "127.0.0.1",
        "MEDIA_PORTS": MEDIA_PORTS,
        "HTTP_LISTEN": "",
        **extra,
    }


class RunningPool:
    def __init__(self, pool: PoolController, task: asyncio.Task[None]) -> None:
        self.pool = pool
        self.task = task
        self.ended: list[Call] = []

    async def stop(self) -> None:
        self.pool.request_stop()
        await asyncio.wait_for(self.task, 30)


StartPool = Callable[..., Awaitable[RunningPool]]


@pytest.fixture
async def start_pool(
    pool_asterisk: PoolAsterisk, model_server: ModelServer
) -> AsyncIterator[StartPool]:
    """``await start_pool(port=..., **settings)``: a PoolController in this event loop."""
    started: list[RunningPool] = []

    async def start(port: int | None = None, **settings: str) -> RunningPool:
        port = pool_asterisk.direct_port if port is None else port
        config = load_settings(**pool_env(pool_asterisk, model_server, port, **settings))
        holder: list[RunningPool] = []

        def factory(context: CallContext, services: CallServices) -> Call:
            call = Call(context, services)
            original = call.run

            async def run() -> None:
                try:
                    await original()
                finally:
                    holder[0].ended.append(call)

            call.run = run  # type: ignore[method-assign]
            return call

        pool = PoolController(config, call_factory=factory)
        running = RunningPool(pool, asyncio.create_task(pool.run()))
        holder.append(running)
        started.append(running)
        await asyncio.wait_for(pool.ready.wait(), 10)
        return running

    try:
        yield start
    finally:
        for running in started:
            if not running.task.done():
                await running.stop()


def utterance(path: Path, *, after: float, seconds: float, then: float) -> Path:
    """Silence, a tone (the caller speaking), silence (frames flow throughout)."""
    n = round(seconds * 8000)
    tone = 0.5 * np.sin(2 * np.pi * CALLER_HZ * np.arange(n) / 8000)
    ramp = np.linspace(0.0, 1.0, 40)
    tone[:40] *= ramp
    tone[-40:] *= ramp[::-1]
    return write_wav(
        path, np.concatenate([np.zeros(round(after * 8000)), tone, np.zeros(round(then * 8000))])
    )


async def applications(ari: AriClient) -> list[str]:
    return [a["name"] for a in await ari.get("/applications")]


def no_applications(ari: AriClient) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not await applications(ari)

    return check


async def test_outbound_mode_serves_a_call_end_to_end(
    pool_asterisk: PoolAsterisk,
    pool_ari: AriClient,
    model_server: ModelServer,
    start_pool: StartPool,
) -> None:
    box = pool_asterisk.box
    model_server.config.tone_ms = 5000  # the greeting: 5 s of 1 kHz, cut by the caller
    running = await start_pool(AGENT_GREETING="Hello, how can I help?")
    assert await applications(pool_ari) == []  # nothing registered

    speech = utterance(box.shared_dir / "pool-speech.wav", after=2.5, seconds=1.2, then=3.0)
    heard = box.shared_dir / f"pool-heard-{uuid.uuid4().hex[:6]}.wav"
    await call_pbx(
        pool_ari,
        "100",
        Script(record=box.inside_path(heard), play=playable(box, speech), wait=0.5),
        rig_id="pool_e2e",
    )

    def first() -> Call | None:
        return next(iter(running.pool.calls.values()), None)

    call = await wait_for(first, 10, what="the call")
    assert isinstance(call, Call)
    # Only the call's own application exists while it runs: app:<channel name>.
    apps = await applications(pool_ari)
    assert apps == [f"voicebot:{call.caller.name}"], apps
    record = await model_server.wait_for_session(timeout=10)
    await model_server.wait_for(lambda: record.truncates, timeout=15)  # barge-in
    result = await wait_rig_done(pool_ari, "pool_e2e", timeout=25)
    assert result["state"] == "done"
    await wait_for(lambda: running.ended, 15, what="the call to end")
    ended = running.ended[0]
    assert ended.end_reason == "caller hung up", ended.end_reason
    assert ended.media is not None
    summary = ended.media.summary()
    assert summary.rx_received > 100  # the caller's audio reached the controller
    assert record.input_audio_bytes > 8000  # ... and the model

    samples, rate = read_wav(await wait_recording(heard))
    spans = tone_spans(samples, rate, AGENT_HZ)
    assert spans, "the caller heard the agent's greeting"
    start, stop = spans[0]
    assert stop - start < 4.0, spans  # cut short by the caller's barge-in, not the full 5 s

    await wait_nothing_left(pool_ari, timeout=15)
    await wait_for(no_applications(pool_ari), 10, what="the per-call app to go")
    await wait_for(lambda: not running.pool.listener.connections, 10, what="connections closed")


async def test_outbound_mode_over_tls(
    pool_asterisk: PoolAsterisk,
    pool_ari: AriClient,
    model_server: ModelServer,
    start_pool: StartPool,
) -> None:
    await pool_asterisk.use_app(pool_ari, "voicebot-tls")
    running = await start_pool(
        port=pool_asterisk.tls_port,
        ARI_APP="voicebot-tls",
        ARI_LISTEN_CERT=str(pool_asterisk.cert),
        ARI_LISTEN_KEY=str(pool_asterisk.key),
    )
    assert running.pool.listener.url.startswith("wss://")
    await call_pbx(pool_ari, "100", Script(wait=2), rig_id="pool_tls")
    await wait_for(lambda: running.ended, 20, what="the call over wss to end")
    assert running.ended[0].end_reason == "caller hung up"
    assert running.ended[0].model_ready
    await wait_nothing_left(pool_ari, timeout=15)


async def test_wrong_credentials_are_refused_and_the_caller_takes_the_fallback(
    pool_asterisk: PoolAsterisk,
    pool_ari: AriClient,
    start_pool: StartPool,
) -> None:
    running = await start_pool(ARI_PASSWORD="not-what-asterisk-sends")
    await call_pbx(pool_ari, "100", Script(wait=1), rig_id="pool_refused")
    await wait_rig_done(pool_ari, "pool_refused", timeout=20)
    assert running.pool.listener.refused >= 1
    assert running.ended == []
    log = pool_asterisk.box.log_path.read_text()
    assert "Stasis app 'voicebot' unavailable (STASISSTATUS=FAILED)" in log
    await wait_nothing_left(pool_ari, timeout=15)


async def test_an_outbound_call_placed_through_the_pool(
    pool_asterisk: PoolAsterisk,
    pool_ari: AriClient,
    model_server: ModelServer,
    start_pool: StartPool,
) -> None:
    running = await start_pool(OUTBOUND_ALLOW="PJSIP/.*", OUTBOUND_VAD_SILENCE_MS="300")
    await set_phone_script(pool_ari, Script(wait=3), rig_id="pool_out")
    call_id = running.pool.originate(
        OutboundRequest(endpoint="PJSIP/tester", purpose="Say hello and hang up.")
    )
    await wait_for(lambda: running.ended, 40, what="the outbound call to end")
    call = running.ended[0]
    assert call.call_id == call_id
    assert call.direction == "outbound"
    assert call.answered_at is not None, call.end_reason
    result = await rig_result(pool_ari, "pool_out")
    assert result["state"] == "done", result
    await wait_nothing_left(pool_ari, timeout=15)
    await wait_for(no_applications(pool_ari), 10, what="the per-call apps to go")
