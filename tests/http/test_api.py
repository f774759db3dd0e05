"""The JSON API over real HTTP: health, listing and reading calls, hangup, tokens, errors."""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from controller.errors import ConfigError
from controller.http import HttpServer, LiveHub, Metrics, create_app
from controller.records import OUTCOMES, CallRecord, TranscriptEntry
from tests.http.conftest import T0, TOKEN, FakeController, MemoryRecords, Stack, make_record


class BrokenStore(MemoryRecords):
    """A store whose disk failed."""

    async def get(self, call_id: str) -> CallRecord | None:
        raise OSError("disk I/O error")

    async def list(self, **kwargs: Any) -> list[CallRecord]:
        raise OSError("disk I/O error")

    async def ping(self) -> bool:
        raise OSError("disk I/O error")


class UnreadyStore(MemoryRecords):
    async def ping(self) -> bool:
        return False


# --- /healthz ---------------------------------------------------------------------------


async def test_healthz_is_200_when_everything_is_up(stack: Stack) -> None:
    async with stack.http.get("/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"ari_connected": True, "app_registered": True, "store": True}


async def test_healthz_is_503_naming_what_is_down(stack: Stack) -> None:
    stack.controller.checks["app_registered"] = False
    async with stack.http.get("/healthz") as resp:
        assert resp.status == 503
        assert await resp.json() == {"ari_connected": True, "app_registered": False, "store": True}


@pytest.mark.parametrize("store", [UnreadyStore(), BrokenStore()], ids=["unready", "broken"])
async def test_healthz_reports_the_store(make_stack, store: MemoryRecords) -> None:
    async with make_stack(store=store) as stack, stack.http.get("/healthz") as resp:
        assert resp.status == 503
        assert (await resp.json())["store"] is False


# --- tokens -----------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/calls"),
    ("GET", "/calls/c1"),
    ("GET", "/calls/c1/events"),
    ("POST", "/calls/c1/hangup"),
    ("GET", "/metrics"),
    ("GET", "/static/app.js"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
    ids=["missing", "wrong", "not-bearer", "longer", "empty"],
)
async def test_every_endpoint_but_healthz_needs_the_token(
    make_stack, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with make_stack(token=TOKEN) as stack:
        stack.start(make_record("c1"))
        async with stack.http.request(method, path, headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            body = await resp.json()
            assert "Authorization: Bearer" in body["error"]
            assert TOKEN not in await resp.text()


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_the_right_token_opens_every_endpoint(make_stack, method: str, path: str) -> None:
    async with make_stack(token=TOKEN) as stack:
        stack.start(make_record("c1"))
        headers = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
        async with stack.http.request(method, path, headers=headers) as resp:
            assert resp.status in (200, 202)
            if path.endswith("/events"):
                assert await resp.content.readline() == b"retry: 3000\n"


async def test_healthz_needs_no_token(make_stack) -> None:
    async with make_stack(token=TOKEN) as stack, stack.http.get("/healthz") as resp:
        assert resp.status == 200


async def test_the_live_view_asks_for_the_token_once_then_uses_a_cookie(make_stack) -> None:
    async with make_stack(token=TOKEN) as stack:
        async with stack.http.get("/", allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/login"
        async with stack.http.get("/login") as resp:
            assert resp.status == 200
            assert '<form method="post" action="/login">' in await resp.text()
        async with stack.http.post("/login", data={"token": "guess-0123456789abcd"}) as resp:
            assert resp.status == 401
            assert "not the one in HTTP_TOKEN" in await resp.text()
            assert "Set-Cookie" not in resp.headers
        async with stack.http.post("/login", data={"token": TOKEN}, allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/"
            cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert TOKEN not in cookie  # an HMAC of the token, not the token
        # The client session keeps the cookie, as a browser does.
        async with stack.http.get("/") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert '<script src="/static/app.js"' in await resp.text()
        async with stack.http.get("/calls") as resp:
            assert resp.status == 200
        async with stack.http.get("/login", allow_redirects=False) as resp:
            assert resp.status == 303  # already in


async def test_a_forged_cookie_is_refused(make_stack) -> None:
    async with make_stack(token=TOKEN) as stack:
        stack.http.cookie_jar.update_cookies({"ari_realtime_session": TOKEN})
        async with stack.http.get("/calls") as resp:
            assert resp.status == 401


async def test_without_a_token_login_is_not_needed(stack: Stack) -> None:
    async with stack.http.get("/login", allow_redirects=False) as resp:
        assert resp.status == 303
    async with stack.http.get("/") as resp:
        assert resp.status == 200


def test_a_public_address_without_a_token_is_refused_in_one_line() -> None:
    app = create_app(
        records=MemoryRecords(), live=LiveHub(), metrics=Metrics(), controller=FakeController()
    )
    with pytest.raises(ConfigError) as info:
        HttpServer(app, "0.0.0.0", 8080)
    assert str(info.value).startswith("HTTP_TOKEN: required when HTTP_LISTEN is not a loopback")
    token_app = create_app(
        records=MemoryRecords(),
        live=LiveHub(),
        metrics=Metrics(),
        controller=FakeController(),
        token=SecretStr(TOKEN),
    )
    HttpServer(token_app, "0.0.0.0", 8080)  # with a token it may


async def test_a_taken_port_is_one_config_error_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = create_app(
            records=MemoryRecords(), live=LiveHub(), metrics=Metrics(), controller=FakeController()
        )
        with pytest.raises(
            ConfigError, match=rf"^HTTP_LISTEN: cannot listen on 127.0.0.1:{port}: "
        ):
            await HttpServer(app, "127.0.0.1", port).start()


# --- /calls -----------------------------------------------------------------------------


def _ended(stack: Stack, call_id: str, minute: int, **fields: Any) -> CallRecord:
    record = stack.start(make_record(call_id, minute, **fields))
    return stack.end(record, outcome=fields.pop("outcome", "caller_hung_up"))


async def _calls(stack: Stack, query: str = "") -> list[dict[str, Any]]:
    async with stack.http.get(f"/calls{query}") as resp:
        assert resp.status == 200, await resp.text()
        calls: list[dict[str, Any]] = (await resp.json())["calls"]
        return calls


async def test_calls_are_listed_newest_first_with_live_calls_and_without_lists(
    stack: Stack,
) -> None:
    _ended(stack, "old", 0, transcript=[TranscriptEntry(role="caller", text="hi", start_ms=0)])
    _ended(stack, "mid", 1)
    stack.start(make_record("live", 2))
    calls = await _calls(stack)
    assert [c["id"] for c in calls] == ["live", "mid", "old"]
    assert [c["status"] for c in calls] == ["live", "ended", "ended"]
    assert not {"transcript", "tool_calls", "dtmf", "turns"} & set(calls[2])
    assert calls[2]["caller_number"] == "+4930123456"


async def test_a_live_call_is_listed_before_the_store_has_it(stack: Stack) -> None:
    stack.hub.call_started(make_record("only-live", 3))  # the store's write is still queued
    assert [c["id"] for c in await _calls(stack)] == ["only-live"]


async def test_calls_are_filtered_and_paged(stack: Stack) -> None:
    for minute in range(6):
        _ended(
            stack,
            f"c{minute}",
            minute,
            direction="outbound" if minute % 2 else "inbound",
            outcome="failed" if minute == 4 else "caller_hung_up",
        )
    stack.start(make_record("live-out", 9, direction="outbound"))
    assert [c["id"] for c in await _calls(stack, "?limit=2")] == ["live-out", "c5"]
    before = (T0 + dt.timedelta(minutes=3)).isoformat().replace("+00:00", "Z")
    assert [c["id"] for c in await _calls(stack, f"?before={before}")] == ["c2", "c1", "c0"]
    naive = (T0 + dt.timedelta(minutes=2)).replace(tzinfo=None).isoformat()
    assert [c["id"] for c in await _calls(stack, f"?before={naive}")] == ["c1", "c0"]
    # 10:32+01:00 is 09:32 UTC; an unencoded "+" arrives as a space and still counts.
    assert [c["id"] for c in await _calls(stack, "?before=2026-03-02T10:32:00+01:00")] == [
        "c1",
        "c0",
    ]
    assert [c["id"] for c in await _calls(stack, "?direction=outbound")] == [
        "live-out",
        "c5",
        "c3",
        "c1",
    ]
    assert [c["id"] for c in await _calls(stack, "?outcome=failed")] == ["c4"]
    assert [c["id"] for c in await _calls(stack, "?direction=inbound&outcome=failed")] == ["c4"]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("limit=0", "limit: must be an integer from 1 to 500 (got '0')"),
        ("limit=501", "limit: must be an integer from 1 to 500 (got '501')"),
        ("limit=-3", "limit: must be an integer from 1 to 500 (got '-3')"),
        ("limit=ten", "limit: must be an integer from 1 to 500 (got 'ten')"),
        ("limit=", "limit: must be an integer from 1 to 500 (got '')"),
        ("limit=%D9%A3", "limit: must be an integer from 1 to 500 (got '\u0663')"),
        ("before=yesterday", "before: must be an ISO 8601 time such as 2026-01-31T12:00:00Z"),
        ("direction=sideways", "direction: must be one of inbound, outbound (got 'sideways')"),
        ("outcome=bored", f"outcome: must be one of {', '.join(OUTCOMES)} (got 'bored')"),
        ("sort=asc", "unknown parameter 'sort'; allowed: limit, before, direction, outcome"),
        ("limit=5&limit=6", "limit: give it once"),
    ],
)
async def test_bad_query_parameters_are_400_naming_the_parameter(
    stack: Stack, query: str, error: str
) -> None:
    async with stack.http.get(f"/calls?{query}") as resp:
        assert resp.status == 400
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"].startswith(error)


async def test_a_failing_store_is_503_in_json(make_stack) -> None:
    async with make_stack(store=BrokenStore()) as stack:
        for path in ("/calls", "/calls/nope", "/calls/nope/events"):
            async with stack.http.get(path) as resp:
                assert resp.status == 503
                assert "store did not answer" in (await resp.json())["error"]


# --- /calls/{id} ------------------------------------------------------------------------


async def test_a_call_is_read_whole(stack: Stack) -> None:
    line = TranscriptEntry(role="agent", text="Good morning!", start_ms=900, end_ms=2100)
    final = _ended(stack, "c1", 0, transcript=[line], cost_usd=0.0123)
    async with stack.http.get("/calls/c1") as resp:
        assert resp.status == 200
        assert CallRecord.model_validate(await resp.json()) == final


async def test_a_live_call_is_read_from_the_hub_with_its_events_applied(stack: Stack) -> None:
    stack.start(make_record("c1"))
    stack.observers.call_event(
        "c1", "transcript", {"role": "caller", "text": "Hello", "start_ms": 100}
    )
    stack.observers.call_event(
        "c1", "transcript", {"role": "caller", "text": "Hello there", "start_ms": 100}
    )
    async with stack.http.get("/calls/c1") as resp:
        body = await resp.json()
    assert body["status"] == "live"
    assert [t["text"] for t in body["transcript"]] == ["Hello there"]


async def test_an_unknown_call_is_404_in_json(stack: Stack) -> None:
    for path in ("/calls/nope", "/calls/nope/events"):
        async with stack.http.get(path) as resp:
            assert resp.status == 404
            assert await resp.json() == {"error": "no call 'nope'"}


# --- hangup -----------------------------------------------------------------------------


async def test_an_operator_ends_a_live_call(stack: Stack) -> None:
    stack.start(make_record("c1"))
    async with stack.http.post("/calls/c1/hangup") as resp:
        assert resp.status == 202
        assert await resp.json() == {"call_id": "c1", "status": "hanging up"}
    assert stack.controller.hung_up == ["c1"]
    async with stack.http.post("/calls/c2/hangup") as resp:
        assert resp.status == 404
        assert await resp.json() == {"error": "no live call 'c2'"}


# --- anything else ----------------------------------------------------------------------


async def test_unknown_paths_and_methods_answer_in_json(stack: Stack) -> None:
    async with stack.http.get("/nowhere") as resp:
        assert resp.status == 404
        assert await resp.json() == {"error": "Not Found"}
    async with stack.http.delete("/calls") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET,HEAD,POST"
    async with stack.http.get("/calls/c1/hangup") as resp:
        assert resp.status == 405
    async with stack.http.get("/static/login.html") as resp:
        assert resp.status == 404


async def test_responses_carry_security_headers(stack: Stack) -> None:
    async with stack.http.get("/calls") as resp:
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"
    async with stack.http.get("/static/style.css") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/css"


async def test_a_controller_failure_is_500_without_internals(make_stack) -> None:
    class CrashingController(FakeController):
        def hangup(self, call_id: str) -> bool:
            raise RuntimeError("secret internals")

    async with (
        make_stack(controller=CrashingController()) as stack,
        stack.http.post("/calls/c1/hangup") as resp,
    ):
        assert resp.status == 500
        assert "secret" not in await resp.text()


async def test_stop_closes_the_port(make_stack) -> None:
    async with make_stack() as stack:
        url = stack.url
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{url}/healthz")


# --- outbound calls -------------------------------------------------------------------


async def test_an_allowed_call_is_placed_and_answered_at_once_with_its_id(stack: Stack) -> None:
    body = {"endpoint": "PJSIP/company@tester", "purpose": "Ask for the opening hours."}
    async with stack.http.post("/calls", json=body) as resp:
        assert resp.status == 202
        assert await resp.json() == {"id": "out1", "status": "ringing"}
    assert stack.controller.dialled == ["PJSIP/company@tester"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"endpoint": "PJSIP/900123@premium", "purpose": "Win the lottery."},
            403,
            "PJSIP/900123@premium is not allowed by OUTBOUND_ALLOW; nothing was dialled",
        ),
        ({"number": "5551234", "purpose": "Call the trunk."}, 403, "OUTBOUND_ALLOW"),
        ({"purpose": "Nowhere to call."}, 422, "give exactly one of endpoint"),
        ({"endpoint": "company", "purpose": "No technology."}, 422, "must be a dial string"),
        ({"endpoint": "PJSIP/a b", "purpose": "Space."}, 422, "characters a dial string"),
        ({"endpoint": "PJSIP/company@tester"}, 422, "purpose: Field required"),
        (
            {"endpoint": "PJSIP/company@tester", "purpose": "Hi there", "shoe_size": 9},
            422,
            "shoe_size: Extra inputs are not permitted",
        ),
        (
            {
                "endpoint": "PJSIP/company@tester",
                "purpose": "Leave one",
                "on_machine": "leave_message",
            },
            422,
            "needs machine_message",
        ),
    ],
)
async def test_a_refused_or_malformed_call_is_never_dialled(
    stack: Stack, body: dict[str, object], status: int, message: str
) -> None:
    async with stack.http.post("/calls", json=body) as resp:
        assert resp.status == status
        assert message in (await resp.json())["error"]
    assert stack.controller.dialled == []


async def test_calls_beyond_the_cap_are_refused_with_retry_after(stack: Stack) -> None:
    body = {"endpoint": "PJSIP/company@tester", "purpose": "Ask for the opening hours."}
    async with stack.http.post("/calls", json=body) as resp:
        assert resp.status == 202
    async with stack.http.post("/calls", json=body) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "10"
        assert "OUTBOUND_MAX_CONCURRENT=1" in (await resp.json())["error"]
