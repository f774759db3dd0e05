"""Where the sandbox's Asterisk configuration comes from, and a reader for it.

:data:`CONF_DIR` is the repository's ``asterisk/`` directory: its ``*.conf``
files configure both the Docker image and every sandbox.
:func:`conf_sections` reads Asterisk ``.conf`` files just well enough for
the sandbox to find what it needs before and after starting Asterisk: the
HTTP address (ARI), the ARI account and the SIP transports' ports.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["CONF_DIR", "conf_sections"]

#: Directory holding the Asterisk configuration shared with the Docker image.
CONF_DIR = Path(__file__).resolve().parent.parent


def conf_sections(text: str) -> list[tuple[str, dict[str, str]]]:
    """A small reader for Asterisk .conf files: [(section, {key: value})]."""
    sections: list[tuple[str, dict[str, str]]] = []
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        header = re.match(r"^\[([^\]]+)\]", line)
        if header:
            current = {}
            sections.append((header.group(1).strip(), current))
            continue
        if current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.lstrip(">").strip()
    return sections
