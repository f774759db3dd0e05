"""Carrying out the model's tool calls on the PBX and the tool services (I/O).

The conversation core decides whether a call is allowed and with what
arguments (:mod:`controller.call.tools` validates); :class:`ToolRunner`
does the work: ``send_dtmf`` and ``transfer`` through ARI, custom tools
through :class:`~controller.call.http_tools.HttpToolClient`. Every failure
is a :class:`~controller.errors.ToolError` whose message goes back to the
model.
"""

from __future__ import annotations

import logging
from typing import Any

from controller.agents import Agent
from controller.ari.rest import AriClient
from controller.call.http_tools import HttpToolClient
from controller.call.tools import tool_result
from controller.errors import AriError, ToolError
from controller.logs import kv


class ToolRunner:
    """Runs one call's tools against the caller's channel.

    Args:
        ari: the REST client.
        http_tools: the shared client of the custom HTTP tools.
        agent: the call's agent (its transfer targets and HTTP tools).
        channel_id: the caller's channel.
        call_id: the call's id (sent to HTTP tools).
        caller_number: the caller's number (sent to HTTP tools).
        log: the call's logger.
    """

    def __init__(
        self,
        ari: AriClient,
        http_tools: HttpToolClient,
        agent: Agent,
        *,
        channel_id: str,
        call_id: str,
        caller_number: str,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._ari = ari
        self._http = http_tools
        self._agent = agent
        self._channel_id = channel_id
        self._call_id = call_id
        self._caller_number = caller_number
        self._log = log
        #: The transfer target while its request is under way: the caller's
        #: StasisEnd may arrive before ARI answers the request.
        self.transferring_to: str | None = None
        #: The caller was transferred: it is no longer ours to hang up.
        self.handed_off = False

    async def run(self, name: str, arguments: dict[str, Any]) -> str:
        """Run a tool the conversation allowed; return its result for the model.

        Raises:
            ToolError: the PBX or the service refused or failed.
        """
        if name == "send_dtmf":
            return await self._send_dtmf(str(arguments["digits"]))
        if name == "transfer":
            return await self._transfer(str(arguments["target"]))
        return await self._http_tool(name, arguments)

    async def _send_dtmf(self, digits: str) -> str:
        try:
            await self._ari.send_dtmf(self._channel_id, digits)
        except AriError as exc:
            raise ToolError(f"the phone system did not accept the keys: {exc.args[0]}") from exc
        self._log.info("dtmf sent %s", kv(digits=digits))
        return tool_result(True, pressed=digits)

    async def _transfer(self, name: str) -> str:
        target = self._agent.transfer_targets[name]
        self.transferring_to = name
        try:
            if target.endpoint is not None:
                await self._ari.redirect(self._channel_id, target.endpoint)
            else:
                await self._ari.continue_in_dialplan(
                    self._channel_id,
                    context=target.context,
                    extension=target.extension,
                    priority=target.priority if target.label is None else None,
                    label=target.label,
                )
        except AriError as exc:
            self.transferring_to = None
            raise ToolError(f"the transfer to {name} failed: {exc.args[0]}") from exc
        self.handed_off = True
        self._log.info("transferred %s", kv(target=name))
        return tool_result(True, target=name)

    async def _http_tool(self, name: str, arguments: dict[str, Any]) -> str:
        body = {
            "call_id": self._call_id,
            "caller_number": self._caller_number,
            "arguments": arguments,
        }
        text = await self._http.call(name, self._agent.http_tools[name], body)
        return text or tool_result(True)
