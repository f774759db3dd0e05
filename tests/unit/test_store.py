"""The call-record store against real databases: SQLite files and a PostgreSQL server.

Every test runs on both backends (``store_url``), except where one
backend's own behaviour is the point.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from controller.errors import StoreError
from controller.records import RecordSource, TranscriptEntry
from controller.store import CallStore, open_store, resolve_database_url
from controller.store.migrations import MIGRATIONS, Migration
from controller.store.postgres import PostgresStore
from controller.store.sqlite import SqliteStore
from tests.callrecords import T0, at, ended_record, live_record, raw_rows


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[CallStore]:
    store = await open_store(store_url, timeout=2.0)
    try:
        yield store
    finally:
        await store.close()


def _the_store_is_a_record_source(store: CallStore) -> RecordSource:
    return store  # checked by mypy: the HTTP API and others read through RecordSource


async def _open_with(url: str, steps: tuple[Migration, ...]) -> CallStore:
    target = resolve_database_url(url)
    if target.kind == "sqlite":
        return await SqliteStore.open(target, migrations=steps)
    return await PostgresStore.open(target, migrations=steps)


# --- Migrations ------------------------------------------------------------------------


async def test_an_empty_database_is_migrated_and_reopening_changes_nothing(store_url: str):
    first = await open_store(store_url)
    assert await first.schema_version() == len(MIGRATIONS)
    await first.insert(live_record("c1"))
    await first.close()

    second = await open_store(store_url)
    try:
        assert await second.schema_version() == len(MIGRATIONS)
        assert await second.get("c1") is not None
    finally:
        await second.close()
    rows = await raw_rows(store_url, "SELECT version, name FROM schema_migrations ORDER BY 1")
    assert rows == [(m.version, m.name) for m in MIGRATIONS]


async def test_a_new_step_is_applied_once_on_the_next_open(store_url: str):
    await (await open_store(store_url)).close()
    step = Migration(
        len(MIGRATIONS) + 1,
        "index on the caller",
        sqlite=("CREATE INDEX calls_test_caller ON calls (controller_id, id)",),
        postgresql=("CREATE INDEX calls_test_caller ON calls (controller_id, id)",),
    )
    for _ in range(2):
        store = await _open_with(store_url, (*MIGRATIONS, step))
        assert await store.schema_version() == step.version
        await store.close()
    versions = await raw_rows(store_url, "SELECT version FROM schema_migrations ORDER BY 1")
    assert versions == [(v,) for v in range(1, step.version + 1)]


async def test_a_schema_newer_than_this_program_is_refused(store_url: str):
    await (await open_store(store_url)).close()
    await raw_rows(
        store_url, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 99, "future"
    )
    with pytest.raises(StoreError, match=r"version 99, newer than .* upgrade ari-realtime"):
        await open_store(store_url)


async def test_controllers_opening_one_postgresql_at_once_migrate_it_once(pg_url: str):
    stores = await asyncio.gather(*(open_store(pg_url) for _ in range(4)))
    try:
        assert [await s.schema_version() for s in stores] == [len(MIGRATIONS)] * 4
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    rows = await raw_rows(pg_url, "SELECT count(*) FROM schema_migrations")
    assert rows == [(len(MIGRATIONS),)]


# --- Records ------------------------------------------------------------------------------


async def test_a_full_record_round_trips_through_json(store: CallStore):
    record = ended_record("c-full")
    await store.update(record)
    assert await store.get("c-full") == record
    assert await store.get("nope") is None


async def test_insert_is_idempotent_and_never_undoes_an_update(store: CallStore):
    await store.insert(live_record("c1"))
    await store.insert(live_record("c1", caller_number="changed"))
    got = await store.get("c1")
    assert got is not None and got.caller_number == "+4930123456"
    await store.update(ended_record("c1"))
    await store.insert(live_record("c1"))  # a retried insert arriving late
    got = await store.get("c1")
    assert got is not None and got.status == "ended"


async def test_update_inserts_an_unknown_record(store: CallStore):
    await store.update(ended_record("c-new"))
    got = await store.get("c-new")
    assert got is not None and got.outcome == "agent_hung_up"


async def test_list_is_newest_first_with_filters_limit_and_before(store: CallStore):
    await store.insert(live_record("a", at(0)))
    await store.update(ended_record("b", at(10), outcome="caller_hung_up"))
    await store.update(ended_record("c", at(20), direction="outbound"))
    await store.update(ended_record("d", at(30), outcome="caller_hung_up"))
    await store.update(ended_record("e", at(30)))  # same start as d: id breaks the tie

    ids = [r.id for r in await store.list()]
    assert ids == ["e", "d", "c", "b", "a"]
    assert [r.id for r in await store.list(limit=2)] == ["e", "d"]
    assert [r.id for r in await store.list(before=at(30))] == ["c", "b", "a"]
    assert [r.id for r in await store.list(direction="outbound")] == ["c"]
    assert [r.id for r in await store.list(direction="inbound", limit=1)] == ["e"]
    assert [r.id for r in await store.list(outcome="caller_hung_up")] == ["d", "b"]
    assert [r.id for r in await store.list(outcome="caller_hung_up", before=at(30))] == ["b"]
    # A naive time is UTC, as everywhere in the records.
    naive = at(15).replace(tzinfo=None)
    assert [r.id for r in await store.list(before=naive)] == ["b", "a"]
    # Another zone names the same instant.
    other = at(15).astimezone(dt.timezone(dt.timedelta(hours=5)))
    assert [r.id for r in await store.list(before=other)] == ["b", "a"]
    with pytest.raises(ValueError, match="limit"):
        await store.list(limit=0)


async def test_close_crashed_ends_only_the_live_calls_of_that_controller(store: CallStore):
    await store.insert(live_record("mine-1", at(0)))
    await store.insert(live_record("mine-2", at(1)))
    await store.update(ended_record("mine-done", at(2)))
    await store.insert(live_record("theirs", at(3), controller_id="pbx2/voicebot"))
    now = at(3600)

    assert await store.close_crashed("pbx1/voicebot", now) == 2
    for call_id in ("mine-1", "mine-2"):
        got = await store.get(call_id)
        assert got is not None
        assert (got.status, got.outcome, got.ended_at) == ("ended", "controller_crashed", now)
        assert got.caller_number == "+4930123456"  # the rest is kept
    done, theirs = await store.get("mine-done"), await store.get("theirs")
    assert done is not None and done.outcome == "agent_hung_up"
    assert theirs is not None and theirs.status == "live"
    # The columns follow the JSON: the filters see the crash.
    crashed = await store.list(outcome="controller_crashed")
    assert {r.id for r in crashed} == {"mine-1", "mine-2"}
    assert await store.close_crashed("pbx1/voicebot", now) == 0


async def test_delete_older_than_removes_records_that_started_before_the_cutoff(
    store: CallStore,
):
    for n in range(4):
        await store.update(ended_record(f"c{n}", at(n * 86_400)))
    assert await store.delete_older_than(at(2 * 86_400)) == 2
    assert [r.id for r in await store.list()] == ["c3", "c2"]
    assert await store.delete_older_than(at(0)) == 0


async def test_a_nul_character_does_not_cost_the_record(store: CallStore):
    record = live_record(
        "c-nul", transcript=[TranscriptEntry(role="caller", text="a\x00b", start_ms=1)]
    )
    await store.insert(record)
    got = await store.get("c-nul")
    assert got is not None and got.transcript[0].text == "ab"


async def test_ping_says_whether_the_store_answers(store_url: str):
    store = await open_store(store_url)
    assert await store.ping() is True
    await store.close()
    assert await store.ping() is False
    with pytest.raises(StoreError) as caught:
        await store.get("c1")
    assert store.location in str(caught.value)


async def test_the_columns_hold_what_the_queries_need(store_url: str):
    store = await open_store(store_url)
    try:
        await store.update(ended_record("c1", T0))
    finally:
        await store.close()
    rows = await raw_rows(
        store_url, "SELECT id, direction, status, outcome, controller_id FROM calls"
    )
    assert rows == [("c1", "inbound", "ended", "agent_hung_up", "pbx1/voicebot")]


async def test_sqlite_creates_a_private_directory_and_file(sqlite_url: str):
    store = await open_store(sqlite_url)
    await store.close()
    path = resolve_database_url(sqlite_url).path
    assert path is not None
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
