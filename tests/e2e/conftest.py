"""End-to-end fixtures: the sandboxed Asterisk 22 (asterisk/sandbox.py) and ARI.

Every test under tests/e2e gets the ``e2e`` marker. The ``asterisk`` fixture
starts one sandbox for the whole session, building its root fs on first use
(about a minute; needs root and network access to a Debian mirror). It never
skips: if the sandbox cannot run, the tests fail with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.rig.ari import AriClient
from tests.rig.audio import ensure_tools
from tests.rig.sandbox import Sandbox, SandboxError, start_sandbox

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
