"""The agent's custom HTTP tools: one POST per call, through one shared client.

A tool declared in the agents file (``[tools.NAME]`` with ``url``, headers
and a timeout) is run by POSTing ``{"call_id", "caller_number",
"arguments"}`` as JSON. The reply's text (at most :data:`MAX_RESULT_CHARS`)
is the tool's result for the model. Every failure becomes a
:class:`~controller.errors.ToolError` whose message the model may read: it
names the tool and what went wrong, never the URL or headers (they may
carry credentials).

One :class:`aiohttp.ClientSession` serves every call of the process
(connection pooling, one resolver), opened on first use.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from controller.agents import HttpTool
from controller.errors import ToolError

#: Longer replies are cut: the result goes into the model's context.
MAX_RESULT_CHARS = 16_000


class HttpToolClient:
    """Runs HTTP tools; :meth:`close` when the process stops."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def call(self, name: str, tool: HttpTool, body: dict[str, Any]) -> str:
        """POST ``body`` to the tool and return its reply text.

        Raises:
            ToolError: unreachable, too slow, or an HTTP error status.
        """
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=tool.timeout)
        try:
            async with session.post(
                tool.url, json=body, headers=tool.headers, timeout=timeout
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise ToolError(f"{name} failed: the service answered HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ToolError(
                f"{name} failed: {type(exc).__name__} (service unreachable or slow)"
            ) from exc
        return text[:MAX_RESULT_CHARS]

    async def close(self) -> None:
        """Close the shared client (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
