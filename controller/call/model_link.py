"""A call's link to the model: one session at a time, renewed when it drops (I/O).

:class:`ModelLink` owns the call's model session and the two directions
through it: caller audio (a bounded queue, newest kept when the model side
stalls) and the client events the conversation decided on (an ordered
outbox). :meth:`ModelLink.run` receives server events and hands each to the
call.

When the session drops or fails (network, server restart, 5xx), or the
conversation asks for a new one (:meth:`renew`: the session stalled or
expires soon), the link opens a new session with the same ``session.update``
(retrying with backoff for at most ``REALTIME_RECONNECT_SECONDS``) and calls
``on_restored``, where the conversation replays itself into the new session.
Meanwhile caller audio waits in its queue (up to 10 s) and is sent after
the replay; the agent's audio already queued for the caller keeps playing.
Only when no new session can be opened in time does :meth:`run` raise
:class:`~controller.errors.RealtimeConnectionError` (and the call ends,
handed back to the dialplan).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from controller.errors import RealtimeConnectionError, RealtimeError
from controller.logs import kv
from controller.realtime.events import ClientEvent, ServerEvent, split_audio_delta
from controller.realtime.session import RealtimeSession

#: Caller audio kept while the model session opens or reopens: 10 s of 20 ms chunks
#: (what the call's Uplink sends at once around turn changes; 40 ms otherwise).
INPUT_QUEUE_CHUNKS = 500
#: Longest pause between reconnection attempts.
MAX_BACKOFF_SECONDS = 4.0


class ModelLink:
    """One call's model session, kept open for the life of the call.

    Args:
        open_session: connects and configures a new session (``session.update``).
        on_event: receives each server event (must not block).
        on_lost: the session is gone (before a new one is opened).
        on_restored: a new session is ready; gets the seconds until it expires.
        reconnect_seconds: how long to keep trying to open a new session.
        log: the call's logger.
    """

    def __init__(
        self,
        open_session: Callable[[], Awaitable[RealtimeSession]],
        *,
        on_event: Callable[[ServerEvent], None],
        on_lost: Callable[[str], None],
        on_restored: Callable[[float | None], None],
        reconnect_seconds: float,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._open_session = open_session
        self._on_event = on_event
        self._on_lost = on_lost
        self._on_restored = on_restored
        self._reconnect_seconds = reconnect_seconds
        self._log = log
        self.session: RealtimeSession | None = None
        self.ready = asyncio.Event()
        self._audio: asyncio.Queue[bytes] = asyncio.Queue(INPUT_QUEUE_CHUNKS)
        self._outbox: asyncio.Queue[ClientEvent] = asyncio.Queue()
        self._renew_reason: str | None = None
        self._closing = False
        #: Caller audio chunks dropped because the model side stalled.
        self.audio_dropped = 0
        #: Sessions opened after the first (drops, stalls, expiries).
        self.renewals = 0

    # --- what the call sends ----------------------------------------------------------

    def send_audio(self, chunk: bytes) -> None:
        """Send caller audio: written at once when the websocket can take it, else
        queued in order (never blocks; when full, the oldest chunk goes)."""
        queue = self._audio
        session = self.session
        if (
            session is not None
            and queue.empty()
            and self.ready.is_set()
            and session.send_audio_now(chunk)
        ):
            return  # the usual case: no task switch before the model has it
        if queue.full():
            queue.get_nowait()
            self.audio_dropped += 1
        queue.put_nowait(chunk)

    def send(self, event: ClientEvent) -> None:
        """Queue a client event; events go out in order, on the current session."""
        self._outbox.put_nowait(event)

    def renew(self, reason: str) -> None:
        """Replace the session now (it stalled, or expires soon)."""
        session = self.session
        if session is None or self._renew_reason is not None:
            return
        self._renew_reason = reason
        # Closing it ends run()'s receive loop, which then opens the next one.
        asyncio.get_running_loop().create_task(session.close(), name="model-renew-close")

    @property
    def expires_in(self) -> float | None:
        """Seconds until the current session's ``expires_at``, if the server said."""
        info = self.session.info if self.session is not None else None
        if info is None or info.expires_at is None:
            return None
        return info.expires_at - dt.datetime.now(dt.UTC).timestamp()

    # --- tasks of the call's TaskGroup ----------------------------------------------------

    async def open(self) -> RealtimeSession:
        """Open the first session (its failure fails the call: no retry here)."""
        self.session = await self._open_session()
        self.ready.set()
        return self.session

    async def run(self) -> None:
        """Receive from the model, renewing the session whenever it ends.

        Raises:
            RealtimeConnectionError: the session ended and no new one could be
                opened within ``reconnect_seconds``.
        """
        session = self.session
        assert session is not None
        while True:
            try:
                async for event in session:
                    for index, piece in enumerate(split_audio_delta(event)):
                        if index:
                            await asyncio.sleep(0)  # a huge delta in steps: the media clock runs
                        self._on_event(piece)
                reason = self._renew_reason or "the model closed the session"
            except RealtimeError as exc:
                reason = self._renew_reason or f"the model session failed: {exc}"
            if self._closing:
                return
            session = await self._reopen(session, reason)

    async def pump_audio(self) -> None:
        """Send caller audio; a chunk that could not be sent waits for the next session."""
        queue, ready = self._audio, self.ready
        chunk: bytes | None = None
        while True:
            if chunk is None:
                chunk = await queue.get()
            await ready.wait()
            session = self.session
            assert session is not None
            try:
                await session.send_audio(chunk)
                chunk = None
            except RealtimeError:
                await asyncio.sleep(0.05)  # the session is being replaced

    async def pump_events(self) -> None:
        """Send the conversation's client events in order."""
        outbox, ready = self._outbox, self.ready
        while True:
            event = await outbox.get()
            await ready.wait()
            session = self.session
            assert session is not None
            with contextlib.suppress(RealtimeError):
                # Lost with its session: the replay into the next one carries
                # what the conversation needs.
                await session.send(event)

    async def close(self) -> None:
        """Close the session (teardown)."""
        self._closing = True
        session = self.session
        if session is not None:
            with contextlib.suppress(RealtimeError, OSError):
                await session.close()

    # --- renewal ------------------------------------------------------------------------

    async def _reopen(self, old: RealtimeSession, reason: str) -> RealtimeSession:
        self._renew_reason = None
        self.ready.clear()
        while not self._outbox.empty():  # meant for the old session
            self._outbox.get_nowait()
        self._on_lost(reason)
        self._log.warning("model session lost; opening a new one %s", kv(reason=reason))
        with contextlib.suppress(RealtimeError, OSError):
            await old.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._reconnect_seconds
        delay = 0.25
        while True:
            try:
                session = await self._open_session()
                break
            except RealtimeError as exc:
                left = deadline - loop.time()
                if left <= 0:
                    raise RealtimeConnectionError(
                        f"the model session was lost ({reason}) and no new one opened "
                        f"within {self._reconnect_seconds:g}s: {exc}"
                    ) from exc
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        self.session = session
        self.renewals += 1
        self.ready.set()
        self._log.info("model session restored %s", kv(renewals=self.renewals))
        self._on_restored(self.expires_in)
        return session
