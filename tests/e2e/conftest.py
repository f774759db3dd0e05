"""End-to-end fixtures: the sandboxed Asterisk 22 (asterisk/sandbox.py) and ARI.

Every test under tests/e2e gets the ``e2e`` marker. The ``asterisk`` fixture
starts one sandbox for the whole session, building its root fs on first use
(about a minute; needs root and network access to a Debian mirror). It never
skips: if the sandbox cannot run, the tests fail with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from controller.app import Controller
from controller.call.call import Call
from controller.call.services import CallContext, CallServices
from controller.config import load_settings
from controller.devtools.modelserver import ModelServer, ServerConfig
from controller.devtools.rig.ari import AriClient
from controller.devtools.rig.audio import ensure_tools
from controller.devtools.rig.sandbox import Sandbox, SandboxError, start_sandbox
from tests.modelpeer.validate import validate_client_event, validate_server_event

_E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def asterisk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The running sandbox (one per test session); stopped at the end."""
    state = tmp_path_factory.mktemp("asterisk")
    try:
        box = start_sandbox(state)
    except SandboxError as exc:
        pytest.fail(f"cannot start the Asterisk sandbox: {exc}", pytrace=False)
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture(scope="session")
def audio_tools() -> None:
    """sox and espeak-ng (installed with apt-get when missing and root)."""
    try:
        ensure_tools("sox", "espeak-ng")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
async def ari(asterisk: Sandbox) -> AsyncIterator[AriClient]:
    """An ARI client on the sandbox. Hangs up whatever a test leaves behind."""
    async with AriClient(asterisk.ari_url, asterisk.ari_user, asterisk.ari_password) as client:
        try:
            yield client
        finally:
            await client.hangup_all()


# --- the product under test: the local model server and the controller ----------------

#: UDP ports the in-process controller binds for RTP (distinct from Asterisk's 20000+).
MEDIA_PORTS = "41000-41199"


@pytest.fixture
async def model_server() -> AsyncIterator[ModelServer]:
    """The local Realtime peer, validating every client event against openai's types.

    It answers each caller turn with a 1 kHz tone of 1.5 s by default; tests
    change ``model_server.config`` as they need. After the test, no event the
    controller sent may have failed validation.
    """
    config = ServerConfig(reply="tone", tone_hz=1000.0, tone_ms=1500, transcript="A tone.")
    server = ModelServer(
        config, validator=validate_client_event, server_event_validator=validate_server_event
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
    failures = [f for s in server.sessions for f in s.validation_failures]
    assert not failures, f"events failed validation against openai's types: {failures}"


def controller_env(asterisk: Sandbox, model_server: ModelServer, **extra: str) -> dict[str, str]:
    """Settings (env names) for a controller wired to the sandbox and the model server."""
    return {
        "ARI_URL": asterisk.ari_url,
        "ARI_USER": asterisk.ari_user,
        "ARI_PASSWORD": asterisk.ari_password,
        "ARI_APP": asterisk.ari_app,
        "REALTIME_URL": model_server.url,
        "OPENAI_API_KEY": "sk-test-not-a-real-key-0123456789",
        "MEDIA_ADDRESS": "127.0.0.1",
        "MEDIA_PORTS": MEDIA_PORTS,
        **extra,
    }


def keeping_ended(ended: list[Call]) -> Callable[[CallContext, CallServices], Call]:
    """A call factory that builds calls as the controllers do and keeps each in ``ended``
    once it is over (for tests that read transcripts and counters afterwards)."""

    def factory(context: CallContext, services: CallServices) -> Call:
        call = Call(context, services)
        original = call.run

        async def run() -> None:
            try:
                await original()
            finally:
                ended.append(call)

        call.run = run  # type: ignore[method-assign]
        return call

    return factory


class RunningController:
    """An in-process controller serving the sandbox (see the ``start_controller`` fixture)."""

    def __init__(self, controller: Controller, task: asyncio.Task[None]) -> None:
        self.controller = controller
        self.task = task
        self.ended: list[Call] = []

    async def stop(self) -> None:
        self.controller.request_stop()
        await asyncio.wait_for(self.task, 20)


@pytest.fixture
async def start_controller(
    asterisk: Sandbox, model_server: ModelServer
) -> AsyncIterator[Callable[..., Awaitable[RunningController]]]:
    """``await start_controller(REALTIME_AUDIO="pcm24k", ...)`` runs a controller in this loop.

    Every call it handles is kept in ``running.ended`` once it is over, so
    tests can read transcripts and counters. Stopped after the test.
    """
    started: list[RunningController] = []

    async def start(**settings: str) -> RunningController:
        env = controller_env(asterisk, model_server, **settings)
        config = load_settings(**env)
        ended: list[Call] = []
        controller = Controller(config, call_factory=keeping_ended(ended))
        task = asyncio.create_task(controller.run())
        running = RunningController(controller, task)
        running.ended = ended
        started.append(running)
        await asyncio.wait_for(controller.ready.wait(), 10)
        return running

    try:
        yield start
    finally:
        for running in started:
            if not running.task.done():
                await running.stop()
