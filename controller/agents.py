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

    [tools.crm]                         # a remote MCP server; the API calls it
    type = "mcp"
    server_label = "crm"
    server_url = "https://crm.example/mcp"
    allowed_tools = ["find_customer"]
    headers_from_env = { Authorization = "CRM_MCP_AUTHORIZATION" }

    [profiles.sales]                    # picked with Stasis(voicebot,profile=sales)
    instructions = "You are the sales line of {company}. The caller is {caller_number}."
    greeting = "Hello, sales speaking."
    model = "gpt-realtime-2"
    voice = "cedar"
    reasoning_effort = "low"
    noise_reduction = "near_field"
    tools = ["hangup", "transfer", "lookup_order", "crm"]
    transfer_targets = ["sales", "operator"]
    vad = { threshold = 0.6, silence_ms = 700, idle_timeout_ms = 8000 }
    prompt = { id = "pmpt_123", version = "4", variables = { caller = "{caller_number}" } }

Everything the model may do on the PBX is listed here: a profile's tools,
and the transfer targets it may use. Names not declared are refused at load
time with a message naming them, and so is a file that is not UTF-8, a
template with a field that is not a plain ``{name}`` (see
:mod:`controller.templates`) or a tool's parameter schema nested deeper than
:data:`MAX_SCHEMA_DEPTH`: one line, never a traceback, and never at the
first call. MCP header values are never written in the file:
``headers_from_env`` names the environment variables that hold them.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from controller.config import (
    IDLE_TIMEOUT_RANGE_MS,
    PROMPT_ID_PATTERN,
    PROMPT_VERSION_PATTERN,
    Eagerness,
    NoiseReduction,
    ReasoningEffort,
    Settings,
    VadType,
)
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


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class McpServer(_Strict):
    """A remote MCP server (``type = "mcp"`` under ``[tools]``): the model may call its tools.

    The Realtime API calls the server, not the controller, and never asks
    for approval at run time. Header values (credentials) are never written
    in the file: ``headers_from_env`` maps each header to the environment
    variable holding its value, read at start-up into ``headers``.
    """

    type: Literal["mcp"]
    server_label: str | None = None  # default: the entry's name
    server_url: str
    description: str = ""
    allowed_tools: list[str] | None = None
    headers_from_env: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict, repr=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _no_header_values(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "headers" in data:
            raise ValueError(
                "header values are never written in the file: name the environment "
                'variables holding them, e.g. headers_from_env = { Authorization = "CRM_TOKEN" }'
            )
        return data

    @field_validator("server_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an https:// URL the Realtime API can reach")
        return value

    @field_validator("server_label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("must match [A-Za-z0-9_-]{1,64}")
        return value

    @field_validator("headers_from_env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for header, env in value.items():
            if not _HEADER_NAME.match(header):
                raise ValueError(f"{header!r} is not an HTTP header name")
            if not _ENV_NAME.match(env):
                raise ValueError(f"{env!r} (for {header}) is not an environment variable name")
        return value


def _tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, Mapping) else getattr(value, "type", None)
    return "mcp" if kind == "mcp" else "http"


#: A ``[tools]`` entry: an HTTP tool, or an MCP server with ``type = "mcp"``.
ToolEntry = Annotated[
    Annotated[HttpTool, Tag("http")] | Annotated[McpServer, Tag("mcp")],
    Discriminator(_tool_kind),
]


class VadOverrides(_Strict):
    """Per-profile turn detection; unset fields keep the environment's values."""

    type: VadType | None = None
    threshold: float | None = Field(None, ge=0, le=1)
    silence_ms: int | None = Field(None, ge=0, le=10_000)
    prefix_ms: int | None = Field(None, ge=0, le=10_000)
    eagerness: Eagerness | None = None
    idle_timeout_ms: int | None = None  # 0: none, whatever IDLE_TIMEOUT_MS says

    @field_validator("idle_timeout_ms")
    @classmethod
    def _idle(cls, value: int | None) -> int | None:
        low, high = IDLE_TIMEOUT_RANGE_MS
        if value and not low <= value <= high:
            raise ValueError(f"must be from {low} to {high} ms (what the API accepts), or 0")
        return value


class PromptRef(_Strict):
    """A profile's stored prompt: unset ``id``/``version`` fall back to
    ``REALTIME_PROMPT_ID``/``REALTIME_PROMPT_VERSION``; ``variables`` may use
    the same ``{fields}`` as instructions."""

    id: str | None = None
    version: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not PROMPT_ID_PATTERN.match(value):
            raise ValueError("must be a stored prompt's id such as pmpt_abc123")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None and not PROMPT_VERSION_PATTERN.match(value):
            raise ValueError("must be a prompt version such as 3")
        return value


class Profile(_Strict):
    """One named agent. Unset fields fall back to the environment settings."""

    instructions: str | None = None
    greeting: str | None = None
    model: str | None = None
    voice: str | None = None
    reasoning_effort: ReasoningEffort | None = None
    noise_reduction: NoiseReduction | None = None
    prompt: PromptRef | None = None
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
    tools: dict[str, ToolEntry] = Field(default_factory=dict)
    profiles: dict[str, Profile] = Field(default_factory=dict)

    @property
    def mcp_servers(self) -> dict[str, McpServer]:
        """The ``type = "mcp"`` entries of ``[tools]``, by name."""
        return {n: t for n, t in self.tools.items() if isinstance(t, McpServer)}

    def secrets(self) -> list[str]:
        """Values that must never be printed (MCP and HTTP tool header values)."""
        mcp = [v for server in self.mcp_servers.values() for v in server.headers.values() if v]
        http = [v for tool in self.tools.values() for v in getattr(tool, "headers", {}).values()]
        return [*mcp, *(v for v in http if v)]

    @model_validator(mode="after")
    def _references(self) -> AgentsFile:
        for kind, names in (("transfer target", self.transfer_targets), ("tool", self.tools)):
            for name in names:
                if not _NAME.match(name):
                    raise ValueError(f"{kind} name {name!r} must match [A-Za-z0-9_-]{{1,64}}")
        clash = set(self.tools) & set(BUILTIN_TOOLS)
        if clash:
            raise ValueError(f"custom tool {sorted(clash)[0]!r} clashes with a built-in tool")
        labels: dict[str, str] = {}
        for name, server in self.mcp_servers.items():
            label = server.server_label or name
            if label in labels:
                raise ValueError(
                    f"MCP servers {labels[label]!r} and {name!r} share the label {label!r}"
                )
            labels[label] = name
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
    idle_timeout_ms: int | None = None  # server VAD only


class StoredPrompt(BaseModel):
    """A call's stored prompt: its id, version and filled-in variables."""

    model_config = ConfigDict(frozen=True)
    id: str
    version: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)


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
    model: str = "gpt-realtime"
    reasoning_effort: ReasoningEffort | None = None
    noise_reduction: NoiseReduction = "off"
    prompt: StoredPrompt | None = None
    #: False: ``instructions`` stay out of ``session.update`` so the stored
    #: prompt's own apply (the session's would override them).
    send_instructions: bool = True
    mcp_servers: dict[str, McpServer] = Field(default_factory=dict)


def load_agents_file(
    path: str | Path,
    *,
    settings: Settings | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentsFile:
    """Read and validate an agents file.

    Args:
        path: the TOML file.
        settings: when given, what a profile leaves to the settings is
            checked too (a prompt needs an id, an idle timeout server VAD).
        environ: where MCP header values are read (default: ``os.environ``).

    Raises:
        ConfigError: the file is missing, not TOML, or invalid; an MCP
            header's environment variable is unset; the message names the
            file and the first problem.
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
        agents = AgentsFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"AGENTS_FILE: {path}: {where + ': ' if where else ''}{msg}") from None
    try:
        agents = _with_mcp_headers(agents, os.environ if environ is None else environ)
        if settings is not None:
            _check_with_settings(agents, settings)
    except ValueError as exc:
        raise ConfigError(f"AGENTS_FILE: {path}: {exc}") from None
    return agents


def _with_mcp_headers(agents: AgentsFile, environ: Mapping[str, str]) -> AgentsFile:
    """``agents`` with each MCP server's header values read from the environment."""
    tools: dict[str, HttpTool | McpServer] = dict(agents.tools)
    for name, server in agents.mcp_servers.items():
        headers = {}
        for header, env in server.headers_from_env.items():
            value = environ.get(env, "")
            if not value:
                raise ValueError(
                    f"tools.{name}.headers_from_env.{header}: environment variable {env} is not set"
                )
            headers[header] = value
        tools[name] = server.model_copy(update={"headers": headers})
    return agents.model_copy(update={"tools": tools})


def _check_with_settings(agents: AgentsFile, settings: Settings) -> None:
    for name, profile in agents.profiles.items():
        prompt = profile.prompt
        if prompt is not None and not (prompt.id or settings.realtime_prompt_id):
            raise ValueError(f"profiles.{name}.prompt: no id; set prompt.id or REALTIME_PROMPT_ID")
        vad = profile.vad
        idle = settings.idle_timeout_ms if vad.idle_timeout_ms is None else vad.idle_timeout_ms
        if idle and (vad.type or settings.vad_type) != "server_vad":
            raise ValueError(
                f"profiles.{name}.vad: an idle timeout works only with server_vad "
                '(set vad.idle_timeout_ms = 0 or vad.type = "server_vad")'
            )


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


def dialled_number(args: list[str], exten: str = "") -> str:
    """The number the caller dialled: the first bare Stasis argument, else ``exten``.

    The dialplan passes ``${EXTEN}`` first (``Stasis(voicebot,100,profile=sales)``
    arrives as ``["100", "profile=sales"]``, an empty ``${ARG2}`` as ``""``);
    a bare ``Stasis(voicebot)`` leaves only the extension the channel is at.
    """
    bare = [a for a in args if a and "=" not in a]
    return bare[0] if bare else exten


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
    entries = agents.tools if agents else {}
    vad = profile.vad
    vad_type = vad.type or settings.vad_type
    idle = settings.idle_timeout_ms if vad.idle_timeout_ms is None else vad.idle_timeout_ms
    prompt = _stored_prompt(profile.prompt, settings, fields)
    # With a stored prompt, the session's instructions would override the
    # prompt's: they are sent only when the profile or AGENT_INSTRUCTIONS gives them.
    explicit = profile.instructions is not None or "agent_instructions" in settings.model_fields_set
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
        http_tools={t: e for t in tools if isinstance(e := entries.get(t), HttpTool)},
        vad=VadSettings(
            type=vad_type,
            threshold=vad.threshold if vad.threshold is not None else settings.vad_threshold,
            silence_ms=vad.silence_ms if vad.silence_ms is not None else settings.vad_silence_ms,
            prefix_ms=vad.prefix_ms if vad.prefix_ms is not None else settings.vad_prefix_ms,
            eagerness=vad.eagerness or settings.vad_eagerness,
            idle_timeout_ms=(idle or None) if vad_type == "server_vad" else None,
        ),
        dtmf_to_model=(
            profile.dtmf_to_model if profile.dtmf_to_model is not None else settings.dtmf_to_model
        ),
        model=profile.model or settings.realtime_model,
        reasoning_effort=profile.reasoning_effort or settings.realtime_reasoning_effort,
        noise_reduction=profile.noise_reduction or settings.noise_reduction,
        prompt=prompt,
        send_instructions=prompt is None or explicit,
        mcp_servers={t: e for t in tools if isinstance(e := entries.get(t), McpServer)},
    )
    return agent, warning


def _stored_prompt(
    ref: PromptRef | None, settings: Settings, fields: dict[str, str]
) -> StoredPrompt | None:
    prompt_id = (ref.id if ref else None) or settings.realtime_prompt_id
    if not prompt_id:
        return None
    version = ref.version if ref else None
    if version is None and prompt_id == settings.realtime_prompt_id:
        version = settings.realtime_prompt_version or None  # a version of that prompt only
    variables = {
        k: fill_template(v, fields, quote=()) for k, v in (ref.variables if ref else {}).items()
    }
    return StoredPrompt(id=prompt_id, version=version, variables=variables)


ToolName = Literal["hangup", "send_dtmf", "transfer"]
