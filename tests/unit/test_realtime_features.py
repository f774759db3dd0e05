"""Reasoning effort, stored prompts, noise reduction, idle timeouts, MCP servers, per-profile
model and voice: from the settings and the agents file to the ``session.update`` sent.

Every ``session.update`` built here is checked against the ``openai`` package's GA types
(``validate_client_event``), so a field the API does not have, or has in another shape,
fails here rather than on a call.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from controller.agents import AgentsFile, load_agents_file, resolve_agent
from controller.call.configure import conversation_config, outbound_agent, session_update
from controller.config import ENV_NAMES, Settings, load_settings
from controller.errors import ConfigError
from controller.outbound import OutboundRequest
from controller.realtime import events as ev
from tests.modelpeer.validate import validate_client_event

TODAY = dt.date(2026, 5, 4)
FIELDS = {"caller_number": "555", "caller_name": "Ann", "dialed_number": "101"}

AGENTS = """
[tools.crm]
type = "mcp"
server_label = "crm"
server_url = "https://crm.example/mcp"
description = "the customer database"
allowed_tools = ["find_customer", "open_ticket"]
headers_from_env = { Authorization = "TEST_CRM_AUTH", X-Tenant = "TEST_CRM_TENANT" }

[tools.docs]
type = "mcp"
server_url = "https://docs.example/mcp"

[profiles.sales]
model = "gpt-realtime-2"
voice = "cedar"
reasoning_effort = "low"
noise_reduction = "near_field"
tools = ["hangup", "crm", "docs"]
vad = { idle_timeout_ms = 8000 }
prompt = { variables = { caller = "{caller_number}", line = "sales for {dialed_number}" } }

[profiles.support]
instructions = "Support line."
prompt = { id = "pmpt_support", version = "7" }
vad = { type = "server_vad", idle_timeout_ms = 0 }

[profiles.plain]
tools = ["hangup"]
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEST_CRM_AUTH", "Bearer crm-secret-token")
    monkeypatch.setenv("TEST_CRM_TENANT", "acme")


def agents_file(tmp_path: Path, text: str = AGENTS, settings: Settings | None = None) -> AgentsFile:
    path = tmp_path / "agents.toml"
    path.write_text(text)
    return load_agents_file(path, settings=settings)


def update_for(
    settings: Settings, agents: AgentsFile | None, profile: str | None
) -> dict[str, Any]:
    """The session.update of a call to ``profile``, checked against openai's types."""
    agent, warning = resolve_agent(settings, agents, profile, FIELDS)
    assert warning is None
    update = session_update(agent, settings, interrupt_response=True, today=TODAY).to_dict()
    validate_client_event(update)
    validate_client_event(json.loads(json.dumps(update)))
    return dict(update["session"])


# --- settings ---------------------------------------------------------------------------


def test_nothing_new_is_sent_by_default() -> None:
    session = update_for(load_settings(), None, None)
    for key in ("reasoning", "prompt"):
        assert key not in session
    audio_in = session["audio"]["input"]
    assert "noise_reduction" not in audio_in
    assert "idle_timeout_ms" not in audio_in["turn_detection"]
    assert session["instructions"]  # no stored prompt: the instructions go


