"""Which asyncio event loop runs the controller (``EVENT_LOOP``): uvloop when installed.

Measured with ``bench/bench_scale.py --tls --loop asyncio,uvloop`` (the model
over ``wss://`` as with the real API): uvloop's TLS transport keeps about
75-100 KiB per call where asyncio's keeps 200-400 (asyncio's ``SSLProtocol``
allocates a 256 KiB read buffer per connection), at the same or slightly
less CPU; over plain ``ws://`` the two cost the same. The media clock does
not depend on it (it reads RTP through its own selector), and it copes with
uvloop's 1 ms timer granularity.

``auto`` (the default) takes uvloop if it can be imported and asyncio's own
loop otherwise; ``uvloop`` insists; ``asyncio`` never uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from controller.errors import ConfigError

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
T = TypeVar("T")


def loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``choice`` (None: asyncio's default loop).

    Raises:
        ConfigError: ``uvloop`` was asked for and cannot be imported.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "EVENT_LOOP: uvloop is not installed; install it (pip install uvloop) or set "
                "EVENT_LOOP=asyncio or auto"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` selects.

    Raises:
        ConfigError: as :func:`loop_factory` (``main`` is closed, never started).
    """
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``, for the start-up log line."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
