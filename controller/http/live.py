"""Live calls for the operator: the records of calls in progress, and their events fanned out.

:class:`LiveHub` is a :class:`~controller.records.CallObserver`. It keeps

* a copy of each live call's record, kept current from the call's events,
  so ``GET /calls/{id}`` shows a call before the store has it and the live
  view can list the active calls;
* the last :data:`RECENT_ENDED` ended records, so a page that opens a call
  just as it ends still gets its final record;
* the subscribers of each live call (one per ``GET /calls/{id}/events``).

A subscriber has a bounded queue. When a browser reads too slowly its queue
fills, later events are dropped, and it is told so with one ``lag`` event
(``{"dropped": N}``) where they were lost; the call that published them is
never slowed. The ``end`` event is never dropped.

What :meth:`LiveHub.call_event` expects in ``data``, by kind (the entry
models of :mod:`controller.records`, as ``model_dump(mode="json")``):

========== ==================================================================
transcript a :class:`~controller.records.TranscriptEntry`; an entry with the
           same ``role`` and ``start_ms`` replaces the earlier one (so a line
           may be sent again as it grows)
turn       a :class:`~controller.records.TurnEntry`, replacing the one with
           the same ``index``
tool_call  a :class:`~controller.records.ToolCallEntry`, replacing the one
           with the same ``call_id`` (sent when it starts and when it ends)
dtmf       a :class:`~controller.records.DtmfEntry`
state      ``{"state": "<the call's state>"}``
========== ==================================================================

Data that does not fit is still sent to subscribers but leaves the copy
unchanged (logged at DEBUG).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from controller.records import (
    CallRecord,
    DtmfEntry,
    LiveEventKind,
    ToolCallEntry,
    TranscriptEntry,
    TurnEntry,
)

log = logging.getLogger("controller.http.live")

_E = TypeVar("_E")

#: Events a subscriber may have waiting before later ones are dropped.
SUBSCRIBER_QUEUE = 256
#: Subscribers one call may have (browsers are few; this bounds a runaway client).
MAX_SUBSCRIBERS_PER_CALL = 32
#: Ended records kept for pages that open a call just as it ends.
RECENT_ENDED = 200


@dataclass(frozen=True)
class LiveEvent:
    """One server-sent event, encoded once for every subscriber.

    Attributes:
        kind: the SSE event name: ``record`` (the call so far, sent first),
            one of :data:`~controller.records.LiveEventKind`, ``lag`` or ``end``.
        data: its JSON data.
        seq: its number within the call (0 for ``record``, ``lag`` and ``end``).
    """

    kind: str
    data: dict[str, Any]
    seq: int = 0

    def encode(self) -> bytes:
        """The event in the ``text/event-stream`` format."""
        data = json.dumps(self.data, separators=(",", ":"), default=str)
        head = f"event: {self.kind}\n" + (f"id: {self.seq}\n" if self.seq else "")
        return f"{head}data: {data}\n\n".encode()


class Subscription:
    """One subscriber's view of one live call; iterate it for :class:`LiveEvent` s.

    Iteration ends after the ``end`` event, or when the subscription is
    closed (by :meth:`close` or the hub shutting down).
    """

    def __init__(self, hub: LiveHub, call_id: str, maxsize: int) -> None:
        self.call_id = call_id
        #: Events dropped because this subscriber was too slow, in total.
        self.dropped = 0
        self._hub = hub
        self._maxsize = maxsize
        self._items: deque[LiveEvent] = deque()
        self._end: LiveEvent | None = None
        self._closed = False
        self._wakeup = asyncio.Event()

    def push(self, event: LiveEvent) -> None:
        """Queue ``event``, or count it as dropped when the queue is full (never blocks)."""
        if self._closed:
            return
        if len(self._items) >= self._maxsize:
            self.dropped += 1
            if self._items[-1].kind == "lag":
                self._items[-1].data["dropped"] += 1
            else:
                # One notice where the loss starts; the queue may exceed maxsize by it.
                self._items.append(LiveEvent("lag", {"dropped": 1}))
        else:
            self._items.append(event)
        self._wakeup.set()

    def finish(self, event: LiveEvent) -> None:
        """Deliver ``event`` (``end``) after everything queued; it is never dropped."""
        if not self._closed:
            self._end = event
            self._wakeup.set()

    def close(self) -> None:
        """Stop this subscription; the iterator ends at its next step."""
        if not self._closed:
            self._closed = True
            self._items.clear()
            self._wakeup.set()
            self._hub._unsubscribe(self)

    async def next(self) -> LiveEvent | None:
        """The next event, waiting for it; None once the subscription is over."""
        while True:
            if self._items:
                return self._items.popleft()
            if self._end is not None:
                event, self._end = self._end, None
                self.close()
                return event
            if self._closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LiveEvent:
        event = await self.next()
        if event is None:
            raise StopAsyncIteration
        return event


class _LiveCall:
    def __init__(self, record: CallRecord) -> None:
        self.record = record
        self.state = ""
        self.seq = 0
        self.subscribers: list[Subscription] = []


class LiveHub:
    """Live calls by id and their server-sent event subscribers (a ``CallObserver``).

    Args:
        queue_size: events each subscriber may have waiting.
        max_subscribers: subscribers one call may have.
        recent: ended records kept.
    """

    def __init__(
        self,
        *,
        queue_size: int = SUBSCRIBER_QUEUE,
        max_subscribers: int = MAX_SUBSCRIBERS_PER_CALL,
        recent: int = RECENT_ENDED,
    ) -> None:
        self._queue_size = queue_size
        self._max_subscribers = max_subscribers
        self._recent_size = recent
        self._live: dict[str, _LiveCall] = {}
        self._recent: OrderedDict[str, CallRecord] = OrderedDict()

    # --- CallObserver -------------------------------------------------------------------

    def call_started(self, record: CallRecord) -> None:
        """Start keeping a copy of the call's record."""
        self._live[record.id] = _LiveCall(record.model_copy(deep=True))
        self._recent.pop(record.id, None)

    def call_event(self, call_id: str, kind: LiveEventKind, data: dict[str, Any]) -> None:
        """Apply the event to the call's copy and send it to its subscribers."""
        call = self._live.get(call_id)
        if call is None:
            return
        try:
            _apply(call, kind, data)
        except (ValidationError, TypeError, KeyError) as exc:
            log.debug("live event not applied call=%s kind=%s error=%s", call_id, kind, exc)
        call.seq += 1
        if call.subscribers:
            event = LiveEvent(kind, data, call.seq)
            for subscriber in list(call.subscribers):
                subscriber.push(event)

    def call_ended(self, record: CallRecord) -> None:
        """Keep the final record among the recent ones; send ``end`` to the subscribers."""
        call = self._live.pop(record.id, None)
        final = record.model_copy(deep=True)
        self._recent[record.id] = final
        while len(self._recent) > self._recent_size:
            self._recent.popitem(last=False)
        if call is not None:
            event = LiveEvent("end", final.model_dump(mode="json"))
            for subscriber in list(call.subscribers):
                subscriber.finish(event)

    # --- reading --------------------------------------------------------------------------

    def get(self, call_id: str) -> CallRecord | None:
        """The live copy of a call, or its final record if it ended recently (read-only)."""
        call = self._live.get(call_id)
        return call.record if call is not None else self._recent.get(call_id)

    def is_live(self, call_id: str) -> bool:
        """True while the call is in progress."""
        return call_id in self._live

    def active(self) -> list[CallRecord]:
        """The live calls' records, newest first (read-only)."""
        records = [call.record for call in self._live.values()]
        return sorted(records, key=lambda r: r.started_at, reverse=True)

    def subscribe(self, call_id: str) -> Subscription | None:
        """Subscribe to a live call's events.

        The first event is ``record`` (the call so far, plus ``state``), so a
        page needs no separate request and misses nothing in between.

        Returns:
            The subscription, or None when the call is not live or already has
            ``max_subscribers`` subscribers (use :meth:`is_live` to tell which).
        """
        call = self._live.get(call_id)
        if call is None or len(call.subscribers) >= self._max_subscribers:
            return None
        subscription = Subscription(self, call_id, self._queue_size)
        snapshot = call.record.model_dump(mode="json")
        snapshot["state"] = call.state
        subscription.push(LiveEvent("record", snapshot))
        call.subscribers.append(subscription)
        return subscription

    def subscriber_count(self, call_id: str) -> int:
        """How many subscribers a live call has."""
        call = self._live.get(call_id)
        return len(call.subscribers) if call is not None else 0

    def close(self) -> None:
        """End every subscription (the HTTP server is stopping)."""
        for call in list(self._live.values()):
            for subscriber in list(call.subscribers):
                subscriber.close()

    def _unsubscribe(self, subscription: Subscription) -> None:
        call = self._live.get(subscription.call_id)
        if call is not None and subscription in call.subscribers:
            call.subscribers.remove(subscription)


def _apply(call: _LiveCall, kind: str, data: dict[str, Any]) -> None:
    record = call.record
    if kind == "transcript":
        line = TranscriptEntry.model_validate(data)
        _upsert(
            record.transcript, line, lambda e: (e.role, e.start_ms) == (line.role, line.start_ms)
        )
    elif kind == "turn":
        turn = TurnEntry.model_validate(data)
        _upsert(record.turns, turn, lambda e: e.index == turn.index)
    elif kind == "tool_call":
        tool = ToolCallEntry.model_validate(data)
        _upsert(record.tool_calls, tool, lambda e: e.call_id == tool.call_id)
    elif kind == "dtmf":
        record.dtmf.append(DtmfEntry.model_validate(data))
    elif kind == "state":
        call.state = str(data["state"])


def _upsert(entries: list[_E], new: _E, same: Callable[[_E], bool]) -> None:
    for i in range(len(entries) - 1, -1, -1):
        if same(entries[i]):
            entries[i] = new
            return
    entries.append(new)
