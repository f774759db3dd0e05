"""SIGTERM drains: no new calls, live calls finish, then the controller stops; twice stops now.

``ari-realtime run`` runs as the real command (a subprocess); calls come from
the rig's phone through the sandboxed Asterisk.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from controller.devtools.modelserver import ModelServer
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.calls import Script, call_pbx, wait_nothing_left
from controller.devtools.rig.sandbox import Sandbox
from controller.devtools.rig.wait import wait_for
from tests.e2e.conftest import controller_env


async def registered(ari: AriClient, app: str) -> bool:
    return any(a.get("name") == app for a in await ari.get("/applications") or [])


def start(asterisk: Sandbox, model_server: ModelServer, tmp: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **controller_env(
            asterisk,
            model_server,
            DATABASE_URL=f"sqlite://{tmp}/calls.db",
            HTTP_LISTEN="",
            DRAIN_SECONDS="20",
        ),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "controller", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def stopped(proc: subprocess.Popen[bytes], timeout: float) -> str:
    _, err = await asyncio.to_thread(proc.communicate, timeout=timeout)
    return err.decode()


async def test_sigterm_lets_live_calls_finish_and_hands_new_callers_back(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, tmp_path: object
) -> None:
    proc = start(asterisk, model_server, str(tmp_path))
    try:
        await wait_for(lambda: registered(ari, asterisk.ari_app), 20, what="the app")
        await call_pbx(ari, "100", Script(wait=5), rig_id="drain_live")
        await wait_for(lambda: ari.get("/bridges"), 10, what="the live call's bridge")
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        await call_pbx(ari, "100", Script(wait=10), rig_id="drain_late")
        err = await stopped(proc, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "draining" in err
    assert "draining: caller handed back" in err
    # The live call ended as its caller ended it, not handed back.
    assert "outcome=caller_hung_up" in err and "outcome=handed_back" not in err
    log = asterisk.log_path.read_text()
    assert "back: controller_draining" in log
    await wait_nothing_left(ari, timeout=20)


async def test_a_second_sigterm_stops_at_once(
    asterisk: Sandbox, ari: AriClient, model_server: ModelServer, tmp_path: object
) -> None:
    proc = start(asterisk, model_server, str(tmp_path))
    try:
        await wait_for(lambda: registered(ari, asterisk.ari_app), 20, what="the app")
        await call_pbx(ari, "100", Script(wait=30), rig_id="drain_twice")
        await wait_for(lambda: ari.get("/bridges"), 10, what="the live call's bridge")
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        err = await stopped(proc, 15)  # well before DRAIN_SECONDS
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopping now" in err and "outcome=handed_back" in err
    await wait_nothing_left(ari, timeout=20)
