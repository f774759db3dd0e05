"""A call's ARI media leg: the mixing bridge and the externalMedia channel (I/O).

:meth:`MediaLeg.connect` creates both and bridges them with the caller;
:meth:`MediaLeg.release` deletes what was created, exactly once, whatever
happened in between (ari-notes: nothing in Asterisk ever expires an
orphaned UnicastRTP channel or bridge).

Order matters (ari-notes §1): ``POST /channels/externalMedia`` returns
before the channel is in Stasis, and adding it to the bridge before its own
StasisStart fails with 422; its ``channelvars`` say where Asterisk's RTP
socket is (``UNICASTRTP_LOCAL_ADDRESS``/``PORT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from controller.ari.rest import AriClient
from controller.errors import AriError, CallError
from controller.media.call_media import CallMedia

#: How long to wait for the externalMedia channel's own StasisStart.
EXTERNAL_MEDIA_TIMEOUT = 5.0
#: How long release() lets a creating request that was in flight finish.
REQUEST_SETTLE_SECONDS = 5.0

T = TypeVar("T")


class MediaLeg:
    """The bridge and the externalMedia channel of one call.

    Args:
        ari: the REST client.
        app: the Stasis app the externalMedia channel joins.
        call_id: names the bridge and goes in the channel's ``data``.
        bridge_id: our id for the mixing bridge.
        channel_id: our id for the externalMedia channel.
        log: the call's logger.
    """

    def __init__(
        self,
        ari: AriClient,
        *,
        app: str,
        call_id: str,
        bridge_id: str,
        channel_id: str,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._ari = ari
        self._app = app
        self._call_id = call_id
        self.bridge_id = bridge_id
        self.channel_id = channel_id
        self._log = log
        self._bridge_requested = False
        self._channel_requested = False
        # The creating requests, kept so release() can let one that was in
        # flight when set-up was cancelled finish before deleting what it made.
        self._requests: list[asyncio.Future[Any]] = []
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Asterisk's RTP address, once known.
        self.asterisk_address: tuple[str, int] | None = None

    def channel_started(self) -> None:
        """The externalMedia channel's StasisStart arrived."""
        if not self._started.done():
            self._started.set_result(None)

    async def connect(self, caller_channel_id: str, media: CallMedia) -> None:
        """Create the bridge and the channel, point RTP both ways, and bridge the caller.

        Raises:
            AriError: Asterisk refused a request.
            CallError: the channel never reached Stasis.
        """
        ari = self._ari
        host, port = media.local_address
        # Mark before asking: if a failure elsewhere (the model) cancels set-up
        # while the request is in flight, Asterisk may still create the
        # resource, and release must delete it (a 404 there is harmless).
        self._bridge_requested = True
        await self._request(
            ari.create_bridge(bridge_id=self.bridge_id, type="mixing", name=self._call_id)
        )
        self._channel_requested = True
        external = await self._request(
            ari.external_media(
                app=self._app,
                external_host=f"{host}:{port}",
                format="ulaw",
                channel_id=self.channel_id,
                data=self._call_id,
            )
        )
        variables = external.channelvars or {}
        remote_host = variables.get("UNICASTRTP_LOCAL_ADDRESS")
        remote_port = variables.get("UNICASTRTP_LOCAL_PORT")
        if not remote_host or not remote_port:
            remote_host = await ari.get_variable(self.channel_id, "UNICASTRTP_LOCAL_ADDRESS")
            remote_port = await ari.get_variable(self.channel_id, "UNICASTRTP_LOCAL_PORT")
        try:
            self.asterisk_address = (remote_host, int(remote_port))
        except ValueError:
            raise CallError(f"Asterisk gave an invalid RTP port {remote_port!r}") from None
        media.set_remote(*self.asterisk_address)
        await self._wait_in_stasis()
        await ari.add_channel(self.bridge_id, caller_channel_id, self.channel_id)

    async def _wait_in_stasis(self) -> None:
        try:
            async with asyncio.timeout(EXTERNAL_MEDIA_TIMEOUT):
                await self._started
        except TimeoutError:
            # The event may have been lost (e.g. the events websocket blipped):
            # ask Asterisk where the channel is before giving up.
            state = await self._ari.get_channel(self.channel_id)
            where = state.dialplan.app_name if state.dialplan else ""
            if where != "Stasis":
                raise CallError(
                    f"externalMedia channel did not enter Stasis within "
                    f"{EXTERNAL_MEDIA_TIMEOUT:g}s (state {state.state}, app {where or '-'})"
                ) from None
            self._log.warning("externalMedia StasisStart not seen; channel is in Stasis, going on")

    async def _request(self, coro: Coroutine[Any, Any, T]) -> T:
        # Cancelling our wait must not cancel the request: Asterisk may act on
        # it anyway, and release() must then delete what it created.
        future = asyncio.ensure_future(coro)
        self._requests.append(future)
        return await asyncio.shield(future)

    async def release(self) -> None:
        """Delete the channel and the bridge if they were asked for (idempotent)."""
        pending = [f for f in self._requests if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=REQUEST_SETTLE_SECONDS)
        for future in self._requests:
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: its failure was handled where it was awaited
        self._requests.clear()
        if self._channel_requested:
            self._channel_requested = False
            with contextlib.suppress(AriError):
                await self._ari.hangup(self.channel_id)
        if self._bridge_requested:
            self._bridge_requested = False
            with contextlib.suppress(AriError):
                await self._ari.destroy_bridge(self.bridge_id)
