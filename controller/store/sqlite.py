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
from controller.store.base import (
    SqlStore,
    crashed,
    insert_statement,
    records_from_rows,
    upsert_statement,
    utc,
)
from controller.store.migrations import MIGRATIONS, SQLITE_VERSIONS_TABLE, Migration, pending
from controller.store.url import StoreUrl

T = TypeVar("T")

_VALUES = "?, ?, ?, ?, ?, ?, ?, ?"


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


class SqliteStore(SqlStore):
    """Call records in a SQLite file. Open it with :meth:`open`."""

    kind = "sqlite"
    _INSERT = insert_statement(_VALUES)
    _UPSERT = upsert_statement(_VALUES)

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

    def _param(self, n: int) -> str:
        return "?"

    def _time(self, moment: dt.datetime) -> str:
        # Fixed width (microseconds, +00:00), so comparing the text compares the times.
        return utc(moment).isoformat(timespec="microseconds")

    async def _execute(self, doing: str, sql: str, args: Sequence[Any]) -> int:
        async def op() -> int:
            cursor = await self._conn.execute(sql, args)
            return cursor.rowcount

        return await self._run(doing, op)

    async def _fetch(self, doing: str, sql: str, args: Sequence[Any]) -> builtins.list[Any]:
        async def op() -> builtins.list[Any]:
            rows = await self._conn.execute_fetchall(sql, args)
            return [r[0] for r in rows]

        return await self._run(doing, op)

    async def close_crashed(self, controller_id: str, now: dt.datetime) -> int:
        """See :meth:`CallStore.close_crashed`."""
        conn = self._conn

        async def op() -> int:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                rows = await conn.execute_fetchall(self._live_query(), (controller_id,))
                records = records_from_rows([str(r[0]) for r in rows], location=self.location)
                for record in records:
                    await conn.execute(self._UPSERT, self._row(crashed(record, now)))
                await conn.execute("COMMIT")
            except BaseException:
                await _rollback(conn)
                raise
            return len(records)

        return await self._run(f"closing the live calls of {controller_id}", op)

    async def close(self) -> None:
        """See :meth:`CallStore.close`."""
        try:
            await self._conn.close()
        except (sqlite3.Error, ValueError):
            pass
