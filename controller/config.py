"""Settings: environment variables (and an optional env file), validated once.

The names below are the public interface: they are documented in README.md
and used by docker-compose.yml. :func:`load_settings` turns every validation
problem into one :class:`~controller.errors.ConfigError` whose message names
the setting and says what is wrong, never echoing a secret's value: values
are shown with URL credentials and credential-like query parameters masked
(``http://user:***@host``), and with any secret setting's value masked
wherever it appears. An env file that is not UTF-8, or an environment value
that is not (the OS hands Python undecodable bytes as surrogates), is one
such line too. :func:`setting_warnings` names settings that look like ours
but are not (``OUTBOUND_ALOW``: did you mean ``OUTBOUND_ALLOW``?).
"""

from __future__ import annotations

import difflib
import io
import ipaddress
import os
import platform
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.errors import ConfigError
from controller.redact import SecretMasker, escape_controls, mask_urls_in
from controller.store.url import parse_database_url, url_password

AudioMode = Literal["pcmu", "pcm24k"]
#: inbound: the controller connects to Asterisk and registers ARI_APP (one
#: controller per app); outbound: Asterisk opens a websocket per call to
#: ARI_LISTEN (ari.conf type=outbound_websocket, per_call_config), so any
#: number of controllers can serve the app behind a load balancer.
AriMode = Literal["inbound", "outbound"]
VadType = Literal["server_vad", "semantic_vad"]
Eagerness = Literal["low", "medium", "high", "auto"]
ReasoningEffort = Literal["minimal", "low", "medium", "high", "xhigh"]
NoiseReduction = Literal["near_field", "far_field", "off"]
#: ``IDLE_TIMEOUT_MS``: the range the Realtime API accepts.
IDLE_TIMEOUT_RANGE_MS = (5_000, 30_000)
PROMPT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
PROMPT_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

#: Settings whose values must never be printed.
#: WEBHOOK_URL is here because it may carry credentials or a token in its query.
SECRET_SETTINGS = frozenset(
    {"ARI_PASSWORD", "OPENAI_API_KEY", "HTTP_TOKEN", "WEBHOOK_URL", "DATABASE_URL"}
)
#: Shortest HTTP_TOKEN accepted: long enough that guessing it is hopeless.
HTTP_TOKEN_MIN_LENGTH = 16


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


def _default_controller_id(data: dict[str, Any]) -> str:
    # Unique per host and Stasis app: what close_crashed keys on at start-up.
    return f"{platform.node() or 'localhost'}/{data.get('ari_app', 'voicebot')}"


