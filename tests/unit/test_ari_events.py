"""ARI event parsing, on payloads captured from Asterisk 22.10 (tests/data/ari/capture.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.ari.events import (
    AriProtocolError,
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    ChannelStateChange,
    StasisEnd,
    StasisStart,
    UnknownEvent,
    event_channel,
    parse_event,
)

CAPTURED = [
    json.loads(line)
    for line in (Path(__file__).parents[1] / "data" / "ari" / "events.jsonl")
    .read_text()
    .splitlines()
]
EVENTS = [e for e in CAPTURED if "type" in e]


def of_type(name: str) -> list[dict[str, object]]:
    return [e for e in EVENTS if e["type"] == name]


def test_every_captured_event_parses_to_its_class() -> None:
    classes = {
        "StasisStart": StasisStart,
        "StasisEnd": StasisEnd,
        "ChannelDtmfReceived": ChannelDtmfReceived,
        "ChannelHangupRequest": ChannelHangupRequest,
        "ChannelDestroyed": ChannelDestroyed,
        "ChannelStateChange": ChannelStateChange,
    }
    seen: set[str] = set()
    for raw in EVENTS:
        event = parse_event(json.dumps(raw))
        assert type(event) is classes.get(raw["type"], UnknownEvent), raw["type"]
        assert event.application == "capture"
        seen.add(raw["type"])
    assert set(classes) <= seen  # the capture covers every event we act on


def test_stasis_start_carries_args_and_the_channel() -> None:
    local, external = (parse_event(e) for e in of_type("StasisStart"))
    assert isinstance(local, StasisStart) and isinstance(external, StasisStart)
    assert local.args == ["100", "profile=sales"]
    assert local.channel.technology == "Local"
    assert local.channel.state == "Up"
    assert local.channel.dialplan is not None
    assert external.args == ["call-1"]  # externalMedia's data
    assert external.channel.id == "capture-em-1"
    assert external.channel.technology == "UnicastRTP"


def test_dtmf_and_hangup_fields() -> None:
    dtmf = parse_event(of_type("ChannelDtmfReceived")[0])
    assert isinstance(dtmf, ChannelDtmfReceived)
    assert dtmf.digit == "5"
    assert dtmf.duration_ms > 0
    destroyed = parse_event(of_type("ChannelDestroyed")[0])
    assert isinstance(destroyed, ChannelDestroyed)
    assert destroyed.cause == 16 and destroyed.cause_txt == "Normal Clearing"


def test_external_media_response_has_asterisks_rtp_address() -> None:
    (response,) = [e for e in CAPTURED if e.get("_response") == "externalMedia"]
    channel = Channel.model_validate(response)
    assert channel.channelvars is not None
    assert channel.channelvars["UNICASTRTP_LOCAL_ADDRESS"] == "127.0.0.1"
    assert 1024 < int(channel.channelvars["UNICASTRTP_LOCAL_PORT"]) < 65536


def test_unknown_types_and_fields_are_kept_not_fatal() -> None:
    event = parse_event('{"type": "BridgeBlindTransfer", "application": "a", "new_field": 1}')
    assert isinstance(event, UnknownEvent)
    assert event_channel(event) is None
    start = dict(of_type("StasisStart")[0], brand_new_field={"x": 1})
    assert isinstance(parse_event(start), StasisStart)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "no 'type'"),
        ('{"application": "x"}', "no 'type'"),
        ('{"type": "StasisStart", "args": []}', "StasisStart event: channel: Field required"),
        ('{"type": "ChannelDtmfReceived", "channel": {"id": "1"}}', "digit"),
    ],
)
def test_malformed_messages_raise_one_documented_error(text: str, message: str) -> None:
    with pytest.raises(AriProtocolError, match=message):
        parse_event(text)
