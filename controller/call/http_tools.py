"""The agent's custom HTTP tools: one POST per call, through one shared client.

A tool declared in the agents file (``[tools.NAME]`` with ``url``, headers
and a timeout) is run by POSTing ``{"call_id", "caller_number",
"arguments"}`` as JSON. The reply's text (at most :data:`MAX_RESULT_CHARS`)
is the tool's result for the model. Every failure becomes a
:class:`~controller.errors.ToolError` whose message the model may read: it
names the tool and what went wrong, never the URL or headers (they may
carry credentials).

The service is not trusted with more than its answer:

* the reply is read up to :data:`MAX_REPLY_BYTES` and no further (never the
  whole body first), then decoded in its declared charset, or UTF-8, with
  undecodable bytes replaced (a reply in another encoding, or a charset
  Python does not know, once crashed the call);
* redirects are followed only within the tool's own origin (scheme, host
  and port), at most :data:`MAX_REDIRECTS` of them: the tool's headers
  (credentials) and the caller's data never go to another site;
* a reply that echoes the tool's own header values (a token) has them
  masked: the result goes to the model, the call record and the live view.

One :class:`aiohttp.ClientSession` serves every call of the process
(connection pooling, one resolver), opened on first use.
"""

from __future__ import annotations

import codecs
from typing import Any

import aiohttp
from yarl import URL

from controller.agents import HttpTool
from controller.errors import ToolError
from controller.httpbody import read_limited
from controller.redact import SecretMasker

#: Longer replies are cut: the result goes into the model's context.
MAX_RESULT_CHARS = 16_000
#: Bytes of a reply read at most (UTF-8 may take 4 bytes per character).
MAX_REPLY_BYTES = 4 * MAX_RESULT_CHARS
#: Same-origin redirects followed at most.
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def decode_reply(body: bytes, charset: str | None) -> str:
    """The text of a reply: ``charset`` (UTF-8 when absent or unknown), bad bytes replaced.

    Never raises; the result is at most :data:`MAX_RESULT_CHARS` characters.
    """
    encoding = "utf-8"
    if charset:
        try:
            encoding = codecs.lookup(charset).name
        except (LookupError, ValueError):
            pass  # a charset Python does not know: read it as UTF-8
    try:
        text = body.decode(encoding, "replace")
    except (LookupError, ValueError, TypeError):
        text = body.decode("utf-8", "replace")  # a codec that is not a text encoding
    return text[:MAX_RESULT_CHARS]


def _origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme, (url.host or "").lower(), url.port)


class HttpToolClient:
    """Runs HTTP tools; :meth:`close` when the process stops."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def call(self, name: str, tool: HttpTool, body: dict[str, Any]) -> str:
        """POST ``body`` to the tool and return its reply text.

        Raises:
            ToolError: unreachable, too slow, an HTTP error status, or a
                redirect to another site (not followed).
        """
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=tool.timeout)
        url = URL(tool.url)
        origin = _origin(url)
        method = "POST"
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with session.request(
                    method,
                    url,
                    json=body if method == "POST" else None,
                    headers=tool.headers,
                    timeout=timeout,
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    if status in _REDIRECTS and "Location" in response.headers:
                        target = url.join(URL(response.headers["Location"]))
                        if _origin(target) != origin:
                            raise ToolError(
                                f"{name} failed: the service redirected to another site, "
                                "which is not followed"
                            )
                        # As browsers do: 303 (and 301/302 after a POST) become a GET.
                        method = method if status in (307, 308) else "GET"
                        url = target
                        continue
                    if status >= 400:
                        raise ToolError(f"{name} failed: the service answered HTTP {status}")
                    data = await read_limited(response, MAX_REPLY_BYTES)
                    text = decode_reply(data[:MAX_REPLY_BYTES], response.charset)
                    return SecretMasker(tool.headers.values()).mask(text)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # ValueError: e.g. a Location header that is not a URL.
            raise ToolError(
                f"{name} failed: {type(exc).__name__} (service unreachable or slow)"
            ) from exc
        raise ToolError(f"{name} failed: more than {MAX_REDIRECTS} redirects")

    async def close(self) -> None:
        """Close the shared client (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
