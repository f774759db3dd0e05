"""The call-record store's interface, and what both backends share (pure).

A :class:`CallStore` keeps one row per call: the columns the queries need
(id, direction, status, outcome, controller_id, started_at, ended_at) and
the whole :class:`~controller.records.CallRecord` as JSON. The JSON is the
truth; the columns are copies for filtering and ordering. Records written
by a newer controller with more fields read back fine here (unknown fields
are ignored).

Every method raises :class:`~controller.errors.StoreError` (never a driver
exception) whose message names the store without its password.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import logging
from abc import ABC, abstractmethod
from typing import Any

from pydantic import ValidationError

from controller.errors import StoreError
from controller.records import CallRecord, Direction

log = logging.getLogger("controller.store")

#: ``list`` returns at most this many records, whatever ``limit`` says.
MAX_LIST = 1000
#: ``outcome`` of records a crashed controller left ``live``.
CRASHED = "controller_crashed"


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
