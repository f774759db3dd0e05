"""DATABASE_URL: parsing, the default file, and one clear line when the store cannot open.

No message may contain the password of the URL.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.errors import ConfigError, StoreError
from controller.store import (
    check_store,
    default_sqlite_path,
    open_store,
    redact_url,
    resolve_database_url,
    url_password,
)
from controller.store.url import parse_database_url
from tests.pg import PASSWORD, PostgresServer, free_port


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/ari-realtime/calls.db", "/var/lib/ari-realtime/calls.db"),
        ("sqlite:////var/lib/ari-realtime/calls.db", "/var/lib/ari-realtime/calls.db"),
        ("sqlite:///srv/my%20calls.db", "/srv/my calls.db"),
        ("SQLite:///x.db", "/x.db"),
    ],
)
def test_sqlite_urls_name_an_absolute_file(url: str, path: str) -> None:
    target = parse_database_url(url)
    assert (target.kind, target.path, target.password) == ("sqlite", Path(path), "")


def test_postgresql_urls_keep_the_password_out_of_sight() -> None:
    target = parse_database_url("postgresql://calls:s3cr3t-pw@db.example:5433/calls")
    assert target.kind == "postgresql" and target.path is None
    assert target.password == "s3cr3t-pw"
    assert target.redacted == "postgresql://calls:***@db.example:5433/calls"
    assert "s3cr3t" not in repr(target) and "s3cr3t" not in str(target)
    assert parse_database_url("postgres://u@/calls?host=/run/postgresql").kind == "postgresql"


def test_redaction_covers_both_places_a_password_can_be() -> None:
    url = "postgresql://u:pw1@h/db?password=pw2&sslmode=require"
    assert redact_url(url) == "postgresql://u:***@h/db?password=***&sslmode=require"
    assert url_password(url) == "pw1"
    assert url_password("postgresql://u@h/db?password=pw2") == "pw2"
    assert redact_url("sqlite:///a/b.db") == "sqlite:///a/b.db"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://u:hunter2x@h/db", "must start with sqlite:// or postgresql://"),
        ("calls.db", "must start with sqlite:// or postgresql://"),
        ("sqlite://calls.db", "has no host"),
        ("sqlite:///", "absolute path"),
        ("sqlite:///var/lib/", "not a directory"),
        ("sqlite:///a.db?mode=ro", "takes no parameters"),
        ("postgresql:///calls", "needs a host"),
        ("postgresql://u:hunter2x@h:99999/db", "malformed host or port"),
        ("postgresql://u:hun/ter2x@h/db", "malformed host or port"),
        ("postgresql://u:4711#hunter2x@h:5432/db", "contains '#'"),
        ("postgresql://u:hunter2x@h/db/extra", "one database name"),
    ],
)
def test_bad_urls_say_what_is_wrong_without_the_password(url: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected) as caught:
        parse_database_url(url)
    assert "hunter" not in str(caught.value)
    with pytest.raises(ConfigError, match="^DATABASE_URL: ") as config_error:
        resolve_database_url(url)
    assert "hunter" not in str(config_error.value)


def test_the_default_file_depends_only_on_who_runs_the_program() -> None:
    home = Path("/home/ops")
    assert default_sqlite_path({}, is_root=True, home=Path("/root")) == Path(
        "/var/lib/ari-realtime/calls.db"
    )
    assert default_sqlite_path({}, is_root=False, home=home) == Path(
        "/home/ops/.local/state/ari-realtime/calls.db"
    )
    assert default_sqlite_path({"XDG_STATE_HOME": "/xdg"}, is_root=False, home=home) == Path(
        "/xdg/ari-realtime/calls.db"
    )
    assert default_sqlite_path({"XDG_STATE_HOME": "rel"}, is_root=False, home=home) == Path(
        "/home/ops/.local/state/ari-realtime/calls.db"
    )
    systemd = {"STATE_DIRECTORY": "/var/lib/ari-realtime:/var/lib/other"}
    for is_root in (True, False):
        assert default_sqlite_path(systemd, is_root=is_root, home=home) == Path(
            "/var/lib/ari-realtime/calls.db"
        )


def test_an_empty_url_means_the_default_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    target = resolve_database_url("")
    assert target.kind == "sqlite" and target.path == tmp_path / "state" / "calls.db"


async def test_an_empty_url_opens_the_default_file(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert await check_store("") == f"SQLite {tmp_path}/state/calls.db (schema 1)"
    assert (tmp_path / "state" / "calls.db").is_file()


async def test_sqlite_where_no_directory_can_be_made_is_one_clear_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError) as caught:
        await open_store(f"sqlite://{tmp_path}/file/sub/calls.db")
    message = str(caught.value)
    assert message.startswith(f"DATABASE_URL: cannot create the directory {tmp_path}/file/sub")
    assert "set DATABASE_URL" in message and "\n" not in message


async def test_sqlite_that_is_not_a_database_is_one_clear_line(tmp_path):
    (tmp_path / "calls.db").write_text("this is not SQLite\n" * 100)
    with pytest.raises(StoreError, match=r"^DATABASE_URL: cannot use the SQLite database .*"):
        await open_store(f"sqlite://{tmp_path}/calls.db")


async def test_a_reader_does_not_create_a_missing_database(tmp_path):
    with pytest.raises(StoreError, match="there is no SQLite database at .*the same as the"):
        await open_store(f"sqlite://{tmp_path}/calls.db", create=False)
    assert not (tmp_path / "calls.db").exists()


async def test_postgresql_with_a_wrong_password_is_one_line_without_it(postgres: PostgresServer):
    wrong = "wrong-password-123"
    with pytest.raises(StoreError) as caught:
        await open_store(postgres.url(password=wrong))
    message = str(caught.value)
    assert "refused the login" in message and "check the user and password" in message
    assert wrong not in message and PASSWORD not in message and ":***@" in message


async def test_postgresql_that_nobody_listens_on_is_one_transient_line():
    port = free_port()
    url = f"postgresql://calls:{PASSWORD}@127.0.0.1:{port}/calls"
    with pytest.raises(StoreError) as caught:
        await open_store(url, timeout=2)
    message = str(caught.value)
    assert message.startswith("DATABASE_URL: cannot connect to PostgreSQL at postgresql://")
    assert "check that the server is running" in message
    assert PASSWORD not in message and caught.value.transient


async def test_postgresql_without_the_database_says_to_create_it(postgres: PostgresServer):
    with pytest.raises(StoreError, match="does not exist; create it") as caught:
        await open_store(postgres.url("no_such_db"))
    assert PASSWORD not in str(caught.value)


async def test_check_store_describes_the_store(pg_url: str, postgres: PostgresServer):
    description = await check_store(pg_url)
    assert description == f"PostgreSQL {postgres.url('calls', password='***')} (schema 1)"


def test_no_driver_is_loaded_to_parse_a_url() -> None:
    # asyncpg is imported only when a PostgreSQL store is opened.
    code = (
        "import sys, controller.config, controller.store; "
        "print('asyncpg' in sys.modules, 'aiosqlite' in sys.modules)"
    )
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert out.stdout.split() == ["False", "False"]
