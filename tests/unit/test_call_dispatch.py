"""Tool-call dispatch of one Call, fed recorded GA server event streams.

The streams in ``tests/data/realtime/tool_*.jsonl`` are what the Realtime
API sends for a response that calls a function, in GA order and shape
(checked below against the ``openai`` package's types):
``response.created``, ``output_item.added`` (function_call),
``function_call_arguments.delta`` x3, ``function_call_arguments.done``,
``output_item.done``, ``conversation.item.done``, ``response.done``,
``rate_limits.updated``. Each line is parsed with the controller's own
``parse_server_event`` and handed to the call's model-event handler.

The controller and ARI here are fakes that only *record* what the call asks
for (this is a unit test of pure dispatch; the e2e tests run the real PBX).
One timeline records, in order, each event fed, each ARI request and each
event the call sends to the model, so the assertions are about order.

At the end: the barge-in gate with ``BARGE_IN_MIN_MS``, fed speech events and
the caller's own audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from controller.agents import AgentsFile, resolve_agent
from controller.ari.events import Channel, parse_event
from controller.audio.g711 import ULAW_SILENCE_FRAME, ulaw_encode
from controller.call.bargein import BargeInGate, Decision, is_loud
from controller.call.call import Call, CallContext
from controller.config import ENV_NAMES, Settings, load_settings
from controller.media.call_media import CallMedia
from controller.media.clock import MediaClock
from controller.realtime.events import parse_server_event
from tests.modelpeer.validate import validate_server_event
from tests.unit.udp import HOST, free_port_range

DATA = Path(__file__).resolve().parents[1] / "data" / "realtime"
CALLER = "1700000000.42"

AGENTS = AgentsFile.model_validate(
    {
        "transfer_targets": {"sales": {"context": "sales-queue", "extension": "s"}},
        "profiles": {
            "default": {
                "tools": ["hangup", "send_dtmf", "transfer"],
                "transfer_targets": ["sales"],
            }
        },
    }
)


@dataclass
class Timeline:
    """Everything that happened, in order: ``(kind, what)``."""

    entries: list[tuple[str, Any]] = field(default_factory=list)

    def index(self, kind: str, what: Any) -> int:
        return self.entries.index((kind, what))


class FakeAri:
    """Records the REST calls a call makes (only the ones tools may make)."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.requests: list[tuple[str, tuple[Any, ...]]] = []
        #: When set, send_dtmf waits for it (a slow PBX).
        self.dtmf_gate: asyncio.Event | None = None
        #: Called during ``continue``, before it returns (events overtaking the reply).
        self.on_continue: Callable[[], None] | None = None

    def _record(self, method: str, *args: Any) -> None:
        self.requests.append((method, args))
        self.timeline.entries.append(("ari", method))

    async def send_dtmf(self, channel_id: str, dtmf: str) -> None:
        if self.dtmf_gate is not None:
            await self.dtmf_gate.wait()
        self._record("send_dtmf", channel_id, dtmf)

    async def continue_in_dialplan(self, channel_id: str, **where: Any) -> None:
        self._record("continue_in_dialplan", channel_id, where)
        if self.on_continue is not None:
            self.on_continue()

    async def redirect(self, channel_id: str, endpoint: str) -> None:
        self._record("redirect", channel_id, endpoint)

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        self._record("hangup", channel_id)


