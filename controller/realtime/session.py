"""The websocket client for a Realtime model server (thin I/O over :mod:`.events`).

:func:`connect_realtime` opens the websocket (``?model=...``, ``Authorization:
Bearer`` and, for Azure, ``api-key``) and returns a :class:`RealtimeSession`.
:meth:`RealtimeSession.start` waits for ``session.created``, sends the
``session.update`` and waits for ``session.updated``. After that, iterate the
session for server events and call :meth:`~RealtimeSession.send_audio` for
every chunk of caller audio::

    session = await connect_realtime(url, key, model, timeout=10)
    async with session:
        await session.start(build_session_update(settings, tools=tools))
        async for event in session:
            ...

Errors from websockets and the OS are translated here into
:class:`~controller.errors.RealtimeConnectionError`; ``error`` events found
during :meth:`~RealtimeSession.start` raise
:class:`~controller.errors.RealtimeServerError`. The API key is given to
websockets and forgotten: it never appears in log records (websockets' own
handshake debug lines go through a redacting adapter), in ``repr`` or in an
exception message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.protocol import State

from controller.errors import RealtimeConnectionError, RealtimeProtocolError
from controller.realtime.events import (
    ClientEvent,
    ErrorEvent,
    ServerEvent,
    SessionCreated,
    SessionInfo,
    SessionUpdate,
    SessionUpdated,
    UnknownEvent,
    parse_server_event,
)
from controller.redact import mask_url

__all__ = ["RealtimeSession", "RedactingLogger", "connect_realtime", "realtime_url"]

log = logging.getLogger(__name__)

_E = TypeVar("_E", SessionCreated, SessionUpdated)

#: Header names whose values are credentials.
_SECRET_HEADERS = frozenset({"authorization", "api-key", "openai-api-key"})
_REDACTED = "***"
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_APPEND_PREFIX = '{"type":"input_audio_buffer.append","audio":"'
_APPEND_SUFFIX = '"}'
#: Default cap on one message from the model server (``REALTIME_MAX_MESSAGE_BYTES``):
#: far above any event a call receives (session objects with long instructions
#: and many tools are tens of kB), far below what stalls the process.
MAX_MESSAGE_BYTES = 4 * 2**20
#: websockets' close code for a message over the size limit (RFC 6455).
_TOO_BIG = 1009
_APPEND_PREFIX_BYTES = _APPEND_PREFIX.encode()
_APPEND_SUFFIX_BYTES = _APPEND_SUFFIX.encode()
#: What :meth:`RealtimeSession.send_audio_now` uses of websockets' asyncio
#: connection (public attributes, plus ``send_data``, which ``send`` itself uses).
_FAST_SEND_ATTRIBUTES = ("protocol", "transport", "paused", "send_in_progress", "send_data")


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that never lets a credential through.

    websockets logs every handshake header at DEBUG (``"> %s: %s", name,
    value``). This adapter replaces the value of credential headers and any
    occurrence of the given secrets in the message and its arguments.
    """

    def __init__(self, logger: logging.Logger, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(logger, {})
        self._secrets = tuple(s for s in secrets if s)

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        if len(args) == 2 and isinstance(args[0], str) and args[0].lower() in _SECRET_HEADERS:
            args = (args[0], _REDACTED)
        clean = tuple(self.redact(a) if isinstance(a, str) else a for a in args)
        text = self.redact(msg) if isinstance(msg, str) else msg
        self.logger.log(level, text, *clean, **kwargs)


def realtime_url(url: str, model: str) -> str:
    """``url`` with ``model`` set as its ``model`` query parameter (other parameters kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "model"]
    if model:
        query.append(("model", model))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _auth_headers(api_key: str, *, azure: bool) -> dict[str, str]:
    if not api_key:
        return {}
    headers = {"Authorization": f"Bearer {api_key}"}
    if azure:
        headers["api-key"] = api_key
    return headers


class RealtimeSession:
    """One websocket session with a Realtime model server.

    Create it with :func:`connect_realtime`. Sending is safe from several
    tasks; receive from one task only (``async for event in session``).
    """

    def __init__(
        self,
        connection: ClientConnection,
        *,
        url: str,
        model: str,
        timeout: float,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self._ws = connection
        self.url = url
        self.model = model
        self.timeout = timeout
        self._redact = redact
        self._pending: deque[ServerEvent] = deque()
        self._closing = False
        #: The effective session, from the latest ``session.created``/``updated``.
        self.info: SessionInfo | None = None
        # The synchronous append path needs these (see send_audio_now).
        self._fast_send = all(hasattr(connection, a) for a in _FAST_SEND_ATTRIBUTES)
        #: Counters, for logs and metrics.
        self.events_received = 0
        self.events_sent = 0
        self.audio_bytes_sent = 0
        self.invalid_events = 0

    def __repr__(self) -> str:
        state = self._ws.state.name
        session_id = self.info.id if self.info else "-"
        return f"<RealtimeSession {self.url} state={state} session={session_id}>"

    @property
    def closed(self) -> bool:
        """True once the websocket is closing or closed."""
        return self._ws.state in (State.CLOSING, State.CLOSED)

    # --- sending -----------------------------------------------------------------

    async def send(self, event: ClientEvent) -> None:
        """Send a client event (serialised without unset fields).

        Raises:
            RealtimeConnectionError: the websocket is closed.
        """
        await self._send_text(event.to_json())

    async def send_audio(self, audio: bytes | bytearray | memoryview | str) -> None:
        """Append caller audio to the input buffer (``input_audio_buffer.append``).

        The hot path (about 50 calls a second per call): the JSON text is
        built directly, without pydantic.

        Args:
            audio: raw bytes in the session's input format, or the same
                already base64-encoded as ``str``.

        Raises:
            ValueError: ``audio`` is a ``str`` but not base64 text.
            RealtimeConnectionError: the websocket is closed.
        """
        if isinstance(audio, bytes | bytearray | memoryview):
            nbytes = len(audio)
            b64 = base64.b64encode(audio).decode("ascii")
        else:
            if _BASE64_TEXT.fullmatch(audio) is None:
                raise ValueError("send_audio() takes bytes or base64 text")
            b64 = audio
            nbytes = len(audio) * 3 // 4 - audio.count("=", -2)
        await self._send_text(_APPEND_PREFIX + b64 + _APPEND_SUFFIX)
        self.audio_bytes_sent += nbytes

    def send_audio_now(self, audio: bytes | bytearray | memoryview) -> bool:
        """Append caller audio now, without a task switch, if the websocket takes it at once.

        The hot path of every call (one per 20 ms frame of caller audio):
        :meth:`send_audio` costs a queue hand-over, a task wake-up and an
        asynchronous context manager per message, several times the work of
        framing the message and writing it. This writes the frame the way
        ``websockets``' own ``send`` does (``protocol.send_text``, then
        ``send_data``) when that cannot block or fail: the connection is
        open, no fragmented message is being sent and the transport is not
        paused by flow control. Otherwise it sends nothing and returns False:
        the caller then uses :meth:`send_audio`, which waits for the buffer
        to drain or raises :class:`~controller.errors.RealtimeConnectionError`.

        Returns:
            True if the message was written to the transport.
        """
        if not self._fast_send:
            return False
        ws = self._ws
        if (
            ws.protocol.state is not State.OPEN
            or ws.send_in_progress is not None
            or ws.paused
            or ws.transport.is_closing()
        ):
            return False
        ws.protocol.send_text(_APPEND_PREFIX_BYTES + base64.b64encode(audio) + _APPEND_SUFFIX_BYTES)
        ws.send_data()
        self.events_sent += 1
        self.audio_bytes_sent += len(audio)
        return True

    async def _send_text(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from exc
        self.events_sent += 1

    # --- receiving ---------------------------------------------------------------

    async def recv(self) -> ServerEvent:
        """The next server event.

        ``error`` events are logged at DEBUG (the caller logs what matters)
        and returned; unknown event types are logged at DEBUG and returned as
        ``UnknownEvent``.

        Raises:
            RealtimeConnectionError: the websocket closed (also after :meth:`close`).
            RealtimeProtocolError: the server sent something that is not a valid event.
        """
        if self._pending:
            return self._pending.popleft()
        try:
            data = await self._ws.recv(decode=False)
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from exc
        self.events_received += 1
        event = parse_server_event(data)
        if isinstance(event, ErrorEvent):
            # DEBUG here: the session's user decides which errors matter (a
            # call expects response_cancel_not_active after a barge-in race).
            err = event.error
            log.debug(
                "model server error: code=%s type=%s message=%s param=%s event_id=%s",
                err.code,
                err.type,
                self._redact(err.message),
                err.param,
                err.event_id,
            )
        elif isinstance(event, UnknownEvent):
            log.debug("ignoring unknown server event type %s", event.type)
        elif isinstance(event, SessionCreated | SessionUpdated):
            self.info = event.session
        return event

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Yield server events until the websocket closes.

        Ends quietly after :meth:`close`. A malformed event is logged and
        skipped (counted in ``invalid_events``): one bad event must not end a call.

        Raises:
            RealtimeConnectionError: the server closed the websocket or it broke.
        """
        while True:
            try:
                event = await self.recv()
            except RealtimeProtocolError as exc:
                self.invalid_events += 1
                log.error("skipping invalid server event: %s", exc)
                continue
            except RealtimeConnectionError:
                if self._closing:
                    return
                raise
            yield event

    def __aiter__(self) -> AsyncIterator[ServerEvent]:
        return self.events()

    # --- session set-up ----------------------------------------------------------

    async def start(
        self, update: SessionUpdate | None = None, *, timeout: float | None = None
    ) -> SessionInfo:
        """Wait for ``session.created``, send ``update``, wait for ``session.updated``.

        Other events received meanwhile (``conversation.created``...) are kept
        and come out of the iterator first.

        Args:
            update: the ``session.update`` to send; ``None`` only waits for
                ``session.created``.
            timeout: seconds for the whole exchange (default: the connect timeout).

        Returns:
            The effective session the server confirmed.

        Raises:
            RealtimeServerError: the server answered with an ``error`` event
                (bad API key, a rejected field in the update...).
            RealtimeConnectionError: no answer in time, or the websocket closed.
        """
        limit = self.timeout if timeout is None else timeout
        step = "session.created"
        try:
            async with asyncio.timeout(limit):
                info = (await self._wait_for(SessionCreated)).session
                if update is not None:
                    step = "session.updated"
                    await self.send(update)
                    info = (await self._wait_for(SessionUpdated)).session
        except TimeoutError:
            raise RealtimeConnectionError(
                f"model server sent no {step} within {limit:g}s ({self.url})"
            ) from None
        log.info(
            "realtime session %s ready: model=%s input=%s output=%s voice=%s",
            info.id or "-",
            info.model or self.model,
            info.input_format or "-",
            info.output_format or "-",
            info.voice or "-",
        )
        return info

    async def _wait_for(self, kind: type[_E]) -> _E:
        held: list[ServerEvent] = []
        try:
            while True:
                try:
                    event = await self.recv()
                except RealtimeProtocolError as exc:
                    # Skipped as during the call: one bad event must not fail the set-up.
                    self.invalid_events += 1
                    log.error("skipping invalid server event: %s", exc)
                    continue
                if isinstance(event, kind):
                    return event
                if isinstance(event, ErrorEvent):
                    raise event.to_exception()
                held.append(event)
        finally:
            self._pending.extend(held)

    # --- closing -----------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the websocket (idempotent); iteration then ends without error."""
        self._closing = True
        await self._ws.close(code, reason)

    async def __aenter__(self) -> RealtimeSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _closed_error(self, exc: ConnectionClosed) -> RealtimeConnectionError:
        frame = exc.rcvd or exc.sent
        if frame is None:
            detail = "connection lost without a close frame"
        else:
            detail = f"code {frame.code}"
            if frame.reason:
                detail += f" ({self._redact(frame.reason)})"
        too_big = exc.rcvd is None and frame is not None and frame.code == _TOO_BIG
        if too_big:
            detail += "; the model server sent a message over REALTIME_MAX_MESSAGE_BYTES"
        who = "closed" if self._closing or too_big else "model server closed the connection"
        return RealtimeConnectionError(f"realtime websocket {who}: {detail}")