class Settings(BaseSettings):
    """All settings of the controller. Field aliases are the env var names."""

    model_config = SettingsConfigDict(
        extra="ignore",
        populate_by_name=False,
        frozen=True,
        case_sensitive=True,
    )

    # --- ARI -----------------------------------------------------------------
    ari_url: str = Field("http://127.0.0.1:8088", validation_alias=_env("ARI_URL"))
    ari_user: str = Field("voicebot", validation_alias=_env("ARI_USER"))
    ari_password: SecretStr = Field(SecretStr(""), validation_alias=_env("ARI_PASSWORD"))
    ari_app: str = Field("voicebot", validation_alias=_env("ARI_APP"))
    ari_mode: AriMode = Field("inbound", validation_alias=_env("ARI_MODE"))
    # Outbound mode: where Asterisk's per-call websockets arrive (websocket_client.conf uri).
    ari_listen: str = Field("", validation_alias=_env("ARI_LISTEN"), validate_default=True)
    # Both set: ARI_LISTEN speaks TLS (wss://) with this certificate chain and key (PEM).
    ari_listen_cert: str = Field("", validation_alias=_env("ARI_LISTEN_CERT"))
    ari_listen_key: str = Field("", validation_alias=_env("ARI_LISTEN_KEY"), validate_default=True)

    # --- Realtime model ----------------------------------------------------------
    realtime_url: str = Field(
        "wss://api.openai.com/v1/realtime", validation_alias=_env("REALTIME_URL")
    )
    openai_api_key: SecretStr = Field(SecretStr(""), validation_alias=_env("OPENAI_API_KEY"))
    realtime_model: str = Field("gpt-realtime", validation_alias=_env("REALTIME_MODEL"))
    realtime_voice: str = Field("marin", validation_alias=_env("REALTIME_VOICE"))
    realtime_audio: AudioMode = Field("pcmu", validation_alias=_env("REALTIME_AUDIO"))
    realtime_connect_timeout: Annotated[float, Field(gt=0, le=120)] = Field(
        10.0, validation_alias=_env("REALTIME_CONNECT_TIMEOUT")
    )
    # On SIGTERM, live calls may finish for this long before they are handed back.
    drain_seconds: Annotated[float, Field(ge=0, le=3_600)] = Field(
        30.0, validation_alias=_env("DRAIN_SECONDS")
    )
    # Calls still up when ARI has been unreachable this long are ended (0: never): they
    # cannot be controlled, and their model sessions would be paid for until MAX_CALL_SECONDS.
    ari_lost_seconds: Annotated[float, Field(ge=0, le=3_600)] = Field(
        60.0, validation_alias=_env("ARI_LOST_SECONDS")
    )
    # A session lost mid-call is reopened (and the conversation replayed) for this long.
    realtime_reconnect_seconds: Annotated[float, Field(ge=0, le=600)] = Field(
        30.0, validation_alias=_env("REALTIME_RECONNECT_SECONDS")
    )
    # A response with no event from the model for this long: the session is renewed.
    realtime_stall_seconds: Annotated[float, Field(ge=0, le=600)] = Field(
        15.0, validation_alias=_env("REALTIME_STALL_SECONDS")
    )
    # The largest message accepted from the model server (bytes); bigger ones
    # close the session before they are read (websocket close code 1009).
    realtime_max_message_bytes: Annotated[int, Field(ge=64 * 1024, le=256 * 2**20)] = Field(
        4 * 2**20, validation_alias=_env("REALTIME_MAX_MESSAGE_BYTES")
    )
    transcription_model: str = Field(
        "gpt-4o-mini-transcribe", validation_alias=_env("TRANSCRIPTION_MODEL")
    )
    transcription_language: str = Field("", validation_alias=_env("TRANSCRIPTION_LANGUAGE"))
    # Reasoning models (gpt-realtime-2); unset: the model's default, nothing sent.
    realtime_reasoning_effort: ReasoningEffort | None = Field(
        None, validation_alias=_env("REALTIME_REASONING_EFFORT")
    )
    # A stored prompt (session.prompt); unset: none.
    realtime_prompt_id: str = Field("", validation_alias=_env("REALTIME_PROMPT_ID"))
    realtime_prompt_version: str = Field("", validation_alias=_env("REALTIME_PROMPT_VERSION"))
    # off: nothing sent (the API's default is no noise reduction).
    noise_reduction: NoiseReduction = Field("off", validation_alias=_env("NOISE_REDUCTION"))

    # --- Turn detection ----------------------------------------------------------
    vad_type: VadType = Field("server_vad", validation_alias=_env("VAD_TYPE"))
    vad_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, validation_alias=_env("VAD_THRESHOLD")
    )
    vad_silence_ms: Annotated[int, Field(ge=0, le=10_000)] = Field(
        500, validation_alias=_env("VAD_SILENCE_MS")
    )
    vad_prefix_ms: Annotated[int, Field(ge=0, le=10_000)] = Field(
        300, validation_alias=_env("VAD_PREFIX_MS")
    )
    vad_eagerness: Eagerness = Field("auto", validation_alias=_env("VAD_EAGERNESS"))
    # Server VAD only: the model prompts the caller after this much silence.
    idle_timeout_ms: int | None = Field(None, validation_alias=_env("IDLE_TIMEOUT_MS"))

    # --- Media -------------------------------------------------------------------
    media_address: str = Field("127.0.0.1", validation_alias=_env("MEDIA_ADDRESS"))
    media_ports: str = Field("40000-40999", validation_alias=_env("MEDIA_PORTS"))

    # --- Agent -------------------------------------------------------------------
    agent_instructions: str = Field(
        "You are a helpful, concise voice assistant answering a phone call. "
        "Speak naturally and keep answers short.",
        validation_alias=_env("AGENT_INSTRUCTIONS"),
    )
    agent_greeting: str = Field("", validation_alias=_env("AGENT_GREETING"))

    # --- Conversation control ---------------------------------------------------------
    agents_file: str = Field("", validation_alias=_env("AGENTS_FILE"))
    agent_tools: str = Field("hangup,send_dtmf,transfer", validation_alias=_env("AGENT_TOOLS"))
    dtmf_to_model: bool = Field(True, validation_alias=_env("DTMF_TO_MODEL"))
    barge_in_min_ms: Annotated[int, Field(ge=0, le=5_000)] = Field(
        0, validation_alias=_env("BARGE_IN_MIN_MS")
    )
    protect_greeting: bool = Field(False, validation_alias=_env("PROTECT_GREETING"))
    max_call_seconds: Annotated[int, Field(ge=0, le=86_400)] = Field(
        7200, validation_alias=_env("MAX_CALL_SECONDS")
    )
    silence_timeout_seconds: Annotated[int, Field(ge=0, le=3_600)] = Field(
        0, validation_alias=_env("SILENCE_TIMEOUT_SECONDS")
    )
    hangup_grace_seconds: Annotated[float, Field(ge=0, le=60)] = Field(
        10.0, validation_alias=_env("HANGUP_GRACE_SECONDS")
    )
    # Tool calls one model response may make (and tools running at once).
    max_tool_calls_per_response: Annotated[int, Field(ge=1, le=100)] = Field(
        8, validation_alias=_env("MAX_TOOL_CALLS_PER_RESPONSE")
    )

    # --- Outbound calls --------------------------------------------------------------
    # Space-separated regular expressions; a dial string must match one whole.
    # Empty: outbound calling is off.
    outbound_allow: str = Field("", validation_alias=_env("OUTBOUND_ALLOW"))
    outbound_trunk: str = Field("", validation_alias=_env("OUTBOUND_TRUNK"))
    outbound_max_concurrent: Annotated[int, Field(ge=1, le=1000)] = Field(
        4, validation_alias=_env("OUTBOUND_MAX_CONCURRENT")
    )
    outbound_caller_id: str = Field("", validation_alias=_env("OUTBOUND_CALLER_ID"))
    # Where answered outbound calls go for answering-machine detection (AMD()).
    outbound_amd_context: str = Field(
        "ari-realtime-amd", validation_alias=_env("OUTBOUND_AMD_CONTEXT")
    )
    max_hold_seconds: Annotated[int, Field(ge=0, le=86_400)] = Field(
        900, validation_alias=_env("MAX_HOLD_SECONDS")
    )
    # Outbound turn detection waits at least this much silence (menus pause).
    outbound_vad_silence_ms: Annotated[int, Field(ge=0, le=10_000)] = Field(
        900, validation_alias=_env("OUTBOUND_VAD_SILENCE_MS")
    )

    # --- Call records ----------------------------------------------------------------
    # A SecretStr: the URL may hold a password, so it is never shown whole.
    database_url: SecretStr = Field(SecretStr(""), validation_alias=_env("DATABASE_URL"))
    store_transcripts: bool = Field(True, validation_alias=_env("STORE_TRANSCRIPTS"))
    records_retention_days: int | None = Field(
        None, validation_alias=_env("RECORDS_RETENTION_DAYS")
    )
    prices_file: str = Field("", validation_alias=_env("PRICES_FILE"))
    # ari_app is declared above, so the factory sees its validated value.
    controller_id: str = Field(
        default_factory=_default_controller_id, validation_alias=_env("CONTROLLER_ID")
    )

    # --- Operations ----------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_env("LOG_LEVEL")
    )
    # auto: uvloop when it is installed (less memory per TLS session), else asyncio's loop.
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", validation_alias=_env("EVENT_LOOP")
    )
    # The operator's HTTP server (API, metrics, live view); empty turns it off.
    http_listen: str = Field("127.0.0.1:8080", validation_alias=_env("HTTP_LISTEN"))
    # Checked after http_listen (fields validate in order), hence validate_default.
    http_token: SecretStr = Field(
        SecretStr(""), validation_alias=_env("HTTP_TOKEN"), validate_default=True
    )
    webhook_url: str = Field("", validation_alias=_env("WEBHOOK_URL"))

    @field_validator("realtime_reasoning_effort", mode="before")
    @classmethod
    def _unset_if_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("realtime_prompt_id")
    @classmethod
    def _check_prompt_id(cls, value: str) -> str:
        value = value.strip()
        if value and not PROMPT_ID_PATTERN.match(value):
            raise ValueError(
                "must be a stored prompt's id such as pmpt_abc123 (letters, digits, _ -)"
            )
        return value

    @field_validator("realtime_prompt_version")
    @classmethod
    def _check_prompt_version(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if value and not PROMPT_VERSION_PATTERN.match(value):
            raise ValueError("must be a prompt version such as 3 (letters, digits, . _ -)")
        if value and not info.data.get("realtime_prompt_id", "x"):
            raise ValueError("needs REALTIME_PROMPT_ID (the prompt it is a version of)")
        return value

    @field_validator("idle_timeout_ms", mode="before")
    @classmethod
    def _check_idle_timeout(cls, value: object, info: ValidationInfo) -> object:
        if value is None or (isinstance(value, str) and value.strip() in ("", "0")) or value == 0:
            return None  # unset: no idle timeout
        low, high = IDLE_TIMEOUT_RANGE_MS
        try:
            ms = int(str(value).strip())
        except ValueError:
            ms = 0
        if not low <= ms <= high:
            raise ValueError(
                f"must be milliseconds from {low} to {high} (what the API accepts), or 0 for none"
            )
        if info.data.get("vad_type", "server_vad") != "server_vad":
            raise ValueError("works only with VAD_TYPE=server_vad")
        return ms

    @field_validator("silence_timeout_seconds")
    @classmethod
    def _check_silence_after_idle(cls, value: int, info: ValidationInfo) -> int:
        idle = info.data.get("idle_timeout_ms")
        if value and idle and value * 1000 <= idle:
            raise ValueError(
                f"must be longer than IDLE_TIMEOUT_MS ({idle} ms), or the call ends before "
                "the agent asks whether the caller is still there"
            )
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _check_outbound_allow(cls, value: str) -> str:
        for pattern in value.split():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value.strip()

    @field_validator("outbound_trunk")
    @classmethod
    def _check_outbound_trunk(cls, value: str) -> str:
        if value and ("{number}" not in value or "/" not in value):
            raise ValueError("must be a dial string with {number}, e.g. PJSIP/{number}@provider")
        return value.strip()

    @property
    def outbound_patterns(self) -> list[str]:
        """``OUTBOUND_ALLOW`` as a list of patterns."""
        return self.outbound_allow.split()

    @field_validator("ari_url")
    @classmethod
    def _check_ari_url(cls, value: str) -> str:
        parts = _split_url(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:8088")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials; use ARI_USER and ARI_PASSWORD")
        return value.rstrip("/")

    @field_validator("ari_mode")
    @classmethod
    def _check_ari_mode(cls, value: str, info: ValidationInfo) -> str:
        password = info.data.get("ari_password")
        missing = isinstance(password, SecretStr) and not password.get_secret_value()
        if value == "outbound" and missing:
            raise ValueError(
                "ARI_MODE=outbound needs ARI_PASSWORD: Asterisk's websockets must present it "
                "(websocket_client.conf username/password = ARI_USER/ARI_PASSWORD)"
            )
        return value

    @field_validator("ari_listen")
    @classmethod
    def _check_ari_listen(cls, value: str, info: ValidationInfo) -> str:
        parse_listen(value)
        if info.data.get("ari_mode") == "outbound" and not value.strip():
            raise ValueError(
                "required when ARI_MODE=outbound: the HOST:PORT Asterisk's per-call websockets "
                "connect to (websocket_client.conf uri), e.g. 0.0.0.0:8765"
            )
        return value.strip()

    @field_validator("ari_listen_key")
    @classmethod
    def _check_ari_listen_tls(cls, value: str, info: ValidationInfo) -> str:
        cert = info.data.get("ari_listen_cert", "")
        if bool(cert) != bool(value):
            raise ValueError("ARI_LISTEN_CERT and ARI_LISTEN_KEY go together: set both or neither")
        for name, path in (("ARI_LISTEN_CERT", cert), ("ARI_LISTEN_KEY", value)):
            if path and not Path(path).is_file():
                raise ValueError(f"{name}={path} is not a readable file")
        return value

    @field_validator("realtime_url")
    @classmethod
    def _check_realtime_url(cls, value: str) -> str:
        parts = _split_url(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(
                "must be a ws:// or wss:// URL such as wss://api.openai.com/v1/realtime"
            )
        return value

    @field_validator("ari_app")
    @classmethod
    def _check_app(cls, value: str) -> str:
        if not value or any(c in value for c in ",/?&# \t"):
            raise ValueError("must be a non-empty Stasis app name without , / ? & # or spaces")
        return value

    @field_validator("media_address")
    @classmethod
    def _check_media_address(cls, value: str) -> str:
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address (the one Asterisk sends RTP to)") from None
        if addr.is_unspecified:
            raise ValueError("must be a concrete address Asterisk can reach, not 0.0.0.0 or ::")
        return value

    @field_validator("media_ports")
    @classmethod
    def _check_media_ports(cls, value: str) -> str:
        parse_port_range(value)
        return value

    @field_validator("http_listen")
    @classmethod
    def _check_http_listen(cls, value: str) -> str:
        parse_listen(value)
        return value.strip()

    @field_validator("http_token")
    @classmethod
    def _check_http_token(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        token = value.get_secret_value()
        if token and (
            len(token) < HTTP_TOKEN_MIN_LENGTH
            or not all("!" <= c <= "~" for c in token)  # visible ASCII: it goes in a header
        ):
            raise ValueError(
                f"must be at least {HTTP_TOKEN_MIN_LENGTH} visible ASCII characters without "
                "spaces (e.g. the output of: openssl rand -hex 24)"
            )
        listen = info.data.get("http_listen")  # absent when HTTP_LISTEN itself was bad
        address = parse_listen(listen) if isinstance(listen, str) else None
        if address is not None and not token and not is_loopback_host(address[0]):
            raise ValueError(
                f"required when HTTP_LISTEN is not a loopback address (HTTP_LISTEN={listen}); "
                "set a long random token, or listen on 127.0.0.1"
            )
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str) -> str:
        if not value:
            return value
        parts = _split_url(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL such as https://crm.example/calls")
        return value

    @field_validator("agent_tools")
    @classmethod
    def _check_tools(cls, value: str) -> str:
        builtin = {"hangup", "send_dtmf", "transfer"}
        names = [t.strip() for t in value.split(",") if t.strip()]
        unknown = [n for n in names if n not in builtin]
        if unknown:
            raise ValueError(
                f"unknown tool {unknown[0]!r}; built-in tools are hangup, send_dtmf, transfer "
                "(custom tools are declared in AGENTS_FILE)"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url:
            parse_database_url(url)  # its messages mask the password
        return value

    @field_validator("records_retention_days", mode="before")
    @classmethod
    def _check_retention(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # unset or empty: keep records forever
        try:
            days = int(str(value).strip())
        except ValueError:
            days = 0
        if days < 1:
            raise ValueError(
                "must be a whole number of days, at least 1 (leave it unset to keep "
                "records forever)"
            )
        return days

    @field_validator("controller_id")
    @classmethod
    def _check_controller_id(cls, value: str) -> str:
        if not value or len(value) > 128 or not value.isprintable() or " " in value:
            raise ValueError("must be 1 to 128 printable characters without spaces")
        return value

    @property
    def database_password(self) -> str:
        """The password inside ``DATABASE_URL`` (empty when none), for log masking."""
        return url_password(self.database_url.get_secret_value())

    @property
    def default_tools(self) -> tuple[str, ...]:
        """``AGENT_TOOLS`` as a tuple of names."""
        return tuple(t.strip() for t in self.agent_tools.split(",") if t.strip())

    @property
    def media_port_range(self) -> tuple[int, int]:
        """``MEDIA_PORTS`` as an inclusive ``(first, last)`` pair."""
        return parse_port_range(self.media_ports)

    @property
    def http_address(self) -> tuple[str, int] | None:
        """``HTTP_LISTEN`` as ``(host, port)``, or None when the server is off."""
        return parse_listen(self.http_listen)

    @property
    def ari_listen_address(self) -> tuple[str, int] | None:
        """``ARI_LISTEN`` as ``(host, port)``, or None when unset."""
        return parse_listen(self.ari_listen)

    @property
    def is_azure(self) -> bool:
        """True when REALTIME_URL points at Azure OpenAI (uses an ``api-key`` header)."""
        host = urlsplit(self.realtime_url).hostname or ""
        return host.endswith((".azure.com", ".azure.us"))

    @property
    def ari_events_url(self) -> str:
        """The ARI events websocket URL (without credentials)."""
        parts = urlsplit(self.ari_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}/ari/events"


def ari_url_advice(url: str) -> str:
    """What to do about an ``ARI_URL`` ending in ``/ari``, or ``""`` when it does not.

    The REST client adds ``/ari`` itself, so ``http://pbx:8088/ari`` asks for
    ``/ari/ari/...`` and Asterisk answers 404, which alone says nothing.
    (An http.conf ``prefix`` goes into ARI_URL, as in ``http://pbx:8088/asterisk``.)
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.lower().endswith("/ari"):
        return ""
    fixed = urlunsplit(parts._replace(path=path[: -len("/ari")], query="", fragment=""))
    return f"ARI_URL must not end in /ari (the controller adds it): set ARI_URL={fixed}"


def _split_url(value: str) -> Any:
    """``urlsplit(value)``, with its port checked to be 1-65535.

    Raises:
        ValueError: a malformed URL, or a port outside 1-65535.
    """
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("has a malformed host or a port outside 1-65535") from None
    if port == 0:
        raise ValueError("has port 0; give a port from 1 to 65535")
    return parts


def parse_port_range(value: str) -> tuple[int, int]:
    """Parse ``"40000-40999"`` (or a single ``"40000"``) into ``(first, last)``."""
    first_text, sep, last_text = value.partition("-")
    try:
        first = int(first_text)
        last = int(last_text) if sep else first
    except ValueError:
        raise ValueError("must be a port range such as 40000-40999") from None
    if not (1024 <= first <= last <= 65535):
        raise ValueError("must be a range FIRST-LAST with 1024 <= FIRST <= LAST <= 65535")
    return first, last


def parse_listen(value: str) -> tuple[str, int] | None:
    """Parse ``HTTP_LISTEN``: ``"127.0.0.1:8080"``, ``"[::1]:8080"`` or ``""`` (off, None).

    Raises:
        ValueError: when it is not ``HOST:PORT`` with a port from 1 to 65535.
    """
    value = value.strip()
    if not value:
        return None
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # a bare IPv6 address: its port is ambiguous
    port = int(port_text) if port_text.isascii() and port_text.isdigit() else 0
    if not sep or not host or any(c in host for c in "/ @[]") or not 1 <= port <= 65535:
        raise ValueError(
            "must be HOST:PORT such as 127.0.0.1:8080 or [::1]:8080 (empty turns the server off)"
        )
    return host, port


def is_loopback_host(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def _describe(error: dict[str, object]) -> str:
    loc = error.get("loc") or ()
    name = str(loc[0]) if isinstance(loc, tuple) and loc else "settings"
    # A default that fails validation (HTTP_TOKEN) is located by its field name.
    alias = Settings.model_fields[name].validation_alias if name in Settings.model_fields else None
    if isinstance(alias, AliasChoices):
        name = str(alias.choices[0])
    msg = str(error.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if name in SECRET_SETTINGS:
        return f"{name}: {msg}"
    shown = repr(error.get("input"))
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return f"{name}: {msg} (got {mask_urls_in(shown)})"


def _read_env_file(env_file: str | Path) -> dict[str, str]:
    """The ``NAME=value`` pairs of an env file.

    Raises:
        ConfigError: the file is missing, unreadable or not UTF-8.
    """
    path = Path(env_file)
    if not path.is_file():
        raise ConfigError(f"--env-file: {env_file} does not exist or is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--env-file: cannot read {env_file}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"--env-file: {env_file} is not UTF-8 text (line {line}); save it as UTF-8"
        ) from None
    values = dotenv_values(stream=io.StringIO(text))  # pydantic-settings' own reader
    return {name: value or "" for name, value in values.items()}


def _check_utf8(values: Mapping[str, str], where: str) -> None:
    for name in ENV_NAMES:
        value = values.get(name)
        if value is None:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{name}: {where} holds bytes that are not UTF-8 text") from None


def load_settings(env_file: str | Path | None = None, **overrides: object) -> Settings:
    """Read settings from the environment (and ``env_file`` when given).

    Raises:
        ConfigError: with one line naming the first bad setting and what is
            wrong (secrets and URL credentials masked), or naming an env file
            that is missing or not UTF-8.
    """
    file_values = _read_env_file(env_file) if env_file is not None else {}
    _check_utf8(os.environ, "the environment value")
    try:
        # Overrides use the env names (ARI_URL=...), which mypy cannot see.
        factory: Any = Settings
        settings: Settings = factory(_env_file=env_file, _env_file_encoding="utf-8", **overrides)
        return settings
    except ValidationError as exc:
        # A default computed from other settings is not built when one of them
        # is bad; that is no second problem to report.
        errors = [
            e for e in exc.errors(include_url=False) if e["type"] != "default_factory_not_called"
        ]
        sources: list[Mapping[str, object]] = [os.environ, file_values, overrides]
        masker = SecretMasker(
            str(source[name])
            for source in sources
            for name in SECRET_SETTINGS
            if isinstance(source.get(name), str)
        )
        lines = [escape_controls(masker.mask(_describe(dict(e)))) for e in errors]
        raise ConfigError("; ".join(lines)) from None


def _env_names() -> tuple[str, ...]:
    names: list[str] = []
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.extend(str(choice) for choice in alias.choices)
    return tuple(names)


#: Every environment variable the controller reads.
ENV_NAMES = _env_names()
#: Prefixes of our settings: a name with one of them that is not a setting is
#: most likely a typo, and a typo in a setting silently means its default.
SETTING_PREFIXES = (
    "ARI_",
    "REALTIME_",
    "OPENAI_",
    "TRANSCRIPTION_",
    "VAD_",
    "MEDIA_",
    "AGENT_",
    "AGENTS_",
    "DTMF_",
    "BARGE_IN_",
    "HANGUP_",
    "SILENCE_",
    "MAX_",
    "OUTBOUND_",
    "HTTP_",
    "WEBHOOK_",
    "DATABASE_",
    "RECORDS_",
    "PRICES_",
    "CONTROLLER_",
)
#: Names with our prefixes that belong to other software (proxies, the openai SDK).
FOREIGN_NAMES = frozenset(
    {
        "HTTP_PROXY",
        "OPENAI_API_BASE",
        "OPENAI_API_TYPE",
        "OPENAI_API_VERSION",
        "OPENAI_BASE_URL",
        "OPENAI_LOG",
        "OPENAI_ORG_ID",
        "OPENAI_ORGANIZATION",
        "OPENAI_PROJECT",
        "OPENAI_PROJECT_ID",
    }
)


def setting_warnings(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = None
) -> list[str]:
    """One line per name that looks like one of our settings but is not one.

    A name with one of :data:`SETTING_PREFIXES` (or one of our names in lower
    case) that is not a setting is reported with the closest real setting,
    e.g. ``OUTBOUND_ALOW is not a setting (ignored); did you mean OUTBOUND_ALLOW?``.

    Args:
        environ: the environment (default: ``os.environ``).
        env_file: the ``--env-file`` too, if given.

    Raises:
        ConfigError: the env file cannot be read or is not UTF-8.
    """
    names: dict[str, str] = {}
    for name in os.environ if environ is None else environ:
        names[name] = "the environment"
    if env_file is not None:
        for name in _read_env_file(env_file):
            names[name] = str(env_file)
    known = set(ENV_NAMES)
    lines = []
    for name, where in sorted(names.items()):
        if name in known or name in FOREIGN_NAMES:
            continue
        upper = name.upper()
        if not upper.startswith(SETTING_PREFIXES) or (name != upper and upper in FOREIGN_NAMES):
            continue
        if name != upper and upper in known:
            hint = f"; did you mean {upper}? (names are upper case)"
        else:
            close = difflib.get_close_matches(upper, ENV_NAMES, n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"{escape_controls(name)[:80]} (in {where}) is not a setting (ignored){hint}")
    return lines


def secret_values(settings: Settings, extra: Iterable[str] = ()) -> list[str]:
    """Every secret value of ``settings`` (and ``extra``), for masking output."""
    return [
        settings.openai_api_key.get_secret_value(),
        settings.ari_password.get_secret_value(),
        settings.http_token.get_secret_value(),
        # It may carry credentials or a token in its query.
        settings.webhook_url,
        settings.database_password,
        *extra,
    ]
