"""Every boundary parser returns a typed value or raises its documented error, nothing else.

Structure-aware fuzzing (see :mod:`tests.unit.fuzzing`): Asterisk's and the
Realtime API's own captured messages mutated field by field (wrong types,
deep nesting, huge values) and damaged as text (truncated, invalid UTF-8,
lone surrogates); RTP datagrams built field by field; tool replies in any
bytes and charset; agents and env files in any bytes. Each test is bounded
(:data:`~tests.unit.fuzzing.FUZZ`).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.agents import AgentsFile, load_agents_file, parse_stasis_args, resolve_agent
from controller.ari.events import (
    AriEvent,
    Bridge,
    Channel,
    decode_json,
    event_channel,
    parse_event,
    parse_models,
)
from controller.audio.convert import converters_for
from controller.call.conversation import (
    Conversation,
    ConversationConfig,
    Play,
    Playback,
    RunTool,
)
from controller.call.http_tools import MAX_RESULT_CHARS, decode_reply
from controller.call.tools import parse_arguments
from controller.config import ENV_NAMES, Settings, load_settings
from controller.errors import (
    AriProtocolError,
    ConfigError,
    RealtimeProtocolError,
    RtpParseError,
    ToolError,
)
from controller.logs import RedactingFormatter, kv
from controller.realtime.events import ServerEvent, parse_server_event, split_audio_delta
from controller.rtp.endpoint import RtpEndpoint
from controller.rtp.packet import RtpPacket
from controller.templates import fill_template, template_problem
from tests.unit.fuzzing import (
    DATA,
    FUZZ,
    hostile_values,
    huge_strings,
    jsonl,
    mutated,
    odd_text,
    raw_message,
    templates,
    to_text,
)

ARI_SEEDS = [e for e in jsonl(DATA / "ari" / "events.jsonl") if "type" in e]
CHANNEL_SEEDS = [e["channel"] for e in ARI_SEEDS if isinstance(e.get("channel"), dict)]
MODEL_SEEDS = [e for p in sorted((DATA / "realtime").glob("*.jsonl")) for e in jsonl(p)]
LOG = logging.getLogger("tests.fuzz")


# --- ARI: the events websocket and REST replies ------------------------------------------


@FUZZ
@given(raw_message(ARI_SEEDS))
def test_ari_events_parse_or_raise_ari_protocol_error(message: bytes) -> None:
    for data in (message, message.decode("utf-8", "replace")):
        try:
            event = parse_event(data)
        except AriProtocolError:
            continue
        assert isinstance(event, AriEvent)
        channel = event_channel(event)  # never raises: a bad channel is no channel
        assert channel is None or isinstance(channel, Channel)


@FUZZ
@given(st.lists(mutated(CHANNEL_SEEDS), max_size=3), st.integers(0, 3))
def test_rest_replies_parse_or_raise_ari_protocol_error(items: list[Any], shape: int) -> None:
    reply: Any = items if shape else (items[0] if items else None)
    try:
        data = decode_json(to_text(reply), "reply")
        parse_models(Channel, data, "GET /channels")
        parse_models(Bridge, data, "GET /bridges")
    except AriProtocolError:
        pass


# --- RTP ------------------------------------------------------------------------------------


rtp_datagrams = st.binary(max_size=300) | st.builds(
    lambda b0, b1, rest: bytes([b0, b1]) + rest,
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=400),
)


@FUZZ
@given(rtp_datagrams)
def test_rtp_datagrams_parse_or_raise_rtp_parse_error(datagram: bytes) -> None:
    try:
        packet = RtpPacket.parse(datagram)
    except RtpParseError:
        return
    assert len(packet.payload) <= len(datagram)


@FUZZ
@given(st.lists(rtp_datagrams, max_size=30), st.booleans())
def test_rtp_endpoint_never_raises_on_what_arrives(datagrams: list[bytes], foreign: bool) -> None:
    heard: list[bytes] = []
    endpoint = RtpEndpoint(heard.append)
    endpoint.set_remote("127.0.0.1", 20000)
    for datagram in datagrams:
        endpoint.datagram_received(datagram, ("127.0.0.2" if foreign else "127.0.0.1", 20000))
    assert endpoint.callback_errors == 0
    assert not foreign or not heard


# --- the model's server events --------------------------------------------------------------


@FUZZ
@given(raw_message(MODEL_SEEDS))
def test_model_events_parse_or_raise_realtime_protocol_error(message: bytes) -> None:
    try:
        parse_server_event(message)
    except RealtimeProtocolError:
        pass


CONFIG = ConversationConfig(
    greeting="Hello",
    tools=frozenset({"hangup", "send_dtmf", "transfer", "lookup"}),
    transfer_targets=frozenset({"sales"}),
    http_tools=frozenset({"lookup"}),
    max_call_seconds=60,
    silence_timeout_seconds=10,
    audio_bytes_per_ms=48,
)


@FUZZ
@given(st.lists(mutated(MODEL_SEEDS), min_size=1, max_size=12))
def test_a_conversation_takes_any_parseable_model_event_without_failing(
    objects: list[dict[str, Any]],
) -> None:
    """What parses goes through the conversation and the audio path as a call does."""
    conversation = Conversation(CONFIG, now=0.0, log=LOG)
    conversation.session_ready(0.0)
    _, to_caller = converters_for("pcm24k")
    now = 0.0
    for obj in objects:
        try:
            event: ServerEvent = parse_server_event(to_text(obj))
        except RealtimeProtocolError:
            continue
        for piece in split_audio_delta(event, step=4096):
            now += 0.01
            speaking = Playback(speaking=bool(int(now * 100) % 2), current_item="item")
            for action in conversation.model_event(piece, now, speaking):
                if isinstance(action, Play):
                    to_caller.convert(action.audio)
                elif isinstance(action, RunTool):
                    conversation.tool_finished(action.call_id, '{"ok":true}', now, ok=True)
        conversation.timer(now + 1, Playback())
    assert len(conversation.transcript) <= len(objects) * 2


@FUZZ
@given(hostile_values.map(to_text) | mutated(MODEL_SEEDS).map(to_text) | odd_text)
def test_function_call_arguments_are_an_object_or_a_tool_error(text: str) -> None:
    try:
        assert isinstance(parse_arguments(text), dict)
    except ToolError:
        pass


# --- HTTP tool replies ----------------------------------------------------------------------


@FUZZ
@given(
    st.binary(max_size=2000) | st.text(max_size=500).map(lambda t: t.encode("utf-16")),
    st.none() | st.sampled_from(["utf-8", "latin-1", "utf-16", "rot13", "base64", ""]) | odd_text,
)
def test_tool_replies_decode_in_any_charset(body: bytes, charset: str | None) -> None:
    text = decode_reply(body, charset)
    assert isinstance(text, str) and len(text) <= MAX_RESULT_CHARS


# --- the operator's files: agents and env ---------------------------------------------------

AGENTS_SEED = b"""
[transfer_targets.sales]
context = "sales-queue"
extension = "s"
[tools.lookup]
description = "Look up."
url = "http://127.0.0.1:9/x"
[tools.lookup.parameters]
type = "object"
[profiles.sales]
instructions = "Caller {caller_number} ({caller_name}) dialled {dialed_number} on {date}."
greeting = "Hello {caller_name}"
tools = ["hangup", "transfer", "lookup"]
transfer_targets = ["sales"]
"""


@st.composite
def agents_bytes(draw: st.DrawFn) -> bytes:
    data = AGENTS_SEED
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        insert = draw(
            st.sampled_from(
                [
                    b"\xff\xfe",
                    b"{caller_number.__class__}",
                    b"{caller_name[0]}",
                    b"{date:>999999999}",
                    b"{0}",
                    b"a = " + b"[" * 3000,
                    b'\n[profiles.x]\ninstructions = "{',
                    b"\x00",
                    b"\ntools.lookup.parameters.p" + b".q" * 400 + b" = 1\n",
                ]
            )
            | st.binary(max_size=20)
        )
        data = data[:at] + insert + data[at:]
    return data


@FUZZ
@given(
    agents_bytes(),
    st.dictionaries(st.sampled_from(["caller_number", "caller_name", "dialed_number"]), odd_text),
)
def test_agents_files_load_or_raise_config_error_and_never_fail_a_call(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, fields: dict[str, str]
) -> None:
    path = tmp_path_factory.mktemp("agents") / "agents.toml"
    path.write_bytes(data)
    try:
        agents = load_agents_file(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) or "TOML" in str(exc)
        return
    assert isinstance(agents, AgentsFile)
    settings = Settings()
    full = {"caller_number": "", "caller_name": "", "dialed_number": "", "date": "", "call_id": ""}
    for profile in [*agents.profiles, "default", "nope"]:
        agent, _ = resolve_agent(settings, agents, profile, {**full, **fields})
        assert "<class" not in agent.instructions  # nothing in a template is evaluated


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(ENV_NAMES))
def test_env_files_load_or_raise_config_error(
    tmp_path_factory: pytest.TempPathFactory, junk: bytes, name: str
) -> None:
    path = tmp_path_factory.mktemp("env") / "settings.env"
    path.write_bytes(name.encode() + b"=" + junk + b"\n")
    try:
        load_settings(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


# --- what the dialplan and the caller choose; the log -----------------------------------------

long_args = st.builds(lambda n: "9" * n + "=" + "x" * n, st.integers(0, 2000))


template_fields = st.dictionaries(
    st.sampled_from(["caller_number", "caller_name", "dialed_number", "date", "call_id"])
    | odd_text,
    odd_text | huge_strings,
)


@FUZZ
@given(st.lists(odd_text | long_args, max_size=40), templates, template_fields)
def test_stasis_args_and_templates_never_fail(
    args: list[str], text: str, fields: dict[str, str]
) -> None:
    parsed = parse_stasis_args(args)
    assert all(len(k) <= 256 and len(v) <= 256 for k, v in parsed.items())
    template_problem(text)
    filled = fill_template(text, fields)
    assert isinstance(filled, str) and "<class" not in filled  # nothing is evaluated


@FUZZ
@given(st.dictionaries(st.sampled_from(["a", "text", "caller"]), hostile_values, max_size=3))
def test_log_values_never_break_the_line(fields: dict[str, Any]) -> None:
    line = kv(**fields)
    assert line.isprintable() or all(c not in line for c in "\n\r\x1b\x00\u2028")
    record = logging.LogRecord("controller.call", logging.INFO, __file__, 1, "x %s", (line,), None)
    text = RedactingFormatter(["sk-test-secret-0123456789abcdef"]).format(record)
    assert "\n" not in text and "\r" not in text
