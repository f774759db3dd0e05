"""Asterisk REST Interface client on aiohttp (a thin I/O adapter).

Only the calls the controller needs, named after ARI's own resources and
operations (``channels/externalMedia``, ``bridges/addChannel`` ...). Every
failure leaves as a :class:`~controller.errors.AriError`: transport problems
as :class:`~controller.errors.AriConnectionError`, error statuses as the
most specific :class:`~controller.errors.AriHttpError` subclass, and a
reply that is not the JSON ARI documents (not UTF-8, not JSON, the wrong
shape) as :class:`~controller.errors.AriProtocolError`. Replies are read up
to :data:`MAX_REPLY_BYTES`.
"""

from __future__ import annotations

import base64
import errno
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import aiohttp

from controller.ari.events import Bridge, Channel, decode_json, parse_model, parse_models
from controller.errors import AriConnectionError, AriError, AriProtocolError, ari_error_for_status
from controller.httpbody import read_limited
from controller.redact import escape_controls

Params = Mapping[str, str | int | float | bool | None]

#: Largest REST reply read: ``GET /channels`` with a few thousand channels fits many
#: times over; anything bigger is not an answer we can use.
MAX_REPLY_BYTES = 16 * 2**20

#: Reasons ``DELETE /channels/{id}`` accepts (ARI 22 ``channels.json``).
HANGUP_REASONS = frozenset(
    {
        "normal",
        "busy",
        "congestion",
        "no_answer",
        "timeout",
        "rejected",
        "unallocated",
        "normal_unspecified",
        "number_incomplete",
        "codec_mismatch",
        "interworking",
        "failure",
        "answered_elsewhere",
    }
)


def _query(params: Params) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


