"""Graceful drain on SIGTERM, shared by both controllers (``ARI_MODE`` inbound and outbound).

The first request drains: the controller takes no new calls (it reads
:attr:`Drain.draining`; a new caller is handed back with
``controller_draining``), the live calls finish for up to ``DRAIN_SECONDS``,
then the controller stops, handing back whatever is left. A second request
(a second SIGTERM) stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sized

from controller.logs import kv


class Drain:
    """One controller's drain.

    Args:
        calls: the controller's live calls (only their number is read, each
            time it is needed).
        stop: the controller's stop event; the drain sets it when it is over.
        log: the controller's logger, so the drain's lines name the controller.
    """

    def __init__(self, calls: Sized, stop: asyncio.Event, log: logging.Logger) -> None:
        self._calls = calls
        self._stop = stop
        self._log = log
        self._call_ended = asyncio.Event()
        #: Set by the first :meth:`request`: no new calls are taken.
        self.draining = False

    def call_ended(self) -> None:
        """A live call ended (the controller calls this after removing it from ``calls``)."""
        self._call_ended.set()

    def request(self, seconds: float) -> bool:
        """Start draining, or, when already draining, stop at once.

        Returns:
            True when this request started the drain: the caller must then
            run :meth:`run` (``seconds``) as one of its tasks.
        """
        if self.draining:
            self._log.warning(
                "asked again while draining: stopping now %s", kv(calls=len(self._calls))
            )
            self._stop.set()
            return False
        self.draining = True
        self._log.info("draining %s", kv(calls=len(self._calls), up_to_s=seconds))
        return True

    async def run(self, seconds: float) -> None:
        """Wait until no call is live (or the controller stops), at most ``seconds``; then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self._calls and not self._stop.is_set():
                    self._call_ended.clear()
                    await self._call_ended.wait()
        if self._calls:
            self._log.info("drain time is up; handing back %s", kv(calls=len(self._calls)))
        self._stop.set()
