"""Hostile input from Asterisk's side: events, REST replies, and per-call isolation.

Each test pins one failure found by review, with the input that triggered it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from controller.app import Controller
from controller.ari.events import (
    StasisStart,
    UnknownEvent,
    event_channel,
    parse_event,
)
from controller.ari.rest import AriClient
from controller.call.services import CallContext, CallServices
from controller.call.state import Outcome
from controller.config import load_settings
from controller.errors import AriConnectionError, AriProtocolError
from tests.webpeer import serve


def stasis_start(channel_id: str, **channel: Any) -> dict[str, Any]:
    return {
        "type": "StasisStart",
        "application": "voicebot",
        "args": ["100"],
        "channel": {"id": channel_id, "name": f"PJSIP/{channel_id}", **channel},
    }


# --- the events parser ----------------------------------------------------------------------


def test_a_deeply_nested_user_event_is_a_protocol_error_not_a_recursion_error() -> None:
    # What ``POST /ari/events/user/x?application=voicebot`` with a body of 1500
    # nested objects delivers: json.loads raised RecursionError, which ended
    # the events reader and with it the whole controller and every call.
    nested = '{"a":' * 1500 + "{}" + "}" * 1500
    message = '{"type":"ChannelUserevent","eventname":"x","userevent":' + nested + "}"
    with pytest.raises(AriProtocolError, match="not JSON"):
        parse_event(message)


@pytest.mark.parametrize(
    "message",
    [
        b'{"type":"StasisStart","channel":{"id":"a\\ud800"}}',  # a lone surrogate
        b'{"type":"StasisStart","channel":{"id":"\xff"}}',  # not UTF-8
        b'{"type":"StasisStart","channel":{"id":1e999}}',  # not a number JSON allows
        b'{"type":"StasisStart","channel":"PJSIP/1"}',  # the wrong type
        b'{"type":["StasisStart"]}',
        b"[]",
        b"",
    ],
)
def test_malformed_events_raise_only_the_protocol_error(message: bytes) -> None:
    with pytest.raises(AriProtocolError):
        parse_event(message)


def test_an_unknown_event_with_a_channel_that_does_not_validate_is_about_no_channel() -> None:
    # ChannelVarset and friends are kept raw; a channel we cannot read is no channel.
    event = parse_event('{"type":"ChannelVarset","channel":{"id":"c1","caller":"x"}}')
    assert isinstance(event, UnknownEvent)
    assert event_channel(event) is None
    good = parse_event('{"type":"ChannelVarset","channel":{"id":"c1"},"value":"a\\nb"}')
    channel = event_channel(good)
    assert channel is not None and channel.id == "c1"


# --- the supervisor: one call's failure is that call's -----------------------------------------


class Exploding:
    """A call whose event handling fails (a bug), and records how it was ended."""

    def __init__(self, context: CallContext, services: CallServices, *, explode: bool) -> None:
        self.call_id = context.call_id
        self.caller_channel_id = context.channel.id
        self.explode = explode
        self.events: list[str] = []
        self.ended: list[tuple[Outcome, str]] = []
        self.outbound = None

    def on_event(self, event: Any) -> None:
        if self.explode:
            raise KeyError("a bug in this call's handling")
        self.events.append(event.type)

    def request_end(self, outcome: Outcome, reason: str) -> None:
        self.ended.append((outcome, reason))

    async def run(self) -> None:
        await asyncio.sleep(3600)


async def test_a_call_failing_on_its_event_is_ended_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: dict[str, Exploding] = {}

    def factory(context: CallContext, services: CallServices) -> Any:
        call = Exploding(context, services, explode=context.channel.id == "bad")
        calls[context.channel.id] = call
        return call

    controller = Controller(load_settings(), call_factory=factory)
    try:
        for channel_id in ("bad", "good"):
            controller.dispatch(parse_event(stasis_start(channel_id)))
        hangup = {"type": "ChannelDtmfReceived", "digit": "1", "application": "voicebot"}
        for channel_id in ("bad", "good"):
            controller.dispatch(parse_event({**hangup, "channel": {"id": channel_id}}))
        assert calls["bad"].ended == [(Outcome.FAILED, "crashed on an ARI event")]
        assert calls["good"].ended == [] and calls["good"].events == ["ChannelDtmfReceived"]
        assert "call failed on an ARI event" in caplog.text
    finally:
        for task in controller._tasks:
            task.cancel()
        await asyncio.gather(*controller._tasks, return_exceptions=True)


async def test_a_caller_whose_call_cannot_be_created_is_handed_back() -> None:
    requests: list[tuple[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        requests.append((request.path, request.query_string))
        return web.Response(status=204)

    async with serve(record) as url:
        controller = Controller(load_settings(ARI_URL=url), call_factory=_refuse)
        controller.dispatch(parse_event(stasis_start("c1")))
        await asyncio.wait_for(asyncio.gather(*controller._tasks), 5)
        await controller.ari.close()
    assert [path for path, _ in requests] == [
        "/ari/channels/c1/variable",
        "/ari/channels/c1/continue",
    ]
    assert "ARI_REALTIME_RESULT" in requests[0][1] and "failed_to_start" in requests[0][1]


def _refuse(context: CallContext, services: CallServices) -> Any:
    raise RuntimeError("cannot build a call")


async def test_a_bug_while_reading_events_reconnects_rather_than_stopping() -> None:
    controller = Controller(load_settings())

    class Stream:
        async def events(self) -> AsyncIterator[Any]:
            yield parse_event(stasis_start("x"))
            raise TypeError("a bug")

    controller.dispatch = lambda event: None  # type: ignore[method-assign]
    with pytest.raises(AriConnectionError, match="TypeError"):
        await controller._read(Stream())  # type: ignore[arg-type]


# --- REST replies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "call"),
    [
        (b'{"not": "a list"}', "list_channels"),
        (b'[{"id": 5}]', "list_channels"),
        (b"[1, 2]", "list_bridges"),
        (b"\xff\xfe", "list_channels"),
        (b"[" * 5000, "list_channels"),
        (b'"text"', "info"),
        (b'[{"name": "x"}, 3]', "modules"),
    ],
)
async def test_rest_replies_of_the_wrong_shape_raise_the_protocol_error(
    body: bytes, call: str
) -> None:
    async def reply(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async with serve(reply) as url, AriClient(url, "u", "p") as ari:
        with pytest.raises(AriProtocolError):
            await getattr(ari, call)()


async def test_a_rest_reply_is_read_only_up_to_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("controller.ari.rest.MAX_REPLY_BYTES", 1000)

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"[" + b'{"id":"c"},' * 200)
        await asyncio.sleep(3600)  # never ends: the client must not wait for the rest
        return response

    async with serve(endless) as url, AriClient(url, "u", "p", timeout=5) as ari:
        with pytest.raises(AriProtocolError, match="larger than 1000 bytes"):
            await asyncio.wait_for(ari.list_channels(), 3)


async def test_an_error_reason_from_asterisk_is_one_line() -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"message": "no\nforged line"}, status=404)

    async with serve(refuse) as url, AriClient(url, "u", "p") as ari:
        with pytest.raises(Exception) as info:
            await ari.answer("c1")
    assert "\n" not in str(info.value) and "no\\nforged line" in str(info.value)


def test_stasis_start_args_reach_the_call_as_given() -> None:
    event = parse_event(json.dumps(stasis_start("c1") | {"args": ["1" * 300, "profile=x"]}))
    assert isinstance(event, StasisStart) and len(event.args[0]) == 300


logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