class FakeSession:
    """Stands in for the websocket session: records the client events sent."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.sent: list[dict[str, Any]] = []

    async def send(self, event: Any) -> None:
        data: dict[str, Any] = event.to_dict()
        self.sent.append(data)
        self.timeline.entries.append(("sent", data["type"]))


class FakeController:
    def __init__(self, settings: Settings, timeline: Timeline) -> None:
        self.settings = settings
        self.id_prefix = "voicebot-"
        self.ari = FakeAri(timeline)
        self.agents = AGENTS


@dataclass
class Harness:
    call: Call
    ari: FakeAri
    session: FakeSession
    timeline: Timeline

    async def feed(self, name: str) -> list[dict[str, Any]]:
        """Feed a recorded stream line by line, letting tasks run after each event."""
        lines = (DATA / name).read_text().splitlines()
        for line in lines:
            event = parse_server_event(line)
            self.timeline.entries.append(("fed", event.type))
            self.call._on_model_event(event)
            await settle()
        return [json.loads(line) for line in lines]

    def outputs(self) -> list[dict[str, Any]]:
        """The ``function_call_output`` items sent to the model, in order."""
        return [
            e["item"]
            for e in self.session.sent
            if e["type"] == "conversation.item.create"
            and e["item"]["type"] == "function_call_output"
        ]


async def settle(rounds: int = 20) -> None:
    """Let every ready task run (the fakes never block unless gated)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return load_settings(HANGUP_GRACE_SECONDS="2")


@contextlib.asynccontextmanager
async def make_harness(settings: Settings) -> AsyncIterator[Harness]:
    """A call with the fakes wired in, its TaskGroup open for the ``with`` body."""
    timeline = Timeline()
    controller = FakeController(settings, timeline)
    channel = Channel(id=CALLER, name="PJSIP/tester-00000001", state="Up")
    context = CallContext(controller=cast(Any, controller), call_id="c0ffee", channel=channel)
    call = Call(context)
    call.agent, warning = resolve_agent(settings, AGENTS, None, {})
    assert warning is None
    session = FakeSession(timeline)
    call._session = cast(Any, session)
    call._session_ready.set()
    async with asyncio.TaskGroup() as tasks:
        call._tasks = tasks
        yield Harness(call, controller.ari, session, timeline)
        await settle()


def by_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


# --- the recorded streams are what the tests think they are ---------------------------


@pytest.mark.parametrize(
    "name",
    [
        "tool_send_dtmf.jsonl",
        "tool_send_dtmf_invalid.jsonl",
        "tool_transfer_denied.jsonl",
        "tool_parallel_calls.jsonl",
        "tool_hangup.jsonl",
        "tool_transfer.jsonl",
    ],
)
def test_recorded_streams_are_ga_function_call_responses(name: str) -> None:
    lines = (DATA / name).read_text().splitlines()
    for line in lines:
        validate_server_event(json.loads(line))  # the openai package's GA types
    types = [parse_server_event(line).type for line in lines]
    assert types[0] == "response.created"
    assert types[-2:] == ["response.done", "rate_limits.updated"]
    calls = types.count("response.function_call_arguments.done")
    assert calls == types.count("response.output_item.done") >= 1
    assert types.count("response.function_call_arguments.delta") >= 3 * calls
    # Both events that carry the complete call are present: dispatch must pick one.
    for line in lines:
        event = json.loads(line)
        if event["type"] == "response.output_item.done":
            assert event["item"]["type"] == "function_call"
            assert event["item"]["arguments"]


# --- dispatch ---------------------------------------------------------------------------


async def test_send_dtmf_runs_once_and_answers_after_response_done(settings: Settings) -> None:
    async with make_harness(settings) as h:
        events = await h.feed("tool_send_dtmf.jsonl")
    done = by_type(events, "response.function_call_arguments.done")[0]

    # Exactly one ARI request, for the caller's channel, with the digits as given.
    assert h.ari.requests == [("send_dtmf", (CALLER, "1234#"))]
    assert len(h.call.tool_calls) == 1
    name, args, result = h.call.tool_calls[0]
    assert (name, args) == ("send_dtmf", {"digits": "1234#"})
    assert json.loads(result) == {"ok": True, "pressed": "1234#"}

    # It acted on arguments.done: the request came before output_item.done was fed.
    tl = h.timeline
    assert tl.index("fed", "response.function_call_arguments.done") < tl.index("ari", "send_dtmf")
    assert tl.index("ari", "send_dtmf") < tl.index("fed", "response.output_item.done")

    # Nothing went to the model before response.done; then the output, then one
    # response.create, and nothing else.
    first_sent = next(i for i, (kind, _) in enumerate(tl.entries) if kind == "sent")
    assert first_sent > tl.index("fed", "response.done")
    assert [e["type"] for e in h.session.sent] == ["conversation.item.create", "response.create"]
    output = h.outputs()[0]
    assert output["call_id"] == done["call_id"]
    assert json.loads(output["output"]) == {"ok": True, "pressed": "1234#"}
    assert h.session.sent[1] == {"type": "response.create"}
    assert not h.call._ended.is_set()


