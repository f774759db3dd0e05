"""The listening side of outbound mode: Asterisk's per-call websockets arrive here (I/O).

:class:`AriListener` serves ``ARI_LISTEN`` with aiohttp:

* any path, upgraded to a websocket with subprotocol ``ari``: one call's
  connection, handed to ``on_connection`` for as long as it lasts. Asterisk
  authenticates with HTTP Basic (websocket_client.conf ``username`` /
  ``password``); both are compared with ``ARI_USER`` / ``ARI_PASSWORD`` in
  constant time, and anything else gets 401 before the upgrade. The
  password is never logged.
* ``GET /healthz``: 200 ``{"accepting": true}`` while calls are taken, for a
  load balancer's health check on the very port that carries the calls.

The socket is bound with ``SO_REUSEPORT``, so the worker processes of
``ari-realtime run --workers N`` (and any other controller on the host) share
the port and the kernel spreads connections over them. TLS (``wss://``)
when given an :class:`ssl.SSLContext`.

:meth:`AriListener.stop_accepting` closes only the listening socket: calls
in progress keep their connections, new ones go to the other listeners (or,
with none left, Asterisk's ``Stasis()`` fails and the dialplan takes over).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from controller.ari.percall import AriWebsocket
from controller.errors import ConfigError
from controller.logs import kv

log = logging.getLogger("controller.listener")

OnConnection = Callable[[AriWebsocket], Awaitable[None]]
#: Seconds between websocket pings to Asterisk (a dead peer is noticed in about twice this).
HEARTBEAT = 10.0
#: Seconds the connections get to finish when the listener closes.
SHUTDOWN_SECONDS = 5.0


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context from PEM files (``ARI_LISTEN_CERT`` / ``ARI_LISTEN_KEY``).

    Raises:
        ConfigError: the files cannot be read or do not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"ARI_LISTEN_CERT / ARI_LISTEN_KEY: cannot load {cert} with {key}: "
            f"{getattr(exc, 'strerror', None) or exc}"
        ) from None
    return context


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` with ``SO_REUSEPORT`` (and ``SO_REUSEADDR``).

    Raises:
        ConfigError: the address cannot be bound (in use without SO_REUSEPORT,
            not an address of this host, a privileged port).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ConfigError(f"ARI_LISTEN: cannot resolve {host}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"ARI_LISTEN: cannot listen on {host}:{port}: {exc.strerror or exc} (another "
            "program holds the port without SO_REUSEPORT?)"
        ) from None
    sock.setblocking(False)
    return sock


def basic_auth_matches(header: str, user: str, password: str) -> bool:
    """True when ``Authorization: Basic ...`` carries exactly ``user`` and ``password``.

    Both are compared in constant time (and both always, so the time says
    nothing about which one was wrong).
    """
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return False
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    given_user, sep, given_password = decoded.partition(b":")
    if not sep:
        return False
    user_ok = hmac.compare_digest(given_user, user.encode())
    password_ok = hmac.compare_digest(given_password, password.encode())
    return user_ok and password_ok


class AriListener:
    """Accepts Asterisk's per-call websockets on one address.

    Args:
        host, port: where to listen (``ARI_LISTEN``; port 0 picks one, see :attr:`port`).
        user, password: what Asterisk must present (``ARI_USER`` / ``ARI_PASSWORD``).
        on_connection: runs one call's connection; the connection closes when it returns.
        accepting: says whether calls are taken (``/healthz``).
        ssl_context: serve TLS (``wss://``) with it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        user: str,
        password: str,
        on_connection: OnConnection,
        accepting: Callable[[], bool] = lambda: True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._user = user
        self._password = password
        self._on_connection = on_connection
        self._accepting = accepting
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        #: Connections open right now.
        self.connections: set[AriWebsocket] = set()
        #: Handshakes refused for bad credentials (since start).
        self.refused = 0

    @property
    def listening(self) -> bool:
        """True while the listening socket is open."""
        return self._site is not None

    @property
    def url(self) -> str:
        """``ws://host:port`` (``wss`` with TLS), what websocket_client.conf's uri points at."""
        scheme = "wss" if self._ssl is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start accepting.

        Raises:
            ConfigError: the address cannot be bound.
        """
        sock = reuse_port_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/{tail:.*}", self._websocket)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS
        )
        await runner.setup()
        site = web.SockSite(runner, sock, ssl_context=self._ssl)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner, self._site = runner, site
        log.info("listening for Asterisk %s", kv(url=self.url))

    async def stop_accepting(self) -> None:
        """Close the listening socket; connections in progress go on."""
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
            log.info("stopped listening %s", kv(url=self.url, open=len(self.connections)))

    async def close(self) -> None:
        """Stop listening and close every connection."""
        await self.stop_accepting()
        for connection in list(self.connections):
            await connection.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        accepting = self.listening and self._accepting()
        return web.json_response({"accepting": accepting}, status=200 if accepting else 503)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        peer = _peer(request)
        if not basic_auth_matches(
            request.headers.get("Authorization", ""), self._user, self._password
        ):
            self.refused += 1
            log.warning(
                "refused a websocket: wrong or missing credentials %s",
                kv(peer=peer, user=_claimed_user(request.headers.get("Authorization", ""))),
            )
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="ari-realtime"'})
        ws = web.WebSocketResponse(protocols=("ari",), heartbeat=HEARTBEAT, autoping=True)
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="this port takes Asterisk's ARI websockets\n")
        await ws.prepare(request)
        # asyncio hands out a TransportSocket: setsockopt works on it.
        sock = request.transport.get_extra_info("socket") if request.transport else None
        connection = AriWebsocket(ws, peer=peer, sock=sock if hasattr(sock, "setsockopt") else None)
        self.connections.add(connection)
        try:
            await self._on_connection(connection)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a per-call connection failed %s", kv(peer=peer))
        finally:
            self.connections.discard(connection)
            await connection.close()
        return ws


def _peer(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return request.remote or "?"


def _claimed_user(header: str) -> str:
    """The user name a refused handshake claimed (never the password), for the log."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return "-" if not header else f"({scheme or 'no'} scheme)"
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "(undecodable)"
    user = decoded.partition(b":")[0].decode("utf-8", "replace")
    return user[:64] if user.isprintable() else "(unprintable)"
