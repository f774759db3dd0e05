"""What the ARI client and the supervisor say when Asterisk cannot be reached.

Real sockets on 127.0.0.1 (a refused port, a server that never answers); a
resolver that fails stands in for DNS. aiohttp's own wording ("ssl:default",
"Connect call failed") must never reach an operator's line.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from controller.app import Controller
from controller.ari.rest import AriClient, connection_problem
from controller.ari.stream import AriEventStream
from controller.config import load_settings
from controller.errors import AriConnectionError, AriError, AriNotFound

NOISE = ("ssl:default", "Connect call failed", "ClientConnectorError", "Errno")


def closed_port() -> int:
    """A port nothing listens on (bound, never listening, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_refused() -> None:
    port = closed_port()
    async with AriClient(f"http://127.0.0.1:{port}", "u", "secret-password") as ari:
        with pytest.raises(AriConnectionError) as caught:
            await ari.info()
    reason = f"connection refused: nothing listens on 127.0.0.1:{port}"
    assert caught.value.reason == reason
    assert str(caught.value) == (
        f"ARI GET /asterisk/info: cannot reach Asterisk at http://127.0.0.1:{port}: {reason}"
    )
    assert not any(n in str(caught.value) for n in NOISE)


async def test_no_answer(silent_server: int) -> None:
    async with AriClient(f"http://127.0.0.1:{silent_server}", "u", "p", timeout=0.3) as ari:
        with pytest.raises(AriConnectionError) as caught:
            await ari.info()
    assert caught.value.reason == "no answer within 0.3s"


async def test_events_websocket_refused() -> None:
    port = closed_port()
    async with AriClient(f"http://127.0.0.1:{port}", "u", "p") as ari:
        stream = AriEventStream(ari, "voicebot")
        with pytest.raises(AriConnectionError) as caught:
            await stream.connect()
    assert str(caught.value) == (
        f"ARI events websocket: cannot reach Asterisk at http://127.0.0.1:{port}: "
        f"connection refused: nothing listens on 127.0.0.1:{port}"
    )


class NoSuchHost(aiohttp.abc.AbstractResolver):
    """Every name is unknown, as a resolver says for a typo in ARI_URL."""

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        pass


async def test_unknown_host_name() -> None:
    connector = aiohttp.TCPConnector(resolver=NoSuchHost())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientError) as caught:
            await session.get("http://pbx.example:8088/ari/asterisk/info")
    assert connection_problem(caught.value) == "cannot resolve the host name pbx.example"


def test_plain_words_for_other_failures() -> None:
    assert connection_problem(TimeoutError(), timeout=5) == "no answer within 5s"
    assert connection_problem(aiohttp.ServerDisconnectedError()) == (
        "the server closed the connection without an HTTP answer"
    )
    assert connection_problem(ConnectionResetError(104, "Connection reset by peer")) == (
        "the connection was reset"
    )
    assert connection_problem(OSError(113, "No route to host")) == "no route to host"


# -- the supervisor's retry line ---------------------------------------------------------------


def retry_line(url: str, exc: AriError, *, connected: bool) -> str:
    controller = Controller(load_settings(ARI_URL=url, ARI_PASSWORD="p"))
    return controller._retry_message(exc, connected, 0.5)


async def test_a_connection_that_never_opened_is_not_lost() -> None:
    exc = AriConnectionError("ARI events websocket: ...", "connection refused: nothing listens")
    assert retry_line("http://pbx:8088", exc, connected=False) == (
        "cannot reach Asterisk at http://pbx:8088, retrying in 0.5s: "
        "connection refused: nothing listens"
    )
    closed = AriConnectionError("ARI events websocket closed (code 1006)")
    assert retry_line("http://pbx:8088", closed, connected=True) == (
        "ARI connection lost, retrying in 0.5s: ARI events websocket closed (code 1006)"
    )


async def test_an_ari_url_ending_in_ari_says_so_while_retrying() -> None:
    exc = AriNotFound(404, "GET", "/events", "Not Found")
    assert retry_line("http://pbx:8088/ari", exc, connected=False) == (
        "Asterisk at http://pbx:8088/ari refused the events websocket, retrying in 0.5s: "
        "ARI GET /events -> HTTP 404: Not Found; ARI_URL must not end in /ari (the controller "
        "adds it): set ARI_URL=http://pbx:8088"
    )
