"""The record writer and retention, against real stores (SQLite, PostgreSQL).

Outages are real: another SQLite connection holding the write lock, or the
PostgreSQL server stopped and started again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable

import pytest

from controller.devtools.rig.wait import wait_for
from controller.records import CallObserver, TranscriptEntry
from controller.store import (
    CallStore,
    RecordWriter,
    delete_expired,
    open_store,
    resolve_database_url,
    run_retention,
    without_transcripts,
)
from tests.callrecords import at, ended_record, live_record, raw_rows
from tests.pg import PostgresServer


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[CallStore]:
    store = await open_store(store_url, timeout=0.2)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def running() -> AsyncIterator[Callable[[RecordWriter], None]]:
    """Start a writer's run() as a task; cancelled after the test."""
    tasks: list[asyncio.Task[None]] = []

    def start(writer: RecordWriter) -> None:
        tasks.append(asyncio.create_task(writer.run()))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def until_deleted(store: CallStore, call_id: str) -> None:
    async def gone() -> bool:
        return await store.get(call_id) is None

    await wait_for(gone, 5, interval=0.01, what=f"call {call_id} to be deleted")


def _messages(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


def _the_writer_is_a_call_observer(writer: RecordWriter) -> CallObserver:
    return writer  # checked by mypy


async def test_one_writer_runs_once(store: CallStore, running) -> None:
    writer = RecordWriter(store)
    running(writer)
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already running"):
        await writer.run()


async def test_records_are_inserted_then_updated_in_order(store: CallStore, running):
    writer = RecordWriter(store)
    running(writer)
    writer.call_started(live_record("c1"))
    assert await writer.flush(5) == 0
    got = await store.get("c1")
    assert got is not None and got.status == "live"
    writer.call_event("c1", "transcript", {"text": "ignored"})
    writer.call_ended(ended_record("c1"))
    assert await writer.flush(5) == 0
    assert await store.get("c1") == ended_record("c1")
    assert (writer.written, writer.dropped, writer.refused, writer.pending) == (2, 0, 0, 0)


async def test_the_writer_stores_a_snapshot_not_the_live_object(store: CallStore, running):
    writer = RecordWriter(store)
    record = live_record("c1")
    writer.call_started(record)
    record.transcript.append(TranscriptEntry(role="caller", text="later", start_ms=9))
    running(writer)
    await writer.flush(5)
    got = await store.get("c1")
    assert got is not None and got.transcript == []


async def test_a_full_queue_drops_the_oldest_counts_it_and_logs_once(
    store: CallStore, running, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, "controller.store")
    writer = RecordWriter(store, maxsize=3)  # not running yet: the store "does not keep up"
    for n in range(6):
        writer.call_started(live_record(f"c{n}", at(n)))
    assert (writer.dropped, writer.pending) == (3, 3)
    # A call's end replaces its waiting start: no slot taken, nothing dropped.
    writer.call_ended(ended_record("c3", at(3)))
    assert (writer.dropped, writer.pending) == (3, 3)
    assert len(_messages(caplog, logging.ERROR, "queue full")) == 1

    running(writer)
    assert await writer.flush(5) == 0
    assert [r.id for r in await store.list()] == ["c5", "c4", "c3"]
    c3 = await store.get("c3")
    assert c3 is not None and c3.status == "ended"
    caught_up = _messages(caplog, logging.WARNING, "caught up")
    assert len(caught_up) == 1 and "dropped=3" in caught_up[0]


async def test_store_transcripts_false_keeps_who_spoke_when_but_not_what(store: CallStore, running):
    writer = RecordWriter(store, store_transcripts=False)
    running(writer)
    record = ended_record("c1")
    writer.call_ended(record)
    await writer.flush(5)
    got = await store.get("c1")
    assert got is not None
    assert [(t.role, t.text, t.start_ms, t.end_ms) for t in got.transcript] == [
        ("agent", "", 300, 1900),
        ("caller", "", 2500, None),
    ]
    assert [(c.name, c.arguments, c.result, c.refused) for c in got.tool_calls] == [
        ("lookup_order", {}, "", False),
        ("transfer", {}, "", True),
    ]
    assert [d.digits for d in got.dtmf] == [""]
    assert got.turns == record.turns and got.usage == record.usage
    assert got == without_transcripts(record)
    assert record.transcript[0].text == "Hello, sales speaking."  # the call's own copy


async def test_sqlite_locked_by_another_process_is_retried_until_it_is_free(
    sqlite_url: str, running, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, "controller.store")
    store = await open_store(sqlite_url, timeout=0.05)
    path = resolve_database_url(sqlite_url).path
    blocker = sqlite3.connect(str(path), isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # a real peer holding the write lock
        writer = RecordWriter(store, retry_initial=0.01, retry_max=0.05)
        running(writer)
        writer.call_started(live_record("c1"))
        writer.call_ended(ended_record("c0"))
        await wait_for(
            lambda: _messages(caplog, logging.ERROR, "store unavailable"), 5, interval=0.01
        )
        await asyncio.sleep(0.15)  # several retries, while calls keep handing records over
        writer.call_started(live_record("c2"))
        assert writer.written == 0 and writer.pending == 3
        assert await writer.flush(0.05) == 3  # shutdown now would leave them unwritten
        blocker.execute("COMMIT")
        assert await writer.flush(5) == 0
    finally:
        blocker.close()
        await store.close()
    assert (writer.written, writer.dropped, writer.refused) == (3, 0, 0)
    assert len(_messages(caplog, logging.ERROR, "store unavailable")) == 1
    assert len(_messages(caplog, logging.WARNING, "store is back")) == 1
    rows = await raw_rows(sqlite_url, "SELECT id, status FROM calls ORDER BY id")
    assert rows == [("c0", "ended"), ("c1", "live"), ("c2", "live")]


async def test_postgresql_stopped_and_restarted_loses_no_record(
    pg_url: str, postgres: PostgresServer, running, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, "controller.store")
    store = await open_store(pg_url, timeout=0.5)
    writer = RecordWriter(store, retry_initial=0.02, retry_max=0.1)
    running(writer)
    writer.call_started(live_record("before"))
    assert await writer.flush(5) == 0
    postgres.stop()
    try:
        writer.call_ended(ended_record("before"))
        writer.call_started(live_record("during"))
        await wait_for(
            lambda: _messages(caplog, logging.ERROR, "store unavailable"), 5, interval=0.01
        )
        assert writer.pending == 2
        assert await store.ping() is False
    finally:
        postgres.start()
    try:
        assert await writer.flush(10) == 0
        assert await store.ping() is True
    finally:
        await store.close()
    rows = await raw_rows(pg_url, "SELECT id, status FROM calls ORDER BY id")
    assert rows == [("before", "ended"), ("during", "live")]
    assert len(_messages(caplog, logging.WARNING, "store is back")) == 1


async def _poison(url: str) -> None:
    """Make the database itself refuse the record with id 'poison', as a DBA's rule might."""
    if resolve_database_url(url).kind == "sqlite":
        await raw_rows(
            url,
            "CREATE TRIGGER poison BEFORE INSERT ON calls WHEN NEW.id = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'poison record'); END",
        )
    else:
        await raw_rows(url, "ALTER TABLE calls ADD CONSTRAINT no_poison CHECK (id <> 'poison')")


async def test_a_record_the_store_refuses_is_dropped_and_the_rest_go_on(
    store_url: str, store: CallStore, running, caplog: pytest.LogCaptureFixture
):
    await _poison(store_url)
    writer = RecordWriter(store, retry_initial=0.01)
    running(writer)
    writer.call_started(live_record("poison"))
    writer.call_started(live_record("fine"))
    assert await writer.flush(5) == 0
    assert (writer.written, writer.refused) == (1, 1)
    assert [r.id for r in await store.list()] == ["fine"]
    refused = _messages(caplog, logging.ERROR, "refused")
    assert len(refused) == 1 and "call=poison" in refused[0]


async def test_observer_calls_do_not_wait_for_the_store(sqlite_url: str):
    store = await open_store(sqlite_url, timeout=0.05)
    path = resolve_database_url(sqlite_url).path
    blocker = sqlite3.connect(str(path), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        writer = RecordWriter(store)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(200):
            writer.call_started(live_record(f"c{n}"))
            writer.call_ended(ended_record(f"c{n}"))
        assert loop.time() - started < 1.0
        assert writer.pending == 200
    finally:
        blocker.close()
        await store.close()


# --- Retention --------------------------------------------------------------------------


async def test_retention_deletes_what_is_older_than_the_days(store: CallStore):
    for n in range(5):
        await store.update(ended_record(f"c{n}", at(n * 86_400)))
    now = at(4 * 86_400)  # the cutoff is c2's start, which is kept
    assert await delete_expired(store, 2, now=lambda: now) == 2  # c0 and c1
    assert [r.id for r in await store.list()] == ["c4", "c3", "c2"]


async def test_the_retention_task_deletes_at_once_then_every_interval(store: CallStore):
    await store.update(ended_record("old", at(0)))
    clock = {"now": at(10 * 86_400)}
    task = asyncio.create_task(
        run_retention(store, 7, now=lambda: clock["now"], interval=0.05, retry_after=0.05)
    )
    try:
        await until_deleted(store, "old")
        await store.update(ended_record("newer", at(9 * 86_400)))
        clock["now"] = at(17 * 86_400)
        await until_deleted(store, "newer")
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_retention_needs_at_least_one_day(store: CallStore):
    with pytest.raises(ValueError, match="at least 1"):
        await run_retention(store, 0)
