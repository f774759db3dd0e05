"""Asterisk goes away while calls are up: killed and restarted, or gone for good."""

from __future__ import annotations

import asyncio
import os
import signal

from controller.app import Controller
from controller.call.call import Call
from controller.devtools.modelserver import ModelServer
from controller.devtools.modelserver.config import SessionRecord
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.calls import Script, call_pbx, wait_nothing_left, wait_rig_done
from controller.devtools.rig.sandbox import Sandbox
from controller.devtools.rig.wait import wait_for


async def kill(asterisk: Sandbox) -> None:
    """A crash: SIGKILL, so Asterisk says nothing to anyone (then clean the sandbox up).

    The sandbox's stop blocks: it runs in a thread, so the controller's loop goes on.
    """
    pid = asterisk.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(asterisk.stop)


async def restart(asterisk: Sandbox) -> None:
    """Start it again, from this thread: Asterisk dies with the thread that started it
    (PR_SET_PDEATHSIG), and a worker thread of this test's loop ends with the test.
    The controller's loop waits meanwhile, as a busy machine's would."""
    asterisk.start()


async def a_call_in_conversation(
    controller: Controller, ari: AriClient, model_server: ModelServer, rig_id: str
) -> tuple[Call, SessionRecord]:
    """A rig phone calls in and stays a minute; returns the call once its model session is up."""
    await call_pbx(ari, "100", Script(wait=60), rig_id=rig_id)
    await wait_for(lambda: controller.calls, 10, what="the call to start")
    (call,) = controller.calls.values()
    await wait_for(lambda: call.model_ready, 10, what="the model session")
    return call, model_server.sessions[-1]


async def test_asterisk_killed_and_restarted_mid_call(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, start_controller
) -> None:
    running = await start_controller()
    controller = running.controller
    call, session = await a_call_in_conversation(controller, ari, model_server, "astkill1")

    try:
        await kill(asterisk)
        await wait_for(lambda: not controller.ready.is_set(), 10, what="the controller to notice")
        assert call.call_id in controller.calls  # a restart may be quick: the call waits
    finally:
        await restart(asterisk)
    await wait_for(lambda: controller.ready.is_set(), 30, what="reconnect and reconcile")
    await wait_for(lambda: not controller.calls, 10, what="the dead call to end")
    await wait_for(lambda: session.closed, 10, what="its model session to close")
    (ended,) = running.ended
    assert ended.end_reason == "caller channel vanished while ARI was disconnected"

    # The restarted Asterisk is served: a new call works end to end.
    await call_pbx(ari, "100", Script(wait=3), rig_id="astkill2")
    await wait_for(lambda: controller.calls, 10, what="a call after the restart")
    (second,) = controller.calls.values()
    await wait_for(lambda: second.model_ready, 10, what="its model session")
    await wait_rig_done(ari, "astkill2")
    await wait_nothing_left(ari)


async def test_calls_end_when_asterisk_stays_away(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, start_controller
) -> None:
    running = await start_controller(ARI_LOST_SECONDS="2")
    controller = running.controller
    call, session = await a_call_in_conversation(controller, ari, model_server, "astgone1")
    try:
        await kill(asterisk)
        await wait_for(lambda: not controller.calls, 15, what="the call to end")
        await wait_for(lambda: session.closed, 5, what="its model session to close")
        (ended,) = running.ended
        assert ended.lifecycle.ending is not None
        assert ended.lifecycle.ending.outcome.value == "failed"
        assert ended.end_reason == "Asterisk unreachable for 2 s"
        assert not controller.ready.is_set()
    finally:
        await restart(asterisk)
    await wait_for(lambda: controller.ready.is_set(), 30, what="reconnect after the restart")
    await wait_nothing_left(ari)
