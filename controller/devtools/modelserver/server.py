"""The local model server's websocket side (thin I/O over :class:`.peer.PeerSession`).

A LOCAL TEST AND DEMO PEER, NOT A MODEL: it speaks the OpenAI Realtime GA
protocol on ``/v1/realtime`` so the controller, the tests and the demo can run
without reaching OpenAI. Use from a test::

    server = ModelServer(ServerConfig(reply="echo"), validator=validate_client_event)
    port = await server.start()
    ...  # connect the controller to server.url
    record = await server.wait_for_session()
    await server.wait_for(lambda: record.responses and record.responses[-1].status != "in_progress")
    await server.stop()

Per connection three tasks run: the reader feeds client messages to the
peer, the sender drains the peer's outbox to the websocket (one sender, so
events go out exactly in the order the peer produced them), and the pump
streams the active response one chunk at a time, ``speed`` times faster
than real time, pausing while the outbox is long (bounded buffering).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from controller.devtools.modelserver.audio import Samples
from controller.devtools.modelserver.config import (
    ScriptedCall,
    ScriptedMcpCall,
    ServerConfig,
    SessionRecord,
    Validator,
)
from controller.devtools.modelserver.peer import IdFactory, PeerSession
from controller.realtime.session import RedactingLogger

__all__ = ["ModelServer", "main"]

log = logging.getLogger(__name__)

PATH = "/v1/realtime"
_OUTBOX_HIGH = 64  # events; the pump waits for the sender above this
_KEEP_SESSIONS = 50  # records kept when config.record_events is off


class ModelServer:
    """A Realtime GA test peer on loopback (see the module docstring).

    Attributes:
        config: the behaviour; may be changed while running (read per event).
        validator: called with every client event the server's own checks
            accept; raise to reject it (``ClientEventRejected`` picks the code).
        server_event_validator: called with every server event before it is
            sent; an exception is recorded in ``validation_failures``.
        sessions: one :class:`SessionRecord` per accepted websocket, in order.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        validator: Validator | None = None,
        server_event_validator: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        self.validator = validator
        self.server_event_validator = server_event_validator
        self.sessions: list[SessionRecord] = []
        self.function_calls: deque[ScriptedCall | ScriptedMcpCall] = deque()
        self._ids = IdFactory(self.config.seed)
        self._server: Server | None = None
        self._port = 0
        self._changed = asyncio.Condition()
        self._peers: dict[str, tuple[PeerSession, ServerConnection, asyncio.Event]] = {}
        self._wav_cache: dict[tuple[str, int], Samples] = {}

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> int:
        """Listen on ``config.host``/``config.port``; return the bound port."""
        ws_logger = RedactingLogger(logging.getLogger("controller.devtools.modelserver.websocket"))
        self._server = await serve(
            self._connection,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            max_size=16 * 2**20,  # the API takes appends up to 15 MiB
            compression=None,
            logger=ws_logger,
            server_header="ari-realtime-model-server",
        )
        sockets = list(self._server.sockets)
        self._port = int(sockets[0].getsockname()[1])
        log.info("local model server (a test peer, not a model) listening on %s", self.url)
        return self._port

    async def stop(self) -> None:
        """Close every connection (code 1001) and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> ModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://HOST:PORT/v1/realtime`` — what REALTIME_URL should be."""
        return f"ws://{self._host_for_url()}:{self._port}{PATH}"

    @property
    def base_url(self) -> str:
        """``ws://HOST:PORT/v1`` — the openai SDK's ``websocket_base_url``."""
        return f"ws://{self._host_for_url()}:{self._port}/v1"

    def _host_for_url(self) -> str:
        host = self.config.host
        return f"[{host}]" if ":" in host else host

    # --- test controls ------------------------------------------------------------

    def queue_function_call(
        self,
        name: str,
        arguments: str | Mapping[str, Any] = "{}",
        *,
        call_id: str | None = None,
        speak_first: bool = False,
    ) -> str:
        """Make the next response (of any session) a call to the function ``name``.

        With ``speak_first`` that response first speaks its usual reply (the
        tone, echo or file), then calls the function (see :class:`ScriptedCall`).

        Returns:
            The ``call_id`` the server will use.
        """
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        cid = call_id or self._ids.new("call")[:32]
        self.function_calls.append(
            ScriptedCall(name=name, arguments=args, call_id=cid, speak_first=speak_first)
        )
        return cid

    def queue_mcp_call(
        self,
        server_label: str,
        name: str,
        arguments: str | Mapping[str, Any] = "{}",
        *,
        output: str | Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Make the next response call the tool ``name`` of the MCP server ``server_label``.

        The server makes the call itself, as the real API does: with ``output``
        (default ``{}``) it completes and the response speaks its usual reply
        after it; with ``error`` it fails and the response ends there.
        """
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        result = output if output is None or isinstance(output, str) else json.dumps(output)
        self.function_calls.append(
            ScriptedMcpCall(
                server_label=server_label,
                name=name,
                arguments=args,
                output=None if error is not None else (result or "{}"),
                error=error,
            )
        )

    @property
    def session(self) -> SessionRecord:
        """The most recent session's record."""
        if not self.sessions:
            raise LookupError("no client has connected to the model server yet")
        return self.sessions[-1]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true (re-checked after every event).

        Raises:
            TimeoutError: still false after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: bool(predicate()))

    async def wait_for_session(self, count: int = 1, timeout: float = 5.0) -> SessionRecord:
        """Wait until ``count`` sessions have connected; return the last one."""
        await self.wait_for(lambda: len(self.sessions) >= count, timeout)
        return self.sessions[count - 1]

    async def expire(self, record: SessionRecord | None = None) -> None:
        """End a session (default: the latest) with ``session_expired`` and close 1001."""
        target = record or self.session
        entry = self._peers.get(target.id)
        if entry is not None:
            peer, _, wake = entry
            peer.expire()
            wake.set()

    async def drop(
        self, record: SessionRecord | None = None, code: int = 1011, reason: str = ""
    ) -> None:
        """Close a session's websocket abruptly (default: the latest), e.g. to test reconnects."""
        target = record or self.session
        entry = self._peers.get(target.id)
        if entry is not None:
            await entry[1].close(code, reason)

    async def inject(
        self,
        message: str | bytes,
        record: SessionRecord | None = None,
        *,
        text: bool = True,
        fragment: int | None = None,
    ) -> bool:
        """Send ``message`` as it is on a session's websocket (default: the latest).

        A test hook for hostile input: the message goes out unvalidated and
        unrecorded, between the peer's own events, as a text frame (``bytes``
        are sent as they are, even when they are not UTF-8) or, with
        ``text=False``, as a binary frame. With ``fragment``, a ``bytes``
        message goes out as fragments of that many bytes with the event loop
        running in between, so sending a huge message does not itself stall
        this process (tests that time the controller share its loop).

        Returns:
            False when the session is gone (the message may be cut short).
        """
        target = record or self.session
        entry = self._peers.get(target.id)
        if entry is None:
            return False
        data: str | bytes | AsyncIterator[bytes] = message
        if fragment is not None and isinstance(message, bytes):
            data = _fragments(message, fragment)
        try:
            await entry[1].send(data, text=text)
        except ConnectionClosed:
            return False
        return True

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- websocket ----------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path.rstrip("/") != PATH:
            return connection.respond(404, f"Not found: this server only serves {PATH}\n")
        if not _has_auth(request.headers):
            return connection.respond(
                401, "Missing bearer or basic authentication in header (Authorization or api-key)\n"
            )
        return None

    async def _connection(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        query = parse_qs(urlsplit(request.path).query)
        model = (query.get("model") or ["gpt-realtime"])[0]
        headers = request.headers
        auth = "api-key" if "api-key" in headers else "bearer"
        record = SessionRecord(id=self._ids.new("sess"), model=model, auth=auth)
        peer = PeerSession(
            self.config,
            record,
            ids=self._ids,
            function_calls=self.function_calls,
            validator=self.validator,
            wav_cache=self._wav_cache,
        )
        wake = asyncio.Event()
        self.sessions.append(record)
        self._peers[record.id] = (peer, ws, wake)
        log.info("session %s: connected (model=%s)", record.id, model)
        if headers.get("OpenAI-Beta", "").startswith("realtime"):
            peer.fail(
                "beta_api_shape_disabled",
                "The beta Realtime API shape is no longer supported; use the GA shape.",
                close_code=4000,
                error_type="invalid_request_error",
            )
        elif self.config.api_key is not None and _presented_key(headers) != self.config.api_key:
            peer.fail(
                "invalid_api_key",
                "Incorrect API key provided.",
                close_code=1008,
                error_type="invalid_request_error",
            )
        else:
            if self.config.open_delay_s > 0:
                await asyncio.sleep(self.config.open_delay_s)
            peer.open()
        wake.set()
        await self._notify()
        generating = asyncio.Event()
        drained = asyncio.Event()
        tasks = [
            asyncio.create_task(self._sender(ws, peer, record, wake, drained)),
            asyncio.create_task(self._pump(peer, wake, generating, drained)),
        ]
        if self.config.session_max_s is not None:
            tasks.append(asyncio.create_task(self._expire_later(peer, wake)))
        try:
            async for message in ws:
                peer.receive(message)
                if peer.generating:
                    generating.set()
                wake.set()
                await self._notify()
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            record.closed = True
            code = ws.close_code
            record.close_code = code
            self._peers.pop(record.id, None)
            if not self.config.record_events and len(self.sessions) > _KEEP_SESSIONS:
                del self.sessions[:-_KEEP_SESSIONS]
            log.info("session %s: closed (code %s)", record.id, code)
            await self._notify()

    async def _sender(
        self,
        ws: ServerConnection,
        peer: PeerSession,
        record: SessionRecord,
        wake: asyncio.Event,
        drained: asyncio.Event,
    ) -> None:
        while True:
            await wake.wait()
            wake.clear()
            while peer.outbox:
                event = peer.outbox.popleft()
                if self.server_event_validator is not None:
                    try:
                        self.server_event_validator(event)
                    except Exception as exc:
                        record.validation_failures.append(f"server {event.get('type')}: {exc}")
                text = json.dumps(event, separators=(",", ":"))
                try:
                    await ws.send(text)
                except ConnectionClosed:
                    return
            drained.set()
            if peer.close_code is not None:
                await ws.close(peer.close_code, peer.close_reason)
                return

    async def _pump(
        self,
        peer: PeerSession,
        wake: asyncio.Event,
        generating: asyncio.Event,
        drained: asyncio.Event,
    ) -> None:
        while True:
            await generating.wait()
            while peer.generating:
                if len(peer.outbox) > _OUTBOX_HIGH:
                    drained.clear()
                    await drained.wait()
                    continue
                ms = peer.step()
                wake.set()
                await self._notify()
                speed = self.config.speed
                await asyncio.sleep(ms / 1000.0 / speed if speed > 0 else 0)
            generating.clear()

    async def _expire_later(self, peer: PeerSession, wake: asyncio.Event) -> None:
        assert self.config.session_max_s is not None
        await asyncio.sleep(self.config.session_max_s)
        peer.expire()
        wake.set()


async def _fragments(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


def _presented_key(headers: Headers) -> str:
    api_key = headers.get("api-key")
    if api_key:
        return api_key.strip()
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _has_auth(headers: Headers) -> bool:
    return bool(headers.get("Authorization") or headers.get("api-key"))


def main(argv: list[str] | None = None) -> int:
    """``ari-realtime model-server [options]`` (the same as :func:`.modelserver.main`)."""
    # Imported here: command imports this module.
    from controller.devtools.modelserver.command import main as command_main

    return command_main(argv)
