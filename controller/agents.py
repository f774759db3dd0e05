"""Agent profiles, transfer targets and custom tools: the operator's config file.

``AGENTS_FILE`` points at a TOML file (stdlib ``tomllib``, no new
dependency). Everything in it is optional; without it every call gets the
``default`` profile built from the environment settings::

    [transfer_targets.sales]            # name the model may use
    context = "sales-queue"             # continue into the dialplan here
    extension = "s"
    description = "the sales team"

    [transfer_targets.operator]
    endpoint = "PJSIP/operator"         # or redirect the channel (same tech)

    [tools.lookup_order]                # a custom tool the model may call
    description = "Look up an order by its number."
    url = "http://127.0.0.1:9000/orders"
    timeout = 5
    [tools.lookup_order.parameters]     # JSON schema of the arguments
    type = "object"
    required = ["number"]
    properties.number = { type = "string", description = "the order number" }

    [profiles.sales]                    # picked with Stasis(voicebot,profile=sales)
    instructions = "You are the sales line of {company}. The caller is {caller_number}."
    greeting = "Hello, sales speaking."
    voice = "cedar"
    tools = ["hangup", "transfer", "lookup_order"]
    transfer_targets = ["sales", "operator"]
    vad = { threshold = 0.6, silence_ms = 700 }

Everything the model may do on the PBX is listed here: a profile's tools,
and the transfer targets it may use. Names not declared are refused at load
time with a message naming them, and so is a file that is not UTF-8, a
template with a field that is not a plain ``{name}`` (see
:mod:`controller.templates`) or a tool's parameter schema nested deeper than
:data:`MAX_SCHEMA_DEPTH`: one line, never a traceback, and never at the
first call.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controller.config import Eagerness, Settings, VadType
from controller.errors import ConfigError
from controller.templates import (
    DATA_FIELDS,
    DATA_NOTE,
    TEMPLATE_FIELDS,
    fill_template,
    template_problem,
    uses_fields,
)

__all__ = [
    "BUILTIN_TOOLS",
    "TEMPLATE_FIELDS",
    "Agent",
    "AgentsFile",
    "HttpTool",
    "Profile",
    "TransferTarget",
    "VadOverrides",
    "VadSettings",
    "fill_template",
    "load_agents_file",
    "parse_stasis_args",
    "resolve_agent",
]

#: Tools the controller implements itself.
BUILTIN_TOOLS = ("hangup", "send_dtmf", "transfer")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Deepest nesting of a tool's parameter schema (real schemas stay under 10).
MAX_SCHEMA_DEPTH = 32
#: Most arguments ``Stasis()`` may pass that are looked at, and their longest length.
MAX_STASIS_ARGS = 32
MAX_STASIS_ARG_CHARS = 256


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of JSON-like ``value``, counting no further than ``limit + 1``."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransferTarget(_Strict):
    """Where ``transfer(target)`` may send a caller.

    Either a dialplan location (``context`` + ``extension`` [+ ``priority`` or
    ``label``]; the channel leaves Stasis with ARI ``continue``) or an
    ``endpoint`` (ARI ``redirect``, same channel technology only).
    """

    description: str = ""
    context: str | None = None
    extension: str | None = None
    priority: int | None = None
    label: str | None = None
    endpoint: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TransferTarget:
        dialplan = self.context is not None or self.extension is not None
        if dialplan == (self.endpoint is not None):
            raise ValueError("give either context + extension, or endpoint (not both)")
        if dialplan and not (self.context and self.extension):
            raise ValueError("a dialplan target needs both context and extension")
        return self


class HttpTool(_Strict):
    """A custom tool: the controller POSTs the model's arguments to ``url``."""

    description: str
    url: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    timeout: float = Field(5.0, gt=0, le=60)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('must be a JSON schema with "type": "object"')
        if _depth(value, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
            raise ValueError(f"is nested deeper than {MAX_SCHEMA_DEPTH} levels")
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError("must be plain JSON (no NaN or infinite numbers)") from None
        return value


class VadOverrides(_Strict):
    """Per-profile turn detection; unset fields keep the environment's values."""

    type: VadType | None = None
    threshold: float | None = Field(None, ge=0, le=1)
    silence_ms: int | None = Field(None, ge=0, le=10_000)
    prefix_ms: int | None = Field(None, ge=0, le=10_000)
    eagerness: Eagerness | None = None


class Profile(_Strict):
    """One named agent. Unset fields fall back to the environment settings."""

    instructions: str | None = None
    greeting: str | None = None
    voice: str | None = None
    tools: list[str] | None = None
    transfer_targets: list[str] = Field(default_factory=list)
    vad: VadOverrides = VadOverrides()
    dtmf_to_model: bool | None = None

    @field_validator("instructions", "greeting")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        problem = template_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value


class AgentsFile(_Strict):
    """The whole ``AGENTS_FILE``."""

    transfer_targets: dict[str, TransferTarget] = Field(default_factory=dict)
    tools: dict[str, HttpTool] = Field(default_factory=dict)
    profiles: dict[str, Profile] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> AgentsFile:
        for kind, names in (("transfer target", self.transfer_targets), ("tool", self.tools)):
            for name in names:
                if not _NAME.match(name):
                    raise ValueError(f"{kind} name {name!r} must match [A-Za-z0-9_-]{{1,64}}")
        clash = set(self.tools) & set(BUILTIN_TOOLS)
        if clash:
            raise ValueError(f"custom tool {sorted(clash)[0]!r} clashes with a built-in tool")
        known_tools = set(BUILTIN_TOOLS) | set(self.tools)
        for pname, profile in self.profiles.items():
            for tool in profile.tools or ():
                if tool not in known_tools:
                    raise ValueError(
                        f"profile {pname!r} lists unknown tool {tool!r}; "
                        f"known: {', '.join(sorted(known_tools))}"
                    )
            for target in profile.transfer_targets:
                if target not in self.transfer_targets:
                    raise ValueError(
                        f"profile {pname!r} lists unknown transfer target {target!r}; "
                        "declare it under [transfer_targets]"
                    )
        return self


class VadSettings(BaseModel):
    """Resolved turn detection for one call."""

    model_config = ConfigDict(frozen=True)
    type: VadType
    threshold: float
    silence_ms: int
    prefix_ms: int
    eagerness: Eagerness


class Agent(BaseModel):
    """Everything one call's agent is: resolved from a profile and the settings."""

    model_config = ConfigDict(frozen=True)
    profile: str
    instructions: str
    greeting: str
    voice: str
    tools: tuple[str, ...]
    transfer_targets: dict[str, TransferTarget]
    http_tools: dict[str, HttpTool]
    vad: VadSettings
    dtmf_to_model: bool


def load_agents_file(path: str | Path) -> AgentsFile:
    """Read and validate an agents file.

    Raises:
        ConfigError: the file is missing, not TOML, or invalid; the message
            names the file and the first problem.
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"AGENTS_FILE: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"AGENTS_FILE: {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"AGENTS_FILE: {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"AGENTS_FILE: {path} is nested too deeply to be read") from None
    try:
        return AgentsFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"AGENTS_FILE: {path}: {where + ': ' if where else ''}{msg}") from None


def parse_stasis_args(args: list[str]) -> dict[str, str]:
    """``Stasis(app,profile=sales,foo)`` -> ``{"profile": "sales"}`` (bare words ignored).

    The dialplan's arguments may carry what a caller dialled: only the first
    :data:`MAX_STASIS_ARGS` are looked at, each cut to :data:`MAX_STASIS_ARG_CHARS`.
    """
    out: dict[str, str] = {}
    for arg in args[:MAX_STASIS_ARGS]:
        key, sep, value = arg[:MAX_STASIS_ARG_CHARS].partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def resolve_agent(
    settings: Settings,
    agents: AgentsFile | None,
    requested: str | None,
    fields: dict[str, str],
) -> tuple[Agent, str | None]:
    """Build the agent for one call.

    Args:
        settings: environment settings (the defaults).
        agents: the parsed agents file, if any.
        requested: the profile the dialplan asked for, if any.
        fields: template fields (caller number, dialled number, ...).

    Returns:
        The agent, and a warning when the requested profile does not exist
        (the call then gets ``default``).
    """
    warning = None
    profiles = agents.profiles if agents else {}
    name = requested or "default"
    if name not in profiles and name != "default":
        known = ", ".join(sorted(profiles)) or "none"
        warning = f"unknown profile {name[:64]!r}; using 'default' (known: {known})"
        name = "default"
    profile = profiles.get(name, Profile())
    fields = {**fields, "profile": name}
    tools = tuple(profile.tools) if profile.tools is not None else settings.default_tools
    targets_all = agents.transfer_targets if agents else {}
    vad = profile.vad
    template = (
        profile.instructions if profile.instructions is not None else settings.agent_instructions
    )
    instructions = fill_template(template, fields)
    if uses_fields(template, DATA_FIELDS):
        instructions = f"{instructions.rstrip()}\n\n{DATA_NOTE}"
    agent = Agent(
        profile=name,
        instructions=instructions,
        greeting=fill_template(
            profile.greeting if profile.greeting is not None else settings.agent_greeting,
            fields,
            quote=(),
        ),
        voice=profile.voice or settings.realtime_voice,
        tools=tools,
        transfer_targets={t: targets_all[t] for t in profile.transfer_targets},
        http_tools={t: agents.tools[t] for t in tools if agents and t in agents.tools},
        vad=VadSettings(
            type=vad.type or settings.vad_type,
            threshold=vad.threshold if vad.threshold is not None else settings.vad_threshold,
            silence_ms=vad.silence_ms if vad.silence_ms is not None else settings.vad_silence_ms,
            prefix_ms=vad.prefix_ms if vad.prefix_ms is not None else settings.vad_prefix_ms,
            eagerness=vad.eagerness or settings.vad_eagerness,
        ),
        dtmf_to_model=(
            profile.dtmf_to_model if profile.dtmf_to_model is not None else settings.dtmf_to_model
        ),
    )
    return agent, warning


ToolName = Literal["hangup", "send_dtmf", "transfer"]