def test_each_setting_reaches_the_session_update() -> None:
    settings = load_settings(
        REALTIME_REASONING_EFFORT="xhigh",
        REALTIME_PROMPT_ID="pmpt_abc123",
        REALTIME_PROMPT_VERSION="4",
        NOISE_REDUCTION="far_field",
        IDLE_TIMEOUT_MS="8000",
        SILENCE_TIMEOUT_SECONDS="30",
    )
    session = update_for(settings, None, None)
    assert session["reasoning"] == {"effort": "xhigh"}
    assert session["prompt"] == {"id": "pmpt_abc123", "version": "4"}
    # The stored prompt's own instructions apply: the session's would override them.
    assert "instructions" not in session
    assert session["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
    assert session["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 8000


def test_explicit_instructions_still_go_with_a_stored_prompt() -> None:
    settings = load_settings(REALTIME_PROMPT_ID="pmpt_abc123", AGENT_INSTRUCTIONS="Be brief.")
    session = update_for(settings, None, None)
    assert session["prompt"] == {"id": "pmpt_abc123"}
    assert session["instructions"].startswith("Be brief.")


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high", "xhigh"])
def test_every_reasoning_effort_is_a_ga_value(effort: str) -> None:
    session = update_for(load_settings(REALTIME_REASONING_EFFORT=effort), None, None)
    assert session["reasoning"] == {"effort": effort}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"REALTIME_REASONING_EFFORT": "extreme"},
            "REALTIME_REASONING_EFFORT: Input should be 'minimal', 'low', 'medium', 'high' or "
            "'xhigh' (got 'extreme')",
        ),
        (
            {"REALTIME_PROMPT_ID": "pmpt abc"},
            "REALTIME_PROMPT_ID: must be a stored prompt's id",
        ),
        (
            {"REALTIME_PROMPT_VERSION": "3"},
            "REALTIME_PROMPT_VERSION: needs REALTIME_PROMPT_ID",
        ),
        (
            {"REALTIME_PROMPT_ID": "pmpt_1", "REALTIME_PROMPT_VERSION": "v 3"},
            "REALTIME_PROMPT_VERSION: must be a prompt version",
        ),
        (
            {"NOISE_REDUCTION": "near"},
            "NOISE_REDUCTION: Input should be 'near_field', 'far_field' or 'off' (got 'near')",
        ),
        (
            {"IDLE_TIMEOUT_MS": "3000"},
            "IDLE_TIMEOUT_MS: must be milliseconds from 5000 to 30000",
        ),
        ({"IDLE_TIMEOUT_MS": "31000"}, "IDLE_TIMEOUT_MS: must be milliseconds from 5000 to 30000"),
        ({"IDLE_TIMEOUT_MS": "soon"}, "IDLE_TIMEOUT_MS: must be milliseconds"),
        (
            {"VAD_TYPE": "semantic_vad", "IDLE_TIMEOUT_MS": "8000"},
            "IDLE_TIMEOUT_MS: works only with VAD_TYPE=server_vad",
        ),
        (
            {"IDLE_TIMEOUT_MS": "8000", "SILENCE_TIMEOUT_SECONDS": "8"},
            "SILENCE_TIMEOUT_SECONDS: must be longer than IDLE_TIMEOUT_MS (8000 ms)",
        ),
    ],
)
def test_each_bad_value_is_one_clear_line(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**env)
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message and ";" not in message  # one problem, one line


@pytest.mark.parametrize("value", ["", "0"])
def test_an_empty_or_zero_idle_timeout_is_unset(value: str) -> None:
    assert load_settings(IDLE_TIMEOUT_MS=value).idle_timeout_ms is None
    assert load_settings(REALTIME_REASONING_EFFORT="").realtime_reasoning_effort is None


# --- the agents file -----------------------------------------------------------------------


