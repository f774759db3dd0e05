"""Agent profiles, transfer allowlist, DTMF validation, tool declarations."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from controller.agents import (
    AgentsFile,
    dialled_number,
    fill_template,
    load_agents_file,
    parse_stasis_args,
    resolve_agent,
)
from controller.call.tools import (
    build_instructions,
    declarations,
    parse_arguments,
    tool_result,
    validate_dtmf,
)
from controller.config import ENV_NAMES, load_settings
from controller.errors import ConfigError, ToolError
from controller.templates import DATA_NOTE

AGENTS = """
[transfer_targets.sales]
context = "sales-queue"
extension = "s"
description = "the sales team"

[transfer_targets.operator]
endpoint = "PJSIP/operator"

[tools.lookup_order]
description = "Look up an order."
url = "http://127.0.0.1:9/orders"
[tools.lookup_order.parameters]
type = "object"
properties.number = { type = "string" }

[profiles.sales]
instructions = "Sales line. Caller {caller_number} dialled {dialed_number}. {unknown}"
greeting = "Hello {caller_name}"
voice = "cedar"
tools = ["hangup", "transfer", "lookup_order"]
transfer_targets = ["sales"]
vad = { threshold = 0.8 }
"""


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return load_settings(AGENT_INSTRUCTIONS="Default agent.", VAD_SILENCE_MS="650")


@pytest.fixture
def agents(tmp_path) -> AgentsFile:
    path = tmp_path / "agents.toml"
    path.write_text(AGENTS)
    return load_agents_file(path)


FIELDS = {"caller_number": "555", "caller_name": "Ann", "dialed_number": "101"}


def test_profile_overrides_settings_and_fills_templates(settings, agents) -> None:
    agent, warning = resolve_agent(settings, agents, "sales", FIELDS)
    assert warning is None
    assert agent.profile == "sales"
    # Caller ID and the number dialled go in as quoted data, with a note saying so.
    assert agent.instructions == (
        'Sales line. Caller "555" dialled "101". {unknown}\n\n' + DATA_NOTE
    )
    assert agent.greeting == "Hello Ann"  # spoken: the whole greeting is quoted when said
    assert agent.voice == "cedar"
    assert agent.tools == ("hangup", "transfer", "lookup_order")
    assert set(agent.transfer_targets) == {"sales"}
    assert set(agent.http_tools) == {"lookup_order"}
    assert agent.vad.threshold == 0.8
    assert agent.vad.silence_ms == 650  # not overridden: from the settings


def test_unknown_profile_falls_back_to_default_with_a_warning(settings, agents) -> None:
    agent, warning = resolve_agent(settings, agents, "nope", FIELDS)
    assert agent.profile == "default"
    assert agent.instructions == "Default agent."
    assert warning is not None and "'nope'" in warning and "sales" in warning


def test_no_agents_file_gives_the_default_agent(settings) -> None:
    agent, warning = resolve_agent(settings, None, None, FIELDS)
    assert warning is None
    assert agent.tools == ("hangup", "send_dtmf", "transfer")
    assert agent.transfer_targets == {}
    assert agent.voice == "marin"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[profiles.x]\ntools = ["fax"]', "profile 'x' lists unknown tool 'fax'"),
        ('[profiles.x]\ntransfer_targets = ["boss"]', "unknown transfer target 'boss'"),
        ('[transfer_targets.t]\ncontext = "c"', "needs both context and extension"),
        (
            '[transfer_targets.t]\nendpoint = "PJSIP/x"\ncontext = "c"\nextension = "s"',
            "either context + extension, or endpoint",
        ),
        ('[tools.hangup]\ndescription = "d"\nurl = "http://x"', "clashes with a built-in"),
        ('[tools.t]\ndescription = "d"\nurl = "ftp://x"', "must be an http:// or https://"),
        ("[profiles.x]\ncolour = 'red'", "Extra inputs are not permitted"),
        ("not toml [", "is not valid TOML"),
    ],
)
def test_bad_agents_files_are_refused_with_the_reason(tmp_path, text: str, expected: str) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="AGENTS_FILE") as info:
        load_agents_file(path)
    assert expected in str(info.value)


def test_missing_agents_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_agents_file(tmp_path / "none.toml")


def test_stasis_args_and_templates() -> None:
    assert parse_stasis_args(["100", "profile=sales", " lang = en "]) == {
        "profile": "sales",
        "lang": "en",
    }
    # The dialplan passes ${EXTEN} first; an empty ${ARG2} arrives as "".
    assert dialled_number(["100", ""], "s") == "100"
    assert dialled_number(["101", "profile=sales"], "s") == "101"
    assert dialled_number(["profile=sales"], "101") == "101"  # no number: the extension
    assert dialled_number([], "") == ""
    assert fill_template("{a} {b} {", {"a": "1"}) == "1 {b} {"  # stray brace: left as is
    assert fill_template("{a} and {b}", {"a": "1"}) == "1 and {b}"
    assert fill_template("{{a}} {a}", {"a": "1"}) == "{a} 1"  # {{ }} as in str.format


@pytest.mark.parametrize(
    ("given", "expected"),
    [("1234#", "1234#"), ("1-2 3", "123"), ("abcd*", "ABCD*"), ("1W2w", "1w2w")],
)
def test_dtmf_is_normalised(given: str, expected: str) -> None:
    assert validate_dtmf(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (1234, "must be a string"),
        ("", "empty"),
        ("12x", "cannot press 'x'"),
        ("1" * 33, "at most 32"),
        ("9;rm", "cannot press"),
    ],
)
def test_bad_dtmf_is_refused_with_a_reason(given: object, expected: str) -> None:
    with pytest.raises(ToolError, match=expected):
        validate_dtmf(given)


def test_arguments_must_be_a_json_object() -> None:
    assert parse_arguments('{"digits": "1"}') == {"digits": "1"}
    assert parse_arguments("") == {}
    with pytest.raises(ToolError):
        parse_arguments("[1]")
    with pytest.raises(ToolError):
        parse_arguments("{digits")


def test_declarations_follow_the_agent(settings, agents) -> None:
    sales, _ = resolve_agent(settings, agents, "sales", FIELDS)
    tools = {t["name"]: t for t in declarations(sales)}
    assert set(tools) == {"hangup", "transfer", "lookup_order"}
    assert tools["transfer"]["parameters"]["properties"]["target"]["enum"] == ["sales"]
    assert "the sales team" in tools["transfer"]["description"]
    assert tools["lookup_order"]["parameters"]["properties"] == {"number": {"type": "string"}}
    default, _ = resolve_agent(settings, None, None, FIELDS)
    # transfer with no targets is not offered at all
    assert [t["name"] for t in declarations(default)] == ["hangup", "send_dtmf"]


def test_instructions_add_date_and_menu_guidance_only_with_send_dtmf(settings, agents) -> None:
    default, _ = resolve_agent(settings, None, None, FIELDS)
    text = build_instructions(default, dt.date(2026, 11, 21))
    assert text.startswith("Default agent.")
    assert "Saturday, 21 November 2026" in text
    assert "send_dtmf" in text and "Never say digits aloud" in text
    sales, _ = resolve_agent(settings, agents, "sales", FIELDS)
    assert "send_dtmf" not in build_instructions(sales, dt.date(2026, 11, 21))


def test_tool_result_is_compact_json() -> None:
    assert json.loads(tool_result(False, error="no")) == {"ok": False, "error": "no"}