async def connect_realtime(
    url: str,
    api_key: str | SecretStr,
    model: str,
    *,
    azure: bool = False,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> RealtimeSession:
    """Open a websocket to a Realtime model server (GA protocol).

    Args:
        url: e.g. ``wss://api.openai.com/v1/realtime``; ``?model=`` is set from ``model``.
        api_key: sent as ``Authorization: Bearer`` (and ``api-key`` when ``azure``).
        model: the model (OpenAI) or deployment (Azure) name.
        azure: also send the ``api-key`` header Azure OpenAI uses.
        timeout: seconds allowed for TCP, TLS and the websocket handshake;
            also the default for :meth:`RealtimeSession.start`.
        headers: extra handshake headers (never credentials in logs either way).
        max_message_bytes: the largest message accepted from the server; a
            bigger one closes the websocket (code 1009) before it is read.

    Returns:
        The open session. Call :meth:`RealtimeSession.start` next.

    Raises:
        RealtimeConnectionError: refused, unreachable, timed out, or rejected
            during the handshake (the message names the HTTP status). A 4xx
            rejection (e.g. 401 for a bad key) has ``transient`` False.
    """
    key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    target = realtime_url(url, model)
    ws_logger = RedactingLogger(logging.getLogger("controller.realtime.websocket"), (key,))
    all_headers = dict(headers or {})
    all_headers.update(_auth_headers(key, azure=azure))
    display = mask_url(ws_logger.redact(target))

    def cause(exc: BaseException) -> BaseException | None:
        # Chain the library's exception unless its text carries the key.
        return None if key and key in f"{exc!r} {exc}" else exc

    try:
        connection = await connect(
            target,
            additional_headers=all_headers,
            user_agent_header="ari-realtime",
            open_timeout=timeout,
            close_timeout=min(timeout, 5.0),
            # Bounded: one 50 MiB message blocked every call's media clock for about
            # 300 ms (bench/bench_hostile.py); a bigger one closes the session unread.
            max_size=max_message_bytes,
            compression=None,  # base64 audio barely compresses; save the CPU
            logger=ws_logger,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        error = RealtimeConnectionError(
            f"model server {display} rejected the websocket handshake: HTTP {status}"
            + (" (check OPENAI_API_KEY)" if status in (401, 403) else "")
        )
        if 400 <= status < 500 and status not in (408, 429):
            error.transient = False
        raise error from cause(exc)
    except InvalidURI as exc:
        error = RealtimeConnectionError(f"REALTIME_URL is not a valid websocket URL: {display}")
        error.transient = False
        raise error from cause(exc)
    except InvalidHandshake as exc:
        raise RealtimeConnectionError(
            f"websocket handshake with {display} failed: {ws_logger.redact(str(exc))}"
        ) from cause(exc)
    except TimeoutError as exc:
        raise RealtimeConnectionError(
            f"could not connect to {display} within {timeout:g}s"
        ) from cause(exc)
    except OSError as exc:
        raise RealtimeConnectionError(
            f"could not connect to {display}: {ws_logger.redact(exc.strerror or str(exc))}"
        ) from cause(exc)
    except ValueError as exc:  # e.g. a header value with a newline in it
        error = RealtimeConnectionError(
            f"could not connect to {display}: invalid request ({type(exc).__name__})"
        )
        error.transient = False
        raise error from None
    log.info("connected to realtime model server %s", display)
    return RealtimeSession(
        connection, url=display, model=model, timeout=timeout, redact=ws_logger.redact
    )