def test_a_profile_sets_model_voice_reasoning_noise_idle_and_prompt(tmp_path: Path) -> None:
    settings = load_settings(REALTIME_PROMPT_ID="pmpt_abc123", REALTIME_PROMPT_VERSION="2")
    agents = agents_file(tmp_path, settings=settings)
    agent, _ = resolve_agent(settings, agents, "sales", FIELDS)
    assert (agent.model, agent.voice, agent.reasoning_effort) == ("gpt-realtime-2", "cedar", "low")
    session = update_for(settings, agents, "sales")
    assert session["model"] == "gpt-realtime-2"
    assert session["audio"]["output"]["voice"] == "cedar"
    assert session["reasoning"] == {"effort": "low"}
    assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert session["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 8000
    # The global prompt, its version, and variables filled like instructions.
    assert session["prompt"] == {
        "id": "pmpt_abc123",
        "version": "2",
        "variables": {
            "caller": {"type": "input_text", "text": "555"},
            "line": {"type": "input_text", "text": "sales for 101"},
        },
    }
    assert "instructions" not in session


def test_a_profile_prompt_of_its_own_and_explicit_instructions(tmp_path: Path) -> None:
    settings = load_settings(
        REALTIME_PROMPT_ID="pmpt_abc123", REALTIME_PROMPT_VERSION="2", IDLE_TIMEOUT_MS="6000"
    )
    session = update_for(settings, agents_file(tmp_path, settings=settings), "support")
    # Its own id: the global version (of another prompt) does not apply.
    assert session["prompt"] == {"id": "pmpt_support", "version": "7"}
    assert session["instructions"].startswith("Support line.")
    # idle_timeout_ms = 0 turns the global idle timeout off for this profile.
    assert "idle_timeout_ms" not in session["audio"]["input"]["turn_detection"]


def test_mcp_servers_are_passed_with_headers_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings()
    agents = agents_file(tmp_path)
    session = update_for(settings, agents, "sales")
    mcp = [t for t in session["tools"] if t["type"] == "mcp"]
    assert mcp == [
        {
            "type": "mcp",
            "server_label": "crm",
            "server_url": "https://crm.example/mcp",
            "allowed_tools": ["find_customer", "open_ticket"],
            "headers": {"Authorization": "Bearer crm-secret-token", "X-Tenant": "acme"},
            "require_approval": "never",
            "server_description": "the customer database",
        },
        {
            "type": "mcp",
            "server_label": "docs",  # the entry's name
            "server_url": "https://docs.example/mcp",
            "require_approval": "never",
        },
    ]
    assert [t["name"] for t in session["tools"] if t["type"] == "function"] == ["hangup"]
    # A profile without them does not get them.
    assert all(t["type"] == "function" for t in update_for(settings, agents, "plain")["tools"])
    # The secret is not in any repr, and is known for log masking.
    assert "crm-secret-token" not in repr(agents) + repr(
        resolve_agent(settings, agents, "sales", FIELDS)
    )
    assert "Bearer crm-secret-token" in agents.secrets()
    built = ev.McpTool(server_label="x", server_url="https://x", headers={"A": "s3cret"})
    assert "s3cret" not in repr(built)
    # The model cannot call a server as if it were a function of the controller.
    agent, _ = resolve_agent(settings, agents, "sales", FIELDS)
    assert conversation_config(agent, settings).tools == frozenset({"hangup"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[tools.crm]\ntype = "mcp"\nserver_url = "https://x"\nheaders = { A = "t" }',
            "header values are never written in the file",
        ),
        (
            '[tools.crm]\ntype = "mcp"\nserver_url = "https://x"\n'
            'headers_from_env = { Authorization = "TEST_UNSET_VARIABLE" }',
            "tools.crm.headers_from_env.Authorization: environment variable "
            "TEST_UNSET_VARIABLE is not set",
        ),
        (
            '[tools.crm]\ntype = "mcp"\nserver_url = "https://x"\n'
            'headers_from_env = { Authorization = "not a name" }',
            "is not an environment variable name",
        ),
        ('[tools.crm]\ntype = "mcp"\nserver_url = "ftp://x"', "must be an https:// URL"),
        ('[tools.crm]\ntype = "mcp"', "server_url: Field required"),
        (
            '[tools.a]\ntype = "mcp"\nserver_url = "https://x"\n'
            '[tools.b]\ntype = "mcp"\nserver_label = "a"\nserver_url = "https://y"',
            "MCP servers 'a' and 'b' share the label 'a'",
        ),
        ('[profiles.x]\ntools = ["crm"]', "profile 'x' lists unknown tool 'crm'"),
        ("[profiles.x]\nreasoning_effort = 'max'", "Input should be 'minimal'"),
        ("[profiles.x]\nnoise_reduction = 'loud'", "Input should be 'near_field'"),
        ("[profiles.x]\nvad = { idle_timeout_ms = 1000 }", "must be from 5000 to 30000"),
        ("[profiles.x]\nprompt = { id = 'pmpt x' }", "must be a stored prompt's id"),
        (
            "[profiles.x]\nprompt = { variables = { a = 'b' } }",
            "profiles.x.prompt: no id; set prompt.id or REALTIME_PROMPT_ID",
        ),
        (
            "[profiles.x]\nvad = { type = 'semantic_vad', idle_timeout_ms = 8000 }",
            "an idle timeout works only with server_vad",
        ),
    ],
)
def test_bad_entries_are_refused_at_start_up_with_the_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        agents_file(tmp_path, text, settings=load_settings())
    message = str(info.value)
    assert message.startswith("AGENTS_FILE: ") and expected in message, message
    assert "\n" not in message


def test_outbound_calls_send_their_brief_even_over_a_stored_prompt(tmp_path: Path) -> None:
    settings = load_settings(REALTIME_PROMPT_ID="pmpt_abc123")
    agent, _ = resolve_agent(settings, None, None, FIELDS)
    assert not agent.send_instructions
    request = OutboundRequest(number="100", purpose="Book a table for two.")
    calling = outbound_agent(agent, request, FIELDS, settings)
    update = session_update(calling, settings, interrupt_response=True, today=TODAY).to_dict()
    validate_client_event(update)
    assert "Book a table for two." in update["session"]["instructions"]
    assert update["session"]["prompt"] == {"id": "pmpt_abc123"}


# --- the client models themselves ------------------------------------------------------------


def test_client_models_refuse_what_the_api_has_not() -> None:
    with pytest.raises(ValueError):
        ev.Reasoning.model_validate({"effort": "extreme"})
    with pytest.raises(ValueError):
        ev.McpTool.model_validate(
            {"server_label": "x", "server_url": "https://x", "require_approval": "always"}
        )
    with pytest.raises(ValueError):
        ev.Prompt.model_validate({"id": "p", "variables": {"a": "bare string"}})
    update = ev.SessionUpdate(
        session=ev.SessionConfig(
            prompt=ev.Prompt(id="pmpt_1", variables={"a": ev.PromptText(text="b")}),
            reasoning=ev.Reasoning(effort="minimal"),
            tools=[
                ev.McpTool(server_label="x", server_url="https://x", allowed_tools=["t"]),
                ev.FunctionTool(name="f"),
            ],
        )
    )
    validate_client_event(update.to_dict())
