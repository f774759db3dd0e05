"""The SQLite store (``sqlite:///PATH``, the default): one file, one controller.

Through ``aiosqlite``: the standard library's ``sqlite3`` on a thread of its
own, so the event loop never waits on the disk. The database runs in WAL
mode, so ``ari-realtime calls`` reads while the controller writes, with
``synchronous=NORMAL`` (a power cut may lose the last records, never the
file). The directory is created ``0700`` and the file ``0600``: records
hold what callers said.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import os
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from controller.errors import StoreError
from controller.records import CallRecord, Direction
from controller.store.base import (
    CallStore,
    check_limit,
    crashed,
    record_from_json,
    record_json,
    records_from_rows,
    utc,
)
from controller.store.migrations import MIGRATIONS, SQLITE_VERSIONS_TABLE, Migration, pending
from controller.store.url import StoreUrl

T = TypeVar("T")

_COLUMNS = "id, direction, status, outcome, controller_id, started_at, ended_at, record"
_INSERT = f"INSERT INTO calls ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT = (
    _INSERT + " ON CONFLICT (id) DO UPDATE SET direction = excluded.direction, "
    "status = excluded.status, outcome = excluded.outcome, "
    "controller_id = excluded.controller_id, started_at = excluded.started_at, "
    "ended_at = excluded.ended_at, record = excluded.record"
)


def _ts(moment: dt.datetime | None) -> str | None:
    # Fixed width (microseconds, +00:00), so comparing the text compares the times.
    return None if moment is None else utc(moment).isoformat(timespec="microseconds")


def _row(record: CallRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.direction,
        record.status,
        record.outcome,
        record.controller_id,
        _ts(record.started_at),
        _ts(record.ended_at),
        record_json(record),
    )


def _transient(exc: BaseException) -> bool:
    # Only the record itself being refused is worth giving up on; a locked,
    # full or unreadable database may recover.
    return not isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError)


async def _rollback(conn: aiosqlite.Connection) -> None:
    # SQLite may already have rolled back (e.g. disk full); keep the first error.
    try:
        await conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _prepare(path: Path, create: bool) -> None:
    """Create the directory (0700) and an empty file (0600) unless they exist.

    Raises:
        StoreError: the directory or file cannot be created, or ``create`` is
            False and there is no file.
    """
    if path.exists():
        return
    if not create:
        raise StoreError(
            f"DATABASE_URL: there is no SQLite database at {path} (the controller creates it "
            "when it starts); is DATABASE_URL the same as the controller's?"
        )
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"DATABASE_URL: cannot create the directory {path.parent} for the SQLite "
            f"database: {exc.strerror or exc}; create it writable by this user or set "
            "DATABASE_URL"
        ) from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(
            f"DATABASE_URL: cannot create the SQLite database {path}: {exc.strerror or exc}; "
            f"make {path.parent} writable by this user or set DATABASE_URL"
        ) from None
    os.close(fd)


class SqliteStore(CallStore):
    """Call records in a SQLite file. Open it with :meth:`open`."""

    kind = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.location = f"SQLite {path}"
        # One connection: statements of one transaction must not interleave
        # with another coroutine's.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        target: StoreUrl,
        *,
        timeout: float = 5.0,
        create: bool = True,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> SqliteStore:
        """Open (and create, and migrate) the database ``target`` names.

        Args:
            target: a parsed ``sqlite://`` URL.
            timeout: seconds to wait for a lock another connection holds.
            create: create the directory and file when missing; when False, a
                missing file is an error (the ``calls`` command reads only).
            migrations: the schema steps (tests pass their own).

        Raises:
            ValueError: ``target`` is not a SQLite URL.
            StoreError: one line saying what is wrong and what to do.
        """
        path = target.path
        if path is None:
            raise ValueError(f"not a sqlite URL: {target}")
        await asyncio.to_thread(_prepare, path, create)
        try:
            conn = await aiosqlite.connect(path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(
                f"DATABASE_URL: cannot open the SQLite database {path}: {exc}; check that "
                f"it and {path.parent} are readable and writable by this user"
            ) from None
        store = cls(conn, path)
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await store._migrate(migrations)
        except sqlite3.Error as exc:
            await store.close()
            raise StoreError(
                f"DATABASE_URL: cannot use the SQLite database {path}: {exc}; check that "
                f"it and {path.parent} are writable by this user and the disk is not full",
                transient=_transient(exc),
            ) from None
        except StoreError as exc:
            await store.close()
            raise StoreError(f"DATABASE_URL: {path}: {exc}") from None
        return store

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        conn = self._conn
        async with self._lock:
            # IMMEDIATE takes the write lock first: a second process waits
            # here, then finds the steps applied.
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.execute(SQLITE_VERSIONS_TABLE)
                rows = await conn.execute_fetchall("SELECT version FROM schema_migrations")
                for step in pending([int(r[0]) for r in rows], migrations):
                    for statement in step.sqlite:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                        (step.version, step.name),
                    )
                await conn.execute("COMMIT")
            except BaseException:
                await _rollback(conn)
                raise

    async def _run(self, doing: str, op: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            try:
                return await op()
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{self.location}: {doing} failed: {exc}", transient=_transient(exc)
                ) from exc
            except ValueError as exc:  # aiosqlite: the connection is closed
                raise StoreError(f"{self.location}: {doing} failed: {exc}") from exc

    async def insert(self, record: CallRecord) -> None:
        """See :meth:`CallStore.insert`."""
        row = _row(record)

        async def op() -> None:
            await self._conn.execute(_INSERT + " ON CONFLICT (id) DO NOTHING", row)

        await self._run(f"storing call {record.id}", op)

    async def update(self, record: CallRecord) -> None:
        """See :meth:`CallStore.update`."""
        row = _row(record)

        async def op() -> None:
            await self._conn.execute(_UPSERT, row)

        await self._run(f"updating call {record.id}", op)

    async def get(self, call_id: str) -> CallRecord | None:
        """See :meth:`CallStore.get`."""

        async def op() -> builtins.list[str]:
            rows = await self._conn.execute_fetchall(
                "SELECT record FROM calls WHERE id = ?", (call_id,)
            )
            return [str(r[0]) for r in rows]

        texts = await self._run(f"reading call {call_id}", op)
        if not texts:
            return None
        return record_from_json(texts[0], location=self.location)

    async def list(
        self,
        *,
        limit: int = 50,
        before: dt.datetime | None = None,
        direction: Direction | None = None,
        outcome: str | None = None,
    ) -> builtins.list[CallRecord]:
        """See :meth:`CallStore.list`."""
        where, args = [], []
        if before is not None:
            where.append("started_at < ?")
            args.append(_ts(before))
        if direction is not None:
            where.append("direction = ?")
            args.append(direction)
        if outcome is not None:
            where.append("outcome = ?")
            args.append(outcome)
        sql = "SELECT record FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        args.append(str(check_limit(limit)))

        async def op() -> builtins.list[str]:
            rows = await self._conn.execute_fetchall(sql, args)
            return [str(r[0]) for r in rows]

        texts = await self._run("listing calls", op)
        return records_from_rows(texts, location=self.location)

    async def close_crashed(self, controller_id: str, now: dt.datetime) -> int:
        """See :meth:`CallStore.close_crashed`."""
        conn = self._conn

        async def op() -> int:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                rows = await conn.execute_fetchall(
                    "SELECT record FROM calls WHERE controller_id = ? AND status = 'live'",
                    (controller_id,),
                )
                records = records_from_rows([str(r[0]) for r in rows], location=self.location)
                for record in records:
                    await conn.execute(_UPSERT, _row(crashed(record, now)))
                await conn.execute("COMMIT")
            except BaseException:
                await _rollback(conn)
                raise
            return len(records)

        return await self._run(f"closing the live calls of {controller_id}", op)

    async def delete_older_than(self, cutoff: dt.datetime) -> int:
        """See :meth:`CallStore.delete_older_than`."""

        async def op() -> int:
            cursor = await self._conn.execute(
                "DELETE FROM calls WHERE started_at < ?", (_ts(cutoff),)
            )
            return cursor.rowcount

        return await self._run("deleting old calls", op)

    async def ping(self) -> bool:
        """See :meth:`CallStore.ping`."""
        try:
            await self._run("ping", lambda: self._conn.execute_fetchall("SELECT 1"))
        except StoreError:
            return False
        return True

    async def schema_version(self) -> int:
        """See :meth:`CallStore.schema_version`."""

        async def op() -> int:
            rows = await self._conn.execute_fetchall("SELECT max(version) FROM schema_migrations")
            return int(next(iter(rows))[0] or 0)

        return await self._run("reading the schema version", op)

    async def close(self) -> None:
        """See :meth:`CallStore.close`."""
        try:
            await self._conn.close()
        except (sqlite3.Error, ValueError):
            pass
