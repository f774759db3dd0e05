"""EVENT_LOOP: which asyncio event loop the controller runs on."""

from __future__ import annotations

import asyncio
import inspect
import sys
import warnings

import pytest

from controller import eventloop
from controller.config import Settings
from controller.errors import ConfigError


async def _running_loop_name() -> str:
    return eventloop.loop_name(asyncio.get_running_loop())


def test_auto_runs_on_uvloop_when_it_is_installed() -> None:
    import uvloop  # noqa: F401 - a dependency: not installed is a failure, not a skip

    assert eventloop.run(_running_loop_name(), "auto") == "uvloop"
    assert eventloop.run(_running_loop_name(), "uvloop") == "uvloop"


def test_asyncio_never_uses_uvloop() -> None:
    assert eventloop.loop_factory("asyncio") is None
    assert eventloop.run(_running_loop_name(), "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert eventloop.run(_running_loop_name(), "auto") == "asyncio"
    coroutine = _running_loop_name()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would be one
        with pytest.raises(ConfigError) as caught:
            eventloop.run(coroutine, "uvloop")
    message = str(caught.value)
    assert "EVENT_LOOP" in message and "pip install uvloop" in message
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED  # not left dangling


def test_setting_defaults_to_auto_and_rejects_other_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVENT_LOOP", raising=False)
    assert Settings().event_loop == "auto"
    monkeypatch.setenv("EVENT_LOOP", "asyncio")
    assert Settings().event_loop == "asyncio"
    monkeypatch.setenv("EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="EVENT_LOOP"):
        Settings()
