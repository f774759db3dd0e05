"""Capture real ARI event payloads from a running Asterisk into events.jsonl.

Run against the sandbox (``python asterisk/sandbox.py start``)::

    .venv/bin/python tests/data/ari/capture.py

It registers a throw-away app, originates a Local channel into it, sends
DTMF that Echo() returns, creates an externalMedia channel, hangs up, and
writes every event it saw, one JSON object a line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path

import aiohttp

BASE = "http://127.0.0.1:8088/ari"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"voicebot:voicebot-secret").decode()}
APP = "capture"


async def main() -> int:
    events: list[dict[str, object]] = []
    async with aiohttp.ClientSession(headers=AUTH) as http:
        ws = await http.ws_connect(BASE.replace("http", "ws") + "/events", params={"app": APP})

        async def reader() -> None:
            async for msg in ws:
                events.append(json.loads(msg.data))

        task = asyncio.create_task(reader())
        params = {"endpoint": "Local/rig-echo@rig-pbx", "app": APP, "appArgs": "100,profile=sales"}
        async with http.post(BASE + "/channels", params=params) as r:
            chan = (await r.json())["id"]
        await asyncio.sleep(1.0)
        async with http.post(BASE + f"/channels/{chan}/dtmf", params={"dtmf": "5"}) as r:
            assert r.status == 204, r.status
        await asyncio.sleep(1.0)
        params = {
            "app": APP,
            "external_host": "127.0.0.1:49999",
            "format": "ulaw",
            "channelId": "capture-em-1",
            "data": "call-1",
        }
        async with http.post(BASE + "/channels/externalMedia", params=params) as r:
            events.append({"_response": "externalMedia", **(await r.json())})
        await asyncio.sleep(0.5)
        for c in (chan, "capture-em-1"):
            async with http.delete(BASE + f"/channels/{c}"):
                pass
        await asyncio.sleep(1.0)
        await ws.close()
        task.cancel()
    out = Path(__file__).with_name("events.jsonl")
    out.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
    print(f"wrote {len(events)} events to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
