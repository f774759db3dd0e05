"""Reconnect and reconcile: nothing in Asterisk expires our bridges or externalMedia
channels, and StasisStart is not replayed after the events websocket drops."""

from __future__ import annotations

from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.calls import Script, call_pbx, wait_nothing_left, wait_rig_done
from controller.devtools.rig.sandbox import Sandbox
from controller.devtools.rig.wait import wait_for
from tests.e2e.conftest import RunningController


async def test_orphans_of_a_crashed_controller_are_removed_at_start(
    asterisk: Sandbox, ari: AriClient, start_controller
) -> None:
    # What a controller killed mid-call leaves behind: its bridge and its
    # externalMedia channel (ids carry the app's prefix), plus someone else's bridge.
    await ari.post("/bridges", type="mixing", bridgeId="voicebot-br-orphan")
    await ari.post("/bridges", type="mixing", bridgeId="someone-elses-bridge")
    await ari.post(
        "/channels/externalMedia",
        app="voicebot",
        external_host="127.0.0.1:49998",
        format="ulaw",
        channelId="voicebot-em-orphan",
    )
    await start_controller()

    async def orphans_gone() -> bool:
        bridges = {b["id"] for b in await ari.get("/bridges")}
        channels = {c["id"] for c in await ari.channels()}
        return "voicebot-br-orphan" not in bridges and "voicebot-em-orphan" not in channels

    await wait_for(orphans_gone, 10, what="orphaned bridge and channel to be deleted")
    assert "someone-elses-bridge" in {b["id"] for b in await ari.get("/bridges")}
    await ari.delete("/bridges/someone-elses-bridge")


async def test_a_call_survives_the_events_websocket_dropping(
    asterisk: Sandbox, ari: AriClient, start_controller
) -> None:
    running: RunningController = await start_controller()
    controller = running.controller
    await call_pbx(ari, "100", Script(wait=5), rig_id="reconn1")
    await wait_for(lambda: controller.calls, 10, what="the call to start")
    (call,) = controller.calls.values()
    await wait_for(lambda: call.model_ready, 10, what="the model session")

    first = controller.stream
    assert first is not None
    await first.close()  # the websocket drops; Asterisk keeps the call
    await wait_for(
        lambda: controller.stream is not None and controller.stream is not first,
        10,
        what="the controller to reconnect",
    )
    await wait_for(lambda: controller.ready.is_set(), 10, what="reconcile after reconnect")
    assert call.call_id in controller.calls, "reconcile must not end a live call"

    # Events flow again: the caller's hang-up after reconnecting ends the call.
    result = await wait_rig_done(ari, "reconn1", timeout=20)
    assert result["state"] == "done"
    await wait_for(lambda: running.ended, 10, what="the call to end")
    assert running.ended[0].end_reason == "caller hung up"

    await wait_nothing_left(ari)
