"""Hostile input from the model's side: malformed events, huge messages, runaway tool calls.

Each test pins one failure found by review, with the input that triggered it.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from controller.call.conversation import (
    Conversation,
    ConversationConfig,
    Play,
    Playback,
    RunTool,
    Send,
    ToolCallEnded,
)
from controller.errors import RealtimeConnectionError, RealtimeProtocolError
from controller.pricing import DEFAULT_PRICES
from controller.realtime import events as ev
from controller.realtime.events import parse_server_event, split_audio_delta
from controller.realtime.session import connect_realtime
from controller.records import UsageTotals

LOG = logging.getLogger("tests.hostile")
KEY = "sk-test-hostile-0123456789abcdef"
SESSION_CREATED = '{"type":"session.created","event_id":"e1","session":{"id":"sess_1"}}'
SESSION_UPDATED = '{"type":"session.updated","event_id":"e2","session":{"id":"sess_1"}}'


async def scripted(
    before_update: list[str | bytes], after_update: list[str | bytes]
) -> AsyncIterator[str]:
    """A server that sends ``before_update``, waits for session.update, then sends the rest."""

    async def handler(ws: ServerConnection) -> None:
        for message in before_update:
            await ws.send(message)
        await ws.recv()  # the session.update
        for message in after_update:
            await ws.send(message)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, max_size=None) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime"


@pytest.mark.parametrize("item_type", ["[]", "{}", "null", "1"])
def test_an_item_whose_type_is_not_a_string_is_a_protocol_error(item_type: str) -> None:
    # Found by the fuzz tests: response.done with an output item of "type": []
    # raised TypeError (unhashable) out of the parser, past the session's
    # skip of invalid events, and crashed the call.
    item = '{"type":' + item_type + "}"
    message = '{"type":"response.done","response":{"id":"r","output":[' + item + "]}}"
    with pytest.raises(RealtimeProtocolError, match="invalid response.done event"):
        parse_server_event(message)


BAD_EVENTS: list[str | bytes] = [
    '{"type":"rate_limits.updated","rate_limits":"none"}',  # a known event, a wrong type
    '{"type":"conversation.created","conversation":[1,2]}',
    '{"type":"input_audio_buffer.speech_started","audio_start_ms":"soon","item_id":"i"}',
    "{broken",
    '{"type":"x","deep":' + "[" * 3000 + "]" * 3000 + "}",
    '{"type":"response.done","response":{"id":"r","output":[{"type":[]}]}}',
    b"\xff\xfe\x00",
]


async def test_malformed_events_during_set_up_are_skipped_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: the first of these, right after session.created, made
    # RealtimeSession.start() raise RealtimeProtocolError and the call failed.
    async for url in scripted([SESSION_CREATED, *BAD_EVENTS], [*BAD_EVENTS, SESSION_UPDATED]):
        session = await connect_realtime(url, KEY, "m")
        info = await session.start(ev.build_session_update(ev_settings()))
        assert info.id == "sess_1"
        assert session.invalid_events == 14  # every one of the seven, both times
        await session.close()
    assert caplog.text.count("skipping invalid server event") == 14


def ev_settings() -> Any:
    from controller.config import Settings

    return Settings()


async def test_a_message_over_the_size_limit_closes_the_session_with_a_clear_reason() -> None:
    delta = {
        "type": "response.output_audio.delta",
        "response_id": "r",
        "item_id": "i",
        "delta": base64.b64encode(bytes(200_000)).decode(),
    }
    async for url in scripted([SESSION_CREATED], [SESSION_UPDATED, json.dumps(delta)]):
        session = await connect_realtime(url, KEY, "m", max_message_bytes=64 * 1024)
        await session.start(ev.build_session_update(ev_settings()))
        with pytest.raises(RealtimeConnectionError, match="REALTIME_MAX_MESSAGE_BYTES"):
            async for _ in session:
                pass


def delta_event(audio: bytes, item: str = "i") -> ev.ResponseOutputAudioDelta:
    event = parse_server_event(
        json.dumps(
            {
                "type": "response.output_audio.delta",
                "response_id": "r",
                "item_id": item,
                "delta": base64.b64encode(audio).decode(),
            }
        )
    )
    assert isinstance(event, ev.ResponseOutputAudioDelta)
    return event


def test_a_huge_delta_is_handled_in_bounded_steps_that_add_up_to_it() -> None:
    audio = bytes(range(256)) * 4000  # ~1 MB
    event = delta_event(audio)
    pieces = split_audio_delta(event, step=4099)  # rounded down to a multiple of 4
    assert len(pieces) == -(-len(event.delta) // 4096)
    assert all(isinstance(p, ev.ResponseOutputAudioDelta) for p in pieces)
    joined = b"".join(base64.b64decode(p.delta) for p in pieces)  # type: ignore[union-attr]
    assert joined == audio
    assert split_audio_delta(delta_event(b"short")) == [delta_event(b"short")]
    other = parse_server_event(SESSION_CREATED)
    assert split_audio_delta(other) == [other]


def test_unusable_audio_is_counted_skipped_and_the_call_goes_on() -> None:
    conv = Conversation(ConversationConfig(), now=0.0, log=LOG)
    conv.session_ready(0.0)
    bad = parse_server_event(
        '{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"abc"}'
    )
    assert conv.model_event(bad, 1.0, Playback()) == []
    assert conv.unusable_events == 1
    assert [type(a) for a in conv.model_event(delta_event(b"\x7f" * 160), 1.1, Playback())] == [
        Play
    ]


def test_token_counts_from_the_server_are_clamped() -> None:
    # Before: usage of 10**400 tokens overflowed the float cost and the 64-bit
    # store columns when the call's record was built at its end.
    huge = "9" * 400
    event = parse_server_event(
        '{"type":"response.done","response":{"id":"r","usage":{"total_tokens":'
        + huge
        + ',"input_token_details":{"audio_tokens":'
        + huge
        + ',"text_tokens":-7}}}}'
    )
    assert isinstance(event, ev.ResponseDone) and event.response.usage is not None
    details = event.response.usage.input_token_details
    assert details is not None
    assert details.audio_tokens == ev.MAX_TOKENS and details.text_tokens == 0
    usage = UsageTotals(input_audio_tokens=details.audio_tokens)
    assert DEFAULT_PRICES.estimate("gpt-realtime", usage).usd > 0


def function_call(call_id: str, name: str, arguments: str) -> ev.ServerEvent:
    return parse_server_event(
        json.dumps(
            {
                "type": "response.function_call_arguments.done",
                "response_id": "resp_1",
                "item_id": f"item_{call_id}",
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
            }
        )
    )


def test_one_response_runs_at_most_the_cap_of_tool_calls() -> None:
    # Before: one response with 60 send_dtmf calls pressed 60 sequences of keys,
    # and 100 calls of an HTTP tool made 100 concurrent POSTs.
    config = ConversationConfig(
        tools=frozenset({"send_dtmf", "lookup"}),
        http_tools=frozenset({"lookup"}),
        max_tool_calls_per_response=8,
    )
    conv = Conversation(config, now=0.0, log=LOG)
    conv.session_ready(0.0)
    runs: list[RunTool] = []
    refused: list[str] = []
    for i in range(60):
        for action in conv.model_event(
            function_call(f"c{i}", "send_dtmf", '{"digits":"1"}'), 1.0, Playback()
        ):
            if isinstance(action, RunTool):
                runs.append(action)
            elif isinstance(action, ToolCallEnded) and action.call.refused:
                refused.append(action.call.result)
    assert len(runs) == 8 and len(refused) == 52
    assert "at most 8 per response" in refused[0]
    # A later response may not add more while they run either.
    late = conv.model_event(function_call("late", "lookup", "{}"), 2.0, Playback())
    assert not any(isinstance(a, RunTool) for a in late)
    # Once they finished, the results and the refusals go back before one response.create.
    actions = []
    for run in runs:
        actions += conv.tool_finished(run.call_id, '{"ok":true}', 3.0, ok=True)
    done = parse_server_event('{"type":"response.done","response":{"id":"resp_1"}}')
    actions += conv.model_event(done, 3.1, Playback())
    sends = [a.event.type for a in actions if isinstance(a, Send)]
    assert sends.count("conversation.item.create") == 61 and sends[-1] == "response.create"


@pytest.mark.parametrize(
    "arguments",
    ["[" * 5000 + "]" * 5000, '{"digits":' + '"1' * 40_000 + '"}', '{"digits": NaN}'],
)
def test_hostile_arguments_are_refused_back_to_the_model(arguments: str) -> None:
    # Before: deeply nested arguments raised RecursionError in json.loads and crashed the call.
    conv = Conversation(ConversationConfig(tools=frozenset({"send_dtmf"})), now=0.0, log=LOG)
    conv.session_ready(0.0)
    actions = conv.model_event(function_call("c1", "send_dtmf", arguments), 1.0, Playback())
    (ended,) = [a for a in actions if isinstance(a, ToolCallEnded)]
    assert ended.call.refused


def test_long_model_text_is_cut() -> None:
    conv = Conversation(ConversationConfig(), now=0.0, log=LOG)
    done = parse_server_event(
        json.dumps(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "i",
                "transcript": "x" * 1_000_000,
            }
        )
    )
    (line,) = conv.model_event(done, 1.0, Playback())
    assert len(line.text) < 5000  # type: ignore[union-attr]
