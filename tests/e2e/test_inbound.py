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

from controller.check import CHECKS
from controller.devtools.modelserver import ModelServer
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import analyse, gsm_duration, wait_recording
from controller.devtools.rig.calls import Script, call_pbx, wait_nothing_left, wait_rig_done
from controller.devtools.rig.sandbox import Sandbox
from controller.devtools.rig.wait import wait_for
from tests.e2e.conftest import controller_env
from tests.e2e.test_rig import PROMPT

SECRET_KEY = "sk-test-not-a-real-key-0123456789"


def run_check(
    env: dict[str, str], *, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``ari-realtime check`` with ``env`` (and without the settings in ``unset``)."""
    full = {**os.environ, **env}
    for name in unset:
        full.pop(name, None)
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


def report(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``{check name: "status detail"}``, after asserting every check has one line, in order."""
    lines = proc.stdout.splitlines()[:-1]  # the last line is the summary
    names, out = [], {}
    for line in lines:
        status, _, rest = line.partition(" ")
        name, _, detail = rest.strip().partition(": ")
        names.append(name)
        out[name] = f"{status} {detail}"
    assert tuple(names) == CHECKS, proc.stdout + proc.stderr
    return out


async def test_check_passes_against_the_sandbox(
    asterisk: Sandbox, model_server: ModelServer
) -> None:
    proc = await asyncio.to_thread(run_check, controller_env(asterisk, model_server))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ok = lines_of(proc, "ok")
    assert tuple(ok) == CHECKS, proc.stdout
    assert ok["ARI"].startswith("Asterisk 22.")
    assert "opened a session for gpt-realtime" in ok["model"]
    assert SECRET_KEY not in proc.stdout + proc.stderr
    assert asterisk.ari_password not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("change", "name", "expected"),
    [
        (
            {"ARI_URL": "http://127.0.0.1:1"},
            "ARI",
            "cannot reach Asterisk at http://127.0.0.1:1: connection refused: nothing listens on "
            "127.0.0.1:1. Is Asterisk running",
        ),
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


# The common mistakes of a first setup: each gets one line that says what to do,
# and the checks it makes impossible still show, as skipped with the reason.
# {ari} is the sandbox's ARI_URL, {model} the model server's URL.
ADVICE = {
    "ari_url_ends_in_ari": (
        {"ARI_URL": "{ari}/ari"},
        (),
        {
            "ARI": "FAIL ARI_URL must not end in /ari (the controller adds it): set "
            "ARI_URL={ari} (Asterisk answered {ari}/ari/ari/asterisk/info with HTTP 404)",
            "credentials": "skip no ARI at ARI_URL",
            "modules": "skip no ARI at ARI_URL",
            "app": "skip no ARI at ARI_URL",
            "model": "ok {model} opened a session for gpt-realtime",
        },
    ),
    "ari_url_ends_in_ari_and_a_wrong_password": (
        # ARI asks for credentials before it looks the path up: both get a line.
        {"ARI_URL": "{ari}/ari", "ARI_PASSWORD": "wrong-password"},
        (),
        {
            "ARI": "warn Asterisk answers at {ari}/ari, but ARI_URL must not end in /ari (the "
            "controller adds it): set ARI_URL={ari}",
            "credentials": "FAIL Asterisk rejected ARI user 'voicebot': check ARI_USER and "
            "ARI_PASSWORD against a type=user section in ari.conf",
            "modules": "skip not authenticated",
            "app": "skip not authenticated",
        },
    ),
    "ari_password_not_set": (
        {},
        ("ARI_PASSWORD",),
        {
            "ARI": "ok Asterisk answers at {ari}",
            "credentials": "FAIL ARI_PASSWORD is not set: set it to the password of ARI user "
            "'voicebot' (the [voicebot] section with type=user in ari.conf)",
            "modules": "skip not authenticated",
            "app": "skip not authenticated",
        },
    ),
    "openai_api_key_not_set": (
        {},
        ("OPENAI_API_KEY",),
        {
            "credentials": "ok ARI user 'voicebot' accepted",
            "model": "FAIL OPENAI_API_KEY is not set, and {model} wants a key (HTTP 401): set "
            "OPENAI_API_KEY to your API key (Azure: the resource's key; the local model server "
            "takes any value)",
        },
    ),
    "voice_the_model_does_not_have": (
        {"REALTIME_VOICE": "nova"},
        (),
        {
            "model": "ok {model} opened a session for gpt-realtime",
            "voice": "warn REALTIME_VOICE=nova: not one of gpt-realtime's voices (alloy, ash, "
            "ballad, coral, echo, sage, shimmer, verse, marin, cedar). OpenAI rejects the session "
            "with it and calls are handed back to the dialplan; pick one of those",
        },
    ),
}


@pytest.mark.parametrize("case", list(ADVICE))
async def test_check_says_what_to_do(
    asterisk: Sandbox, model_server: ModelServer, case: str
) -> None:
    change, unset, expected = ADVICE[case]
    urls = {"ari": asterisk.ari_url, "model": model_server.url}
    env = controller_env(asterisk, model_server)
    env.update({name: value.format(**urls) for name, value in change.items()})
    for name in unset:
        del env[name]
    proc = await asyncio.to_thread(run_check, env, unset=unset)
    lines = report(proc)
    for name, line in expected.items():
        assert lines[name] == line.format(**urls), proc.stdout
    failed = any(line.startswith("FAIL") for line in expected.values())
    assert proc.returncode == (1 if failed else 0), proc.stdout + proc.stderr
    assert asterisk.ari_password not in proc.stdout + proc.stderr
    assert SECRET_KEY not in proc.stdout + proc.stderr


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
    # The dialled number on its own (Stasis args ["100", ""] and exten "s" are noise).
    assert " dialled=100" in start, start
    assert "exten=" not in start and "args=" not in start, start
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


async def test_run_says_it_cannot_reach_asterisk_until_it_has_connected(
    asterisk: Sandbox, model_server: ModelServer
) -> None:
    for ari_url, expected in (
        (
            "http://127.0.0.1:1",
            "cannot reach Asterisk at http://127.0.0.1:1, retrying in 0.5s: "
            "connection refused: nothing listens on 127.0.0.1:1",
        ),
        (
            f"{asterisk.ari_url}/ari",
            f"Asterisk at {asterisk.ari_url}/ari refused the events websocket, retrying in 0.5s: "
            "ARI GET /events -> HTTP 404: Not Found; ARI_URL must not end in /ari (the controller "
            f"adds it): set ARI_URL={asterisk.ari_url}",
        ),
    ):
        settings = controller_env(asterisk, model_server, ARI_URL=ari_url, HTTP_LISTEN="")
        env = {**os.environ, **settings}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller", "run", env=env, stderr=asyncio.subprocess.PIPE
        )
        log = LogReader(proc)
        try:
            await log.wait("retrying in 1.0s")  # a second attempt: still not "lost"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        first = log.find("retrying in 0.5s")
        assert first is not None and first.endswith(f"WARNING controller.app {expected}"), first
        text = "\n".join(log.lines)
        for noise in ("lost", "ssl:default", "Connect call failed", "Invalid response status"):
            assert noise not in text, (noise, text)


async def test_the_documented_test_call_reaches_the_agent(
    asterisk: Sandbox, run_command: asyncio.subprocess.Process
) -> None:
    """README's test call into the Compose stack (there run with docker compose exec)."""
    log = LogReader(run_command)
    await log.wait("registered", "app=voicebot")
    # As documented, but 2 s of silence after "hello world" instead of 10.
    asterisk.cli(
        "channel originate Local/101@from-tester application Playback hello-world&silence/2"
    )
    start = await log.wait("StasisStart", "channel=Local/101@from-tester-")
    assert " dialled=101 profile=sales" in start, start
    await log.wait("answered", timeout=10)
    await log.wait("transcript", "role=caller", timeout=10)  # the model heard "hello world"
    end = await log.wait("StasisEnd", 'reason="caller hung up"', timeout=15)
    assert "outcome=caller_hung_up" in end, end


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


async def test_with_every_media_port_taken_the_extra_caller_is_handed_back(
    asterisk: Sandbox, ari: AriClient, start_controller
) -> None:
    """MEDIA_PORTS with one port: the first call takes it; the second caller is handed
    back to the dialplan at once with a reason it can route, and the first call goes on."""
    port = 41190
    running = await start_controller(MEDIA_PORTS=f"{port}-{port}")
    await call_pbx(ari, "100", Script(wait=12), rig_id="ports_first")
    await wait_for(lambda: ari.get("/bridges"), 10, what="the first call's bridge")
    await call_pbx(ari, "100", Script(wait=12), rig_id="ports_second")
    await wait_for(lambda: running.ended, 15, what="the second call to end")
    (second,) = running.ended
    assert second.end_reason == "failed: NoFreePortError"
    log = asterisk.log_path.read_text()
    assert "back: failed_NoFreePortError" in log  # the dialplan's handed_back branch
    (first,) = running.controller.calls.values()
    assert first.state.value == "connected" and first.call_id != second.call_id
