"""Reading an HTTP reply without trusting its size (a thin helper over aiohttp)."""

from __future__ import annotations

import aiohttp


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read ``response``'s body, at most ``limit + 1`` bytes of it.

    A body longer than ``limit`` comes back ``limit + 1`` bytes long, so the
    caller can tell it was cut; the rest is never read into memory (the
    connection is released when the response closes).

    Raises:
        aiohttp.ClientError: the connection failed while reading.
    """
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await response.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
