"""Outbound mode's parts without Asterisk: messages, the listener, takeover decisions, workers.

The listener is exercised for real (aiohttp on a free loopback port) with a
client playing Asterisk: Basic auth, subprotocol ``ari``, RESTRequest /
RESTResponse matching, errors and timeouts, ``/healthz``, ``SO_REUSEPORT``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from controller.ari.events import Bridge, Channel, StasisStart, UnknownEvent
from controller.ari.listener import AriListener, basic_auth_matches
from controller.ari.percall import AriWebsocket, WebsocketAriClient
from controller.ari.wsrest import (
    RestResponse,
    parse_message,
    per_call_channel_name,
    query_strings,
    rest_request,
)
from controller.config import ENV_NAMES, load_settings
from controller.devtools.rig.wait import wait_for
from controller.errors import AriConnectionError, AriNotFound, ConfigError
from controller.pool.supervisor import parse_workers, worker_overrides
from controller.pool.takeover import (
    Served,
    asterisk_time,
    call_resources,
    orphans,
    parse_served,
    served_value,
)

USER, PASSWORD = "voicebot", "listener-secret-0123"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- messages (pure) ----------------------------------------------------------------------


def test_a_rest_request_is_what_asterisk_parses() -> None:
    text = rest_request(
        "r1",
        "post",
        "/channels/abc/variable",
        {"variable": "X", "value": "a b", "skip": None, "flag": True},
        {"variables": {"A": "1"}},
    )
    message = json.loads(text)
    assert message == {
        "type": "RESTRequest",
        "request_id": "r1",
        "transaction_id": "r1",
        "method": "POST",
        "uri": "channels/abc/variable",
        "query_strings": [
            {"name": "variable", "value": "X"},
            {"name": "value", "value": "a b"},
            {"name": "flag", "value": "true"},
        ],
        "content_type": "application/json",
        # ARI reads the body as a string holding JSON, not as an object.
        "message_body": '{"variables":{"A":"1"}}',
    }
    assert "query_strings" not in json.loads(rest_request("r2", "GET", "bridges"))
    assert query_strings({"n": 3, "f": False}) == [
        {"name": "n", "value": "3"},
        {"name": "f", "value": "false"},
    ]


def test_messages_are_responses_or_events() -> None:
    response = parse_message(
        json.dumps(
            {
                "type": "RESTResponse",
                "request_id": "r1",
                "transaction_id": "r1",
                "status_code": 404,
                "reason_phrase": "Not Found",
                "uri": "channels/x",
                "content_type": "application/json",
                "message_body": '{"message":"Channel not found"}',
            }
        )
    )
    assert isinstance(response, RestResponse)
    assert response.reason() == "Channel not found"
    ok = parse_message('{"type": "RESTResponse", "request_id": "r2", "status_code": 204}')
    assert isinstance(ok, RestResponse) and ok.body() is None and ok.reason() == ""
    start = parse_message(
        json.dumps(
            {
                "type": "StasisStart",
                "application": "voicebot:PJSIP/tester-00000001",
                "asterisk_id": "02:42:ac:11:00:02",
                "args": ["100"],
                "channel": {"id": "1.1", "name": "PJSIP/tester-00000001"},
            }
        )
    )
    assert isinstance(start, StasisStart) and start.application.startswith("voicebot:")
    other = parse_message('{"type": "ApplicationRegistered", "application": "voicebot:x"}')
    assert isinstance(other, UnknownEvent)


@pytest.mark.parametrize("text", ["not json", "[1]", '{"type": "RESTResponse"}', '{"no": "type"}'])
def test_bad_messages_are_protocol_errors(text: str) -> None:
    from controller.ari.events import AriProtocolError

    with pytest.raises(AriProtocolError):
        parse_message(text)


def test_the_per_call_application_names_the_channel() -> None:
    assert per_call_channel_name("voicebot:PJSIP/tester-00000001", "voicebot") == (
        "PJSIP/tester-00000001"
    )
    assert per_call_channel_name("voicebot:Local/s@seed-00000001;1", "voicebot") == (
        "Local/s@seed-00000001;1"
    )
    assert per_call_channel_name("voicebot", "voicebot") is None
    assert per_call_channel_name("voicebot:", "voicebot") is None
    assert per_call_channel_name("other:PJSIP/x", "voicebot") is None


# --- takeover decisions (pure) -------------------------------------------------------------


def test_served_round_trips_and_refuses_what_is_not_ours() -> None:
    assert parse_served(served_value("abc123", "inbound")) == Served("abc123", "inbound")
    assert parse_served(served_value("abc123", "outbound")) == Served("abc123", "outbound")
    for value in ("", "abc", "abc sideways", "a;b inbound", "x" * 65 + " inbound"):
        assert parse_served(value) is None, value


def test_call_resources_are_the_ids_a_call_gives_them() -> None:
    ids = call_resources("voicebot-", "abc123")
    assert ids.bridge_id == "voicebot-br-abc123"
    assert ids.external_channel_id == "voicebot-em-abc123"
    assert ids.outbound_channel_id == "voicebot-out-abc123"


NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)


def at(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def test_asterisk_times_parse() -> None:
    assert asterisk_time("2026-11-29T17:24:20.328+0000") == dt.datetime(
        2026, 11, 29, 17, 24, 20, 328000, tzinfo=dt.UTC
    )
    assert asterisk_time("2026-11-29T17:24:20+0100") is not None
    assert asterisk_time("yesterday") is None


def test_sweeps_take_only_old_bridges_and_media_channels_no_call_uses() -> None:
    channels = [
        Channel(id="caller-1", creationtime=at(600)),
        Channel(id="voicebot-em-live", creationtime=at(600)),
        Channel(id="voicebot-em-lonely", creationtime=at(600)),  # in no bridge: orphan
        Channel(id="voicebot-em-new", creationtime=at(5)),  # a call setting up
        Channel(id="voicebot-em-dead", creationtime=at(600)),
        Channel(id="voicebot-out-ringing", creationtime=at(600)),  # dialled: never swept
        Channel(id="other-em-x", creationtime=at(600)),  # another app's
    ]
    bridges = [
        Bridge(
            id="voicebot-br-live",
            channels=["caller-1", "voicebot-em-live"],
            creationtime=at(600),
        ),
        Bridge(id="voicebot-br-dead", channels=["voicebot-em-dead"], creationtime=at(600)),
        Bridge(id="voicebot-br-empty", channels=[], creationtime=at(600)),
        Bridge(id="voicebot-br-new", channels=[], creationtime=at(3)),
        Bridge(id="someone-elses", channels=[], creationtime=at(600)),
    ]
    found = orphans(channels, bridges, "voicebot-", NOW)
    assert set(found.bridge_ids) == {"voicebot-br-dead", "voicebot-br-empty"}
    assert set(found.channel_ids) == {"voicebot-em-dead", "voicebot-em-lonely"}


# --- settings and workers ------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("clean_env")
def test_outbound_mode_settings() -> None:
    settings = load_settings(ARI_MODE="outbound", ARI_PASSWORD="pw", ARI_LISTEN="0.0.0.0:8765")
    assert settings.ari_mode == "outbound"
    assert settings.ari_listen_address == ("0.0.0.0", 8765)
    assert load_settings().ari_mode == "inbound"
    for overrides, message in (
        ({"ARI_MODE": "outbound", "ARI_LISTEN": "127.0.0.1:1"}, "needs ARI_PASSWORD"),
        ({"ARI_MODE": "outbound", "ARI_PASSWORD": "pw"}, "ARI_LISTEN: required"),
        ({"ARI_LISTEN": "nonsense"}, "ARI_LISTEN: must be HOST:PORT"),
        ({"ARI_LISTEN_CERT": "/etc/hostname"}, "go together"),
        (
            {"ARI_LISTEN_CERT": "/nonexistent.pem", "ARI_LISTEN_KEY": "/nonexistent.key"},
            "is not a readable file",
        ),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(**overrides)


@pytest.mark.usefixtures("clean_env")
def test_each_worker_gets_its_id_and_http_port() -> None:
    settings = load_settings(CONTROLLER_ID="pbx1/voicebot", HTTP_LISTEN="127.0.0.1:8080")
    assert worker_overrides(settings, 0)["HTTP_LISTEN"] == "127.0.0.1:8080"
    two = worker_overrides(settings, 2)
    assert two["HTTP_LISTEN"] == "127.0.0.1:8082"
    assert two["CONTROLLER_ID"] == "pbx1/voicebot/w2"
    assert "HTTP_LISTEN" not in worker_overrides(load_settings(HTTP_LISTEN=""), 1)


def test_workers_count() -> None:
    assert parse_workers("3") == 3
    assert parse_workers("auto") >= 1
    for bad in ("0", "-1", "many", "257"):
        with pytest.raises(ValueError, match="from 1 to 256"):
            parse_workers(bad)


def test_workers_need_outbound_mode() -> None:
    env = {"PATH": "/usr/bin:/bin", "ARI_PASSWORD": "x"}
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "run", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--workers needs ARI_MODE=outbound" in proc.stderr


# --- basic auth ------------------------------------------------------------------------------


def test_basic_auth_wants_exactly_the_user_and_password() -> None:
    assert basic_auth_matches(basic(USER, PASSWORD), USER, PASSWORD)
    assert basic_auth_matches("basic " + basic(USER, PASSWORD)[6:], USER, PASSWORD)
    for header in (
        "",
        basic(USER, PASSWORD + "x"),
        basic(USER + "x", PASSWORD),
        basic(USER, ""),
        "Bearer " + PASSWORD,
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
    ):
        assert not basic_auth_matches(header, USER, PASSWORD), header


# --- the listener, for real -----------------------------------------------------------------

Handler = Callable[[AriWebsocket], Awaitable[None]]


class Harness:
    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.connections: list[AriWebsocket] = []

    async def on_connection(self, connection: AriWebsocket) -> None:
        self.connections.append(connection)
        if self.handler is not None:
            await self.handler(connection)


@pytest.fixture
async def listener() -> AsyncIterator[tuple[AriListener, Harness]]:
    harness = Harness()
    server = AriListener(
        "127.0.0.1", 0, user=USER, password=PASSWORD, on_connection=harness.on_connection
    )
    await server.start()
    try:
        yield server, harness
    finally:
        await server.close()


async def test_wrong_or_missing_credentials_get_401_and_no_connection(
    listener: tuple[AriListener, Harness], caplog: pytest.LogCaptureFixture
) -> None:
    server, harness = listener
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": basic(USER, "wrong-password-here")}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(f"{server.url}/ari", protocols=("ari",), headers=headers)
            assert err.value.status == 401
    assert harness.connections == []
    assert server.refused == 2
    assert "wrong-password-here" not in caplog.text
    assert "user=voicebot" in caplog.text


async def test_healthz_answers_on_the_call_port(listener: tuple[AriListener, Harness]) -> None:
    server, _ = listener
    url = f"http://127.0.0.1:{server.port}/healthz"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert await response.json() == {"accepting": True}


async def test_requests_and_events_share_the_connection(
    listener: tuple[AriListener, Harness],
) -> None:
    server, harness = listener
    results: dict[str, Any] = {}
    events: list[str] = []

    async def handler(connection: AriWebsocket) -> None:
        reader = asyncio.ensure_future(_collect(connection, events))
        client = WebsocketAriClient(connection)
        results["ping"] = await client.ping()
        with pytest.raises(AriNotFound, match="Channel not found"):
            await client.answer("gone")
        connection.timeout = 0.2
        with pytest.raises(AriConnectionError, match="no answer"):
            await client.get_variable("slow", "X")
        await reader

    harness.handler = handler
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            f"{server.url}/ari",
            protocols=("ari",),
            headers={"Authorization": basic(USER, PASSWORD)},
        )
        assert ws.protocol == "ari"
        await ws.send_str(json.dumps({"type": "ApplicationRegistered", "application": "a:b"}))
        for status, body in ((200, '{"ping":"pong"}'), (404, '{"message":"Channel not found"}')):
            request = json.loads((await ws.receive()).data)
            assert request["type"] == "RESTRequest"
            # An event in between does not disturb the matching.
            await ws.send_str(json.dumps({"type": "ChannelVarset", "application": "a:b"}))
            await ws.send_str(
                json.dumps(
                    {
                        "type": "RESTResponse",
                        "request_id": request["request_id"],
                        "status_code": status,
                        "content_type": "application/json",
                        "message_body": body,
                    }
                )
            )
        slow = json.loads((await ws.receive()).data)
        assert slow["uri"] == "channels/slow/variable"
        await asyncio.sleep(0.4)  # never answered: the request times out
        await ws.close()
    await _until(lambda: not server.connections)
    assert results["ping"] == {"ping": "pong"}
    assert events == ["ApplicationRegistered", "ChannelVarset", "ChannelVarset"]
    assert harness.connections[0].application == "a:b"


async def test_requests_fail_at_once_when_the_connection_closes(
    listener: tuple[AriListener, Harness],
) -> None:
    server, harness = listener
    outcome: list[BaseException] = []

    async def handler(connection: AriWebsocket) -> None:
        reader = asyncio.ensure_future(_collect(connection, []))
        try:
            await WebsocketAriClient(connection).hangup("x")
        except AriConnectionError as exc:
            outcome.append(exc)
        try:
            await WebsocketAriClient(connection).hangup("y")
        except AriConnectionError as exc:
            outcome.append(exc)
        await reader

    harness.handler = handler
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            f"{server.url}/", protocols=("ari",), headers={"Authorization": basic(USER, PASSWORD)}
        )
        await ws.receive()  # the first request, never answered
        await ws.close()
    await _until(lambda: len(outcome) == 2)
    assert all("closed" in str(exc) for exc in outcome)


async def test_workers_share_the_port_with_so_reuseport(
    listener: tuple[AriListener, Harness],
) -> None:
    server, _ = listener
    second = AriListener(
        "127.0.0.1", server.port, user=USER, password=PASSWORD, on_connection=_ignore
    )
    await second.start()
    try:
        assert second.port == server.port
        await server.stop_accepting()  # a draining worker: the other still answers
        url = f"http://127.0.0.1:{server.port}/healthz"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 200
    finally:
        await second.close()


async def _ignore(connection: AriWebsocket) -> None:
    return None


async def _collect(connection: AriWebsocket, into: list[str]) -> None:
    async for event in connection.events():
        into.append(event.type)


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    await wait_for(predicate, timeout, interval=0.01)


# --- PoolController against a scripted Asterisk --------------------------------------------


class _Records:
    """A store with one live record (what a dead worker left)."""

    def __init__(self, record: Any) -> None:
        self.record = record

    async def get(self, call_id: str) -> Any:
        return self.record if call_id == self.record.id else None

    async def list(self, **kwargs: Any) -> list[Any]:
        return [self.record]

    async def ping(self) -> bool:
        return True


class _Ended:
    def __init__(self) -> None:
        self.ended: list[Any] = []

    def call_started(self, record: Any) -> None:
        pass

    def call_event(self, call_id: str, kind: str, data: dict[str, Any]) -> None:
        pass

    def call_ended(self, record: Any) -> None:
        self.ended.append(record)


@pytest.mark.usefixtures("clean_env")
async def test_a_reconnect_without_stasisstart_is_taken_over_and_handed_back() -> None:
    from controller.pool.worker import PoolController
    from controller.records import CallRecord

    port = _free_port()
    settings = load_settings(
        ARI_MODE="outbound",
        ARI_LISTEN=f"127.0.0.1:{port}",
        ARI_USER=USER,
        ARI_PASSWORD=PASSWORD,
        HTTP_LISTEN="",
        MEDIA_PORTS="41300-41399",
    )
    lost = CallRecord(
        id="abc123",
        controller_id="host/voicebot/w1",
        started_at=dt.datetime.now(dt.UTC),
    )
    observers = _Ended()
    pool = PoolController(settings, observers=observers, records=_Records(lost))
    task = asyncio.create_task(pool.run())
    requests: list[tuple[str, str, dict[str, str]]] = []
    try:
        await asyncio.wait_for(pool.ready.wait(), 5)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                f"ws://127.0.0.1:{port}/ari",
                protocols=("ari",),
                headers={"Authorization": basic(USER, PASSWORD)},
            )
            # What Asterisk sends on a reconnect: ApplicationRegistered, no StasisStart.
            await ws.send_str(
                json.dumps(
                    {
                        "type": "ApplicationRegistered",
                        "application": "voicebot:PJSIP/tester-00000007",
                        "asterisk_id": "02:42:ac:11:00:02",
                        "timestamp": "2026-11-29T12:00:00.000+0000",
                    }
                )
            )
            answers = {
                ("GET", "channels"): (200, [{"id": "c7", "name": "PJSIP/tester-00000007"}]),
                ("GET", "channels/c7/variable"): (200, {"value": "abc123 inbound"}),
            }
            while not any(uri == "channels/c7/continue" for _, uri, _ in requests):
                message = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
                query = {q["name"]: q["value"] for q in message.get("query_strings", [])}
                requests.append((message["method"], message["uri"], query))
                status, body = answers.get((message["method"], message["uri"]), (204, None))
                reply: dict[str, Any] = {
                    "type": "RESTResponse",
                    "request_id": message["request_id"],
                    "status_code": status,
                }
                if body is not None:
                    reply["content_type"] = "application/json"
                    reply["message_body"] = json.dumps(body)
                await ws.send_str(json.dumps(reply))
            await ws.close()
    finally:
        pool.request_stop()
        await asyncio.wait_for(task, 15)
    assert [(m, u) for m, u, _ in requests] == [
        ("GET", "channels"),
        ("GET", "channels/c7/variable"),
        ("DELETE", "channels/voicebot-em-abc123"),
        ("DELETE", "bridges/voicebot-br-abc123"),
        ("POST", "channels/c7/variable"),
        ("POST", "channels/c7/continue"),
    ]
    assert requests[1][2] == {"variable": "ARI_REALTIME_SERVED"}
    assert requests[4][2] == {"variable": "ARI_REALTIME_RESULT", "value": "controller_lost"}
    [closed] = observers.ended
    assert (closed.id, closed.status, closed.outcome) == ("abc123", "ended", "controller_crashed")
    assert pool.calls == {}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
