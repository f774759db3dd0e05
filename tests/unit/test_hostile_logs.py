"""Logs stay one line per record whatever the values hold; secrets and their echoes are masked.

Each test pins one failure found by review, with the input that triggered it.
"""

from __future__ import annotations

import logging
import re
import sys

from controller.logs import RedactingFormatter, kv
from controller.redact import SecretMasker, escape_controls, mask_url

KEY = "sk-proj-Zq8Xw3Lm9Pt2Rv7Ks4Hd6Jf1Gb5Nc0Ye3Ua8Io2"
ECHOED = f"Incorrect API key provided: {KEY[:11]}{'*' * 29}{KEY[-4:]}. Find your key at ..."


def test_logs_mask_the_key_and_its_echoes() -> None:
    formatter = RedactingFormatter([KEY, "hunter2-password"])
    for message in (KEY, ECHOED, f"key={KEY[5:25]}", "auth hunter2-password ok"):
        record = logging.LogRecord(
            "x", logging.WARNING, __file__, 1, "model error %s", (message,), None
        )
        text = formatter.format(record)
        assert KEY[5:25] not in text and KEY[-4:] not in text and "hunter2" not in text, text


def test_url_masking() -> None:
    assert mask_url("https://u:p@h:1/x?api-key=k&a=1") == "https://u:***@h:1/x?api-key=***&a=1"
    assert mask_url("wss://h/v1?model=m") == "wss://h/v1?model=m"
    assert mask_url("http://tok@h/") == "http://***@h/"
    assert SecretMasker([]).mask("sk-abcdefghijklmnopqrstu") == "***"  # key-shaped


# --- logs: no forged lines ----------------------------------------------------------------------

FORGED = "ok\n2026-01-01T00:00:00.000Z INFO  controller.call hangup requested call=x"


def test_a_value_cannot_forge_a_log_line() -> None:
    # Before: kv(text=...) printed the newline and the fake record after it.
    assert "\n" not in kv(text=FORGED)
    assert kv(text="a\x1b[2Jb") == 'text="a\\x1b[2Jb"'
    assert kv(text='say "hi"\\') == 'text="say \\"hi\\"\\\\"'
    assert len(kv(text="x" * 100_000)) < 2100


def test_the_formatter_keeps_every_record_on_its_line() -> None:
    formatter = RedactingFormatter()
    record = logging.LogRecord("c", logging.INFO, __file__, 1, "transcript %s", (FORGED,), None)
    assert "\n" not in formatter.format(record)
    try:
        raise ValueError(FORGED)
    except ValueError:
        record = logging.LogRecord("c", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    lines = formatter.format(record).splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT")
    assert sum(1 for line in lines if stamp.match(line)) == 1, lines
    assert all(line.startswith("  ") for line in lines[1:])


def test_escape_controls() -> None:
    assert escape_controls("a\nb\u2028c\u202ed") == "a\\nb\\u2028c\\u202ed"
    assert escape_controls("Grüße 東京") == "Grüße 東京"