class AriClient:
    """REST client for one Asterisk.

    Use as an async context manager, or call :meth:`close` when done::

        async with AriClient("http://127.0.0.1:8088", "voicebot", "secret") as ari:
            await ari.ping()

    Args:
        base_url: Asterisk's HTTP server, e.g. ``http://127.0.0.1:8088``.
        user: the ARI user (``ari.conf``).
        password: its password; never logged or put into messages.
        timeout: seconds for each request.
    """

    def __init__(self, base_url: str, user: str, password: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        # A header rather than aiohttp.BasicAuth (deprecated in aiohttp 3.14).
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}
        #: Seconds allowed for each request (and the events websocket's handshake).
        self.timeout = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AriClient({self.base_url!r})"

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared aiohttp session (created on first use)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request below ``/ari`` and return its decoded JSON (or None).

        Raises:
            AriConnectionError: Asterisk could not be reached or timed out.
            AriHttpError: Asterisk answered with a status of 400 or more.
            AriProtocolError: the reply is larger than :data:`MAX_REPLY_BYTES`,
                or not JSON.
        """
        url = f"{self.base_url}/ari{path}"
        try:
            async with self.session.request(
                method, url, params=_query(params or {}), json=body
            ) as response:
                data = await read_limited(response, MAX_REPLY_BYTES)
                if response.status >= 400:
                    text = data[:1000].decode("utf-8", "replace")
                    raise ari_error_for_status(response.status, method, path, _reason(text))
                if len(data) > MAX_REPLY_BYTES:
                    raise AriProtocolError(
                        f"ARI {method} {path}: reply larger than {MAX_REPLY_BYTES} bytes"
                    )
                if not data.strip():
                    return None
                return decode_json(data, f"ARI {method} {path} reply")
        except AriError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = connection_problem(exc, timeout=self.timeout)
            raise AriConnectionError(
                f"ARI {method} {path}: cannot reach Asterisk at {self.base_url}: {reason}", reason
            ) from exc

    # --- asterisk --------------------------------------------------------------

    async def ping(self) -> dict[str, Any]:
        """``GET /asterisk/ping``.

        Raises:
            AriProtocolError: the reply is not a JSON object.
        """
        return _object(await self.request("GET", "/asterisk/ping"), "GET /asterisk/ping")

    async def info(self) -> dict[str, Any]:
        """``GET /asterisk/info`` (build, system, config, status).

        Raises:
            AriProtocolError: the reply is not a JSON object.
        """
        return _object(await self.request("GET", "/asterisk/info"), "GET /asterisk/info")

    async def modules(self) -> list[dict[str, Any]]:
        """``GET /asterisk/modules``: name, status, support_level, ...

        Raises:
            AriProtocolError: the reply is not a list of JSON objects.
        """
        return _objects(await self.request("GET", "/asterisk/modules"), "GET /asterisk/modules")

    async def applications(self) -> list[dict[str, Any]]:
        """``GET /applications``: the Stasis apps registered right now.

        Raises:
            AriProtocolError: the reply is not a list of JSON objects.
        """
        return _objects(await self.request("GET", "/applications"), "GET /applications")

    # --- channels --------------------------------------------------------------

    async def list_channels(self) -> list[Channel]:
        """``GET /channels``.

        Raises:
            AriProtocolError: the reply is not a list of channels.
        """
        return parse_models(Channel, await self.request("GET", "/channels"), "GET /channels")

    async def get_channel(self, channel_id: str) -> Channel:
        """``GET /channels/{channelId}``.

        Raises:
            AriProtocolError: the reply is not a channel.
        """
        data = await self.request("GET", f"/channels/{channel_id}")
        return parse_model(Channel, data, "GET /channels/{id}")

    async def answer(self, channel_id: str) -> None:
        """``POST /channels/{channelId}/answer``."""
        await self.request("POST", f"/channels/{channel_id}/answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        """``DELETE /channels/{channelId}?reason=...``.

        Raises:
            ValueError: ``reason`` is not one ARI accepts.
        """
        if reason not in HANGUP_REASONS:
            raise ValueError(f"hangup reason must be one of {sorted(HANGUP_REASONS)}")
        await self.request("DELETE", f"/channels/{channel_id}", {"reason": reason})

    async def send_dtmf(
        self,
        channel_id: str,
        dtmf: str,
        *,
        before: int = 0,
        between: int = 100,
        duration: int = 100,
        after: int = 0,
    ) -> None:
        """``POST /channels/{channelId}/dtmf``; returns before the digits play."""
        await self.request(
            "POST",
            f"/channels/{channel_id}/dtmf",
            {
                "dtmf": dtmf,
                "before": before,
                "between": between,
                "duration": duration,
                "after": after,
            },
        )

    async def external_media(
        self,
        *,
        app: str,
        external_host: str,
        format: str = "ulaw",
        channel_id: str | None = None,
        data: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """``POST /channels/externalMedia`` (rtp over udp).

        The response comes back before the channel is in Stasis: wait for its
        own StasisStart before adding it to a bridge. ``channelvars`` holds
        ``UNICASTRTP_LOCAL_ADDRESS`` / ``UNICASTRTP_LOCAL_PORT``.
        """
        body = {"variables": dict(variables)} if variables else None
        result = await self.request(
            "POST",
            "/channels/externalMedia",
            {
                "app": app,
                "external_host": external_host,
                "format": format,
                "encapsulation": "rtp",
                "transport": "udp",
                "channelId": channel_id,
                "data": data,
            },
            body,
        )
        return parse_model(Channel, result, "POST /channels/externalMedia")

    async def get_variable(self, channel_id: str, variable: str) -> str:
        """``GET /channels/{channelId}/variable``."""
        result = await self.request(
            "GET", f"/channels/{channel_id}/variable", {"variable": variable}
        )
        return str(result.get("value", "")) if isinstance(result, dict) else ""

    async def set_variable(self, channel_id: str, variable: str, value: str) -> None:
        """``POST /channels/{channelId}/variable``."""
        await self.request(
            "POST", f"/channels/{channel_id}/variable", {"variable": variable, "value": value}
        )

    async def continue_in_dialplan(
        self,
        channel_id: str,
        *,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
    ) -> None:
        """``POST /channels/{channelId}/continue``: leave Stasis, resume the dialplan."""
        await self.request(
            "POST",
            f"/channels/{channel_id}/continue",
            {"context": context, "extension": extension, "priority": priority, "label": label},
        )

    async def redirect(self, channel_id: str, endpoint: str) -> None:
        """``POST /channels/{channelId}/redirect`` (same technology only)."""
        await self.request("POST", f"/channels/{channel_id}/redirect", {"endpoint": endpoint})

    async def originate(
        self,
        *,
        endpoint: str,
        app: str | None = None,
        app_args: str | None = None,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        caller_id: str | None = None,
        timeout: int = 30,
        channel_id: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """``POST /channels``: place a call into an app or a dialplan location."""
        body = {"variables": dict(variables)} if variables else None
        result = await self.request(
            "POST",
            "/channels",
            {
                "endpoint": endpoint,
                "app": app,
                "appArgs": app_args,
                "context": context,
                "extension": extension,
                "priority": priority,
                "callerId": caller_id,
                "timeout": timeout,
                "channelId": channel_id,
            },
            body,
        )
        return parse_model(Channel, result, "POST /channels")

    # --- bridges ---------------------------------------------------------------

    async def list_bridges(self) -> list[Bridge]:
        """``GET /bridges``."""
        return parse_models(Bridge, await self.request("GET", "/bridges"), "GET /bridges")

    async def create_bridge(
        self, *, bridge_id: str | None = None, type: str = "mixing", name: str | None = None
    ) -> Bridge:
        """``POST /bridges``."""
        result = await self.request(
            "POST", "/bridges", {"type": type, "bridgeId": bridge_id, "name": name}
        )
        return parse_model(Bridge, result, "POST /bridges")

    async def add_channel(self, bridge_id: str, *channel_ids: str) -> None:
        """``POST /bridges/{bridgeId}/addChannel``."""
        await self.request(
            "POST", f"/bridges/{bridge_id}/addChannel", {"channel": ",".join(channel_ids)}
        )

    async def remove_channel(self, bridge_id: str, *channel_ids: str) -> None:
        """``POST /bridges/{bridgeId}/removeChannel``."""
        await self.request(
            "POST", f"/bridges/{bridge_id}/removeChannel", {"channel": ",".join(channel_ids)}
        )

    async def destroy_bridge(self, bridge_id: str) -> None:
        """``DELETE /bridges/{bridgeId}``."""
        await self.request("DELETE", f"/bridges/{bridge_id}")


def connection_problem(exc: BaseException, *, timeout: float | None = None) -> str:
    """Why a connection to Asterisk failed, in plain words.

    aiohttp's own messages speak of its internals (``Cannot connect to host
    127.0.0.1:1 ssl:default [Connect call failed ...]``); an operator needs
    what happened and where, so the message is built here from the
    exception's type and ``errno``, never from its text.

    Args:
        exc: what aiohttp (or the OS) raised.
        timeout: the seconds the request was allowed, for timeouts.
    """
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        verify = getattr(exc.certificate_error, "verify_message", "") or "verification failed"
        return f"the TLS certificate of {exc.host} was not accepted ({verify})"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"the TLS handshake with {exc.host}:{exc.port} failed (does it speak https?)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"{exc.host}:{exc.port}"
        os_error = exc.os_error
        if isinstance(os_error, socket.gaierror):
            return f"cannot resolve the host name {exc.host}"
        if os_error.errno == errno.ECONNREFUSED:
            return f"connection refused: nothing listens on {where}"
        if os_error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"no route to {where}"
        if os_error.errno == errno.ETIMEDOUT:
            return f"no answer from {where}"
        return f"cannot connect to {where}: {_plain_os_error(os_error)}"
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts derive from it
        return f"no answer within {timeout:g}s" if timeout else "no answer in time"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without an HTTP answer"
    if isinstance(exc, ConnectionResetError):
        return "the connection was reset"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "the server's answer is not HTTP"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer broke off"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the URL is not valid"
    if isinstance(exc, OSError):
        return _plain_os_error(exc)
    return str(exc) or type(exc).__name__


def _plain_os_error(exc: OSError) -> str:
    """``strerror`` in lower case (``connection reset by peer``), else the text."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise AriProtocolError(f"{what}: Asterisk did not answer with a JSON object")
    return data


def _objects(data: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise AriProtocolError(f"{what}: Asterisk did not answer with a list of objects")
    return data


def _reason(text: str) -> str:
    """Asterisk's error body is ``{"message": "..."}``; fall back to the text (one line)."""
    try:
        data = decode_json(text, "error")
    except AriProtocolError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return escape_controls(data["message"][:200])
    return escape_controls(text.strip()[:200])
