"""Outbound calls end to end: the agent phones the rig through the sandboxed Asterisk.

The controller runs as ``ari-realtime run`` does (:func:`controller.serve.serve`
in this process, HTTP API on a free loopback port). Calls are asked for with
``POST /calls`` and with the real ``ari-realtime call`` command (a
subprocess). The far end is the rig's phone (``PJSIP/NAME@tester``, context
``rig-phone-in``): it answers and plays a file, or answers busy, or rings
until cancelled. The local model server plays the agent: it answers the far
end's speech and, scripted, reports the outcome with ``report_outcome``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from controller.app import Controller
from controller.config import load_settings
from controller.devtools.modelserver import ModelServer
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import make_tone
from controller.devtools.rig.calls import Script, playable, rig_result, set_phone_script
from controller.devtools.rig.sandbox import Sandbox
from controller.devtools.rig.wait import wait_for
from controller.serve import Operations, serve
from tests.e2e.conftest import controller_env

TOKEN = "e2e-outbound-token-0123456789"
ALLOW = r"PJSIP/(company|shop|busyline|noanswer|quiet|voicemail)@tester PJSIP/ghost"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Running:
    def __init__(self, controller: Controller, ops: Operations, env: dict[str, str]) -> None:
        self.controller = controller
        self.ops = ops
        self.env = env
        assert ops.server is not None
        self.url = ops.server.url
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})

    async def post_call(self, **body: Any) -> tuple[int, dict[str, Any]]:
        async with self.http.post(f"{self.url}/calls", json=body) as response:
            return response.status, await response.json()

    async def ended(self, call_id: str, timeout: float = 30.0) -> dict[str, Any]:
        async def read() -> Any:
            async with self.http.get(f"{self.url}/calls/{call_id}") as response:
                data: dict[str, Any] = await response.json()
                return data if response.status == 200 and data["status"] == "ended" else None

        record: dict[str, Any] = await wait_for(read, timeout, what=f"call {call_id} to end")
        return record


@pytest.fixture
async def outbound(
    asterisk: Sandbox, model_server: ModelServer, sqlite_url: str
) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    started: list[tuple[Running, asyncio.Task[None]]] = []

    async def start(**extra: str) -> Running:
        env = controller_env(
            asterisk,
            model_server,
            DATABASE_URL=sqlite_url,
            HTTP_LISTEN=f"127.0.0.1:{free_port()}",
            HTTP_TOKEN=TOKEN,
            **{
                "OUTBOUND_ALLOW": ALLOW,
                "VAD_PREFIX_MS": "100",
                "VAD_SILENCE_MS": "300",
                "OUTBOUND_VAD_SILENCE_MS": "300",
                **extra,
            },
        )
        up: list[tuple[Controller, Operations]] = []
        task = asyncio.create_task(
            serve(load_settings(**env), None, started=lambda c, o: up.append((c, o)))
        )
        await wait_for(lambda: up and up[0][0].ready.is_set(), 15, what="the controller")
        running = Running(up[0][0], up[0][1], env)
        started.append((running, task))
        return running

    try:
        yield start
    finally:
        for running, task in started:
            await running.http.close()
            running.controller.request_stop()
            await asyncio.wait_for(task, 30)


async def assert_nothing_left(ari: AriClient, model_server: ModelServer) -> None:
    async def clear() -> bool:
        return not await ari.channels() and not await ari.get("/bridges")

    await wait_for(clear, 15, what="no channels and no bridges")
    await wait_for(
        lambda: all(s.closed for s in model_server.sessions), 10, what="model sessions closed"
    )


async def test_a_destination_outside_the_allowlist_is_refused_and_never_dialled(
    ari: AriClient, model_server: ModelServer, outbound: Callable[..., Awaitable[Running]]
) -> None:
    running = await outbound()
    for body in (
        {"endpoint": "PJSIP/premium@tester", "purpose": "Call a premium line."},
        {"number": "0900123456", "purpose": "No trunk is set."},
    ):
        status, reply = await running.post_call(**body)
        assert status in (403, 422), reply
        assert "OUTBOUND" in reply["error"]
    assert await ari.channels() == []  # Asterisk never created a channel
    assert running.controller.calls == {}
    assert model_server.sessions == []


@pytest.mark.parametrize(
    ("name", "answer", "ring_result", "cause"),
    [("busyline", "busy", "busy", 17), ("noanswer", "no", "no_answer", None)],
)
async def test_an_unanswered_call_records_why_and_leaves_nothing_open(
    ari: AriClient,
    model_server: ModelServer,
    outbound: Callable[..., Awaitable[Running]],
    name: str,
    answer: str,
    ring_result: str,
    cause: int | None,
) -> None:
    running = await outbound()
    await set_phone_script(ari, Script(wait=5), name=name, answer=answer)
    status, reply = await running.post_call(
        endpoint=f"PJSIP/{name}@tester", purpose="Ask for the opening hours.", ring_timeout=5
    )
    assert status == 202, reply
    record = await running.ended(reply["id"])
    assert record["direction"] == "outbound" and record["outcome"] == "not_answered"
    assert record["ring_result"] == ring_result
    if cause is not None:
        assert record["hangup_cause"] == cause
    assert record["answered_at"] is None
    assert record["result_status"] == "unknown"
    await assert_nothing_left(ari, model_server)


async def test_a_dial_asterisk_refuses_is_a_failed_call(
    ari: AriClient, model_server: ModelServer, outbound: Callable[..., Awaitable[Running]]
) -> None:
    running = await outbound()
    status, reply = await running.post_call(endpoint="PJSIP/ghost", purpose="Nobody is there.")
    assert status == 202, reply
    record = await running.ended(reply["id"])
    assert (record["outcome"], record["ring_result"]) == ("not_answered", "failed")
    await assert_nothing_left(ari, model_server)


async def test_the_agent_talks_reports_achieved_and_call_wait_exits_0(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    outbound: Callable[..., Awaitable[Running]],
) -> None:
    running = await outbound()
    hello = make_tone(asterisk.shared_dir / "outbound-hello.wav", 500.0, 1.2)
    await set_phone_script(
        ari, Script(delay=0.5, play=playable(asterisk, hello), wait=20), name="shop"
    )
    model_server.config.input_transcript = "Acme support, how can I help?"
    model_server.config.transcript = "Hello, I am calling about order 4711."
    model_server.queue_function_call(
        "report_outcome",
        {"status": "achieved", "summary": "Order 4711 ships tomorrow.", "data": {"ref": "Z9"}},
        speak_first=True,
    )
    env = {**os.environ, **running.env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller",
        "call",
        "PJSIP/shop@tester",
        "--purpose",
        "Ask when order {order} ships.",
        "--var",
        "order=4711",
        "--on-machine",
        "continue",
        "--wait",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert "outcome: achieved: Order 4711 ships tomorrow." in text
    assert "ref: Z9" in text
    assert "agent: Hello, I am calling about order 4711." in text
    call_id = text.split()[1].rstrip(":")
    record = await running.ended(call_id)
    assert record["direction"] == "outbound" and record["ring_result"] == "answered"
    assert record["purpose"] == "Ask when order {order} ships."
    assert (record["result_status"], record["result_data"]) == ("achieved", {"ref": "Z9"})
    assert [t["name"] for t in record["tool_calls"]] == ["report_outcome"]
    # The agent's brief reached the model: the purpose with the user's details filled in.
    session = next(s for s in model_server.sessions if s.session.get("instructions"))
    instructions = session.session["instructions"]
    assert "Ask when order 4711 ships." in instructions and "send_dtmf" in instructions
    tools = [t["name"] for t in session.session["tools"]]
    assert "report_outcome" in tools
    assert (await rig_result(ari, "shop"))["state"] == "done"
    await assert_nothing_left(ari, model_server)


async def test_call_wait_exits_1_when_the_purpose_was_not_achieved(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    outbound: Callable[..., Awaitable[Running]],
) -> None:
    running = await outbound()
    hello = make_tone(asterisk.shared_dir / "outbound-hello.wav", 500.0, 1.2)
    await set_phone_script(
        ari, Script(delay=0.5, play=playable(asterisk, hello), wait=20), name="shop"
    )
    model_server.queue_function_call(
        "report_outcome", {"status": "not_achieved", "summary": "They are closed."}
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller",
        "call",
        "PJSIP/shop@tester",
        "--purpose",
        "Book a table.",
        "--on-machine",
        "continue",
        "--wait",
        env={**os.environ, **running.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, out.decode()
    assert "outcome: not_achieved: They are closed." in out.decode()
    await assert_nothing_left(ari, model_server)
