"""The ARI events websocket (a thin I/O adapter over aiohttp).

``/ari/events?app=NAME`` registers the Stasis app for as long as the socket
is open. When it drops, Asterisk keeps the calls but deactivates the app and
drops their events; StasisStart is not replayed on reconnect. The caller of
:meth:`AriEventStream.events` therefore reconnects and reconciles with
``GET /channels`` and ``GET /bridges`` (see :mod:`controller.app`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from http import HTTPStatus

import aiohttp

from controller.ari.events import AriEvent, AriProtocolError, parse_event
from controller.ari.rest import AriClient, connection_problem
from controller.errors import AriConnectionError, ari_error_for_status

log = logging.getLogger(__name__)


class AriEventStream:
    """One connection of the events websocket for one Stasis app.

    Args:
        client: the REST client (its HTTP session and credentials are reused).
        app: the Stasis app name to register (``ARI_APP``).
        heartbeat: seconds between websocket pings; a dead peer is noticed
            within about twice this.
    """

    def __init__(self, client: AriClient, app: str, *, heartbeat: float = 10.0) -> None:
        self._client = client
        self._app = app
        self._heartbeat = heartbeat
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    @property
    def url(self) -> str:
        """The events URL, without credentials."""
        base = self._client.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return f"{base}/ari/events"

    async def connect(self) -> None:
        """Open the websocket; the app is registered once this returns.

        Raises:
            AriAuthError: the credentials were rejected.
            AriConnectionError: Asterisk could not be reached.
        """
        try:
            self._ws = await self._client.session.ws_connect(
                self.url,
                params={"app": self._app, "subscribeAll": "false"},
                heartbeat=self._heartbeat,
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            # aiohttp's message ("Invalid response status") says nothing; the status does.
            raise ari_error_for_status(exc.status, "GET", "/events", _phrase(exc.status)) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = connection_problem(exc, timeout=self._client.timeout)
            raise AriConnectionError(
                f"ARI events websocket: cannot reach Asterisk at {self._client.base_url}: {reason}",
                reason,
            ) from exc

    async def events(self) -> AsyncIterator[AriEvent]:
        """Yield events until the socket closes.

        Malformed messages are logged and skipped, never raised.

        Raises:
            AriConnectionError: the socket closed or failed (reconnect).
        """
        ws = self._ws
        if ws is None:
            raise AriConnectionError("ARI events websocket is not connected")
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                try:
                    yield parse_event(message.data)
                except AriProtocolError as exc:
                    log.warning("ignored ARI event: %s", exc)
            elif message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                break
        raise AriConnectionError(
            f"ARI events websocket closed (code {ws.close_code}); calls keep running in Asterisk"
        )

    async def close(self) -> None:
        """Close the websocket (unregisters the app)."""
        if self._ws is not None:
            await self._ws.close()
            self._ws = None


def _phrase(status: int) -> str:
    """``Not Found`` for 404; empty for a status HTTP does not name."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