async def test_invalid_digits_are_refused_without_touching_the_pbx(settings: Settings) -> None:
    async with make_harness(settings) as h:
        events = await h.feed("tool_send_dtmf_invalid.jsonl")
    done = by_type(events, "response.function_call_arguments.done")[0]

    assert h.ari.requests == []
    assert [e["type"] for e in h.session.sent] == ["conversation.item.create", "response.create"]
    output = h.outputs()[0]
    assert output["call_id"] == done["call_id"]
    result = json.loads(output["output"])
    assert result["ok"] is False
    assert "'x'" in result["error"] and "'!'" in result["error"]
    assert h.timeline.index("fed", "response.done") < h.timeline.index(
        "sent", "conversation.item.create"
    )
    assert len(h.call.tool_calls) == 1
    assert not h.call._ended.is_set()


async def test_transfer_outside_the_allowlist_is_refused(settings: Settings) -> None:
    async with make_harness(settings) as h:
        events = await h.feed("tool_transfer_denied.jsonl")
    done = by_type(events, "response.function_call_arguments.done")[0]
    assert json.loads(done["arguments"]) == {"target": "premium_hotline"}

    assert h.ari.requests == []  # no continue, no redirect, no hang-up
    assert [e["type"] for e in h.session.sent] == ["conversation.item.create", "response.create"]
    output = h.outputs()[0]
    assert output["call_id"] == done["call_id"]
    result = json.loads(output["output"])
    assert result["ok"] is False
    assert "premium_hotline" in result["error"]
    assert "allowed targets are: sales" in result["error"]
    assert not h.call._ended.is_set()
    assert not h.call._handed_off


async def test_parallel_calls_get_one_response_create_after_the_slowest_tool(
    settings: Settings,
) -> None:
    """Two calls in one response, and a slow PBX: response.done arrives while
    send_dtmf is still running. Both outputs must go before a single
    response.create: a response.create after the first output would make the
    model answer without the second result (and the second response.create would
    be refused with conversation_already_has_active_response)."""
    async with make_harness(settings) as h:
        gate = asyncio.Event()
        h.ari.dtmf_gate = gate
        events = await h.feed("tool_parallel_calls.jsonl")
        assert h.session.sent == []  # send_dtmf is still waiting for the PBX
        gate.set()
        await settle()

    assert h.ari.requests == [("send_dtmf", (CALLER, "9"))]
    sent = [e["type"] for e in h.session.sent]
    assert sent == ["conversation.item.create", "conversation.item.create", "response.create"]
    call_ids = {e["call_id"] for e in by_type(events, "response.function_call_arguments.done")}
    assert len(call_ids) == 2
    assert {o["call_id"] for o in h.outputs()} == call_ids
    assert len(h.call.tool_calls) == 2


async def test_hangup_waits_for_the_response_then_ends_without_an_output(
    settings: Settings,
) -> None:
    lines = (DATA / "tool_hangup.jsonl").read_text().splitlines()
    (done_at,) = [i for i, line in enumerate(lines) if '"type":"response.done"' in line]
    async with make_harness(settings) as h:
        for line in lines[:done_at]:
            h.call._on_model_event(parse_server_event(line))
            await settle()
        await asyncio.sleep(0.3)  # longer than the goodbye check's first pause
        # The response that carries the goodbye is still active: the call goes on.
        assert not h.call._ended.is_set()
        for line in lines[done_at:]:
            h.call._on_model_event(parse_server_event(line))
        await asyncio.wait_for(h.call._ended.wait(), 2)
        await settle()
    assert h.call.end_reason == "agent hung up: the caller said goodbye"
    assert [name for name, _, _ in h.call.tool_calls] == ["hangup"]
    assert h.session.sent == []  # no output and no response.create after a hang-up
    assert h.ari.requests == []  # the hang-up itself is the teardown's job


