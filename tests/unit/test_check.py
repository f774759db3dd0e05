"""controller.check's model check: it connects exactly as a call's session does.

Against a real websocket server on 127.0.0.1 that records each handshake.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from controller.check import _check_model
from controller.config import Settings, load_settings
from controller.realtime.session import connect_realtime

KEY = "sk-test-check-0123456789abcdef"
SESSION_CREATED = json.dumps(
    {"type": "session.created", "event_id": "e1", "session": {"type": "realtime", "id": "s1"}}
)
BAD_KEY = json.dumps(
    {
        "type": "error",
        "event_id": "e1",
        "error": {
            "type": "invalid_request_error",
            "code": "invalid_api_key",
            "message": "Incorrect API key provided",
        },
    }
)


@dataclass
class Peer:
    """What the server says, and every handshake it received."""

    base: str = ""
    first: str | None = SESSION_CREATED  # None: say nothing
    status: HTTPStatus | None = None  # refuse the handshake with this status
    requests: list[tuple[str, Headers]] = field(default_factory=list)

    def query(self, index: int = -1) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.requests[index][0]).query, keep_blank_values=True)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    state = Peer()

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        state.requests.append((request.path, request.headers))
        if state.status is not None:
            return connection.respond(state.status, "no\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        if state.first is not None:
            await ws.send(state.first)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        state.base = f"ws://127.0.0.1:{port}/v1/realtime"
        yield state


def settings_for(url: str) -> Settings:
    return load_settings(REALTIME_URL=url, OPENAI_API_KEY=KEY, REALTIME_MODEL="gpt-realtime")


async def session_request(peer: Peer, settings: Settings) -> tuple[str, Headers]:
    """The handshake a call's session makes with these settings (as Call._open_model)."""
    session = await connect_realtime(
        settings.realtime_url,
        settings.openai_api_key,
        settings.realtime_model,
        azure=settings.is_azure,
        timeout=settings.realtime_connect_timeout,
    )
    await session.close()
    return peer.requests[-1]


async def test_model_in_realtime_url_is_sent_once(peer: Peer) -> None:
    settings = settings_for(f"{peer.base}?model=x&api-version=1")
    result = await _check_model(settings, 2.0)
    assert result.status == "ok", result.line()
    assert result.detail == f"{peer.base} opened a session for gpt-realtime"
    query = peer.query()
    assert [v for k, v in query if k == "model"] == ["gpt-realtime"]
    assert ("api-version", "1") in query
    check_path = peer.requests[-1][0]
    session_path, _ = await session_request(peer, settings)
    assert check_path == session_path


@pytest.mark.parametrize("azure", [False, True])
async def test_auth_headers_are_the_sessions(
    peer: Peer, azure: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # is_azure looks at the host name, and this server is 127.0.0.1.
    monkeypatch.setattr(Settings, "is_azure", property(lambda self: azure))
    settings = settings_for(peer.base)
    assert settings.is_azure is azure
    result = await _check_model(settings, 2.0)
    assert result.status == "ok", result.line()
    check_headers = peer.requests[-1][1]
    _, session_headers = await session_request(peer, settings)
    for name in ("Authorization", "api-key", "User-Agent"):
        assert check_headers.get_all(name) == session_headers.get_all(name), name
    assert check_headers.get_all("Authorization") == [f"Bearer {KEY}"]
    assert check_headers.get_all("api-key") == ([KEY] if azure else [])


async def test_refused_handshake(peer: Peer) -> None:
    peer.status = HTTPStatus.UNAUTHORIZED
    result = await _check_model(settings_for(peer.base), 2.0)
    assert result.line() == (
        f"FAIL model: {peer.base} refused the websocket: HTTP 401 (check OPENAI_API_KEY)"
    )


async def test_error_event(peer: Peer) -> None:
    peer.first = BAD_KEY
    result = await _check_model(settings_for(peer.base), 2.0)
    assert result.line() == (
        f"FAIL model: {peer.base} answered with invalid_api_key: Incorrect API key provided"
    )


async def test_no_first_event(peer: Peer) -> None:
    peer.first = None
    result = await _check_model(settings_for(peer.base), 0.3)
    assert result.line() == f"FAIL model: no answer from {peer.base} within 0.3s"


async def test_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        result = await _check_model(settings_for(url), 2.0)
    assert result.status == "FAIL"
    assert result.detail.startswith(f"cannot reach the model at {url}: ")
    assert result.detail.endswith("Check REALTIME_URL and that this host may connect to it")
    assert KEY not in result.line()
