"""The store's schema, as ordered migration steps for SQLite and PostgreSQL (pure).

A store applies, at open, every step whose version is not yet in its
``schema_migrations`` table, in order, each in the same transaction as the
row that records it. The record itself is stored whole as JSON, so new
record fields need no migration; a step is needed only for a new indexed
column or index. Steps are never edited once released: add a new one.

Concurrency: PostgreSQL takes a transaction-scoped advisory lock
(:data:`PG_LOCK_SQL`) before reading ``schema_migrations``, so two
controllers starting at once against one database apply each step once;
SQLite gets the same from ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from controller.errors import StoreError


@dataclass(frozen=True)
class Migration:
    """One schema step.

    Attributes:
        version: its number; steps are numbered 1, 2, 3, ... without gaps.
        name: what it does, stored next to the version.
        sqlite: the statements for SQLite, run in order.
        postgresql: the statements for PostgreSQL, run in order.
    """

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]


def _indexes() -> tuple[str, ...]:
    # Each list filter orders by started_at, hence the pairs; close_crashed
    # looks records up by controller and status; retention scans started_at.
    return (
        "CREATE INDEX calls_started_at ON calls (started_at, id)",
        "CREATE INDEX calls_direction ON calls (direction, started_at)",
        "CREATE INDEX calls_outcome ON calls (outcome, started_at)",
        "CREATE INDEX calls_controller_status ON calls (controller_id, status)",
        "CREATE INDEX calls_ended_at ON calls (ended_at)",
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "calls table: indexed columns plus the whole record as JSON",
        sqlite=(
            # Times are UTC ISO-8601 text of fixed width, so text order is time order.
            """CREATE TABLE calls (
                id TEXT PRIMARY KEY,
                direction TEXT NOT NULL,
                status TEXT NOT NULL,
                outcome TEXT,
                controller_id TEXT NOT NULL,
                started_at TEXT NOT NULL,
                ended_at TEXT,
                record TEXT NOT NULL
            )""",
            *_indexes(),
        ),
        postgresql=(
            """CREATE TABLE calls (
                id TEXT PRIMARY KEY,
                direction TEXT NOT NULL,
                status TEXT NOT NULL,
                outcome TEXT,
                controller_id TEXT NOT NULL,
                started_at TIMESTAMPTZ NOT NULL,
                ended_at TIMESTAMPTZ,
                record JSONB NOT NULL
            )""",
            *_indexes(),
        ),
    ),
)

SQLITE_VERSIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)"""
PG_VERSIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""
#: Serialises migrations across controllers; released at commit or rollback.
PG_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('ari-realtime schema_migrations'))"


def check_steps(steps: Sequence[Migration]) -> None:
    """Check that ``steps`` are numbered 1, 2, 3, ... (a programming error otherwise).

    Raises:
        ValueError: naming the first out-of-order version.
    """
    for expected, step in enumerate(steps, start=1):
        if step.version != expected:
            raise ValueError(f"migration {step.name!r} has version {step.version}, not {expected}")


def pending(applied: Iterable[int], steps: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """The steps not yet applied, in order.

    Raises:
        StoreError: the database has a version this program does not know,
            i.e. a newer ari-realtime migrated it; this one could misread it.
    """
    check_steps(steps)
    done = set(applied)
    latest = len(steps)
    newer = sorted(v for v in done if v > latest)
    if newer:
        raise StoreError(
            f"the database's schema is at version {newer[-1]}, newer than this "
            f"ari-realtime knows ({latest}); upgrade ari-realtime on this host"
        )
    return [step for step in steps if step.version not in done]
