"""Fixtures for every test: the call-record stores, SQLite and a real PostgreSQL.

``postgres`` starts one throwaway server per session (tests/pg.py), only
when a test asks for it; ``pg_url`` is a new empty database on it for one
test; ``store_url`` runs a test once per backend. Nothing skips: a server
that cannot start fails the tests with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.pg import PostgresServer

_databases: list[str] = []  # the test database, once created


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server."""
    server = PostgresServer.create()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
async def pg_url(postgres: PostgresServer) -> str:
    """A ``DATABASE_URL`` of an empty database (emptied for each test: faster than a new one)."""
    if not _databases:
        admin = await asyncpg.connect(postgres.url())
        try:
            await admin.execute("CREATE DATABASE calls")
        finally:
            await admin.close()
        _databases.append("calls")
    url = postgres.url("calls")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A ``DATABASE_URL`` of a SQLite file that does not exist yet."""
    return f"sqlite://{tmp_path}/state/calls.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url
