"""``ari-realtime call``: ask the running controller to phone someone, and follow the call.

Calls live in the controller process (``ari-realtime run``), so this command
is a client of its HTTP API at ``HTTP_LISTEN`` (with ``HTTP_TOKEN``):
``POST /calls``, then with ``--wait`` the call's server-sent events
(``GET /calls/{id}/events``) until its ``end`` event carries the record.
Exit status: 0 once the call is placed (without ``--wait``), or when the
agent reported ``achieved``; 1 when it did not; 2 for a bad request or setting.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any, TextIO

import aiohttp

from controller.config import Settings

#: A bare phone number goes through OUTBOUND_TRUNK; anything else is a dial string.
_NUMBER = re.compile(r"^\+?[0-9*#]{2,31}$")


def add_parser(sub: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """The ``call`` subcommand's arguments (``parents``: options every command takes)."""
    call = sub.add_parser(
        "call",
        parents=list(parents),
        help="phone someone with a purpose (through the running controller's HTTP API)",
    )
    call.add_argument(
        "destination", help="a dial string (PJSIP/1001, PJSIP/+1555@trunk) or a number"
    )
    call.add_argument("--purpose", required=True, help="what the agent must achieve, in words")
    call.add_argument("--profile", help="the agent profile to use")
    call.add_argument(
        "--var", action="append", default=[], metavar="K=V", help="a template field (repeat)"
    )
    call.add_argument("--caller-id", help="the caller id to present")
    call.add_argument("--ring-timeout", type=int, help="seconds to ring (default 30)")
    call.add_argument(
        "--on-machine",
        choices=("hangup", "leave_message", "continue"),
        help="what to do when an answering machine answers (default continue: no detection)",
    )
    call.add_argument("--message", help="the message to leave (with --on-machine leave_message)")
    call.add_argument(
        "--wait", action="store_true", help="print the live transcript and the outcome"
    )


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The ``POST /calls`` body for the command line.

    Raises:
        ValueError: a ``--var`` that is not ``K=V``.
    """
    body: dict[str, Any] = {"purpose": args.purpose}
    key = "number" if _NUMBER.match(args.destination) else "endpoint"
    body[key] = args.destination
    variables = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--var {item!r}: give it as NAME=value")
        variables[name] = value
    if variables:
        body["variables"] = variables
    optional = {
        "profile": args.profile,
        "caller_id": args.caller_id,
        "ring_timeout": args.ring_timeout,
        "on_machine": args.on_machine,
        "machine_message": args.message,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def base_url(settings: Settings) -> str:
    """The controller's HTTP API, from ``HTTP_LISTEN``.

    Raises:
        ValueError: ``HTTP_LISTEN`` is empty (the API is off).
    """
    address = settings.http_address
    if address is None:
        raise ValueError(
            "the call command talks to the running controller's HTTP API: "
            "set HTTP_LISTEN (and HTTP_TOKEN if it has one) as the controller has them"
        )
    host, port = address
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


async def place_call(
    settings: Settings, body: dict[str, Any], *, wait: bool, out: TextIO = sys.stdout
) -> int:
    """POST the call; with ``wait`` follow it to its end. Returns the exit status."""
    url = base_url(settings)
    token = settings.http_token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            async with http.post(f"{url}/calls", json=body) as response:
                reply = await response.json(content_type=None)
                if response.status != 202:
                    print(f"ari-realtime: call refused: {reply.get('error')}", file=sys.stderr)
                    return 2 if response.status in (400, 403, 422) else 1
            call_id = str(reply["id"])
            print(f"call {call_id}: ringing {body.get('endpoint') or body.get('number')}", file=out)
            if not wait:
                return 0
            record: dict[str, Any] = {}
            async for kind, data in _events(http, f"{url}/calls/{call_id}/events"):
                if kind == "transcript":
                    print(f"  {data.get('role', '?'):>6}: {data.get('text', '')}", file=out)
                elif kind == "tool_call":
                    args = json.dumps(data.get("arguments", {}), ensure_ascii=False)
                    print(f"  [tool] {data.get('name')} {args}", file=out)
                elif kind == "end":
                    record = data
                    break
    except aiohttp.ClientError as exc:
        print(
            f"ari-realtime: cannot reach the controller at {url} ({type(exc).__name__}); "
            "is `ari-realtime run` up, with this HTTP_LISTEN?",
            file=sys.stderr,
        )
        return 1
    status = record.get("result_status") or "unknown"
    print(
        f"outcome: {status}: {record.get('result_summary') or record.get('end_reason')}", file=out
    )
    for key, value in (record.get("result_data") or {}).items():
        print(f"  {key}: {value}", file=out)
    return 0 if status == "achieved" else 1


async def _events(http: aiohttp.ClientSession, url: str) -> AsyncIterator[tuple[str, Any]]:
    """Server-sent events as ``(event name, JSON data)``."""
    async with http.get(url) as response:
        if response.status != 200:
            return
        kind, data = "message", ""
        async for raw in response.content:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                yield kind, json.loads(data)
                kind, data = "message", ""
