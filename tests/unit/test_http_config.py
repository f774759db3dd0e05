"""Settings of the HTTP layer: HTTP_LISTEN, HTTP_TOKEN, WEBHOOK_URL."""

from __future__ import annotations

import subprocess
import sys

import pytest

from controller.config import ENV_NAMES, load_settings, parse_listen
from controller.errors import ConfigError
from controller.http import LiveHub, Metrics, http_server
from tests.http.conftest import FakeController, MemoryRecords

TOKEN = "f00dfeed" * 4


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_listen_on_loopback_without_token_or_webhook() -> None:
    s = load_settings()
    assert s.http_listen == "127.0.0.1:8080"
    assert s.http_address == ("127.0.0.1", 8080)
    assert s.http_token.get_secret_value() == ""
    assert s.webhook_url == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("[::1]:8080", ("::1", 8080)),
        ("localhost:8080", ("localhost", 8080)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("", None),
        ("  ", None),
    ],
)
def test_listen_addresses(value: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(value) == expected


def test_an_empty_listen_address_turns_the_server_off() -> None:
    s = load_settings(HTTP_LISTEN="")
    assert s.http_address is None
    server = http_server(
        s, records=MemoryRecords(), live=LiveHub(), metrics=Metrics(), controller=FakeController()
    )
    assert server is None


@pytest.mark.parametrize(
    "value", ["8080", "127.0.0.1", "127.0.0.1:0", "host:99999", "::1:80", ":80", "h:8_0", "h:+80"]
)
def test_a_bad_listen_address_is_one_line(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(HTTP_LISTEN=value)
    message = str(info.value)
    assert message.startswith("HTTP_LISTEN: must be HOST:PORT such as 127.0.0.1:8080"), message
    assert repr(value) in message


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "192.0.2.7:8080", "pbx.lan:80"])
def test_a_token_is_required_off_loopback(listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(HTTP_LISTEN=listen)
    assert str(info.value) == (
        "HTTP_TOKEN: required when HTTP_LISTEN is not a loopback address "
        f"(HTTP_LISTEN={listen}); set a long random token, or listen on 127.0.0.1"
    )
    s = load_settings(HTTP_LISTEN=listen, HTTP_TOKEN=TOKEN)
    server = http_server(
        s, records=MemoryRecords(), live=LiveHub(), metrics=Metrics(), controller=FakeController()
    )
    assert server is not None and server.port == s.http_address[1]  # type: ignore[index]


@pytest.mark.parametrize(
    "token", ["short", "has a space in it, long enough", "t\u00f6ken-with-umlaut-1234"]
)
def test_a_weak_or_unsendable_token_is_refused_without_echoing_it(token: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(HTTP_TOKEN=token)
    message = str(info.value)
    assert message.startswith("HTTP_TOKEN: must be at least 16 visible ASCII characters")
    assert token not in message


def test_the_token_is_never_shown() -> None:
    s = load_settings(HTTP_TOKEN=TOKEN)
    assert TOKEN not in repr(s) + str(s) + str(s.model_dump())


@pytest.mark.parametrize("url", ["https://crm.example/hooks/calls", "http://127.0.0.1:9000/h"])
def test_webhook_urls(url: str) -> None:
    assert load_settings(WEBHOOK_URL=url).webhook_url == url


@pytest.mark.parametrize("url", ["ftp://crm.example/x", "crm.example/hook", "https:///nohost"])
def test_a_bad_webhook_url_is_one_line_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(WEBHOOK_URL=url)
    message = str(info.value)
    assert (
        message
        == "WEBHOOK_URL: must be an http:// or https:// URL such as https://crm.example/calls"
    )


def test_the_cli_refuses_a_public_listen_address_without_token_in_one_line() -> None:
    env = {"HTTP_LISTEN": "0.0.0.0:8080", "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ari-realtime: bad setting: HTTP_TOKEN: required when HTTP_LISTEN is not a loopback "
        "address (HTTP_LISTEN=0.0.0.0:8080); set a long random token, or listen on 127.0.0.1"
    ]
