"""A tiny async ARI client for the rig (aiohttp): REST calls and an event stream.

Deliberately independent of ``controller.ari`` so the rig can check the
controller rather than share its bugs.

    async with AriClient(url, user, password) as ari:
        async with ari.events("voicebot") as events:
            ...
            start = await events.next("StasisStart")
            await ari.post(f"/channels/{start['channel']['id']}/answer")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import aiohttp

Event = dict[str, Any]
Params = Mapping[str, str | int | float | bool]


class AriError(AssertionError):
    """An ARI request failed (an AssertionError, so a test reports it plainly)."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"ARI {method} {path}: HTTP {status} {body.strip()[:300]}")
        self.status = status
        self.body = body


def _query(params: Params | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


class AriClient:
    """REST under ``{base_url}/ari`` with basic auth; JSON in, JSON out."""

    def __init__(self, base_url: str, user: str, password: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AriClient:
        self._session = aiohttp.ClientSession(headers=self.headers, timeout=self.timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("AriClient used outside `async with`")
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        body: Any = None,
        *,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> Any:
        """One request; returns the decoded JSON body (None when empty).

        Raises:
            AriError: for a status not in ``ok``.
        """
        url = f"{self.base_url}/ari/{path.lstrip('/')}"
        async with self.session.request(
            method.upper(), url, params=_query(params), json=body
        ) as response:
            text = await response.text()
            if response.status not in ok:
                raise AriError(method.upper(), path, response.status, text)
            return json.loads(text) if text.strip() else None

    async def get(self, path: str, **params: str | int | float | bool) -> Any:
        return await self.request("GET", path, params)

    async def post(self, path: str, body: Any = None, **params: str | int | float | bool) -> Any:
        return await self.request("POST", path, params, body)

    async def delete(self, path: str, **params: str | int | float | bool) -> Any:
        return await self.request("DELETE", path, params)

    # -- conveniences ---------------------------------------------------------------

    async def channels(self) -> list[Event]:
        result: list[Event] = await self.get("/channels")
        return result

    async def get_global(self, name: str) -> str:
        """A dialplan global variable ('' when unset)."""
        result = await self.get("/asterisk/variable", variable=name)
        return str(result.get("value", "")) if result else ""

    async def set_global(self, name: str, value: str) -> None:
        await self.post("/asterisk/variable", variable=name, value=value)

    async def hangup(self, channel_id: str, reason: str = "normal") -> bool:
        """Hang up a channel; False if it was already gone."""
        try:
            await self.request(
                "DELETE", f"/channels/{channel_id}", {"reason": reason}, ok=(200, 204)
            )
        except AriError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def hangup_all(self) -> int:
        """Hang up every channel and delete every bridge (test clean-up)."""
        count = 0
        for channel in await self.channels():
            count += await self.hangup(channel["id"])
        for bridge in await self.get("/bridges"):
            with contextlib.suppress(AriError):
                await self.delete(f"/bridges/{bridge['id']}")
        return count

    def events(self, app: str, *, subscribe_all: bool = False) -> AriEvents:
        """An event stream for Stasis app ``app`` (registers the app while open)."""
        return AriEvents(self, app, subscribe_all=subscribe_all)


class AriEvents:
    """The events websocket of one app, buffered; :meth:`next` consumes matches in order."""

    def __init__(self, client: AriClient, app: str, *, subscribe_all: bool = False) -> None:
        self.client = client
        self.app = app
        self.subscribe_all = subscribe_all
        self.received: list[Event] = []
        self._pending: list[Event] = []
        self._changed = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed_reason: str | None = None

    async def __aenter__(self) -> AriEvents:
        url = self.client.base_url.replace("http", "ws", 1) + "/ari/events"
        params = {"app": self.app, "subscribeAll": "true" if self.subscribe_all else "false"}
        self._ws = await self.client.session.ws_connect(
            url, params=params, headers=self.client.headers, heartbeat=20
        )
        self._reader = asyncio.create_task(self._read(self._ws))
        # The app is registered once Asterisk has set up the session.
        deadline = time.monotonic() + 5
        while True:
            try:
                await self.client.get(f"/applications/{self.app}")
                break
            except AriError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._ws = None
        self._reader = None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(message.data)
                    self.received.append(event)
                    self._pending.append(event)
                    self._changed.set()
        finally:
            self._closed_reason = f"websocket closed ({ws.close_code})"
            self._changed.set()

    async def next(
        self,
        type_: str | None = None,
        where: Callable[[Event], bool] | None = None,
        *,
        timeout: float = 10.0,
    ) -> Event:
        """The first not yet consumed event of ``type_`` for which ``where`` holds.

        Raises:
            AssertionError: on timeout (listing the event types seen).
        """
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self._pending):
                if (type_ is None or event.get("type") == type_) and (
                    where is None or where(event)
                ):
                    del self._pending[index]
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._closed_reason and self._reader is None):
                seen = [e.get("type") for e in self.received[-20:]]
                raise AssertionError(
                    f"no {type_ or 'event'} matching within {timeout:g} s on app "
                    f"{self.app!r}; recent events: {seen}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def of_type(self, type_: str) -> list[Event]:
        """Every event of ``type_`` received so far (consumed or not)."""
        return [e for e in self.received if e.get("type") == type_]
