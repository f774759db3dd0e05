"""controller.realtime.session: the websocket client, against real loopback peers."""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection, serve

from controller.config import Settings
from controller.devtools.modelserver import ModelServer, ServerConfig
from controller.errors import RealtimeConnectionError, RealtimeServerError
from controller.realtime import events as ev
from controller.realtime.session import RedactingLogger, connect_realtime, realtime_url

KEY = "sk-proj-SECRET-9f8e7d6c5b4a3210"
SETTINGS = Settings()


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    async with ModelServer(ServerConfig(speed=0, tone_ms=200)) as srv:
        yield srv


def full_text(exc: BaseException) -> str:
    """Message, repr and the whole chained traceback of an exception."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


# --- the API key never leaks -------------------------------------------------------


async def test_key_not_in_logs_or_repr(
    server: ModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # websockets logs every handshake header at DEBUG
    session = await connect_realtime(server.url, SecretStr(KEY), "gpt-realtime", azure=True)
    await session.start(ev.build_session_update(SETTINGS))
    await session.send(ev.ResponseCreate())
    async for event in session:
        if isinstance(event, ev.ResponseDone):
            break
    await session.send(ev.ResponseCancel())  # an error event gets logged
    async for event in session:
        if isinstance(event, ev.ErrorEvent):
            break
    assert KEY not in repr(session) and KEY not in str(session)
    await session.close()
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "Authorization" in text  # the header was logged ...
    assert KEY not in text  # ... but not its value
    assert "response_cancel_not_active" in caplog.text  # error events are logged with code


async def test_key_not_in_exceptions_when_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RealtimeConnectionError) as info:
        await connect_realtime("ws://127.0.0.1:9/v1/realtime", KEY, "gpt-realtime", timeout=2)
    assert info.value.transient
    assert KEY not in full_text(info.value)
    assert KEY not in caplog.text


async def test_key_in_url_is_redacted() -> None:
    # Even a key pasted into REALTIME_URL by mistake stays out of messages.
    url = f"ws://127.0.0.1:9/v1/realtime?api-key={KEY}"
    with pytest.raises(RealtimeConnectionError) as info:
        await connect_realtime(url, KEY, "gpt-realtime", timeout=2)
    assert KEY not in full_text(info.value)
    assert "***" in str(info.value)


async def test_key_not_in_exceptions_when_rejected(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with ModelServer(ServerConfig(api_key="another-key")) as srv:
        session = await connect_realtime(srv.url, KEY, "gpt-realtime")
        with pytest.raises(RealtimeServerError) as info:
            await session.start()
        assert info.value.code == "invalid_api_key"
        assert KEY not in full_text(info.value)
        await session.close()
    assert KEY not in caplog.text


async def test_key_with_newline_is_refused_without_echo() -> None:
    with pytest.raises(RealtimeConnectionError) as info:
        await connect_realtime("ws://127.0.0.1:9/v1/realtime", KEY + "\r\nX: y", "m", timeout=2)
    assert KEY not in full_text(info.value)


def test_redacting_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logger = RedactingLogger(logging.getLogger("test.redact"), (KEY,))
    logger.debug("> %s: %s", "Authorization", "Bearer whatever")
    logger.debug("> %s: %s", "api-key", "plain")
    logger.info("url %s", f"wss://x/?k={KEY}")
    logger.warning(f"inline {KEY}")
    assert "whatever" not in caplog.text and "plain" not in caplog.text
    assert KEY not in caplog.text
    assert caplog.text.count("***") == 4


# --- connecting ------------------------------------------------------------------------


def test_realtime_url() -> None:
    assert (
        realtime_url("wss://api.openai.com/v1/realtime", "gpt-realtime")
        == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    )
    assert (
        realtime_url("wss://r.openai.azure.com/openai/v1/realtime?model=old&x=1", "dep")
        == "wss://r.openai.azure.com/openai/v1/realtime?x=1&model=dep"
    )
    assert realtime_url("ws://h/v1/realtime", "") == "ws://h/v1/realtime"


async def test_invalid_url() -> None:
    with pytest.raises(RealtimeConnectionError, match="not a valid websocket URL") as info:
        await connect_realtime("http://example.invalid/x", KEY, "m")
    assert info.value.transient is False


async def test_handshake_timeout() -> None:
    # A listening socket nobody accepts from: TCP connects (kernel backlog),
    # the HTTP upgrade is never answered.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        port = mute.getsockname()[1]
        with pytest.raises(RealtimeConnectionError, match="within 0.3s"):
            await connect_realtime(f"ws://127.0.0.1:{port}/v1/realtime", KEY, "m", timeout=0.3)


async def silent_server() -> AsyncIterator[str]:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime"


async def test_start_times_out_without_session_created() -> None:
    async for url in silent_server():
        session = await connect_realtime(url, KEY, "m", timeout=2)
        with pytest.raises(RealtimeConnectionError, match=r"no session.created within 0.2s"):
            await session.start(timeout=0.2)
        await session.close()


async def scripted_server(messages: list[str], close_code: int = 1000) -> AsyncIterator[str]:
    async def handler(ws: ServerConnection) -> None:
        for message in messages:
            await ws.send(message)
        await ws.close(close_code, "bye")

    async with serve(handler, "127.0.0.1", 0) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime"


async def test_events_skip_invalid_and_unknown_then_raise_on_server_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = [
        '{"type":"session.created","event_id":"e1","session":{"id":"sess_1","model":"m"}}',
        "{broken",
        '{"type":"output_audio_buffer.started","response_id":"r"}',
        '{"type":"input_audio_buffer.cleared","event_id":"e2"}',
    ]
    async for url in scripted_server(messages, close_code=1001):
        session = await connect_realtime(url, KEY, "m")
        seen: list[str] = []
        with pytest.raises(RealtimeConnectionError, match="code 1001") as info:
            async for event in session:
                seen.append(event.type)
        assert info.value.transient
        assert seen == [
            "session.created",
            "output_audio_buffer.started",
            "input_audio_buffer.cleared",
        ]
        assert session.invalid_events == 1
        assert session.info is not None and session.info.id == "sess_1"
        assert "skipping invalid server event" in caplog.text
        assert session.closed


async def test_start_keeps_early_events_for_the_iterator() -> None:
    messages = [
        '{"type":"session.created","event_id":"e1","session":{"id":"sess_1"}}',
        '{"type":"conversation.created","event_id":"e2","conversation":{"id":"conv_1"}}',
    ]
    async for url in scripted_server(messages):
        session = await connect_realtime(url, KEY, "m")
        info = await session.start()
        assert info.id == "sess_1"
        first = await session.recv()
        assert isinstance(first, ev.ConversationCreated) and first.conversation.id == "conv_1"
        await session.close()


async def test_iteration_ends_quietly_after_close(server: ModelServer) -> None:
    session = await connect_realtime(server.url, KEY, "gpt-realtime")
    await session.start()

    async def closer() -> None:
        await asyncio.sleep(0.05)
        await session.close()

    task = asyncio.create_task(closer())
    async for _ in session:
        pass
    await task
    assert session.closed
    with pytest.raises(RealtimeConnectionError, match="closed"):
        await session.send(ev.ResponseCreate())


async def test_send_audio_fast_path(server: ModelServer) -> None:
    session = await connect_realtime(server.url, KEY, "gpt-realtime")
    await session.start(ev.build_session_update(SETTINGS))
    await session.send_audio(b"\xff" * 160)
    await session.send_audio(bytearray(b"\xff" * 160))
    await session.send_audio("/////w==")  # base64 text is passed through
    with pytest.raises(ValueError):
        await session.send_audio('"}, {"type": "response.create')
    await server.wait_for(lambda: server.session.input_audio_bytes == 324)
    appends = [e for e in server.session.received if e["type"] == "input_audio_buffer.append"]
    assert [a["audio"] for a in appends] == ["<160 bytes>", "<160 bytes>", "<4 bytes>"]
    assert session.audio_bytes_sent == 324
    assert server.session.errors == []
    await session.close()


async def test_send_audio_now_writes_at_once_and_declines_when_closed(server: ModelServer) -> None:
    session = await connect_realtime(server.url, KEY, "gpt-realtime")
    await session.start(ev.build_session_update(SETTINGS))
    # No await in between: the appends are on the wire, in order, when it returns.
    assert session.send_audio_now(b"\x01" * 160)
    assert session.send_audio_now(bytearray(b"\x02" * 320))
    await session.send_audio(b"\x03" * 8)  # the slow path interleaves in order
    await server.wait_for(lambda: server.session.input_audio_bytes == 488)
    appends = [e for e in server.session.received if e["type"] == "input_audio_buffer.append"]
    assert [a["audio"] for a in appends] == ["<160 bytes>", "<320 bytes>", "<8 bytes>"]
    assert session.audio_bytes_sent == 488
    assert server.session.errors == []
    await session.close()
    # Closed: nothing is written; the caller falls back to send_audio, which raises.
    assert not session.send_audio_now(b"\x04" * 160)
    with pytest.raises(RealtimeConnectionError):
        await session.send_audio(b"\x04" * 160)
