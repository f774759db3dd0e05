"""One per-call websocket Asterisk opened to us: its events in, REST requests out (I/O).

In outbound mode (``ARI_MODE=outbound``) Asterisk connects to the controller
once per call (ari.conf ``type=outbound_websocket`` + websocket_client.conf
``connection_type=per_call_config``): the call's events arrive on that
connection, and REST requests go back over it (``RESTRequest`` /
``RESTResponse``, see :mod:`controller.ari.wsrest`). :class:`AriWebsocket`
is that connection; :class:`WebsocketAriClient` is an
:class:`~controller.ari.rest.AriClient` whose every request travels over it,
so a :class:`~controller.call.call.Call` runs unchanged.

Why REST over the websocket rather than HTTP to ``ARI_URL``: the request
reaches the very Asterisk that owns the call (several Asterisk servers need
no mapping from call to URL), the controller needs no route to Asterisk's
HTTP port, and on this machine it is also faster (``bench/bench_ari_transport.py``).
Asterisk reads requests on one thread per connection, so the requests of one
call are answered in order; that is all one call needs.

A request waits at most ``timeout`` seconds; when the connection closes, every
pending and later request fails at once with
:class:`~controller.errors.AriConnectionError` (as an HTTP request to an
Asterisk that went away would).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from controller.ari.events import AriEvent, AriProtocolError
from controller.ari.rest import AriClient, Params
from controller.ari.wsrest import RestResponse, parse_message, rest_request
from controller.errors import AriConnectionError, ari_error_for_status

log = logging.getLogger(__name__)

#: Seconds a request may wait for its response (as the HTTP client's timeout).
REQUEST_TIMEOUT = 10.0

_ids = itertools.count(1)


class _Sockopt(Protocol):
    """A socket, or asyncio's TransportSocket around one: what setsockopt needs."""

    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...


#: Linux's TCP_QUICKACK (None elsewhere).
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class AriWebsocket:
    """The server side of one websocket Asterisk opened.

    Args:
        ws: the prepared aiohttp websocket.
        peer: the remote address, for messages.
        timeout: seconds each request may wait for its response.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        peer: str,
        timeout: float = REQUEST_TIMEOUT,
        sock: _Sockopt | None = None,
    ) -> None:
        self._ws = ws
        self._sock = sock
        self.peer = peer
        self.timeout = timeout
        self._pending: dict[str, asyncio.Future[RestResponse]] = {}
        self._closed = asyncio.Event()
        self._prefix = f"r{next(_ids)}-"
        self._counter = itertools.count(1)
        #: ``asterisk_id`` of the Asterisk on the other end (from its messages).
        self.asterisk_id = ""
        #: The per-call application (``app:<channel name>``), once an event named it.
        self.application = ""

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by either side)."""
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Return when the connection is closed."""
        await self._closed.wait()

    async def request(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one REST request over the websocket; return its decoded body (or None).

        Raises:
            AriConnectionError: the connection is closed, or no answer within the timeout.
            AriHttpError: Asterisk answered with a status of 400 or more.
        """
        if self.closed:
            raise AriConnectionError(
                f"ARI {method} {path}: the websocket from Asterisk ({self.peer}) is closed",
                "the websocket is closed",
            )
        request_id = f"{self._prefix}{next(self._counter)}"
        future: asyncio.Future[RestResponse] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            try:
                await self._ws.send_str(rest_request(request_id, method, path, params, body))
                self._quick_ack()
                async with asyncio.timeout(self.timeout):
                    response = await future
            except TimeoutError:
                raise AriConnectionError(
                    f"ARI {method} {path}: no answer over the websocket from Asterisk "
                    f"({self.peer}) within {self.timeout:g}s",
                    f"no answer within {self.timeout:g}s",
                ) from None
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                # aiohttp raises ConnectionResetError / RuntimeError on a closing socket.
                raise AriConnectionError(
                    f"ARI {method} {path}: the websocket from Asterisk ({self.peer}) is closed",
                    "the websocket is closed",
                ) from exc
        finally:
            self._pending.pop(request_id, None)
        if response.status_code >= 400:
            raise ari_error_for_status(response.status_code, method, path, response.reason())
        return response.body()

    def _quick_ack(self) -> None:
        """Acknowledge what Asterisk sends next at once, not 40 ms later.

        A request that makes Asterisk send an event before its response
        (``POST .../variable``: ChannelVarset, then the RESTResponse) has it
        write two small segments back to back. Asterisk's socket uses
        Nagle's algorithm, so the second waits for our ACK of the first, and
        Linux delays that ACK by up to 40 ms once the exchange looks
        interactive: measured, 43 ms per such request instead of 0.4 ms
        (``bench/bench_ari_transport.py``). Quick-ack mode ends by itself,
        so it is asked for again after every request sent.
        """
        if self._sock is not None and _QUICKACK is not None:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    async def events(self) -> AsyncIterator[AriEvent]:
        """Yield the connection's events until it closes; responses are matched on the way.

        Malformed messages are logged and skipped, never raised. When this
        returns, the connection is closed and pending requests have failed.
        """
        try:
            async for message in self._ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue  # aiohttp answers pings itself; CLOSE ends the loop
                if self._pending:
                    self._quick_ack()  # a response may still be behind this event
                try:
                    item = parse_message(message.data)
                except AriProtocolError as exc:
                    log.warning("ignored ARI message %s: %s", self.peer, exc)
                    continue
                if isinstance(item, RestResponse):
                    future = self._pending.get(item.request_id)
                    if future is not None and not future.done():
                        future.set_result(item)
                    continue
                if item.asterisk_id and not self.asterisk_id:
                    self.asterisk_id = item.asterisk_id
                if item.application and not self.application:
                    self.application = item.application
                yield item
        finally:
            self._mark_closed()

    def _mark_closed(self) -> None:
        self._closed.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(
                    AriConnectionError(
                        f"the websocket from Asterisk ({self.peer}) closed", "closed"
                    )
                )
                future.exception()  # retrieved here; the requester gets it from `await`

    async def close(self) -> None:
        """Close the connection (Asterisk reconnects if its call is still in Stasis)."""
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._mark_closed()


class WebsocketAriClient(AriClient):
    """An :class:`AriClient` whose requests travel over one :class:`AriWebsocket`.

    Every method of :class:`AriClient` works unchanged: they all go through
    :meth:`request`.
    """

    def __init__(self, connection: AriWebsocket) -> None:
        super().__init__(f"ws://{connection.peer}", "", "", timeout=connection.timeout)
        self.connection = connection

    def __repr__(self) -> str:
        return f"WebsocketAriClient({self.connection.peer!r})"

    async def request(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """See :meth:`AriWebsocket.request`."""
        return await self.connection.request(method, path, params, body)

    async def close(self) -> None:
        """Nothing to close: the connection belongs to the controller."""
