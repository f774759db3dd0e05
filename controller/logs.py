"""Logging: one line per event, ``key=value`` fields, secrets masked.

Lines look like::

    2026-11-21T10:00:00.123Z INFO  call     call=3f2a9c event=answered channel=PJSIP/tester-00000001

Values come from outside (caller ID, channel names, what the model said), so
no value can break out of its line: :func:`kv` quotes values with spaces,
quotes, ``=`` or control characters and escapes the latter (``\n``,
``\x1b``), and cuts values longer than :data:`MAX_VALUE_CHARS`. The
formatter escapes control characters in every message again, whatever put
them there, and indents the lines of a traceback, so a line that starts at
the left margin is always a real record.

The formatter also masks every registered secret (API key, ARI password, a
tool's header values) in the final text, and anything that looks like an
echo of one (:class:`~controller.redact.SecretMasker`), as a last line of
defence: the code itself never formats secrets into messages.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Iterable
from typing import Any

from controller.redact import SecretMasker, escape_controls

#: Longer values are cut (a transcript, a model's error message): one log
#: line must stay readable and cheap, whatever the peer sent.
MAX_VALUE_CHARS = 2000


def kv(**fields: object) -> str:
    """Format fields as ``key=value`` pairs on one line.

    Values with spaces, quotes, ``=``, backslashes or control characters are
    quoted, with backslashes, quotes and control characters escaped, so a
    value can never end the line or fake another field. Values longer than
    :data:`MAX_VALUE_CHARS` are cut, with the number of characters left out.
    """
    parts = []
    for key, value in fields.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        if len(text) > MAX_VALUE_CHARS:
            text = f"{text[:MAX_VALUE_CHARS]}...({len(text) - MAX_VALUE_CHARS} more)"
        if not text or any(c in text for c in ' "=\\') or not text.isprintable():
            escaped = text.replace("\\", "\\\\").replace('"', '\\"')
            text = '"' + escape_controls(escaped) + '"'
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
    """One line per record, control characters escaped, every known secret as ``***``.

    A traceback (``log.exception``) follows its record on lines indented by
    two spaces, with its control characters other than newlines escaped.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("%(asctime)s.%(msecs)03dZ %(levelname)-5s %(name)s %(message)s")
        self._masker = SecretMasker(secrets)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return dt.datetime.fromtimestamp(record.created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        # The message itself is one line, whatever its arguments held.
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return _indent(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        return self._masker.mask(super().format(record))


def _indent(text: str) -> str:
    """Every line of ``text`` escaped and indented: it cannot pass for a record of its own."""
    return "\n".join("  " + escape_controls(line) for line in text.split("\n"))


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
