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

from controller.agents import AgentsFile
from controller.check import _check_model, check_voices
from controller.config import Settings, ari_url_advice, load_settings
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
    assert result.line() == (
        f"FAIL model: cannot reach the model at {url}: connection refused: nothing listens on "
        f"127.0.0.1:{port}. Check REALTIME_URL and that this host may connect to it"
    )
    assert KEY not in result.line()


async def test_no_key_refused(peer: Peer) -> None:
    peer.status = HTTPStatus.UNAUTHORIZED
    settings = load_settings(REALTIME_URL=peer.base, OPENAI_API_KEY="")
    result = await _check_model(settings, 2.0)
    assert result.line() == (
        f"FAIL model: OPENAI_API_KEY is not set, and {peer.base} wants a key (HTTP 401): set "
        "OPENAI_API_KEY to your API key (Azure: the resource's key; the local model server "
        "takes any value)"
    )
    assert peer.requests[-1][1].get("Authorization") is None


async def test_no_key_error_event(peer: Peer) -> None:
    peer.first = BAD_KEY  # OpenAI may upgrade first and then complain
    settings = load_settings(REALTIME_URL=peer.base, OPENAI_API_KEY="")
    result = await _check_model(settings, 2.0)
    assert result.detail.startswith(
        f"OPENAI_API_KEY is not set, and {peer.base} wants a key (invalid_api_key): "
    )


async def test_no_key_needed(peer: Peer) -> None:
    settings = load_settings(REALTIME_URL=peer.base, OPENAI_API_KEY="")
    result = await _check_model(settings, 2.0)
    assert result.line() == (
        f"ok   model: {peer.base} opened a session for gpt-realtime without an API key "
        "(OPENAI_API_KEY is not set)"
    )


# -- voices ---------------------------------------------------------------------------------


def agents_with(**voices: str | None) -> AgentsFile:
    return AgentsFile.model_validate({"profiles": {n: {"voice": v} for n, v in voices.items()}})


def test_voices_of_the_model() -> None:
    settings = load_settings(REALTIME_VOICE="cedar", REALTIME_MODEL="gpt-realtime")
    assert check_voices(settings, agents_with(sales="ash", support=None)).line() == (
        "ok   voice: REALTIME_VOICE=cedar and profile 'sales' voice=ash: one of gpt-realtime's "
        "voices"
    )


def test_a_profile_voice_the_model_does_not_have() -> None:
    settings = load_settings(REALTIME_VOICE="marin", REALTIME_MODEL="gpt-realtime-mini")
    result = check_voices(settings, agents_with(sales="nova", support="fable"))
    assert result.status == "warn"
    assert result.detail == (
        "profile 'sales' voice=nova and profile 'support' voice=fable: not one of "
        "gpt-realtime-mini's voices (alloy, ash, ballad, coral, echo, sage, shimmer, verse, "
        "marin, cedar). OpenAI rejects the session with it and calls are handed back to the "
        "dialplan; pick one of those"
    )


def test_a_deployment_name_is_checked_against_the_apis_voices() -> None:
    settings = load_settings(REALTIME_VOICE="Marin", REALTIME_MODEL="my-deployment")
    result = check_voices(settings, None)
    assert result.status == "warn"
    assert result.detail.startswith("REALTIME_VOICE=Marin: not one of the Realtime API's voices")


@pytest.mark.parametrize(
    ("url", "advice"),
    [
        ("http://127.0.0.1:8088", ""),
        ("http://pbx:8088/asterisk", ""),  # an http.conf prefix belongs in ARI_URL
        ("http://pbx:8088/ari", "set ARI_URL=http://pbx:8088"),
        ("https://pbx:8089/asterisk/ari/", "set ARI_URL=https://pbx:8089/asterisk"),
        ("http://pbx:8088/ARI", "set ARI_URL=http://pbx:8088"),
    ],
)
def test_ari_url_advice(url: str, advice: str) -> None:
    text = ari_url_advice(load_settings(ARI_URL=url).ari_url)
    if advice:
        assert text == f"ARI_URL must not end in /ari (the controller adds it): {advice}"
    else:
        assert text == ""


def test_unreachable_in_plain_words() -> None:
    from controller.check import _plain_reason

    where = "wss://realtime.example/v1/realtime"
    both = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('::1', 443, 0, 0), "
        "[Errno 111] Connect call failed ('127.0.0.1', 443)"
    )
    assert (
        _plain_reason(both, where) == "connection refused: nothing listens on realtime.example:443"
    )
    assert _plain_reason(socket.gaierror(-2, "Name or service not known"), where) == (
        "cannot resolve the host name realtime.example"
    )
    assert _plain_reason(OSError(113, "No route to host"), where) == "no route to host"
