"""Outbound mode end to end: Asterisk opens a websocket per call to the controller.

The sandbox here is this module's own (controller/devtools/rig/pool.py): its ari.conf and
websocket_client.conf send ``Stasis(voicebot)`` to per-call websockets, and
nothing is ever registered with Asterisk. The controller runs in this
process (:class:`~controller.pool.worker.PoolController`) with
``ARI_MODE=outbound``; the caller is the rig's phone over real SIP, the
model the local GA model server.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from controller.call.call import Call
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
from controller.devtools.rig.pool import (
    PASSWORD,
    PoolAsterisk,
    free_port,
    haproxy_binary,
    haproxy_config,
    start_pool_sandbox,
)
from controller.devtools.rig.wait import wait_for
from controller.outbound import OutboundRequest
from controller.pool.takeover import LOST_RESULT
from controller.pool.worker import PoolController
from controller.records import CallRecord
from controller.store import open_store
from tests.e2e.conftest import MEDIA_PORTS, keeping_ended
from tests.e2e.test_inbound import LogReader as _LogReader
from tests.e2e.test_inbound import run_check

AGENT_HZ = 1000.0
CALLER_HZ = 400.0


@pytest.fixture(scope="module")
def pool_asterisk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolAsterisk]:
    """This module's Asterisk, with per-call websocket templates (devtools/rig/pool.py)."""
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
        ended: list[Call] = []
        pool = PoolController(config, call_factory=keeping_ended(ended))
        running = RunningPool(pool, asyncio.create_task(pool.run()))
        running.ended = ended
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
    # Only the call's own application exists while it runs: app:<channel name>. The
    # externalMedia channel and the bridge the worker created belong to it, so their
    # events come over this call's connection, to this worker.
    apps = await applications(pool_ari)
    assert apps == [f"voicebot:{call.caller.name}"], apps

    async def media_in_the_call_app() -> bool:
        [app] = await pool_ari.get("/applications")
        return call.external_channel_id in app["channel_ids"] and (
            call.bridge_id in app["bridge_ids"]
        )

    await wait_for(media_in_the_call_app, 10, what="externalMedia in the per-call app")
    await wait_for(lambda: call.media is not None and call.media.summary().rx_received, 10)
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


# --- several workers: ari-realtime run --workers 2, and HAProxy in front of two controllers -----


