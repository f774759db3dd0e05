"""Text from outside made safe to print: control characters escaped, secrets masked (pure).

Three helpers, used wherever text from Asterisk, the caller, the model, a
tool service or the operator's own settings ends up in a log line, an error
message or ``check`` output:

* :func:`escape_controls` makes any text one printable line: newlines,
  carriage returns, escape sequences and the Unicode line and paragraph
  separators become backslash escapes, so no value can start a line of its
  own (forge a log line) or repaint a terminal.
* :func:`mask_url` hides what a URL carries in its user part
  (``user:***@``) and in query parameters named like credentials
  (``?api-key=***``).
* :class:`SecretMasker` replaces every known secret, and anything that
  looks like one of them, with ``***``. Servers echo keys back in their
  errors, often shortened (``sk-proj-abc***...***wxyz``): a word sharing
  ten characters in a row with a long secret, or a masked echo that keeps
  its first or last characters, is masked whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
#: Query parameters whose values are credentials (compared lower-case, ``-`` as ``_``).
SECRET_PARAMETERS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "token",
        "access_token",
        "auth",
        "password",
        "pass",
        "secret",
        "sig",
        "signature",
        "code",
    }
)
#: Characters escaped by :func:`escape_controls`: C0 and C1 controls, DEL,
#: the Unicode line and paragraph separators, and the bidirectional
#: overrides and isolates (they reorder what a terminal shows).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: A "word" that may be a key: what API keys, tokens and their masked echoes are made of.
_WORD = re.compile(r"[A-Za-z0-9_\-.~+/=*:]{8,}")
#: An OpenAI-style key (``sk-...``, ``sk-proj-...``), echoed whole or masked.
_KEY_SHAPED = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-*]{16,}")
#: Characters in a row shared with a secret that give it away.
_GRAM = 10
#: Secrets shorter than this are masked only where they appear whole: a
#: short password shares runs of characters with ordinary words (the app name).
_PARTIAL_MIN = 20
#: A URL inside free text (for :func:`mask_urls_in`).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` as one printable line: control characters become ``\\n``, ``\\x1b``...

    Printable text, including every letter of every script, is left as it is.
    """
    if text.isprintable():
        return text
    return _CONTROLS.sub(_escape_char, text)


def _secret_parameter(name: str) -> bool:
    key = name.lower().replace("-", "_")
    return key in SECRET_PARAMETERS or key.endswith(("_key", "_token", "_secret", "_password"))


def mask_url(url: str) -> str:
    """``url`` with its password and credential-like query values replaced by ``***``.

    ``https://user:pw@host/p?api-key=k&x=1`` becomes
    ``https://user:***@host/p?api-key=***&x=1``. Text that does not parse
    as a URL is masked whole when it could hide a password (it has an ``@``).
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return MASK if "@" in url else url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if colon else f"{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_parameter(k) for k, _ in pairs):
            masked = [(k, MASK if _secret_parameter(k) else v) for k, v in pairs]
            query = urlencode(masked, safe="*/:")
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing hidden: keep the text exactly as given
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_urls_in(text: str) -> str:
    """Every URL inside ``text`` passed through :func:`mask_url`."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group()), text)


class SecretMasker:
    """Masks known secrets, and text that looks like an echo of one of them.

    Args:
        secrets: the values to hide (API key, ARI password, tokens...). Empty
            and very short values (under 4 characters) are ignored: masking
            them would hide ordinary words.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {s for s in secrets if s and len(s) >= 4}
        self._whole = sorted(values, key=len, reverse=True)
        # Part of a long key-like secret gives it away; URLs (a webhook)
        # share "https://" with every other URL, so they are masked only
        # where they appear whole.
        keylike = [s for s in values if len(s) >= _PARTIAL_MIN and "://" not in s and " " not in s]
        self._grams = {s[i : i + _GRAM] for s in keylike for i in range(len(s) - _GRAM + 1)}
        self._ends = {(s[:3], s[-4:]) for s in keylike}

    def __bool__(self) -> bool:
        return bool(self._whole)

    def _looks_secret(self, word: str) -> bool:
        if self._grams:
            grams = self._grams
            for i in range(len(word) - _GRAM + 1):
                if word[i : i + _GRAM] in grams:
                    return True
        if "**" in word:
            # A masked echo such as sk-pro****wxyz keeps a key's ends.
            return any(word.startswith(head) or word.endswith(tail) for head, tail in self._ends)
        return False

    def mask(self, text: str) -> str:
        """``text`` with every secret, and every word that looks like one, as ``***``."""
        for secret in self._whole:
            if secret in text:
                text = text.replace(secret, MASK)
        if self._grams or self._ends:
            text = _WORD.sub(lambda m: MASK if self._looks_secret(m.group()) else m.group(), text)
        return _KEY_SHAPED.sub(MASK, text)
