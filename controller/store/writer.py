"""The record writer: calls hand records over without waiting, a task stores them.

:class:`RecordWriter` is a :class:`~controller.records.CallObserver`. Its
``call_started`` / ``call_ended`` only put a snapshot of the record in a
bounded queue and return; :meth:`RecordWriter.run`, a task the controller
owns, writes the queue to the store in order.

* **Store down.** A transient :class:`~controller.errors.StoreError` (server
  gone, database locked, disk full) keeps the record at the head of the
  queue and retries it with doubling backoff, capped (default 0.5 s up to
  30 s). Calls go on untouched. One error line when the outage starts, a
  reminder every 5 minutes, one line when the store is back.
* **Record refused.** A non-transient error (the store rejects that very
  record) drops it with an error line and counts it in ``refused``, so one
  bad record cannot block the others.
* **Queue full.** The queue holds at most one entry per call: a call's
  ``call_ended`` replaces its ``call_started`` while that is still waiting
  (the update carries everything the insert did). When ``maxsize`` calls
  are waiting, the **oldest** entry is dropped and counted in ``dropped``:
  the newest records are the ones still worth having, and a dropped
  ``call_started`` is made good by the same call's ``call_ended`` (an
  upsert). One error line when dropping starts, one when the writer has
  caught up, whatever the number of records in between.
* **Privacy.** With ``store_transcripts=False`` the text is removed before
  the record is queued (see :func:`without_transcripts`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from controller.errors import StoreError
from controller.logs import kv
from controller.records import CallRecord, LiveEventKind
from controller.store.base import CallStore

log = logging.getLogger("controller.store")

#: While the store stays down, the outage is logged again this often (seconds).
OUTAGE_LOG_INTERVAL = 300.0


def without_transcripts(record: CallRecord) -> CallRecord:
    """``record`` without what was said, for ``STORE_TRANSCRIPTS=false``.

    Removed: transcript text, tool-call arguments and results (they carry
    what the caller said), DTMF digits (PINs, card numbers). Kept: who spoke
    when (roles and offsets), tool names, timings and whether they were
    refused, turns, counters, usage, cost, and ``end_reason``.
    """
    return record.model_copy(
        update={
            "transcript": [e.model_copy(update={"text": ""}) for e in record.transcript],
            "tool_calls": [
                t.model_copy(update={"arguments": {}, "result": ""}) for t in record.tool_calls
            ],
            "dtmf": [d.model_copy(update={"digits": ""}) for d in record.dtmf],
        }
    )


@dataclass(frozen=True)
class _Write:
    op: Literal["insert", "update"]
    record: CallRecord


class RecordWriter:
    """Writes call records to a :class:`CallStore` without ever blocking a call.

    Args:
        store: where records go.
        maxsize: the most calls waiting to be written; beyond it the oldest
            entry is dropped.
        store_transcripts: False removes transcript text, tool arguments and
            results, and DTMF digits before storing (:func:`without_transcripts`).
        retry_initial: seconds before the first retry when the store is down.
        retry_max: the longest wait between retries.
        clock: monotonic seconds, for the log-line rate limits.

    Attributes:
        written: records stored.
        dropped: records dropped because the queue was full.
        refused: records the store rejected (not retried).
    """

    def __init__(
        self,
        store: CallStore,
        *,
        maxsize: int = 1000,
        store_transcripts: bool = True,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.store = store
        self.maxsize = maxsize
        self.store_transcripts = store_transcripts
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._clock = clock
        self.written = 0
        self.dropped = 0
        self.refused = 0
        self._queue: OrderedDict[str, _Write] = OrderedDict()
        self._inflight: _Write | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = False
        self._burst_dropped = 0
        self._down_since: float | None = None
        self._down_logged_at = 0.0

    @property
    def pending(self) -> int:
        """Records not yet stored (queued, or being written)."""
        return len(self._queue) + (self._inflight is not None)

    # --- CallObserver: called by calls, must not block or raise ---------------------

    def call_started(self, record: CallRecord) -> None:
        """Queue the new record for an insert."""
        self._put("insert", record)

    def call_event(self, call_id: str, kind: LiveEventKind, data: dict[str, Any]) -> None:
        """Ignored: the store keeps only what ``call_started``/``call_ended`` hand over."""

    def call_ended(self, record: CallRecord) -> None:
        """Queue the complete record for an update."""
        self._put("update", record)

    def _put(self, op: Literal["insert", "update"], record: CallRecord) -> None:
        try:
            # A snapshot: the call goes on changing its own record.
            snapshot = record.model_copy(deep=True)
            if not self.store_transcripts:
                snapshot = without_transcripts(snapshot)
            write = _Write(op, snapshot)
            waiting = self._queue.get(record.id)
            if waiting is not None:
                # One entry per call: an update replaces whatever waits; a
                # second insert replaces an insert, never an update.
                if op == "update" or waiting.op == "insert":
                    self._queue[record.id] = write
                return
            if len(self._queue) >= self.maxsize:
                self._drop_oldest()
            self._queue[record.id] = write
            self._idle.clear()
            self._wake.set()
        except Exception:
            log.exception("call records: could not queue call %s", record.id)

    def _drop_oldest(self) -> None:
        self._queue.popitem(last=False)
        self.dropped += 1
        self._burst_dropped += 1
        if self._burst_dropped == 1:
            log.error(
                "call records: queue full, dropping the oldest records until the store "
                "catches up %s",
                kv(maxsize=self.maxsize, store=self.store.location),
            )

    # --- The writing task ---------------------------------------------------------------

    async def run(self) -> None:
        """Write queued records until cancelled.

        Raises:
            RuntimeError: another ``run()`` of this writer is already running
                (one task writes, so each call's records stay in order).
        """
        if self._running:
            raise RuntimeError("RecordWriter.run() is already running")
        self._running = True
        try:
            await self._drain_forever()
        finally:
            self._running = False

    async def _drain_forever(self) -> None:
        while True:
            if not self._queue:
                self._caught_up()
                self._wake.clear()
                await self._wake.wait()
                continue
            _, write = self._queue.popitem(last=False)
            self._inflight = write
            try:
                await self._write(write)
            except asyncio.CancelledError:
                self._requeue(write)
                raise
            finally:
                self._inflight = None

    async def flush(self, timeout: float) -> int:
        """Wait until every queued record is stored, at most ``timeout`` seconds.

        Only useful while :meth:`run` runs (at shutdown: flush, then cancel it).

        Returns:
            How many records are still not stored (0 when all are).
        """
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.error(
                "call records: not all records stored at shutdown %s",
                kv(pending=self.pending, timeout_s=timeout, store=self.store.location),
            )
        return self.pending

    async def _write(self, write: _Write) -> None:
        backoff = self.retry_initial
        while True:
            try:
                if write.op == "insert":
                    await self.store.insert(write.record)
                else:
                    await self.store.update(write.record)
            except StoreError as exc:
                if exc.transient:
                    self._store_down(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.retry_max)
                    continue
                self.refused += 1
                log.error(
                    "call records: the store refused a record, dropped it %s",
                    kv(call=write.record.id, error=exc),
                )
                return
            except Exception:
                # A bug in a store must not stop every later record.
                self.refused += 1
                log.exception("call records: storing call %s failed", write.record.id)
                return
            self.written += 1
            self._store_up()
            return

    def _requeue(self, write: _Write) -> None:
        # Cancelled mid-write: put it back first, unless a newer entry of the
        # same call already waits (which supersedes it).
        if write.record.id not in self._queue:
            self._queue[write.record.id] = write
            self._queue.move_to_end(write.record.id, last=False)

    def _store_down(self, exc: StoreError) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = self._down_logged_at = now
            log.error(
                "call records: store unavailable, retrying; records are kept %s",
                kv(pending=self.pending, error=exc),
            )
        elif now - self._down_logged_at >= OUTAGE_LOG_INTERVAL:
            self._down_logged_at = now
            log.error(
                "call records: store still unavailable %s",
                kv(down_s=round(now - self._down_since), pending=self.pending, error=exc),
            )

    def _store_up(self) -> None:
        if self._down_since is not None:
            log.warning(
                "call records: store is back %s",
                kv(down_s=self._clock() - self._down_since, pending=self.pending),
            )
            self._down_since = None

    def _caught_up(self) -> None:
        if self._burst_dropped:
            log.warning(
                "call records: caught up after the queue was full %s",
                kv(dropped=self._burst_dropped, dropped_total=self.dropped),
            )
            self._burst_dropped = 0
        self._idle.set()