async def test_transfer_is_recorded_as_such_when_stasis_end_overtakes_the_reply(
    settings: Settings,
) -> None:
    """Asterisk sends the caller's StasisEnd as soon as it continues the channel,
    often before the HTTP reply to ``continue``: the call must still end as a
    transfer (not "caller left Stasis") and send the model nothing more."""
    async with make_harness(settings) as h:
        stasis_end = {
            "type": "StasisEnd",
            "application": "voicebot",
            "channel": {"id": CALLER, "name": "PJSIP/tester-00000001", "state": "Up"},
        }
        h.ari.on_continue = lambda: h.call.on_event(parse_event(stasis_end))
        await h.feed("tool_transfer.jsonl")
        await asyncio.wait_for(h.call._ended.wait(), 2)
        await settle()
    where = {"context": "sales-queue", "extension": "s", "priority": None, "label": None}
    assert h.ari.requests == [("continue_in_dialplan", (CALLER, where))]
    assert h.call.end_reason == "transferred to sales"
    assert h.call._caller_gone  # teardown must not hang the caller up
    assert h.session.sent == []  # nothing more for the model: the caller is gone


# --- barge-in: the gate hears the caller's own audio ---------------------------------------

#: 20 ms of a 400 Hz tone at -12 dBFS (the caller talking), and of silence.
LOUD_FRAME = ulaw_encode(
    (0.25 * 32767 * np.sin(2 * np.pi * 400 * np.arange(160) / 8000)).astype(np.int16)
)
QUIET_FRAME = ULAW_SILENCE_FRAME


def server_event(kind: str, **fields: Any) -> Any:
    """A server event as the model would send it."""
    return parse_server_event(json.dumps({"type": kind, "event_id": "event_1", **fields}))


def test_loudness_check_tells_talk_from_silence_and_line_noise() -> None:
    assert is_loud(LOUD_FRAME)
    assert not is_loud(QUIET_FRAME)
    hiss = (32767 * 10 ** (-60 / 20) * np.sin(np.arange(160))).astype(np.int16)
    assert not is_loud(ulaw_encode(hiss))
    assert not is_loud(b"")


def test_gate_waits_while_the_caller_is_quiet_even_after_the_minimum() -> None:
    gate = BargeInGate(min_speech_ms=300)
    assert gate.speech_started(10.0, True, False) is Decision.WAIT
    assert gate.pending
    # 400 ms later the model has not said "stopped" yet (its silence duration
    # is 500 ms), but the caller is quiet: a cough, not a barge-in.
    assert gate.poll(10.4, True, False, caller_loud=False) is Decision.WAIT
    gate.speech_stopped()
    assert gate.poll(10.6, True, False, caller_loud=False) is Decision.IGNORE
    assert not gate.pending
    # Talking that goes on past the minimum interrupts.
    gate.speech_started(20.0, True, False)
    assert gate.poll(20.2, True, False, caller_loud=True) is Decision.WAIT
    assert gate.poll(20.3, True, False, caller_loud=True) is Decision.INTERRUPT


