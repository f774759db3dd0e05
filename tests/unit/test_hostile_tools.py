"""Hostile tool services: replies in other encodings, endless bodies, redirects elsewhere.

Against real aiohttp servers on 127.0.0.1. Each test pins one failure found
by review, with the reply that triggered it.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from controller.agents import HttpTool
from controller.call.http_tools import MAX_RESULT_CHARS, HttpToolClient, decode_reply
from controller.errors import ToolError
from tests.webpeer import serve

BODY = {"call_id": "c1", "caller_number": "100", "arguments": {"n": "1"}}


async def run_tool(url: str, timeout: float = 5.0) -> str:
    client = HttpToolClient()
    try:
        tool = HttpTool(description="d", url=url + "/tool", timeout=timeout)
        return await client.call("lookup", tool, BODY)
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        # Before: aiohttp's text() raised UnicodeDecodeError or LookupError and crashed the call.
        ("Grüße, Straße".encode("cp1252"), "text/plain", "Gr\ufffd\ufffde, Stra\ufffde"),
        (b"ok \xff", "text/plain; charset=utf-8", "ok \ufffd"),
        (b"ok", "text/plain; charset=no-such-charset", "ok"),
        (b"ok", "text/plain; charset=rot13", "ok"),  # a codec that is not a text encoding
        ("Grüße".encode("utf-16"), "text/plain; charset=utf-16", "Grüße"),
        ("Grüße".encode("latin-1"), "text/plain; charset=latin-1", "Grüße"),
    ],
)
async def test_replies_in_any_encoding_become_text(
    body: bytes, content_type: str, expected: str
) -> None:
    async def reply(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    async with serve(reply) as url:
        assert await run_tool(url) == expected


async def test_a_reply_is_read_up_to_the_cap_never_whole() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for _ in range(20):
            await response.write(b"x" * 8192)
        await asyncio.sleep(3600)  # the body never ends: only the cap may end the read
        return response

    async with serve(endless) as url:
        text = await asyncio.wait_for(run_tool(url, timeout=30), 5)
    assert text == "x" * MAX_RESULT_CHARS


async def test_a_redirect_to_another_site_is_not_followed() -> None:
    hits: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        hits.append(request.method)
        return web.Response(text="stolen")

    async with serve(elsewhere) as other:

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(other + "/collect")

        async with serve(redirect) as url:
            with pytest.raises(ToolError, match="redirected to another site"):
                await run_tool(url)
    assert hits == []  # the caller's data and the tool's headers never went there


async def test_a_redirect_within_the_service_is_followed() -> None:
    async def handler(request: web.Request) -> web.Response:
        if request.path == "/tool":
            raise web.HTTPPermanentRedirect("/v2/tool")  # 308: POST again
        assert request.method == "POST"
        return web.json_response({"found": await request.json()})

    async with serve(handler) as url:
        assert '"call_id": "c1"' in await run_tool(url)


async def test_a_redirect_loop_ends() -> None:
    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/tool")

    async with serve(loop) as url:
        with pytest.raises(ToolError, match="more than 3 redirects"):
            await run_tool(url)


async def test_a_reply_echoing_the_tools_credentials_has_them_masked() -> None:
    token = "Bearer tool-token-0123456789abcdef"

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"you_sent": request.headers["Authorization"]})

    async with serve(echo) as url:
        client = HttpToolClient()
        try:
            tool = HttpTool(description="d", url=url + "/tool", headers={"Authorization": token})
            text = await client.call("lookup", tool, BODY)
        finally:
            await client.close()
    assert "tool-token" not in text and "***" in text


def test_decode_reply_never_raises() -> None:
    assert decode_reply(b"\xff" * 10, "utf-8") == "\ufffd" * 10
    assert decode_reply(b"x" * (MAX_RESULT_CHARS + 10), None) == "x" * MAX_RESULT_CHARS
    assert decode_reply(b"abc", "base64") == "abc"
