"""The call-record store's interface, and what both SQL backends share (pure).

A :class:`CallStore` keeps one row per call: the columns the queries need
(id, direction, status, outcome, controller_id, started_at, ended_at) and
the whole :class:`~controller.records.CallRecord` as JSON. The JSON is the
truth; the columns are copies for filtering and ordering. Records written
by a newer controller with more fields read back fine here (unknown fields
are ignored).

Every method raises :class:`~controller.errors.StoreError` (never a driver
exception) whose message names the store without its password.

:class:`SqlStore` holds the queries both backends run; a backend adds only
its dialect (parameters, how a time is stored), its connection (running a
statement, translating driver errors), opening and migrating, and its own
transaction for :meth:`CallStore.close_crashed`.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import ValidationError

from controller.errors import StoreError
from controller.records import CallRecord, Direction

log = logging.getLogger("controller.store")

#: ``list`` returns at most this many records, whatever ``limit`` says.
MAX_LIST = 1000
#: ``outcome`` of records a crashed controller left ``live``.
CRASHED = "controller_crashed"
#: The columns of the ``calls`` table, in the order of :meth:`SqlStore._row`.
COLUMNS = "id, direction, status, outcome, controller_id, started_at, ended_at, record"


class CallStore(ABC):
    """Where call records are kept. Implements :class:`~controller.records.RecordSource`.

    Attributes:
        kind: ``"sqlite"`` or ``"postgresql"``.
        location: the store's URL with its password masked, for messages.
    """

    kind: str
    location: str

    @abstractmethod
    async def insert(self, record: CallRecord) -> None:
        """Store a new record; nothing happens when its id is already stored.

        Idempotent, so a retried insert never overwrites a record that has
        since been updated.

        Raises:
            StoreError: the store failed (``transient`` when worth retrying).
        """

    @abstractmethod
    async def update(self, record: CallRecord) -> None:
        """Store ``record`` in place of the one with its id, or insert it (upsert).

        Raises:
            StoreError: the store failed (``transient`` when worth retrying).
        """

    @abstractmethod
    async def get(self, call_id: str) -> CallRecord | None:
        """One record, or None when the id is unknown.

        Raises:
            StoreError: the store failed, or the stored JSON is no valid record.
        """

    @abstractmethod
    async def list(
        self,
        *,
        limit: int = 50,
        before: dt.datetime | None = None,
        direction: Direction | None = None,
        outcome: str | None = None,
    ) -> builtins.list[CallRecord]:
        """Records newest first by ``started_at`` (then id), optionally filtered.

        Args:
            limit: at most this many (capped at :data:`MAX_LIST`).
            before: only records that started strictly before this time
                (the ``started_at`` of the last record of the previous page).
            direction: only inbound or only outbound calls.
            outcome: only records with this outcome.

        Stored rows whose JSON is no valid record are skipped with a warning.

        Raises:
            ValueError: ``limit`` is less than 1.
            StoreError: the store failed.
        """

    @abstractmethod
    async def close_crashed(self, controller_id: str, now: dt.datetime) -> int:
        """End every ``live`` record of ``controller_id``: it crashed while they were up.

        Each becomes ``status="ended"``, ``outcome="controller_crashed"``,
        ``ended_at=now``. Called at start-up, before the controller takes calls.

        Returns:
            How many records were closed.

        Raises:
            StoreError: the store failed.
        """

    @abstractmethod
    async def delete_older_than(self, cutoff: dt.datetime) -> int:
        """Delete every record that started before ``cutoff``.

        Returns:
            How many records were deleted.

        Raises:
            StoreError: the store failed.
        """

    @abstractmethod
    async def ping(self) -> bool:
        """True when the store answers a trivial query; never raises."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. The store cannot be used afterwards; never raises."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The highest migration applied to the database.

        Raises:
            StoreError: the store failed.
        """


# --- Shared by the backends ---------------------------------------------------------


def utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def check_limit(limit: int) -> int:
    """``limit`` capped at :data:`MAX_LIST`.

    Raises:
        ValueError: ``limit`` is less than 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return min(limit, MAX_LIST)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    return value


def record_json(record: CallRecord) -> str:
    """The record as JSON text, without NUL characters.

    PostgreSQL's ``jsonb`` rejects ``\\u0000``; a stray NUL in a transcript
    must not cost the whole record, so both backends drop it.
    """
    text = record.model_dump_json()
    if "\\u0000" in text:
        text = json.dumps(_without_nul(json.loads(text)), separators=(",", ":"))
    return text


def record_from_json(text: str | bytes, *, location: str) -> CallRecord:
    """Parse a stored record.

    Raises:
        StoreError: the JSON is no valid :class:`CallRecord`.
    """
    try:
        return CallRecord.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "record"
        raise StoreError(
            f"{location}: a stored record is not a valid call record ({where}: {first['msg']})"
        ) from None


def records_from_rows(texts: builtins.list[str], *, location: str) -> builtins.list[CallRecord]:
    """Parse stored records, skipping (with a warning) any that are invalid."""
    records = []
    for text in texts:
        try:
            records.append(record_from_json(text, location=location))
        except StoreError as exc:
            log.warning("call records: skipped a stored record: %s", exc)
    return records


