"""The greeting, a custom HTTP tool against a real local HTTP server, and the call limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from controller.devtools.modelserver import ModelServer
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import analyse, wait_recording
from controller.devtools.rig.calls import Script, call_pbx, wait_rig_done
from controller.devtools.rig.sandbox import Sandbox
from controller.devtools.rig.wait import wait_for


def outputs(model_server: ModelServer) -> list[dict[str, Any]]:
    """The function_call_output items the controller created, in order."""
    return [
        e["item"]
        for e in model_server.session.received
        if e.get("type") == "conversation.item.create"
        and e.get("item", {}).get("type") == "function_call_output"
    ]


async def test_the_agent_greets_first_when_a_greeting_is_set(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, start_controller
) -> None:
    model_server.config.tone_hz = 700.0
    model_server.config.tone_ms = 1200
    await start_controller(AGENT_GREETING="Thanks for calling {dialed_number}.")
    heard = asterisk.shared_dir / "greeting-heard.wav"
    # The caller says nothing: whatever it hears is the greeting.
    await call_pbx(ari, "100", Script(record=asterisk.inside_path(heard), wait=4), rig_id="greet")
    await wait_rig_done(ari, "greet", timeout=20)

    session = model_server.session
    types = session.received_types()
    first_response = types.index("response.create")
    assert types.index("session.update") < first_response
    # Sent as soon as the session is ready, before any caller turn.
    assert not session.turns or session.turns[0].audio_end_ms >= 0
    (created,) = [e for e in session.received if e["type"] == "response.create"][:1]
    assert "Thanks for calling 100." in created["response"]["instructions"]
    stats = analyse(await wait_recording(heard))
    assert abs(stats.dominant_hz - 700) < 20
    assert 1.0 <= stats.active <= 1.5


@pytest.fixture
async def order_service() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP endpoint for a custom tool; records what it was sent."""
    received: list[dict[str, Any]] = []

    async def lookup(request: web.Request) -> web.Response:
        body = await request.json()
        received.append(body)
        if body["arguments"].get("number") == "slow":
            await asyncio.sleep(3)
        return web.json_response({"status": "shipped", "eta": "tomorrow"})

    app = web.Application()
    app.router.add_post("/orders", lookup)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/orders", received
    finally:
        await runner.cleanup()


async def test_a_custom_tool_posts_to_its_url_and_returns_the_answer(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller,
    order_service: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    url, received = order_service
    agents = tmp_path / "agents.toml"
    agents.write_text(
        f"""
[tools.lookup_order]
description = "Look up an order by its number."
url = "{url}"
timeout = 1
[tools.lookup_order.parameters]
type = "object"
properties.number = {{ type = "string" }}

[profiles.default]
tools = ["hangup", "lookup_order"]
"""
    )
    await start_controller(AGENTS_FILE=str(agents), AGENT_GREETING="Hello.")
    # The greeting's response becomes the first tool call; the response.create
    # that follows its result becomes the second, whose service is too slow.
    first = model_server.queue_function_call("lookup_order", {"number": "42"})
    second = model_server.queue_function_call("lookup_order", {"number": "slow"})
    await call_pbx(ari, "100", Script(wait=8), rig_id="tool")
    await model_server.wait_for(
        lambda: model_server.sessions and len(outputs(model_server)) >= 2, timeout=15
    )

    declared = model_server.session.session_updates[0]["tools"]
    assert [t["name"] for t in declared] == ["hangup", "lookup_order"]
    assert received[0]["arguments"] == {"number": "42"}
    assert received[0]["caller_number"] == "tester"
    ok, slow = outputs(model_server)
    assert ok["call_id"] == first
    assert json.loads(ok["output"]) == {"status": "shipped", "eta": "tomorrow"}
    # Each result is followed by a response.create.
    types = model_server.session.received_types()
    creates = [i for i, t in enumerate(types) if t == "conversation.item.create"]
    assert all("response.create" in types[i + 1 : i + 3] for i in creates)

    # The slow service: the model gets a clear error, the call goes on.
    assert slow["call_id"] == second
    error = json.loads(slow["output"])
    assert error["ok"] is False
    assert "lookup_order failed" in error["error"]
    assert any(c["name"].startswith("PJSIP/tester-") for c in await ari.channels())


async def test_the_call_ends_with_a_goodbye_at_the_maximum_duration(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, start_controller
) -> None:
    running = await start_controller(MAX_CALL_SECONDS="3")
    await call_pbx(ari, "100", Script(wait=20), rig_id="maxdur")
    await wait_for(lambda: running.ended, 15, what="the call to end at the limit")
    call = running.ended[0]
    assert call.end_reason == "the call reached its maximum duration"
    assert 3.0 <= call.elapsed < 10.0
    goodbye = [
        e
        for e in model_server.session.received
        if e["type"] == "response.create" and "goodbye" in str(e.get("response", ""))
    ]
    assert goodbye, "the agent was asked to say goodbye"
    result = await wait_rig_done(ari, "maxdur", timeout=10)
    assert result["state"] == "done"
    assert not await ari.get("/bridges")
