"""Polling helpers: wait until a condition holds, with a clear message when it does not."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = ...,
    *,
    interval: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def wait_for(
    predicate: Callable[[], T],
    timeout: float = ...,
    *,
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    what: str = "",
) -> Any:
    """Call ``predicate`` (sync or async) until it returns something truthy; return that.

    Raises:
        AssertionError: after ``timeout`` seconds, naming ``what`` and the last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            label = what or getattr(predicate, "__name__", "condition")
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {label} (last: {value!r})"
            )
        await asyncio.sleep(interval)


def wait_for_sync(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Blocking :func:`wait_for` for synchronous code (fixtures, the sandbox)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            label = what or getattr(predicate, "__name__", "condition")
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {label} (last: {value!r})"
            )
        time.sleep(interval)
