"""Retention: ``RECORDS_RETENTION_DAYS`` deletes records older than that many days.

:func:`run_retention` is a task the controller owns: it deletes once at
start, then once a day. Records are aged by ``started_at``. A failure is
logged and tried again an hour later; it never ends the task.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from controller.errors import StoreError
from controller.logs import kv
from controller.store.base import CallStore

log = logging.getLogger("controller.store")

#: Seconds between two deletions.
DAILY = 86_400.0
#: Seconds before trying again after a failure.
RETRY_AFTER_FAILURE = 3_600.0


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def retention_cutoff(now: dt.datetime, days: int) -> dt.datetime:
    """Records that started before this moment are past retention."""
    return now - dt.timedelta(days=days)


async def delete_expired(
    store: CallStore, days: int, *, now: Callable[[], dt.datetime] = utc_now
) -> int:
    """Delete the records older than ``days`` days, once.

    Returns:
        How many were deleted.

    Raises:
        StoreError: the store failed.
    """
    cutoff = retention_cutoff(now(), days)
    deleted = await store.delete_older_than(cutoff)
    if deleted:
        log.info(
            "call records: retention deleted old records %s",
            kv(deleted=deleted, days=days, before=cutoff.isoformat(timespec="seconds")),
        )
    return deleted


async def run_retention(
    store: CallStore,
    days: int,
    *,
    now: Callable[[], dt.datetime] = utc_now,
    interval: float = DAILY,
    retry_after: float = RETRY_AFTER_FAILURE,
) -> None:
    """Delete expired records now and then every ``interval`` seconds, until cancelled.

    Args:
        store: the store to prune.
        days: ``RECORDS_RETENTION_DAYS`` (at least 1).
        now: the wall clock (UTC).
        interval: seconds between deletions.
        retry_after: seconds before trying again after a failure.

    Raises:
        ValueError: ``days`` is less than 1.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    while True:
        try:
            await delete_expired(store, days, now=now)
        except StoreError as exc:
            log.warning(
                "call records: retention failed, will try again %s",
                kv(in_s=min(retry_after, interval), error=exc),
            )
            await asyncio.sleep(min(retry_after, interval))
            continue
        except Exception:
            # A bug here must not end retention for the life of the controller.
            log.exception("call records: retention failed")
            await asyncio.sleep(min(retry_after, interval))
            continue
        await asyncio.sleep(interval)
