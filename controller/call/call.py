"""One inbound call, from StasisStart to teardown.

The controller creates a :class:`Call` when a caller's channel enters the
Stasis app and routes every later event of that channel to it. The call
answers and waits until something ends it: the caller hangs up, the
controller stops, or (later) the model session fails or the agent hangs up.
Teardown runs exactly once, whatever ended the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controller.ari.events import (
    AriEvent,
    Channel,
    ChannelDestroyed,
    ChannelHangupRequest,
    StasisEnd,
)
from controller.errors import AriError, AriNotFound
from controller.logs import kv

if TYPE_CHECKING:
    from controller.app import Controller

log = logging.getLogger("controller.call")

#: Channel variable set on the caller before it is handed back to the
#: dialplan, so the dialplan can tell why (e.g. ``controller_stopping``).
RESULT_VARIABLE = "ARI_REALTIME_RESULT"


@dataclass
class CallContext:
    """What a call is born with."""

    controller: Controller
    call_id: str
    channel: Channel
    args: list[str] = field(default_factory=list)


class Call:
    """One call. :meth:`run` returns when the call is over and cleaned up."""

    def __init__(self, context: CallContext) -> None:
        self.context = context
        self.call_id = context.call_id
        self.caller = context.channel
        self.bridge_id = f"{context.controller.id_prefix}br-{self.call_id}"
        self._ended = asyncio.Event()
        self.end_reason = ""
        self._to_dialplan = False
        self._caller_gone = False

    @property
    def caller_channel_id(self) -> str:
        """The id of the caller's channel."""
        return self.caller.id

    @property
    def log_fields(self) -> str:
        """``call=... channel=...`` for log lines."""
        return kv(call=self.call_id, channel=self.caller.name)

    # --- inputs --------------------------------------------------------------------

    def on_event(self, event: AriEvent) -> None:
        """An ARI event about one of this call's channels (never blocks)."""
        channel = getattr(event, "channel", None)
        if channel is None or channel.id != self.caller_channel_id:
            return
        if isinstance(event, ChannelHangupRequest | ChannelDestroyed):
            self.on_caller_gone("caller hung up")
        elif isinstance(event, StasisEnd):
            self.on_caller_gone("caller left Stasis")

    def on_caller_gone(self, reason: str) -> None:
        """The caller's channel is gone or left the app."""
        self._caller_gone = True
        self.request_end(reason)

    def request_end(self, reason: str, *, to_dialplan: bool = False) -> None:
        """End the call; the first reason given wins."""
        if self._ended.is_set():
            return
        self.end_reason = reason
        self._to_dialplan = to_dialplan
        self._ended.set()

    # --- life ----------------------------------------------------------------------

    async def run(self) -> None:
        """Answer, serve, and tear down exactly once."""
        ari = self.context.controller.ari
        try:
            await ari.answer(self.caller_channel_id)
            log.info("answered %s", self.log_fields)
            await self._ended.wait()
        except AriNotFound:
            self.on_caller_gone("caller hung up before answer")
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        ari = self.context.controller.ari
        if not self._caller_gone:
            try:
                if self._to_dialplan:
                    result = self.end_reason.replace(" ", "_")
                    await ari.set_variable(self.caller_channel_id, RESULT_VARIABLE, result)
                    await ari.continue_in_dialplan(self.caller_channel_id)
                else:
                    await ari.hangup(self.caller_channel_id)
            except AriError as exc:
                log.debug("caller already gone %s %s", self.log_fields, exc)
        with contextlib.suppress(AriError):
            await ari.destroy_bridge(self.bridge_id)
        log.info("StasisEnd %s", kv(call=self.call_id, reason=self.end_reason))
