"""Logging: one line per event, ``key=value`` fields, secrets masked.

Lines look like::

    2026-11-21T10:00:00.123Z INFO  call     call=3f2a9c event=answered channel=PJSIP/tester-00000001

The formatter masks every registered secret (API key, ARI password) in the
final text, whatever put it there, as a last line of defence: the code
itself never formats secrets into messages.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Iterable
from typing import Any

_MASK = "***"


def kv(**fields: object) -> str:
    """Format fields as ``key=value`` pairs; values with spaces are quoted."""
    parts = []
    for key, value in fields.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose lines carry ``call=<id>`` as their first field.

    Messages are ``"<what> %s"`` with a :func:`kv` argument, as everywhere
    in the controller; the call id goes right after ``<what>``.
    """

    def __init__(self, logger: logging.Logger, call_id: str) -> None:
        super().__init__(logger, {"call": call_id})
        self._field = "call=" + kv(call=call_id).removeprefix("call=")

    def process(self, msg: object, kwargs: Any) -> tuple[object, Any]:
        text = str(msg)
        if "%s" in text:
            return text.replace("%s", f"{self._field} %s", 1), kwargs
        return f"{text} {self._field}", kwargs


class RedactingFormatter(logging.Formatter):
    """A formatter that replaces every known secret with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)-5s %(name)s %(message)s")
        # Short strings would mask ordinary words; real secrets are long.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Send logs to stderr, one line each, with ``secrets`` masked."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter (every websocket frame at DEBUG) drowns call logs.
    for noisy in ("websockets", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.INFO))
