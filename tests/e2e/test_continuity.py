"""The model session survives: drops, a server restart, its time limit; and when it cannot.

A real PJSIP call speaks two turns, a few seconds apart; between them the
local model server drops the session, restarts, or the session reaches its
time limit. The call must go on: a new session opens, the conversation so
far is replayed into it (checked on the server's side, validated against the
``openai`` package's types), and the second turn is answered there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from controller.devtools.modelserver import ModelServer, SessionRecord
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import make_tones
from controller.devtools.rig.calls import Script, call_pbx, playable, wait_nothing_left
from controller.devtools.rig.sandbox import Sandbox
from controller.devtools.rig.wait import wait_for
from tests.e2e.conftest import RunningController

VAD = {"VAD_PREFIX_MS": "100", "VAD_SILENCE_MS": "300"}
CALLER = "When do you open tomorrow?"
AGENT = "A tone."


def two_turns(asterisk: Sandbox, gap_s: float) -> str:
    """The caller speaks 1.2 s, is quiet for ``gap_s``, speaks 1.2 s again."""
    wav = make_tones(
        asterisk.shared_dir / f"two-turns-{gap_s:g}.wav", [(500, 1.2), (0, gap_s), (500, 1.2)]
    )
    return playable(asterisk, wav)


def replayed(record: SessionRecord) -> list[tuple[str, str]]:
    """The items a session was given with conversation.item.create: (role or type, text)."""
    out = []
    for event in record.received:
        if event.get("type") != "conversation.item.create":
            continue
        item = event["item"]
        if item["type"] == "message":
            out.append((item["role"], item["content"][0]["text"]))
        else:
            out.append((item["type"], item.get("output", item.get("name", ""))))
    return out


async def replayed_session(server: ModelServer, count: int, timeout: float = 20.0) -> SessionRecord:
    """Session number ``count``, once the conversation has been replayed into it."""
    record = await server.wait_for_session(count, timeout=timeout)
    await wait_for(lambda: replayed(record), timeout, what="the conversation replayed")
    return record


def answered(record: SessionRecord) -> bool:
    return any(r.status == "completed" and r.kind == "audio" for r in record.responses)


async def start_call(
    asterisk: Sandbox,
    ari: AriClient,
    model_server: ModelServer,
    start_controller: Callable[..., Any],
    gap_s: float,
    **settings: str,
) -> tuple[RunningController, dict[str, Any]]:
    model_server.config.input_transcript = CALLER
    model_server.config.transcript = AGENT
    running: RunningController = await start_controller(**VAD, **settings)
    phone = await call_pbx(
        ari, "100", Script(delay=1, play=two_turns(asterisk, gap_s), wait=30), rig_id="cont"
    )
    first = await model_server.wait_for_session(1, timeout=10)
    await wait_for(lambda: answered(first), 15, what="the first turn's answer")
    return running, phone


async def finish(ari: AriClient, running: RunningController, phone: dict[str, Any]) -> Any:
    assert await ari.hangup(phone["id"])
    await wait_for(lambda: running.ended, 15, what="the call to end")
    await wait_nothing_left(ari)
    return running.ended[0]


async def test_a_dropped_session_is_reopened_with_the_conversation_replayed(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, start_controller: Any
) -> None:
    running, phone = await start_call(asterisk, ari, model_server, start_controller, gap_s=6)
    await asyncio.sleep(1.0)  # the reply plays out
    await model_server.drop(code=1011, reason="server going away")
    second = await replayed_session(model_server, 2)
    # The new session got the same configuration, then the conversation so far.
    assert second.session_updates and second.session_updates[0]["instructions"]
    assert replayed(second)[:2] == [("user", CALLER), ("assistant", AGENT)]
    # The caller's second turn is answered by the new session.
    await wait_for(lambda: answered(second), 20, what="the second turn's answer")
    call = await finish(ari, running, phone)
    assert call.end_reason == "caller hung up"
    assert [line.role for line in call.transcript].count("agent") >= 2


async def test_a_model_server_restart_mid_call_is_survived(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, start_controller: Any
) -> None:
    running, phone = await start_call(asterisk, ari, model_server, start_controller, gap_s=8)
    await asyncio.sleep(1.0)
    port = model_server.port
    await model_server.stop()
    await asyncio.sleep(2.0)  # the controller retries meanwhile
    model_server.config.port = port
    await model_server.start()
    second = await replayed_session(model_server, 2)
    assert ("assistant", AGENT) in replayed(second)
    await wait_for(lambda: answered(second), 20, what="the second turn's answer")
    call = await finish(ari, running, phone)
    assert call.end_reason == "caller hung up"


async def test_when_no_session_can_be_opened_in_time_the_caller_is_handed_back(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, start_controller: Any
) -> None:
    running, _ = await start_call(
        asterisk, ari, model_server, start_controller, gap_s=8, REALTIME_RECONNECT_SECONDS="2"
    )
    await model_server.stop()
    await wait_for(lambda: running.ended, 20, what="the call to end")
    call = running.ended[0]
    assert call.end_reason == "failed: RealtimeConnectionError"
    await wait_nothing_left(ari, timeout=20)  # the dialplan's handed_back branch ran, then hung up


async def test_a_session_is_renewed_between_turns_before_it_expires(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, start_controller: Any
) -> None:
    model_server.config.session_max_s = 8  # expires_at says so; the real API: 60 min
    running, phone = await start_call(asterisk, ari, model_server, start_controller, gap_s=7)
    first = model_server.sessions[0]
    second = await replayed_session(model_server, 2)
    # Renewed before the limit: the old session never had to expire.
    assert not any(e.get("code") == "session_expired" for e in first.errors)
    assert first.closed and first.close_code == 1000
    assert ("assistant", AGENT) in replayed(second)
    await wait_for(lambda: answered(second), 20, what="the second turn's answer")
    call = await finish(ari, running, phone)
    assert call.end_reason == "caller hung up"
