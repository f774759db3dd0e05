"""The call-record settings: DATABASE_URL, STORE_TRANSCRIPTS, RECORDS_RETENTION_DAYS,
PRICES_FILE and CONTROLLER_ID."""

from __future__ import annotations

import platform

import pytest

from controller.config import ENV_NAMES, SECRET_SETTINGS, load_settings
from controller.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = load_settings()
    assert s.database_url.get_secret_value() == ""  # the default SQLite file
    assert s.store_transcripts is True
    assert s.records_retention_days is None  # keep forever
    assert s.prices_file == ""
    assert s.controller_id == f"{platform.node()}/voicebot"
    assert {"DATABASE_URL", "STORE_TRANSCRIPTS", "RECORDS_RETENTION_DAYS"} <= set(ENV_NAMES)
    assert {"PRICES_FILE", "CONTROLLER_ID"} <= set(ENV_NAMES)


def test_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://calls:pw-1234@db:5432/calls")
    monkeypatch.setenv("STORE_TRANSCRIPTS", "false")
    monkeypatch.setenv("RECORDS_RETENTION_DAYS", "90")
    monkeypatch.setenv("PRICES_FILE", "/etc/ari-realtime/prices.toml")
    monkeypatch.setenv("ARI_APP", "sales")
    s = load_settings()
    assert s.database_password == "pw-1234"
    assert s.store_transcripts is False
    assert s.records_retention_days == 90
    assert s.prices_file == "/etc/ari-realtime/prices.toml"
    assert s.controller_id == f"{platform.node()}/sales"  # follows ARI_APP
    monkeypatch.setenv("CONTROLLER_ID", "pbx-a")
    assert load_settings().controller_id == "pbx-a"


def test_the_database_password_never_shows() -> None:
    s = load_settings(DATABASE_URL="postgresql://calls:pw-1234@db/calls")
    assert "pw-1234" not in repr(s) and "pw-1234" not in str(s)
    assert "DATABASE_URL" in SECRET_SETTINGS


def test_an_empty_retention_keeps_forever(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    env = tmp_path / "ari.env"
    env.write_text("RECORDS_RETENTION_DAYS=\n")
    assert load_settings(env).records_retention_days is None


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("RECORDS_RETENTION_DAYS", "0", "RECORDS_RETENTION_DAYS: must be a whole number of days"),
        ("RECORDS_RETENTION_DAYS", "-3", "RECORDS_RETENTION_DAYS: .*at least 1 .leave it unset"),
        ("RECORDS_RETENTION_DAYS", "30d", "RECORDS_RETENTION_DAYS: must be a whole number"),
        ("STORE_TRANSCRIPTS", "maybe", "STORE_TRANSCRIPTS: Input should be a valid boolean"),
        ("CONTROLLER_ID", "pbx a", "CONTROLLER_ID: must be 1 to 128 printable characters"),
        ("CONTROLLER_ID", "x" * 129, "CONTROLLER_ID: must be 1 to 128"),
        ("DATABASE_URL", "mysql://u:hunter2x@h/db", "DATABASE_URL: must start with sqlite://"),
        ("DATABASE_URL", "sqlite://calls.db", "DATABASE_URL: a sqlite URL names a local file"),
    ],
)
def test_bad_values_are_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^{expected}") as caught:
        load_settings()
    message = str(caught.value)
    assert "hunter2x" not in message
    assert "controller_id" not in message or name == "CONTROLLER_ID"  # no follow-on error
