"""The PostgreSQL store (``postgresql://...``): one database for several controllers.

Through ``asyncpg`` with a small pool (1 to 4 connections): a connection the
server dropped (restart, failover) is replaced on the next use, so the
writer's retry is enough to ride out an outage. Times are ``timestamptz``,
the record is ``jsonb``.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from controller.errors import ConfigError, StoreError
from controller.store.base import (
    SqlStore,
    crashed,
    insert_statement,
    records_from_rows,
    upsert_statement,
    utc,
)
from controller.store.migrations import (
    MIGRATIONS,
    PG_LOCK_SQL,
    PG_VERSIONS_TABLE,
    Migration,
    pending,
)
from controller.store.url import StoreUrl

T = TypeVar("T")

#: Seconds one statement may take (retention may delete many rows at once).
COMMAND_TIMEOUT = 30.0

_VALUES = "$1, $2, $3, $4, $5, $6, $7, $8::jsonb"
#: Errors where the record itself was refused: retrying cannot help.
_RECORD_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
#: What a driver raises when the server cannot be reached or goes away.
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def _scrub(text: str, password: str) -> str:
    # Drivers may quote what they were given; never let the password through.
    # (Very short passwords would mask ordinary words; they stay unmasked.)
    return text.replace(password, "***") if len(password) >= 4 else text


def _count(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 3".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresStore(SqlStore):
    """Call records in a PostgreSQL database. Open it with :meth:`open`."""

    kind = "postgresql"
    _INSERT = insert_statement(_VALUES)
    _UPSERT = upsert_statement(_VALUES)

    def __init__(self, pool: asyncpg.Pool, target: StoreUrl) -> None:
        self._pool = pool
        self._password = target.password
        self.location = f"PostgreSQL {target.redacted}"

    @classmethod
    async def open(
        cls,
        target: StoreUrl,
        *,
        timeout: float = 5.0,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> PostgresStore:
        """Connect to the database ``target`` names and migrate it.

        Args:
            target: a parsed ``postgresql://`` URL.
            timeout: seconds to wait for the connection.
            migrations: the schema steps (tests pass their own).

        Raises:
            ConfigError: the URL has an option the driver does not understand.
            StoreError: one line saying what is wrong and what to do.
        """
        shown = target.redacted

        def scrub(text: str) -> str:
            return _scrub(text, target.password)

        try:
            pool = await asyncpg.create_pool(
                dsn=target.url,
                min_size=1,
                max_size=4,
                timeout=timeout,
                command_timeout=COMMAND_TIMEOUT,
            )
        except asyncpg.ClientConfigurationError as exc:
            raise ConfigError(f"DATABASE_URL: {scrub(str(exc))} (got {shown!r})") from None
        except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as e:
            raise StoreError(
                f"DATABASE_URL: PostgreSQL at {shown} refused the login: {scrub(str(e))}; "
                "check the user and password in DATABASE_URL (and pg_hba.conf)"
            ) from None
        except asyncpg.InvalidCatalogNameError as exc:
            raise StoreError(
                f"DATABASE_URL: PostgreSQL at {shown}: {scrub(str(exc))}; create it "
                "(createdb -O USER NAME) or fix the database name in DATABASE_URL"
            ) from None
        except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else scrub(str(exc))
            raise StoreError(
                f"DATABASE_URL: cannot connect to PostgreSQL at {shown}: {reason}; check that "
                "the server is running and reachable from here, or fix DATABASE_URL",
                transient=True,
            ) from None
        except _DRIVER_ERRORS as exc:
            raise StoreError(
                f"DATABASE_URL: PostgreSQL at {shown}: {scrub(str(exc))}", transient=True
            ) from None
        store = cls(pool, target)
        try:
            await store._migrate(migrations)
        except asyncpg.InsufficientPrivilegeError as exc:
            await store.close()
            raise StoreError(
                f"DATABASE_URL: PostgreSQL at {shown}: {scrub(str(exc))}; the user needs to "
                "be allowed to create tables (e.g. own the database) for the schema migrations"
            ) from None
        except _DRIVER_ERRORS as exc:
            await store.close()
            raise StoreError(
                f"DATABASE_URL: PostgreSQL at {shown}: migrating the schema failed: "
                f"{scrub(str(exc))}",
                transient=True,
            ) from None
        except StoreError as exc:
            await store.close()
            raise StoreError(f"DATABASE_URL: PostgreSQL at {shown}: {exc}") from None
        return store

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # The advisory lock comes before CREATE TABLE IF NOT EXISTS, which
            # itself is not safe against a concurrent twin.
            await conn.execute(PG_LOCK_SQL)
            await conn.execute(PG_VERSIONS_TABLE)
            rows = await conn.fetch("SELECT version FROM schema_migrations")
            for step in pending([int(r["version"]) for r in rows], migrations):
                for statement in step.postgresql:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    step.version,
                    step.name,
                )

    async def _run(self, doing: str, op: Callable[[], Awaitable[T]]) -> T:
        try:
            return await op()
        except _DRIVER_ERRORS as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise StoreError(
                f"{self.location}: {doing} failed: {_scrub(reason, self._password)}",
                transient=not isinstance(exc, _RECORD_REFUSED),
            ) from None

    def _param(self, n: int) -> str:
        return f"${n}"

    def _time(self, moment: dt.datetime) -> dt.datetime:
        return utc(moment)

    async def _execute(self, doing: str, sql: str, args: Sequence[Any]) -> int:
        status = await self._run(doing, lambda: self._pool.execute(sql, *args))
        return _count(str(status))

    async def _fetch(self, doing: str, sql: str, args: Sequence[Any]) -> builtins.list[Any]:
        rows = await self._run(doing, lambda: self._pool.fetch(sql, *args))
        return [r[0] for r in rows]

    async def close_crashed(self, controller_id: str, now: dt.datetime) -> int:
        """See :meth:`CallStore.close_crashed`."""

        async def op() -> int:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(self._live_query() + " FOR UPDATE", controller_id)
                records = records_from_rows([r["record"] for r in rows], location=self.location)
                if records:
                    ended = [self._row(crashed(r, now)) for r in records]
                    await conn.executemany(self._UPSERT, ended)
                return len(records)

        return await self._run(f"closing the live calls of {controller_id}", op)

    async def close(self) -> None:
        """See :meth:`CallStore.close`: waits briefly for queries in flight, then cuts."""
        try:
            await asyncio.wait_for(self._pool.close(), timeout=5.0)
        except (TimeoutError, *_DRIVER_ERRORS):
            self._pool.terminate()
