"""The foundation end to end: ``check`` and ``run`` against the sandboxed Asterisk 22.

``run`` is started as the real command (a subprocess), and a real PJSIP call
from the rig's phone (Asterisk calling itself over a second SIP transport)
reaches the Stasis app through the dialplan.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from controller.devtools.modelserver import ModelServer
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import analyse, gsm_duration, wait_recording
from controller.devtools.rig.calls import Script, call_pbx, wait_nothing_left, wait_rig_done
from controller.devtools.rig.sandbox import Sandbox
from controller.devtools.rig.wait import wait_for
from tests.e2e.conftest import controller_env
from tests.e2e.test_rig import PROMPT

SECRET_KEY = "sk-test-not-a-real-key-0123456789"


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "controller", "check"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def lines_of(proc: subprocess.CompletedProcess[str], status: str) -> dict[str, str]:
    """``{check name: detail}`` of the report lines with ``status``."""
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith(status + " "):
            name, _, detail = line[len(status) :].strip().partition(": ")
            out[name] = detail
    return out


async def test_check_passes_against_the_sandbox(
    asterisk: Sandbox, model_server: ModelServer
) -> None:
    proc = await asyncio.to_thread(run_check, controller_env(asterisk, model_server))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ok = lines_of(proc, "ok")
    assert set(ok) == {"ARI", "credentials", "modules", "app", "agents", "media", "model"}, (
        proc.stdout
    )
    assert ok["ARI"].startswith("Asterisk 22.")
    assert "opened a session for gpt-realtime" in ok["model"]
    assert SECRET_KEY not in proc.stdout + proc.stderr
    assert asterisk.ari_password not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("change", "name", "expected"),
    [
        ({"ARI_URL": "http://127.0.0.1:1"}, "ARI", "cannot reach Asterisk at http://127.0.0.1:1"),
        ({"ARI_PASSWORD": "wrong-password"}, "credentials", "Asterisk rejected ARI user"),
        ({"MEDIA_ADDRESS": "192.0.2.1"}, "media", "cannot bind UDP on MEDIA_ADDRESS=192.0.2.1"),
        ({"REALTIME_URL": "ws://127.0.0.1:1/v1/realtime"}, "model", "cannot reach the model"),
        ({"AGENTS_FILE": "/nonexistent/agents.toml"}, "agents", "AGENTS_FILE: cannot read"),
    ],
)
async def test_check_names_each_failure(
    asterisk: Sandbox, model_server: ModelServer, change: dict[str, str], name: str, expected: str
) -> None:
    proc = await asyncio.to_thread(run_check, controller_env(asterisk, model_server, **change))
    assert proc.returncode == 1
    failed = lines_of(proc, "FAIL")
    assert list(failed) == [name], proc.stdout
    assert expected in failed[name]
    assert "wrong-password" not in proc.stdout + proc.stderr


async def test_check_names_missing_modules(asterisk: Sandbox, model_server: ModelServer) -> None:
    asterisk.cli("module unload chan_rtp.so")
    try:
        proc = await asyncio.to_thread(run_check, controller_env(asterisk, model_server))
    finally:
        asterisk.cli("module load chan_rtp.so")
    assert proc.returncode == 1
    failed = lines_of(proc, "FAIL")
    assert list(failed) == ["modules"], proc.stdout
    assert "chan_rtp.so (externalMedia" in failed["modules"]
    assert "codec_ulaw" not in failed["modules"]


async def test_check_warns_when_the_app_is_taken(
    asterisk: Sandbox, model_server: ModelServer, ari: AriClient
) -> None:
    async with ari.events(asterisk.ari_app):
        proc = await asyncio.to_thread(run_check, controller_env(asterisk, model_server))
    assert proc.returncode == 0
    warned = lines_of(proc, "warn")
    assert "already registered by another connection" in warned["app"]


@pytest.fixture
async def run_command(
    asterisk: Sandbox, model_server: ModelServer
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``ari-realtime run`` as a subprocess, stopped with SIGTERM afterwards."""
    env = {**os.environ, **controller_env(asterisk, model_server), "LOG_LEVEL": "DEBUG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller",
        "run",
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    yield proc
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)


class LogReader:
    """Collects a subprocess's stderr lines as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._task = asyncio.create_task(self._read(proc.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def find(self, *words: str) -> str | None:
        for line in self.lines:
            if all(w in line for w in words):
                return line
        return None

    async def wait(self, *words: str, timeout: float = 10.0) -> str:
        line = await wait_for(
            lambda: self.find(*words), timeout, what=f"log line with {words}: {self.lines[-5:]}"
        )
        assert isinstance(line, str)
        return line


async def test_run_answers_a_sip_call_and_leaves_nothing_behind(
    asterisk: Sandbox, ari: AriClient, run_command: asyncio.subprocess.Process
) -> None:
    log = LogReader(run_command)
    await log.wait("registered", "app=voicebot")

    await call_pbx(ari, "100", Script(wait=3), rig_id="found1")
    start = await log.wait("StasisStart", "channel=PJSIP/tester-")
    assert "args=100" in start
    await log.wait("answered")

    async def caller_up() -> bool:
        channels = await ari.channels()
        return any(c["name"].startswith("PJSIP/tester-") and c["state"] == "Up" for c in channels)

    await wait_for(caller_up, 10, what="the caller's channel to be Up")
    await log.wait("media up", timeout=10)
    result = await wait_rig_done(ari, "found1", timeout=20)
    assert result["state"] == "done"  # the phone's call was answered and ran its script
    end = await log.wait("StasisEnd", 'reason="caller hung up"', timeout=10)
    assert "rx_received=" in end

    await wait_nothing_left(ari)

    run_command.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(run_command.wait(), 20) == 0
    await log.wait("stopped")
    text = "\n".join(log.lines)
    assert SECRET_KEY not in text
    assert asterisk.ari_password not in text
    assert "Traceback" not in text


async def test_a_failed_model_hands_the_caller_back_to_the_dialplan(
    asterisk: Sandbox, ari: AriClient, start_controller
) -> None:
    running = await start_controller(REALTIME_URL="ws://127.0.0.1:1/v1/realtime")
    heard = asterisk.shared_dir / "heard-handed-back.wav"
    await call_pbx(ari, "100", Script(record=asterisk.inside_path(heard), wait=20), rig_id="back")
    await wait_for(lambda: running.ended, 15, what="the call to end")
    call = running.ended[0]
    assert call.end_reason == "failed: RealtimeConnectionError"
    await wait_rig_done(ari, "back", timeout=25)

    # The dialplan's handed_back branch ran: its log line and its prompt.
    log = asterisk.log_path.read_text()
    assert "back: failed_RealtimeConnectionError" in log
    prompt = gsm_duration(asterisk.host_path(PROMPT))
    stats = analyse(await wait_recording(heard))
    assert stats.active > prompt / 2, (stats, prompt)

    await wait_nothing_left(ari)
