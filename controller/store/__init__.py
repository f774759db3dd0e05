"""Call records storage: SQLite by default, PostgreSQL for several controllers.

Modules:

* :mod:`~controller.store.url`: ``DATABASE_URL`` parsing, password masking,
  the default file (pure);
* :mod:`~controller.store.migrations`: the schema as ordered steps (pure);
* :mod:`~controller.store.base`: :class:`CallStore`, the interface both
  backends implement (and :class:`~controller.records.RecordSource`), and
  :class:`~controller.store.base.SqlStore`, the queries they share;
* :mod:`~controller.store.sqlite`, :mod:`~controller.store.postgres`: the
  backends, imported only when used (asyncpg is not loaded for SQLite);
* :mod:`~controller.store.writer`: :class:`RecordWriter`, the observer that
  stores records without blocking calls;
* :mod:`~controller.store.retention`: ``RECORDS_RETENTION_DAYS``.

At start-up the controller calls :func:`open_store` (a bad or unreachable
``DATABASE_URL`` is one :class:`~controller.errors.ConfigError` or
:class:`~controller.errors.StoreError` line), then
:meth:`CallStore.close_crashed` with its ``CONTROLLER_ID``, and runs
:meth:`RecordWriter.run` (and :func:`run_retention`) as tasks.
"""

from __future__ import annotations

import os
from pathlib import Path

from controller.errors import ConfigError
from controller.store.base import CRASHED, MAX_LIST, CallStore
from controller.store.retention import delete_expired, retention_cutoff, run_retention
from controller.store.url import (
    StoreUrl,
    default_sqlite_path,
    parse_database_url,
    redact_url,
    url_password,
)
from controller.store.writer import RecordWriter, without_transcripts

__all__ = [
    "CRASHED",
    "MAX_LIST",
    "CallStore",
    "RecordWriter",
    "StoreUrl",
    "check_store",
    "default_sqlite_path",
    "delete_expired",
    "open_store",
    "redact_url",
    "resolve_database_url",
    "retention_cutoff",
    "run_retention",
    "url_password",
    "without_transcripts",
]


def resolve_database_url(url: str) -> StoreUrl:
    """Parse ``DATABASE_URL``; empty means the default SQLite file of this user.

    Raises:
        ConfigError: ``DATABASE_URL: <what is wrong>`` (password masked).
    """
    if not url:
        try:
            home = Path.home()
        except RuntimeError:
            raise ConfigError(
                "DATABASE_URL: not set, and this user has no home directory for the default "
                "SQLite file; set DATABASE_URL=sqlite:///PATH (or run under systemd with "
                "StateDirectory=ari-realtime)"
            ) from None
        path = default_sqlite_path(os.environ, is_root=os.geteuid() == 0, home=home)
        # Not through the parser: a home directory may hold '?' or '#'.
        return StoreUrl("sqlite", f"sqlite://{path}", f"sqlite://{path}", "", path)
    try:
        return parse_database_url(url)
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL: {exc}") from None


async def open_store(url: str = "", *, timeout: float = 5.0, create: bool = True) -> CallStore:
    """Open the store ``url`` names (``""``: the default SQLite file), migrating its schema.

    Args:
        url: ``DATABASE_URL``.
        timeout: seconds to wait for the server (PostgreSQL) or a lock (SQLite).
        create: SQLite only: create the file when missing. False for readers
            such as ``ari-realtime calls``, which must not leave an empty
            database where the controller does not look.

    Raises:
        ConfigError: the URL is malformed.
        StoreError: the store cannot be reached or used; one line saying
            what is wrong and what to do, starting with ``DATABASE_URL:``.
    """
    target = resolve_database_url(url)
    if target.kind == "sqlite":
        from controller.store.sqlite import SqliteStore

        return await SqliteStore.open(target, timeout=timeout, create=create)
    from controller.store.postgres import PostgresStore

    return await PostgresStore.open(target, timeout=timeout)


async def check_store(url: str = "", *, timeout: float = 5.0, create: bool = True) -> str:
    """Open the store, read its schema version, close it: a start-up preflight.

    Returns:
        A description such as ``SQLite /var/lib/ari-realtime/calls.db (schema 1)``.

    Raises:
        ConfigError: the URL is malformed.
        StoreError: the store cannot be reached or used (see :func:`open_store`).
    """
    store = await open_store(url, timeout=timeout, create=create)
    try:
        version = await store.schema_version()
    finally:
        await store.close()
    return f"{store.location} (schema {version})"
