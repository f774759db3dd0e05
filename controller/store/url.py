"""``DATABASE_URL``: which store, where, and how to name it without its password (pure).

Two kinds of URL are accepted:

* ``sqlite:///var/lib/ari-realtime/calls.db``: a SQLite file. The path is
  always absolute (``sqlite:////var/...`` means the same; ``%20`` and the
  like are decoded), and the file and its directory are created on first use.
* ``postgresql://USER:PASSWORD@HOST:PORT/DB`` (or ``postgres://``): a
  PostgreSQL server that several controllers can share. libpq's query
  parameters that asyncpg understands (``sslmode``, ``host=/run/postgresql``
  for a unix socket, ...) pass through.

An empty ``DATABASE_URL`` means the default SQLite file, see
:func:`default_sqlite_path`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

StoreKind = Literal["sqlite", "postgresql"]

#: What a valid value looks like, for error messages.
URL_FORMS = "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB"
_MASK = "***"


@dataclass(frozen=True)
class StoreUrl:
    """A parsed ``DATABASE_URL``.

    Attributes:
        kind: ``"sqlite"`` or ``"postgresql"``.
        url: the URL as given, password included: pass it to the driver,
            never print it (``repr`` shows :attr:`redacted`).
        redacted: the URL with its password replaced by ``***``.
        password: the password (empty when none), so loggers can mask it.
        path: the SQLite file (None for PostgreSQL).
    """

    kind: StoreKind
    url: str = field(repr=False)
    redacted: str
    password: str = field(repr=False, default="")
    path: Path | None = None

    def __str__(self) -> str:
        return self.redacted


def redact_url(url: str) -> str:
    """``url`` with any password (in the user part or a ``password=`` parameter) as ``***``.

    Unparsable input comes back as ``***`` whole: it may hold a password
    where we cannot see it.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port, as parsing does later
    except ValueError:
        return _MASK
    if parts.password is None and "password" not in dict(parse_qsl(parts.query)):
        return url  # nothing to hide; rebuilding would also turn sqlite:/// into sqlite:/
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{_MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k == "password" for k, _ in pairs):
            query = urlencode([(k, _MASK if k == "password" else v) for k, v in pairs], safe="*/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_password(url: str) -> str:
    """The password in ``url`` (user part or ``password=`` parameter), or ``""``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.password:
        return parts.password
    for key, value in parse_qsl(parts.query):
        if key == "password":
            return value
    return ""


def parse_database_url(url: str) -> StoreUrl:
    """Parse a non-empty ``DATABASE_URL``.

    Raises:
        ValueError: saying what is wrong and what a valid value looks like;
            the message shows the URL only with its password masked.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # Not the parser's text: it may quote a piece of a mangled password.
        raise ValueError(
            f"has a malformed host or port (percent-encode @ : / # ? in the password); "
            f"use {URL_FORMS}"
        ) from None
    if parts.fragment:
        # Most likely a '#' in a password, cutting it in two: show nothing.
        raise ValueError("contains '#'; in a password write it as %23")
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc:
            raise ValueError(
                f"a sqlite URL names a local file and has no host: use sqlite:///PATH "
                f"(got {shown!r})"
            )
        if parts.query:
            raise ValueError(f"a sqlite URL takes no parameters (got {shown!r})")
        if not parts.path.startswith("/") or parts.path.strip("/") == "":
            raise ValueError(
                f"must name a file by its absolute path, e.g. "
                f"sqlite:///var/lib/ari-realtime/calls.db (got {shown!r})"
            )
        # sqlite:////abs (SQLAlchemy's spelling) means the same file as sqlite:///abs.
        path = Path("/" + unquote(parts.path).lstrip("/"))
        if parts.path.endswith("/"):
            raise ValueError(f"must name a file, not a directory (got {shown!r})")
        return StoreUrl("sqlite", url, shown, "", path)
    if scheme in ("postgresql", "postgres"):
        query_host = dict(parse_qsl(parts.query)).get("host", "")
        if not parts.hostname and not query_host:
            raise ValueError(
                f"a postgresql URL needs a host: postgresql://USER:PASSWORD@HOST:PORT/DB "
                f"(got {shown!r})"
            )
        if port == 0:
            raise ValueError(f"port 0 is not a PostgreSQL port (got {shown!r})")
        if len(PurePosixPath(parts.path or "/").parts) > 2:
            raise ValueError(f"the path must be one database name, /DB (got {shown!r})")
        return StoreUrl("postgresql", url, shown, url_password(url), None)
    raise ValueError(f"must start with sqlite:// or postgresql://; use {URL_FORMS} (got {shown!r})")


def default_sqlite_path(env: Mapping[str, str], *, is_root: bool, home: Path) -> Path:
    """Where records go when ``DATABASE_URL`` is empty.

    In this order, the first that applies:

    1. ``$STATE_DIRECTORY/calls.db``: systemd's ``StateDirectory=ari-realtime``
       (works with ``DynamicUser=yes``; the first directory if several);
    2. ``/var/lib/ari-realtime/calls.db`` when running as root;
    3. ``$XDG_STATE_HOME/ari-realtime/calls.db``, by default
       ``~/.local/state/ari-realtime/calls.db``.

    No probing for writability: the path depends only on who runs the
    program, so the controller and the ``calls`` command agree on it, and an
    unwritable one is reported instead of silently moving elsewhere.

    Args:
        env: the environment (``os.environ``).
        is_root: whether the effective user is root.
        home: the user's home directory.
    """
    state_directory = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state_directory:
        return Path(state_directory) / "calls.db"
    if is_root:
        return Path("/var/lib/ari-realtime/calls.db")
    xdg = env.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg.startswith("/") else home / ".local" / "state"
    return base / "ari-realtime" / "calls.db"