def crashed(record: CallRecord, now: dt.datetime) -> CallRecord:
    """``record`` as ended by a controller crash at ``now``."""
    return record.model_copy(
        update={
            "status": "ended",
            "outcome": CRASHED,
            "ended_at": now,
            "end_reason": record.end_reason or "the controller stopped without ending the call",
        }
    )


# --- The SQL backends' common part -----------------------------------------------


def insert_statement(values: str) -> str:
    """``INSERT`` of one row into ``calls``; ``values``: the backend's 8 placeholders."""
    return f"INSERT INTO calls ({COLUMNS}) VALUES ({values})"


def upsert_statement(values: str) -> str:
    """:func:`insert_statement`, replacing the row of the same id if there is one."""
    return insert_statement(values) + (
        " ON CONFLICT (id) DO UPDATE SET direction = excluded.direction, "
        "status = excluded.status, outcome = excluded.outcome, "
        "controller_id = excluded.controller_id, started_at = excluded.started_at, "
        "ended_at = excluded.ended_at, record = excluded.record"
    )


class SqlStore(CallStore):
    """The queries both backends run on the ``calls`` table.

    A backend sets :attr:`_INSERT` and :attr:`_UPSERT` (from
    :func:`insert_statement` and :func:`upsert_statement`) and implements
    :meth:`_param`, :meth:`_time`, :meth:`_execute` and :meth:`_fetch`, plus
    :meth:`close_crashed`, :meth:`close` and its own ``open``.
    """

    _INSERT: ClassVar[str]
    _UPSERT: ClassVar[str]

    @abstractmethod
    def _param(self, n: int) -> str:
        """The ``n``-th query parameter (from 1) in the backend's dialect."""

    @abstractmethod
    def _time(self, moment: dt.datetime) -> Any:
        """``moment`` as the backend stores it (comparable in SQL)."""

    @abstractmethod
    async def _execute(self, doing: str, sql: str, args: Sequence[Any]) -> int:
        """Run one statement; return how many rows it changed.

        Raises:
            StoreError: ``{location}: {doing} failed: ...``.
        """

    @abstractmethod
    async def _fetch(self, doing: str, sql: str, args: Sequence[Any]) -> builtins.list[Any]:
        """Run one query; return the first column of every row.

        Raises:
            StoreError: ``{location}: {doing} failed: ...``.
        """

    def _row(self, record: CallRecord) -> tuple[Any, ...]:
        """The values of :data:`COLUMNS` for ``record``."""
        return (
            record.id,
            record.direction,
            record.status,
            record.outcome,
            record.controller_id,
            self._time(record.started_at),
            None if record.ended_at is None else self._time(record.ended_at),
            record_json(record),
        )

    async def insert(self, record: CallRecord) -> None:
        """See :meth:`CallStore.insert`."""
        sql = self._INSERT + " ON CONFLICT (id) DO NOTHING"
        await self._execute(f"storing call {record.id}", sql, self._row(record))

    async def update(self, record: CallRecord) -> None:
        """See :meth:`CallStore.update`."""
        await self._execute(f"updating call {record.id}", self._UPSERT, self._row(record))

    async def get(self, call_id: str) -> CallRecord | None:
        """See :meth:`CallStore.get`."""
        sql = f"SELECT record FROM calls WHERE id = {self._param(1)}"
        texts = await self._fetch(f"reading call {call_id}", sql, (call_id,))
        return record_from_json(texts[0], location=self.location) if texts else None

    async def list(
        self,
        *,
        limit: int = 50,
        before: dt.datetime | None = None,
        direction: Direction | None = None,
        outcome: str | None = None,
    ) -> builtins.list[CallRecord]:
        """See :meth:`CallStore.list`."""
        where: builtins.list[str] = []
        args: builtins.list[Any] = []
        for column, value in (
            ("started_at <", None if before is None else self._time(before)),
            ("direction =", direction),
            ("outcome =", outcome),
        ):
            if value is not None:
                args.append(value)
                where.append(f"{column} {self._param(len(args))}")
        sql = "SELECT record FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        args.append(check_limit(limit))
        sql += f" ORDER BY started_at DESC, id DESC LIMIT {self._param(len(args))}"
        texts = await self._fetch("listing calls", sql, args)
        return records_from_rows(texts, location=self.location)

    def _live_query(self) -> str:
        """The query of :meth:`close_crashed`: the live records of one controller."""
        return (
            f"SELECT record FROM calls WHERE controller_id = {self._param(1)} AND status = 'live'"
        )

    async def delete_older_than(self, cutoff: dt.datetime) -> int:
        """See :meth:`CallStore.delete_older_than`."""
        sql = f"DELETE FROM calls WHERE started_at < {self._param(1)}"
        return await self._execute("deleting old calls", sql, (self._time(cutoff),))

    async def ping(self) -> bool:
        """See :meth:`CallStore.ping`."""
        try:
            await self._fetch("ping", "SELECT 1", ())
        except StoreError:
            return False
        return True

    async def schema_version(self) -> int:
        """See :meth:`CallStore.schema_version`."""
        sql = "SELECT max(version) FROM schema_migrations"
        values = await self._fetch("reading the schema version", sql, ())
        return int(values[0] or 0)
