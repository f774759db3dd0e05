"""The operator's HTTP server: JSON API, server-sent events, metrics and the live view.

=========================== ===================================================
``GET /healthz``            ``{"ari_connected": .., "app_registered": .., "store": ..}``;
                            200 when all are true, else 503; never needs a token
``GET /calls``              ``{"calls": [summary, ...]}`` newest first; query
                            ``limit`` (1..500, default 50), ``before`` (ISO 8601
                            time; naive means UTC), ``direction`` (inbound,
                            outbound), ``outcome`` (one of
                            :data:`~controller.records.OUTCOMES`)
``GET /calls/{id}``         the full record (live calls too)
``GET /calls/{id}/events``  server-sent events of a live call (below)
``POST /calls/{id}/hangup`` 202: the controller is ending the call; 404: no such live call
``GET /metrics``            Prometheus text
``GET /``                   the live view (``static/``)
``GET|POST /login``         the live view's token prompt (below)
=========================== ===================================================

A summary is the record without its lists (``transcript``, ``tool_calls``,
``dtmf``, ``turns``). ``GET /calls`` merges the live calls the
:class:`~controller.http.live.LiveHub` knows with the store's, so a call is
listed from its first second.

Errors are JSON ``{"error": "..."}``; a bad query parameter's error names it
and says what is allowed.

Events (``text/event-stream``): ``record`` first (the call so far, plus its
``state``), then ``transcript``, ``turn``, ``tool_call``, ``dtmf`` and
``state`` as they happen (data as in :mod:`controller.http.live`), ``lag``
(``{"dropped": N}``) when this client read too slowly and lost events (fetch
the record again), and finally ``end`` with the final record, after which the
server closes the stream. For a call that has ended, ``end`` comes at once.
A comment line is sent every ``keepalive`` seconds so proxies keep the
stream open and a gone client is noticed.

Token (``HTTP_TOKEN``): when set, every endpoint except ``/healthz`` and
``/login`` needs ``Authorization: Bearer <token>`` (compared in constant
time). Browsers cannot add that header to an ``EventSource``, so the live
view uses a cookie instead: ``/`` without it redirects to ``/login``, a form
that POSTs the token once; the answer sets an ``HttpOnly``, ``SameSite=Strict``
session cookie holding an HMAC of the token (never the token itself) that
the server accepts in place of the header. The token never travels in a URL,
so it is in no history, access log or ``Referer``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, get_args

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from pydantic import SecretStr, ValidationError

from controller.config import Settings, is_loopback_host
from controller.errors import ConfigError, OutboundBusy, OutboundInvalid, OutboundRefused
from controller.http.live import LiveEvent, LiveHub, Subscription
from controller.http.metrics import METRICS_CONTENT_TYPE, Metrics
from controller.logs import kv
from controller.outbound import OutboundRequest
from controller.records import OUTCOMES, CallRecord, Direction, RecordSource

log = logging.getLogger("controller.http")

STATIC_DIR = Path(__file__).with_name("static")
#: The live view's session cookie.
SESSION_COOKIE = "ari_realtime_session"
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
#: Seconds the store may take to answer a request before it is called unavailable.
STORE_TIMEOUT = 5.0
#: Seconds between SSE keep-alive comments.
SSE_KEEPALIVE = 15.0

_OFFSET_SPACE = re.compile(r" (\d\d:?\d\d)$")
_AUTH_ENABLED = web.AppKey("auth_enabled", bool)
_LIST_FIELDS = {"transcript", "tool_calls", "dtmf", "turns"}
_QUERY = ("limit", "before", "direction", "outcome")
_DIRECTIONS: tuple[str, ...] = get_args(Direction)
_OPEN_PATHS = frozenset({"/healthz", "/login"})
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# The page loads only its own files; nothing from the network, no inline script.
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The login page is one self-contained file (its style inline: it is served before auth).
_LOGIN_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class LiveController(Protocol):
    """What the HTTP layer asks of the running controller. Must not block."""

    def hangup(self, call_id: str) -> bool:
        """Start ending a live call (an operator asked); False when the id is unknown.

        Returns at once: the call ends through its own teardown.
        """

    def health(self) -> dict[str, bool]:
        """Named checks, all True when healthy (e.g. ``ari_connected``, ``app_registered``)."""

    def originate(self, request: OutboundRequest) -> str:
        """Place an outbound call; return its id at once (raises an ``OutboundError``)."""


class _BadQuery(Exception):
    pass


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def summary(record: CallRecord) -> dict[str, Any]:
    """A record without its lists, as ``GET /calls`` lists it."""
    return record.model_dump(mode="json", exclude=_LIST_FIELDS)


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _parse_calls_query(query: Any) -> dict[str, Any]:
    """Validate ``GET /calls``' query into :meth:`RecordSource.list` arguments.

    Args:
        query: the request's query (a multidict).

    Raises:
        _BadQuery: naming the parameter and what it allows.
    """
    for name in query:
        if name not in _QUERY:
            raise _BadQuery(f"unknown parameter {_shown(name)}; allowed: {', '.join(_QUERY)}")
        if len(query.getall(name)) > 1:
            raise _BadQuery(f"{name}: give it once")
    args: dict[str, Any] = {"limit": DEFAULT_LIMIT, "before": None}
    if "limit" in query:
        text = query["limit"]
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIMIT):
            raise _BadQuery(f"limit: must be an integer from 1 to {MAX_LIMIT} (got {_shown(text)})")
        args["limit"] = int(text)
    if "before" in query:
        text = query["before"]
        try:
            # An unencoded "+01:00" arrives as " 01:00" (a "+" in a query is a space).
            args["before"] = _utc(dt.datetime.fromisoformat(_OFFSET_SPACE.sub(r"+\1", text)))
        except ValueError:
            raise _BadQuery(
                "before: must be an ISO 8601 time such as 2026-01-31T12:00:00Z "
                f"(got {_shown(text)})"
            ) from None
    if "direction" in query:
        text = query["direction"]
        if text not in _DIRECTIONS:
            raise _BadQuery(
                f"direction: must be one of {', '.join(_DIRECTIONS)} (got {_shown(text)})"
            )
        args["direction"] = text
    if "outcome" in query:
        text = query["outcome"]
        if text not in OUTCOMES:
            raise _BadQuery(f"outcome: must be one of {', '.join(OUTCOMES)} (got {_shown(text)})")
        args["outcome"] = text
    return args


class _Auth:
    """The token check: bearer header, or the live view's session cookie."""

    def __init__(self, token: SecretStr | None) -> None:
        secret = token.get_secret_value() if token is not None else ""
        self.enabled = bool(secret)
        self._token = secret.encode()
        # The cookie holds a derived value: a copied cookie is not the API token.
        self.cookie = hmac.new(self._token, b"ari-realtime live view", hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "backslashreplace"), self._token)

    def allows(self, request: web.Request) -> bool:
        if not self.enabled:
            return True
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(value.strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(cookie.encode("utf-8", "backslashreplace"), self.cookie.encode())


class _AccessLogger(AbstractAccessLogger):
    """One DEBUG line per request: method, path without its query, status, time."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            "http %s",
            kv(method=request.method, path=request.path, status=response.status, s=time),
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)


class _Api:
    def __init__(
        self,
        records: RecordSource,
        live: LiveHub,
        metrics: Metrics,
        controller: LiveController,
        auth: _Auth,
        keepalive: float,
    ) -> None:
        self.records = records
        self.live = live
        self.metrics = metrics
        self.controller = controller
        self.auth = auth
        self.keepalive = keepalive

    # --- middleware ----------------------------------------------------------------------

    @web.middleware
    async def guard(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.path not in _OPEN_PATHS and not self.auth.allows(request):
            if request.method == "GET" and request.path == "/":
                raise web.HTTPSeeOther("/login")
            return _error(
                401,
                "missing or wrong token: send Authorization: Bearer <HTTP_TOKEN>",
                **{"WWW-Authenticate": 'Bearer realm="ari-realtime"'},
            )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # Unknown routes and wrong methods answer in JSON like everything else.
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
            response = _error(exc.status, exc.reason, **allow)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # --- API ------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            checks = {name: bool(ok) for name, ok in self.controller.health().items()}
        except Exception:
            log.exception("health check of the controller failed")
            checks = {"controller": False}
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                checks["store"] = bool(await self.records.ping())
        except Exception as exc:  # a hung or broken store is what this reports
            log.warning("health check of the store failed %s", kv(error=type(exc).__name__))
            checks["store"] = False
        return web.json_response(checks, status=200 if all(checks.values()) else 503)

    async def list_calls(self, request: web.Request) -> web.Response:
        try:
            args = _parse_calls_query(request.query)
        except _BadQuery as exc:
            return _error(400, str(exc))
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                stored = await self.records.list(**args)
        except Exception:
            log.exception("the store failed to list calls")
            return _error(503, "the call store did not answer; see the controller's log")
        calls = {record.id: record for record in stored}
        before, direction = args["before"], args.get("direction")
        if "outcome" not in args:  # live calls have no outcome yet
            for record in self.live.active():
                if (direction is None or record.direction == direction) and (
                    before is None or _utc(record.started_at) < before
                ):
                    calls[record.id] = record  # the live copy is the fresher one
        newest = sorted(calls.values(), key=lambda r: _utc(r.started_at), reverse=True)
        return web.json_response({"calls": [summary(r) for r in newest[: args["limit"]]]})

    async def _find(self, call_id: str) -> CallRecord | None:
        record = self.live.get(call_id)
        if record is not None:
            return record
        async with asyncio.timeout(STORE_TIMEOUT):
            return await self.records.get(call_id)

    async def get_call(self, request: web.Request) -> web.Response:
        call_id = request.match_info["id"]
        try:
            record = await self._find(call_id)
        except Exception:
            log.exception("the store failed to read a call call=%s", call_id)
            return _error(503, "the call store did not answer; see the controller's log")
        if record is None:
            return _error(404, f"no call {_shown(call_id)}")
        return web.json_response(record.model_dump(mode="json"))

    async def call_events(self, request: web.Request) -> web.StreamResponse:
        call_id = request.match_info["id"]
        subscription = self.live.subscribe(call_id)
        ended: CallRecord | None = None
        if subscription is None:
            if self.live.is_live(call_id):
                return _error(429, "too many viewers of this call")
            try:
                ended = await self._find(call_id)
            except Exception:
                log.exception("the store failed to read a call call=%s", call_id)
                return _error(503, "the call store did not answer; see the controller's log")
            if ended is None:
                return _error(404, f"no call {_shown(call_id)}")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx: pass events through as they come
                **_SECURITY_HEADERS,
            }
        )
        await response.prepare(request)
        try:
            await response.write(b"retry: 3000\n\n")
            if ended is not None:
                await response.write(LiveEvent("end", ended.model_dump(mode="json")).encode())
            elif subscription is not None:
                await self._stream(response, subscription)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the viewer went away
        finally:
            if subscription is not None:
                subscription.close()
        return response

    async def _stream(self, response: web.StreamResponse, subscription: Subscription) -> None:
        while True:
            try:
                async with asyncio.timeout(self.keepalive):
                    event = await subscription.next()
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if event is None:
                return
            await response.write(event.encode())
            if event.kind == "end":
                return

    async def start_call(self, request: web.Request) -> web.Response:
        """``POST /calls``: the agent phones someone with a purpose."""
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body must be a JSON object (endpoint or number, purpose, ...)")
        try:
            outbound = OutboundRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return _error(422, f"{where}: {first['msg'].removeprefix('Value error, ')}")
        try:
            call_id = self.controller.originate(outbound)
        except OutboundRefused as exc:
            return _error(403, str(exc))
        except OutboundInvalid as exc:
            return _error(422, str(exc))
        except OutboundBusy as exc:
            return _error(429, str(exc), **{"Retry-After": "10"})
        log.info("outbound call requested %s", kv(call=call_id, peer=request.remote or ""))
        return web.json_response({"id": call_id, "status": "ringing"}, status=202)

    async def hangup(self, request: web.Request) -> web.Response:
        call_id = request.match_info["id"]
        try:
            known = self.controller.hangup(call_id)
        except Exception:
            log.exception("operator hangup failed call=%s", call_id)
            return _error(500, "the controller failed to end the call; see its log")
        if not known:
            return _error(404, f"no live call {_shown(call_id)}")
        log.info("operator hangup %s", kv(call=call_id, peer=request.remote or ""))
        return web.json_response({"call_id": call_id, "status": "hanging up"}, status=202)

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    # --- the live view --------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        return _file_response("index.html", _PAGE_CSP)

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        if not self.auth.enabled or self.auth.allows(request):
            raise web.HTTPSeeOther("/")
        return _login_page("")

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self.auth.enabled:
            raise web.HTTPSeeOther("/")
        form = await request.post()
        token = form.get("token")
        if not isinstance(token, str) or not self.auth.token_matches(token):
            log.warning("live view login refused %s", kv(peer=request.remote or ""))
            return _login_page("That token is not the one in HTTP_TOKEN.", status=401)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            SESSION_COOKIE,
            self.auth.cookie,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )
        raise response

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ("app.js", "style.css"):
            return _error(404, "no such file")
        return _file_response(name, _PAGE_CSP)


def _file_response(name: str, csp: str) -> web.FileResponse:
    response = web.FileResponse(STATIC_DIR / name)
    response.headers["Content-Security-Policy"] = csp
    response.headers["Cache-Control"] = "no-cache"  # revalidate: a new version shows at once
    return response


def _login_page(message: str, status: int = 200) -> web.Response:
    html = (STATIC_DIR / "login.html").read_text(encoding="utf-8")
    html = html.replace("<!--message-->", message)  # fixed text, never request data
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        headers={"Content-Security-Policy": _LOGIN_CSP, "Cache-Control": "no-store"},
    )


def create_app(
    *,
    records: RecordSource,
    live: LiveHub,
    metrics: Metrics,
    controller: LiveController,
    token: SecretStr | None = None,
    keepalive: float = SSE_KEEPALIVE,
) -> web.Application:
    """Build the operator's aiohttp application.

    Args:
        records: where ended (and live) records are read (the store).
        live: the live calls (also registered as a call observer by the caller).
        metrics: the metrics ``GET /metrics`` exports.
        controller: ends calls for ``POST /calls/{id}/hangup`` and answers ``/healthz``.
        token: ``HTTP_TOKEN``; None or empty: no token needed.
        keepalive: seconds between SSE keep-alive comments.
    """
    auth = _Auth(token)
    api = _Api(records, live, metrics, controller, auth, keepalive)
    app = web.Application(middlewares=[api.guard])
    app[_AUTH_ENABLED] = auth.enabled
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/calls", api.list_calls)
    app.router.add_get("/calls/{id}", api.get_call)
    app.router.add_get("/calls/{id}/events", api.call_events)
    app.router.add_post("/calls/{id}/hangup", api.hangup)
    app.router.add_post("/calls", api.start_call)
    app.router.add_get("/metrics", api.metrics_text)
    app.router.add_get("/", api.page)
    app.router.add_get("/login", api.login_form)
    app.router.add_post("/login", api.login)
    app.router.add_get("/static/{name}", api.static)

    async def close_streams(app: web.Application) -> None:
        live.close()  # open event streams end now rather than at the shutdown timeout

    app.on_shutdown.append(close_streams)
    return app


class HttpServer:
    """Serves an app made by :func:`create_app` on one address.

    Args:
        app: the application.
        host: the address to listen on (a name or an IP address).
        port: the TCP port; 0 picks a free one (see :attr:`url`).

    Raises:
        ConfigError: when ``host`` is not loopback and the app has no token.
    """

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        if not is_loopback_host(host) and not app.get(_AUTH_ENABLED, False):
            raise ConfigError(
                f"HTTP_TOKEN: required when HTTP_LISTEN is not a loopback address "
                f"(listening on {host})"
            )
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL, with the port actually bound (after :meth:`start`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen.

        Raises:
            ConfigError: when the address cannot be bound (taken, not local).
        """
        runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log_class=_AccessLogger,
            access_log=logging.getLogger("controller.http.access"),
            shutdown_timeout=2.0,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"HTTP_LISTEN: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("http listening %s", kv(url=self.url, token=self.app[_AUTH_ENABLED]))

    async def stop(self) -> None:
        """Stop listening; open event streams are closed."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def http_server(
    settings: Settings,
    *,
    records: RecordSource,
    live: LiveHub,
    metrics: Metrics,
    controller: LiveController,
) -> HttpServer | None:
    """The server ``HTTP_LISTEN`` and ``HTTP_TOKEN`` ask for; None when ``HTTP_LISTEN`` is empty.

    Raises:
        ConfigError: when a non-loopback address has no token.
    """
    address = settings.http_address
    if address is None:
        return None
    token = settings.http_token if settings.http_token.get_secret_value() else None
    app = create_app(
        records=records, live=live, metrics=metrics, controller=controller, token=token
    )
    return HttpServer(app, *address)