def free_port_pair() -> int:
    """A port P such that P and P + 1 are both free (worker 0's and worker 1's HTTP)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and all(port_free(p) for p in (port, port + 1)):
            return port
    raise AssertionError("no two consecutive free ports")


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LogReader(_LogReader):
    def all(self, *words: str) -> list[str]:
        return [line for line in self.lines if all(w in line for w in words)]


async def start_run(
    env: dict[str, str], *args: str
) -> tuple[asyncio.subprocess.Process, LogReader]:
    """``ari-realtime run ARGS`` as a subprocess with ``env``; its stderr read as it comes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller",
        "run",
        *args,
        env={**os.environ, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return proc, LogReader(proc)


async def stop_run(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(proc.wait(), 40)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    return proc.returncode


async def stored(url: str) -> list[CallRecord]:
    store = await open_store(url)
    try:
        return await store.list(limit=200)
    finally:
        await store.close()


async def place_calls(ari: AriClient, prefix: str, count: int, wait: float) -> list[str]:
    """``count`` calls from the rig's phone, a little apart; their rig ids."""
    ids = []
    for i in range(count):
        rig_id = f"{prefix}{i}"
        await call_pbx(ari, "100", Script(wait=wait), rig_id=rig_id)
        ids.append(rig_id)
        await asyncio.sleep(0.15)
    return ids


async def live_by_worker(url: str, count: int) -> dict[str, list[CallRecord]]:
    """Wait until ``count`` calls are live in the store; group them by controller id."""

    async def enough() -> list[CallRecord]:
        live = [r for r in await stored(url) if r.status == "live" and r.answered_at]
        return live if len(live) >= count else []

    live: list[CallRecord] = await wait_for(
        enough, 30, what=f"{count} live calls in the store", interval=0.3
    )
    groups: dict[str, list[CallRecord]] = {}
    for record in live:
        groups.setdefault(record.controller_id, []).append(record)
    return groups


async def assert_failover(
    pool_asterisk: PoolAsterisk,
    ari: AriClient,
    url: str,
    *,
    kill: Callable[[str], Awaitable[None]],
    prefix: str,
    before: int = 12,
    after: int = 8,
) -> tuple[list[CallRecord], list[CallRecord]]:
    """``before`` calls spread over the workers; ``kill`` one with live calls; ``after`` more.

    Returns the killed worker's calls and all records. Asserts: both workers
    served calls, the killed one's callers took the dialplan's handed-back
    branch (never silence), every later call was served to its end, and
    nothing is left in Asterisk.
    """
    log_before = handed_back(pool_asterisk, LOST_RESULT)
    first = await place_calls(ari, f"{prefix}a", before, wait=10)
    groups = await live_by_worker(url, before)
    assert len(groups) == 2, {k: len(v) for k, v in groups.items()}  # spread over both
    victim = max(groups, key=lambda k: len(groups[k]))
    lost = groups[victim]
    await kill(victim)
    second = await place_calls(ari, f"{prefix}b", after, wait=3)
    for rig_id in first + second:
        result = await wait_rig_done(ari, rig_id, timeout=60)
        assert result["state"] == "done", (rig_id, result)
    await wait_nothing_left(ari, timeout=20)

    # Each of the lost worker's callers was handed back (the dialplan's branch ran).
    assert handed_back(pool_asterisk, LOST_RESULT) - log_before == len(lost)

    records: list[CallRecord] = await wait_for(
        lambda: all_ended(url, before + after), 20, what="every record ended", interval=0.3
    )
    ours = {r.id: r for r in records}
    lost_ids = {r.id for r in lost}
    for record in ours.values():
        if record.id in lost_ids:
            assert record.outcome == "controller_crashed", record
        else:
            assert record.outcome == "caller_hung_up", record
    later = sorted(ours.values(), key=lambda r: r.started_at)[-after:]
    assert all(r.controller_id != victim or r.outcome == "caller_hung_up" for r in later)
    return lost, list(ours.values())


def handed_back(pool_asterisk: PoolAsterisk, result: str) -> int:
    """How many callers the dialplan's handed-back branch logged with ``result``."""
    text = pool_asterisk.box.log_path.read_text()
    return sum(1 for line in text.splitlines() if "NOTICE[" in line and f"back: {result}" in line)


async def all_ended(url: str, count: int) -> list[CallRecord]:
    records = await stored(url)
    if len(records) >= count and all(r.status == "ended" for r in records):
        return records
    return []


async def test_run_workers_2_spreads_calls_and_survives_a_sigkill(
    pool_asterisk: PoolAsterisk,
    pool_ari: AriClient,
    model_server: ModelServer,
    pg_url: str,
) -> None:
    http = free_port_pair()
    env = pool_env(
        pool_asterisk,
        model_server,
        pool_asterisk.direct_port,
        DATABASE_URL=pg_url,
        CONTROLLER_ID="pool-e2e",
        HTTP_LISTEN=f"127.0.0.1:{http}",
        DRAIN_SECONDS="5",
    )
    proc, log = await start_run(env, "--workers", "2")
    try:
        await wait_for(lambda: len(log.all("listening for Asterisk")) == 2, 20, what="2 workers")
        pids = {
            f"pool-e2e/w{m.group(1)}": int(m.group(2))
            for line in log.all("worker started")
            if (m := re.search(r"worker=(\d+) pid=(\d+)", line))
        }
        # Each worker has its own HTTP server: port + its index.
        async with aiohttp.ClientSession() as http_client:
            for index in (0, 1):
                async with http_client.get(f"http://127.0.0.1:{http + index}/healthz") as r:
                    assert r.status == 200, await r.text()

        async def kill(victim: str) -> None:
            os.kill(pids[victim], signal.SIGKILL)

        lost, records = await assert_failover(
            pool_asterisk, pool_ari, pg_url, kill=kill, prefix="wk"
        )
        assert lost
        await log.wait("worker died; restarting", timeout=10)
        await wait_for(lambda: len(log.all("worker started")) == 3, 20, what="the restart")
    finally:
        code = await stop_run(proc)
    assert code == 0, log.lines[-20:]
    text = "\n".join(log.lines)
    assert PASSWORD not in text and "Traceback" not in text


async def test_haproxy_spreads_calls_over_two_controllers_and_survives_a_sigkill(
    pool_asterisk: PoolAsterisk,
    pool_ari: AriClient,
    model_server: ModelServer,
    pg_url: str,
    tmp_path: Path,
) -> None:
    binary = await asyncio.to_thread(haproxy_binary)
    await pool_asterisk.use_app(pool_ari, "voicebot-lb")
    ports = {"a": free_port(), "b": free_port()}
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(pool_asterisk.lb_port, ports))
    procs: dict[str, tuple[asyncio.subprocess.Process, LogReader]] = {}
    haproxy: asyncio.subprocess.Process | None = None
    try:
        for name, port in ports.items():
            env = pool_env(
                pool_asterisk,
                model_server,
                port,
                ARI_APP="voicebot-lb",
                DATABASE_URL=pg_url,
                CONTROLLER_ID=f"lb-{name}",
            )
            procs[f"lb-{name}"] = await start_run(env)
        for _, log in procs.values():
            await log.wait("listening for Asterisk", timeout=20)
        haproxy = await asyncio.create_subprocess_exec(
            binary,
            "-db",
            "-f",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        haproxy_log = LogReader(haproxy)
        await asyncio.sleep(1.5)  # HAProxy's first health checks
        assert haproxy.returncode is None, haproxy_log.lines

        async def kill(victim: str) -> None:
            procs[victim][0].kill()

        lost, records = await assert_failover(
            pool_asterisk, pool_ari, pg_url, kill=kill, prefix="lb"
        )
        assert lost
        survivor = next(name for name in procs if name != lost[0].controller_id)
        later = sorted(records, key=lambda r: r.started_at)[-8:]
        assert {r.controller_id for r in later} == {survivor}
        # HAProxy saw the dead one go down, and always had a server for the calls.
        assert haproxy_log.find("is DOWN"), haproxy_log.lines
        assert not haproxy_log.find("no server available"), haproxy_log.lines
    finally:
        for proc, _ in procs.values():
            await stop_run(proc)
        if haproxy is not None:
            haproxy.terminate()
            await haproxy.wait()
        await pool_asterisk.use_app(pool_ari, "voicebot")
    for name, (_, log) in procs.items():
        text = "\n".join(log.lines)
        assert "Traceback" not in text and PASSWORD not in text, (name, text[-2000:])


async def test_check_in_outbound_mode_wants_the_app_unregistered(
    pool_asterisk: PoolAsterisk, pool_ari: AriClient, model_server: ModelServer
) -> None:
    env = pool_env(pool_asterisk, model_server, pool_asterisk.direct_port)
    proc = await asyncio.to_thread(run_check, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   app: Stasis app 'voicebot' is not registered" in proc.stdout, proc.stdout
    async with pool_ari.events("voicebot"):  # an inbound-mode controller would win
        proc = await asyncio.to_thread(run_check, env)
    assert proc.returncode == 1
    assert "FAIL app: Stasis app 'voicebot' is registered" in proc.stdout, proc.stdout


async def test_drain_stops_listening_at_once_and_lets_live_calls_finish(
    pool_asterisk: PoolAsterisk,
    pool_ari: AriClient,
    start_pool: StartPool,
) -> None:
    running = await start_pool()
    await call_pbx(pool_ari, "100", Script(wait=4), rig_id="pool_drain_live")
    await wait_for(lambda: running.pool.calls, 10, what="the live call")
    failed_before = unavailable(pool_asterisk)
    running.pool.request_drain(20)
    await wait_for(lambda: not running.pool.listener.listening, 5, what="the listener to close")
    assert running.pool.health() == {"listening": False, "accepting_calls": False}
    # No other worker here: a new caller gets the dialplan's unavailable branch at once.
    await call_pbx(pool_ari, "100", Script(wait=1), rig_id="pool_drain_late")
    await wait_rig_done(pool_ari, "pool_drain_late", timeout=20)
    assert unavailable(pool_asterisk) == failed_before + 1
    await asyncio.wait_for(running.task, 30)  # stops once the live call has ended
    assert [c.end_reason for c in running.ended] == ["caller hung up"]
    await wait_nothing_left(pool_ari, timeout=15)


def unavailable(pool_asterisk: PoolAsterisk) -> int:
    text = pool_asterisk.box.log_path.read_text()
    return sum(
        1
        for line in text.splitlines()
        if "WARNING[" in line and "unavailable (STASISSTATUS=FAILED)" in line
    )