async def test_a_cough_under_barge_in_min_ms_never_interrupts_but_talking_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(BARGE_IN_MIN_MS="100")
    # A real CallMedia on a clock that is not started: the agent's audio stays queued.
    media = await CallMedia.open(MediaClock(), HOST, free_port_range(), lambda _: None)
    try:
        async with make_harness(settings) as h:
            call = h.call
            media.play("item_greeting", bytes(8000))  # 1 s of the agent still to play
            call._media = media
            call._on_model_event(server_event("response.created", response={"id": "resp_1"}))

            # A cough: 40 ms loud, then quiet for 300 ms (three times the minimum)
            # before the model's VAD says the speech stopped.
            speech = {"audio_start_ms": 1000, "item_id": "item_caller"}
            call._on_model_event(server_event("input_audio_buffer.speech_started", **speech))
            for frame in [LOUD_FRAME] * 2 + [QUIET_FRAME] * 15:
                call._on_caller_audio(frame)
                await asyncio.sleep(0.02)
            assert h.session.sent == []
            assert media.speaking  # not a frame of the agent was dropped
            stopped = {"audio_end_ms": 1600, "item_id": "item_caller"}
            call._on_model_event(server_event("input_audio_buffer.speech_stopped", **stopped))
            await asyncio.sleep(0.1)
            assert h.session.sent == []

            # Talking: interrupts once it has lasted the minimum.
            call._on_model_event(server_event("input_audio_buffer.speech_started", **speech))
            for _ in range(25):
                call._on_caller_audio(LOUD_FRAME)
                await asyncio.sleep(0.02)
                if h.session.sent:
                    break
            await settle()
    finally:
        media.close()
    assert not media.speaking
    kinds = [e["type"] for e in h.session.sent]
    assert sorted(kinds) == ["conversation.item.truncate", "response.cancel"]
    cancel = next(e for e in h.session.sent if e["type"] == "response.cancel")
    assert cancel["response_id"] == "resp_1"
    truncate = next(e for e in h.session.sent if e["type"] == "conversation.item.truncate")
    assert (truncate["item_id"], truncate["audio_end_ms"]) == ("item_greeting", 0)


# --- caller keys ------------------------------------------------------------------------


def dtmf_event(digit: str) -> Any:
    return parse_event(
        {
            "type": "ChannelDtmfReceived",
            "digit": digit,
            "duration_ms": 100,
            "channel": {"id": CALLER, "name": "PJSIP/tester-00000001", "state": "Up"},
        }
    )


async def test_keys_pressed_before_the_model_is_ready_are_delivered_once_it_is(
    settings: Settings,
) -> None:
    async with make_harness(settings) as h:
        h.call._session_ready.clear()  # the model session is still opening
        for digit in "42#":  # '#' sends at once, without the 0.8 s pause
            h.call.on_event(dtmf_event(digit))
        await settle()
        assert h.session.sent == []  # nothing can go out yet, and nothing is lost
        h.call._session_ready.set()
        h.call._flush_outputs()  # what set-up does once the session is ready
        await settle()
    sent = h.session.sent
    assert [e["type"] for e in sent] == ["conversation.item.create", "response.create"]
    assert sent[0]["item"]["content"][0]["text"] == "[The caller pressed the keys: 42#]"


# --- transcripts ------------------------------------------------------------------------


def transcription(kind: str, **fields: Any) -> Any:
    base = {"event_id": "event_1", "item_id": "item_u1", "content_index": 0}
    return parse_server_event(
        json.dumps(
            {"type": f"conversation.item.input_audio_transcription.{kind}", **base, **fields}
        )
    )


async def test_caller_transcripts_come_from_completed_or_else_the_deltas(
    settings: Settings,
) -> None:
    async with make_harness(settings) as h:
        call = h.call
        call._on_model_event(transcription("delta", delta="ignored "))
        call._on_model_event(transcription("completed", transcript="Opening hours?"))
        for part in ("Is anyone ", "there?"):
            call._on_model_event(transcription("delta", delta=part))
        call._on_model_event(transcription("completed", transcript=""))
        call._on_model_event(transcription("delta", delta="Hel"))
        call._on_model_event(transcription("failed", error={"message": "no speech"}))
        call._on_model_event(transcription("failed", error={"message": "no speech"}))
    assert [(t.role, t.text) for t in h.call.transcript] == [
        ("caller", "Opening hours?"),
        ("caller", "Is anyone there?"),
        ("caller", "Hel"),
    ]
