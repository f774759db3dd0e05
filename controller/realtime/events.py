"""Typed events of the OpenAI Realtime protocol, GA shape (pure: no I/O).

Two families live here:

* **Client events**, the ones the controller sends. They are pydantic models
  that *forbid* unknown fields, so a typo or a beta-era field fails when the
  event is built, not later as an ``error`` event from the model server.
  Their ``to_json()`` serialises with ``exclude_none``: optional
  fields that were not set never reach the wire.
* **Server events**, the ones the controller reads. They *ignore* unknown
  fields (deltas carry an ``obfuscation`` field, and the API adds fields over
  time). :func:`parse_server_event` maps the ``type`` to a class; a type this
  module does not know becomes an :class:`UnknownEvent`, never an exception.

Theory of operation of the parser: every known server event class has a
``Literal`` ``type``, and one :class:`pydantic.TypeAdapter` over the
discriminated union parses the raw JSON text (bytes or str) in one pass in
pydantic-core. ``response.output_audio.delta`` arrives about 50 times a
second per call with a large base64 payload; this path costs less than
``json.loads`` alone and about a third of ``json.loads`` followed by
``model_validate`` (see ``bench/bench_realtime.py``). Only when the
discriminator is not a known type does the parser fall back to
``json.loads`` to build an :class:`UnknownEvent`.

:func:`build_session_update` produces the GA ``session.update`` for both audio
modes: ``pcmu`` (G.711 u-law in and out, no transcoding) and ``pcm24k``
(16-bit PCM at 24 kHz in and out).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol, Self, TypeAlias, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)

from controller.errors import RealtimeProtocolError, RealtimeServerError

__all__ = [
    "AUDIO_BYTES_PER_MS",
    "AudioConfig",
    "AudioDelta",
    "AudioFormat",
    "AudioInputConfig",
    "AudioOutputConfig",
    "ClientEvent",
    "ContentPart",
    "ConversationCreated",
    "ConversationInfo",
    "ConversationItem",
    "ConversationItemAdded",
    "ConversationItemCreate",
    "ConversationItemCreated",
    "ConversationItemDeleted",
    "ConversationItemDone",
    "ConversationItemTruncate",
    "ConversationItemTruncated",
    "ErrorDetail",
    "ErrorEvent",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "FunctionCallOutputParam",
    "FunctionTool",
    "McpCallItem",
    "McpError",
    "McpListToolsCompleted",
    "McpListToolsFailed",
    "McpListToolsInProgress",
    "McpListToolsItem",
    "McpTool",
    "McpToolInfo",
    "InputAudioBufferAppend",
    "InputAudioBufferClear",
    "InputAudioBufferCleared",
    "InputAudioBufferCommit",
    "InputAudioBufferCommitted",
    "InputAudioBufferSpeechStarted",
    "InputAudioBufferSpeechStopped",
    "InputAudioBufferTimeoutTriggered",
    "InputAudioTranscriptionCompleted",
    "InputAudioTranscriptionDelta",
    "InputAudioTranscriptionFailed",
    "InputText",
    "InputTokenDetails",
    "KNOWN_SERVER_EVENT_TYPES",
    "InputTranscription",
    "MessageItem",
    "MessageItemParam",
    "NoiseReduction",
    "OtherItem",
    "OutputTokenDetails",
    "PcmFormat",
    "PcmaFormat",
    "PcmuFormat",
    "Prompt",
    "PromptText",
    "Reasoning",
    "RateLimit",
    "RateLimitsUpdated",
    "Response",
    "ResponseCancel",
    "ResponseContentPartAdded",
    "ResponseContentPartDone",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDone",
    "ResponseFunctionCallArgumentsDelta",
    "ResponseFunctionCallArgumentsDone",
    "ResponseMcpCallArgumentsDelta",
    "ResponseMcpCallArgumentsDone",
    "ResponseMcpCallCompleted",
    "ResponseMcpCallFailed",
    "ResponseMcpCallInProgress",
    "ResponseOutputAudioDelta",
    "ResponseOutputAudioDone",
    "ResponseOutputAudioTranscriptDelta",
    "ResponseOutputAudioTranscriptDone",
    "ResponseOutputItemAdded",
    "ResponseOutputItemDone",
    "ResponseOutputTextDelta",
    "ResponseOutputTextDone",
    "ResponseParams",
    "ResponseStatusDetails",
    "SemanticVad",
    "ServerEvent",
    "ServerVad",
    "SessionConfig",
    "SessionCreated",
    "SessionInfo",
    "SessionSettings",
    "SessionTool",
    "SessionUpdate",
    "SessionUpdated",
    "UnknownEvent",
    "Usage",
    "audio_format_for",
    "build_session_update",
    "parse_server_event",
    "split_audio_delta",
]

#: Bytes of audio per millisecond in each audio mode (u-law 8 kHz: 8 B/ms,
#: 16-bit PCM 24 kHz: 48 B/ms). Use it to turn played bytes into ``audio_end_ms``.
AUDIO_BYTES_PER_MS: dict[str, int] = {"pcmu": 8, "pcm24k": 48}


# =============================================================================
# Client events (sent by the controller)
# =============================================================================


class _ClientModel(BaseModel):
    """Base of every client-side model: unknown fields are a bug, so forbid them."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PcmuFormat(_ClientModel):
    """``audio/pcmu``: G.711 u-law at 8 kHz, what Asterisk sends over RTP."""

    type: Literal["audio/pcmu"] = "audio/pcmu"


class PcmaFormat(_ClientModel):
    """``audio/pcma``: G.711 A-law at 8 kHz."""

    type: Literal["audio/pcma"] = "audio/pcma"


class PcmFormat(_ClientModel):
    """``audio/pcm``: 16-bit little-endian mono PCM. The API only takes 24 kHz."""

    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[24000] = 24000


AudioFormat: TypeAlias = Annotated[PcmuFormat | PcmaFormat | PcmFormat, Field(discriminator="type")]


class ServerVad(_ClientModel):
    """Energy/model VAD on the server: speech start and stop by audio level."""

    type: Literal["server_vad"] = "server_vad"
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    idle_timeout_ms: int | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


class SemanticVad(_ClientModel):
    """Turn detection by a model that judges whether the caller has finished."""

    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


class InputTranscription(_ClientModel):
    """Transcription of the caller's audio (runs beside the model, for logs)."""

    model: str
    language: str | None = None
    prompt: str | None = None


class NoiseReduction(_ClientModel):
    """Input noise reduction; ``near_field`` suits handsets and headsets."""

    type: Literal["near_field", "far_field"]


class AudioInputConfig(_ClientModel):
    """``session.audio.input``."""

    format: AudioFormat | None = None
    turn_detection: Annotated[ServerVad | SemanticVad, Field(discriminator="type")] | None = None
    transcription: InputTranscription | None = None
    noise_reduction: NoiseReduction | None = None


class AudioOutputConfig(_ClientModel):
    """``session.audio.output``. The voice cannot change once audio was produced."""

    format: AudioFormat | None = None
    voice: str | None = None
    speed: float | None = None


class AudioConfig(_ClientModel):
    """``session.audio``."""

    input: AudioInputConfig | None = None
    output: AudioOutputConfig | None = None


class FunctionTool(_ClientModel):
    """A function the model may call; ``parameters`` is a JSON schema object."""

    type: Literal["function"] = "function"
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class McpTool(_ClientModel):
    """A remote MCP server the model may call tools of; the API calls it, not the controller.

    ``require_approval`` can only be ``never``: a phone call has nobody to
    approve a call, so approval is never asked at run time. ``headers`` (often
    credentials) are kept out of ``repr``.
    """

    type: Literal["mcp"] = "mcp"
    server_label: str
    server_url: str
    allowed_tools: list[str] | None = None
    headers: dict[str, str] | None = Field(None, repr=False)
    require_approval: Literal["never"] = "never"
    server_description: str | None = None


SessionTool: TypeAlias = Annotated[FunctionTool | McpTool, Field(discriminator="type")]


class Reasoning(_ClientModel):
    """``session.reasoning`` of reasoning models (``gpt-realtime-2``): how hard they think."""

    effort: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


class PromptText(_ClientModel):
    """A text value of a stored prompt's variable (the Realtime API takes no bare strings)."""

    type: Literal["input_text"] = "input_text"
    text: str


class Prompt(_ClientModel):
    """``session.prompt``: a stored prompt by id, optionally pinned to a version.

    Fields set directly on the session (``instructions``, ``voice``...)
    override the prompt's where they overlap.
    """

    id: str
    version: str | None = None
    variables: dict[str, PromptText] | None = None


class SessionConfig(_ClientModel):
    """The ``session`` object of a GA ``session.update``.

    ``type`` is required by the GA API (without it: ``missing_required_parameter``).
    There is deliberately no ``voice``, ``input_audio_format`` or
    ``temperature`` here: those are beta fields the GA API rejects.
    """

    type: Literal["realtime"] = "realtime"
    model: str | None = None
    output_modalities: list[Literal["audio", "text"]] | None = None
    instructions: str | None = None
    audio: AudioConfig | None = None
    tools: list[SessionTool] | None = None
    tool_choice: str | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    prompt: Prompt | None = None
    reasoning: Reasoning | None = None


class InputText(_ClientModel):
    """Text content of a user or system message."""

    type: Literal["input_text"] = "input_text"
    text: str


class OutputText(_ClientModel):
    """Text content of an assistant message (replayed history)."""

    type: Literal["output_text"] = "output_text"
    text: str


class MessageItemParam(_ClientModel):
    """A message the controller adds: a greeting cue, a DTMF notice, or a line of
    the conversation replayed into a new session (user ``input_text``,
    assistant ``output_text``)."""

    type: Literal["message"] = "message"
    role: Literal["user", "system", "assistant"] = "user"
    content: list[InputText | OutputText]
    id: str | None = None


class FunctionCallParam(_ClientModel):
    """A function call of the model, replayed into a new session."""

    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    id: str | None = None


class FunctionCallOutputParam(_ClientModel):
    """The result of a tool call, sent back to the model."""

    type: Literal["function_call_output"] = "function_call_output"
    call_id: str
    output: str
    id: str | None = None


class ResponseParams(_ClientModel):
    """Optional overrides for one response (``response.create``'s ``response``)."""

    instructions: str | None = None
    output_modalities: list[Literal["audio", "text"]] | None = None
    tool_choice: str | None = None
    tools: list[FunctionTool] | None = None
    conversation: Literal["auto", "none"] | None = None
    metadata: dict[str, str] | None = None
    max_output_tokens: int | Literal["inf"] | None = None


class _ClientEventBase(_ClientModel):
    event_id: str | None = None

    def to_json(self) -> str:
        """The event as the JSON text to send, without unset (``None``) fields."""
        return self.model_dump_json(exclude_none=True)

    def to_dict(self) -> dict[str, Any]:
        """The event as a plain dict, without unset (``None``) fields."""
        return self.model_dump(mode="json", exclude_none=True)


class SessionUpdate(_ClientEventBase):
    """``session.update``: configure the session (see :func:`build_session_update`)."""

    type: Literal["session.update"] = "session.update"
    session: SessionConfig


class InputAudioBufferAppend(_ClientEventBase):
    """``input_audio_buffer.append``. On the hot path use ``RealtimeSession.send_audio``."""

    type: Literal["input_audio_buffer.append"] = "input_audio_buffer.append"
    audio: str

    @classmethod
    def from_bytes(cls, audio: bytes) -> Self:
        """Build the event from raw audio bytes in the session's input format."""
        return cls(audio=base64.b64encode(audio).decode("ascii"))


class InputAudioBufferCommit(_ClientEventBase):
    """``input_audio_buffer.commit`` (needs at least 100 ms buffered)."""

    type: Literal["input_audio_buffer.commit"] = "input_audio_buffer.commit"


class InputAudioBufferClear(_ClientEventBase):
    """``input_audio_buffer.clear``."""

    type: Literal["input_audio_buffer.clear"] = "input_audio_buffer.clear"


class ConversationItemCreate(_ClientEventBase):
    """``conversation.item.create``: add a message or a function call output."""

    type: Literal["conversation.item.create"] = "conversation.item.create"
    item: Annotated[
        MessageItemParam | FunctionCallParam | FunctionCallOutputParam,
        Field(discriminator="type"),
    ]
    previous_item_id: str | None = None

    @classmethod
    def user_text(cls, text: str, *, role: Literal["user", "system"] = "user") -> Self:
        """A ``message`` item with one ``input_text`` part (greeting cue, DTMF notice)."""
        return cls(item=MessageItemParam(role=role, content=[InputText(text=text)]))

    @classmethod
    def assistant_text(cls, text: str) -> Self:
        """An assistant ``message`` with one ``output_text`` part (replayed history)."""
        return cls(item=MessageItemParam(role="assistant", content=[OutputText(text=text)]))

    @classmethod
    def function_call(cls, call_id: str, name: str, arguments: str) -> Self:
        """A ``function_call`` item (replayed history)."""
        return cls(item=FunctionCallParam(call_id=call_id, name=name, arguments=arguments))

    @classmethod
    def function_output(cls, call_id: str, output: str) -> Self:
        """A ``function_call_output`` item answering the call ``call_id``."""
        return cls(item=FunctionCallOutputParam(call_id=call_id, output=output))


class ConversationItemTruncate(_ClientEventBase):
    """``conversation.item.truncate``: the caller heard only ``audio_end_ms`` of an item.

    ``audio_end_ms`` must not exceed the audio the server sent for the item,
    else the API answers ``invalid_value`` ("Audio content of Nms is already
    shorter than Mms").
    """

    type: Literal["conversation.item.truncate"] = "conversation.item.truncate"
    item_id: str
    content_index: int = 0
    audio_end_ms: Annotated[int, Field(ge=0)]


class ResponseCreate(_ClientEventBase):
    """``response.create``. Not while a response is active (else an error)."""

    type: Literal["response.create"] = "response.create"
    response: ResponseParams | None = None


class ResponseCancel(_ClientEventBase):
    """``response.cancel``. Harmless ``response_cancel_not_active`` if none is active."""

    type: Literal["response.cancel"] = "response.cancel"
    response_id: str | None = None


ClientEvent: TypeAlias = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemTruncate
    | ResponseCreate
    | ResponseCancel
)


# --- session.update from settings ---------------------------------------------


class SessionSettings(Protocol):
    """The settings :func:`build_session_update` reads (``controller.config.Settings`` fits)."""

    @property
    def realtime_model(self) -> str: ...
    @property
    def realtime_voice(self) -> str: ...
    @property
    def realtime_audio(self) -> Literal["pcmu", "pcm24k"]: ...
    @property
    def transcription_model(self) -> str: ...
    @property
    def transcription_language(self) -> str: ...
    @property
    def vad_type(self) -> Literal["server_vad", "semantic_vad"]: ...
    @property
    def vad_threshold(self) -> float: ...
    @property
    def vad_silence_ms(self) -> int: ...
    @property
    def vad_prefix_ms(self) -> int: ...
    @property
    def vad_eagerness(self) -> Literal["low", "medium", "high", "auto"]: ...
    @property
    def agent_instructions(self) -> str: ...
    @property
    def realtime_reasoning_effort(
        self,
    ) -> Literal["minimal", "low", "medium", "high", "xhigh"] | None: ...
    @property
    def noise_reduction(self) -> Literal["near_field", "far_field", "off"]: ...
    @property
    def idle_timeout_ms(self) -> int | None: ...


def audio_format_for(mode: Literal["pcmu", "pcm24k"]) -> PcmuFormat | PcmFormat:
    """The GA audio format object for an audio mode (same both ways)."""
    if mode == "pcmu":
        return PcmuFormat()
    if mode == "pcm24k":
        return PcmFormat()
    raise ValueError(f"unknown audio mode {mode!r}; expected 'pcmu' or 'pcm24k'")


def build_session_update(
    settings: SessionSettings,
    *,
    tools: Sequence[FunctionTool | McpTool | Mapping[str, Any]] = (),
    instructions: str | None = None,
    voice: str | None = None,
    tool_choice: str = "auto",
    create_response: bool = True,
    interrupt_response: bool = True,
    prompt: Prompt | None = None,
    send_instructions: bool = True,
) -> SessionUpdate:
    """Build the GA ``session.update`` for a call.

    Args:
        settings: the REALTIME_*, VAD_*, TRANSCRIPTION_*, AGENT_*,
            NOISE_REDUCTION and IDLE_TIMEOUT_MS settings.
        tools: tools offered to the model: functions and MCP servers (models
            or plain dicts).
        instructions: overrides ``settings.agent_instructions`` (e.g. per call).
        voice: overrides ``settings.realtime_voice``.
        tool_choice: ``auto`` (default), ``none`` or ``required``.
        create_response: let the server answer at the end of each caller turn.
        interrupt_response: let the server cancel its answer when the caller
            starts speaking (barge-in); the controller still truncates.
        prompt: a stored prompt (``session.prompt``).
        send_instructions: False leaves ``instructions`` out, so a stored
            prompt's own instructions apply (the session's would override them).

    Returns:
        The event; send it with ``RealtimeSession.start`` or ``send``.
        ``pcmu`` gives ``audio/pcmu`` in and out, ``pcm24k`` gives
        ``audio/pcm`` at 24000 Hz in and out. Reasoning effort, noise
        reduction and the idle timeout are sent only when set.
    """
    fmt = audio_format_for(settings.realtime_audio)
    turn_detection: ServerVad | SemanticVad
    if settings.vad_type == "semantic_vad":
        turn_detection = SemanticVad(
            eagerness=settings.vad_eagerness,
            create_response=create_response,
            interrupt_response=interrupt_response,
        )
    else:
        turn_detection = ServerVad(
            threshold=settings.vad_threshold,
            prefix_padding_ms=settings.vad_prefix_ms,
            silence_duration_ms=settings.vad_silence_ms,
            idle_timeout_ms=settings.idle_timeout_ms,
            create_response=create_response,
            interrupt_response=interrupt_response,
        )
    transcription = None
    if settings.transcription_model:
        transcription = InputTranscription(
            model=settings.transcription_model,
            language=settings.transcription_language or None,
        )
    tool_models = [
        _SESSION_TOOL.validate_python({"type": "function", **t} if isinstance(t, Mapping) else t)
        for t in tools
    ]
    noise = settings.noise_reduction
    effort = settings.realtime_reasoning_effort
    session = SessionConfig(
        model=settings.realtime_model,
        output_modalities=["audio"],
        instructions=(
            (settings.agent_instructions if instructions is None else instructions)
            if send_instructions
            else None
        ),
        audio=AudioConfig(
            input=AudioInputConfig(
                format=fmt,
                turn_detection=turn_detection,
                transcription=transcription,
                noise_reduction=None if noise == "off" else NoiseReduction(type=noise),
            ),
            output=AudioOutputConfig(format=fmt, voice=voice or settings.realtime_voice),
        ),
        tools=tool_models,
        tool_choice=tool_choice,
        prompt=prompt,
        reasoning=None if effort is None else Reasoning(effort=effort),
    )
    return SessionUpdate(session=session)


_SESSION_TOOL: TypeAdapter[FunctionTool | McpTool] = TypeAdapter(SessionTool)


# =============================================================================
# Server events (received by the controller)
# =============================================================================


class _ServerModel(BaseModel):
    """Base of every server-side model: ignore fields we do not know."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ContentPart(_ServerModel):
    """A content part of an item or a response (``audio``, ``output_audio``, ``input_text``...)."""

    type: str = ""
    text: str | None = None
    transcript: str | None = None
    audio: str | None = None


class MessageItem(_ServerModel):
    """A ``message`` item (user, assistant or system)."""

    type: Literal["message"]
    id: str = ""
    role: str = ""
    status: str | None = None
    content: list[ContentPart] = []


class FunctionCallItem(_ServerModel):
    """A ``function_call`` item: the model wants a tool run."""

    type: Literal["function_call"]
    id: str = ""
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    status: str | None = None


class FunctionCallOutputItem(_ServerModel):
    """A ``function_call_output`` item (what we sent back)."""

    type: Literal["function_call_output"]
    id: str = ""
    call_id: str = ""
    output: str = ""
    status: str | None = None


class McpError(_ServerModel):
    """Why an MCP call failed (``protocol_error``, ``tool_execution_error``, ``http_error``)."""

    type: str = ""
    code: int | None = None
    message: str = ""


class McpCallItem(_ServerModel):
    """An ``mcp_call`` item: the API called a tool of an MCP server; ``output`` or ``error``."""

    type: Literal["mcp_call"]
    id: str = ""
    server_label: str = ""
    name: str = ""
    arguments: str = ""
    output: str | None = None
    error: McpError | None = None
    status: str | None = None


class McpToolInfo(_ServerModel):
    """One tool an MCP server offers."""

    name: str = ""
    description: str | None = None


class McpListToolsItem(_ServerModel):
    """An ``mcp_list_tools`` item: the tools the API found on an MCP server."""

    type: Literal["mcp_list_tools"]
    id: str = ""
    server_label: str = ""
    tools: list[McpToolInfo] = []
    status: str | None = None


class OtherItem(_ServerModel):
    """Any other item type (MCP approvals, future types): kept, not interpreted."""

    type: str
    id: str = ""
    status: str | None = None


_KNOWN_ITEM_TYPES = frozenset(
    {"message", "function_call", "function_call_output", "mcp_call", "mcp_list_tools"}
)


def _item_tag(value: Any) -> str:
    item_type = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    # A list or an object as the type must fail validation, not the set lookup
    # (TypeError: unhashable, which escaped the parser and crashed the call).
    return item_type if isinstance(item_type, str) and item_type in _KNOWN_ITEM_TYPES else "other"


ConversationItem: TypeAlias = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[McpCallItem, Tag("mcp_call")]
    | Annotated[McpListToolsItem, Tag("mcp_list_tools")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_tag),
]


class SessionInfo(_ServerModel):
    """The effective session in ``session.created`` / ``session.updated``."""

    type: str = "realtime"
    id: str = ""
    model: str = ""
    expires_at: int | None = None
    instructions: str | None = None
    output_modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None

    def _audio(self, direction: str) -> dict[str, Any]:
        section = (self.audio or {}).get(direction)
        return section if isinstance(section, dict) else {}

    @property
    def input_format(self) -> str:
        """``audio.input.format.type`` (e.g. ``audio/pcmu``), or ``""``."""
        fmt = self._audio("input").get("format")
        return str(fmt.get("type", "")) if isinstance(fmt, dict) else ""

    @property
    def output_format(self) -> str:
        """``audio.output.format.type`` (e.g. ``audio/pcmu``), or ``""``."""
        fmt = self._audio("output").get("format")
        return str(fmt.get("type", "")) if isinstance(fmt, dict) else ""

    @property
    def voice(self) -> str:
        """``audio.output.voice`` if it is a built-in voice name, else ``""``."""
        voice = self._audio("output").get("voice")
        return voice if isinstance(voice, str) else ""


class ConversationInfo(_ServerModel):
    """The conversation in ``conversation.created``."""

    id: str = ""


class ErrorDetail(_ServerModel):
    """The ``error`` object of an ``error`` event or a failed status."""

    type: str = ""
    code: str | None = None
    message: str = ""
    param: str | None = None
    event_id: str | None = None


class ResponseStatusDetails(_ServerModel):
    """Why a response ended: ``type`` and ``reason`` (``turn_detected``, ``client_cancelled``,
    ``max_output_tokens``, ``content_filter``), and ``error`` when it failed."""

    type: str | None = None
    reason: str | None = None
    error: ErrorDetail | None = None


#: The most tokens one response is believed to use (a session holds far fewer).
MAX_TOKENS = 10**9


def _tokens(value: int) -> int:
    # Counts are summed, priced in floats and stored in 64-bit columns: a
    # server's 10**400 must not overflow any of them, nor -5 lower a bill.
    return min(max(value, 0), MAX_TOKENS)


#: A token count from the server, clamped to ``0..MAX_TOKENS``.
TokenCount = Annotated[int, AfterValidator(_tokens)]


class InputTokenDetails(_ServerModel):
    """Input token breakdown (cached tokens are billed at a lower rate)."""

    text_tokens: TokenCount = 0
    audio_tokens: TokenCount = 0
    image_tokens: TokenCount = 0
    cached_tokens: TokenCount = 0


class OutputTokenDetails(_ServerModel):
    """Output token breakdown."""

    text_tokens: TokenCount = 0
    audio_tokens: TokenCount = 0


class Usage(_ServerModel):
    """Token usage of one response (``response.done``); counts clamped to ``0..MAX_TOKENS``."""

    total_tokens: TokenCount = 0
    input_tokens: TokenCount = 0
    output_tokens: TokenCount = 0
    input_token_details: InputTokenDetails | None = None
    output_token_details: OutputTokenDetails | None = None


class Response(_ServerModel):
    """A response object. ``status``: ``in_progress``, ``completed``, ``cancelled``,
    ``failed`` or ``incomplete`` (a plain ``str`` so a new value cannot break a call)."""

    id: str = ""
    status: str = ""
    status_details: ResponseStatusDetails | None = None
    output: list[ConversationItem] = []
    usage: Usage | None = None
    conversation_id: str | None = None
    output_modalities: list[str] | None = None
    metadata: dict[str, Any] | None = None


class RateLimit(_ServerModel):
    """One entry of ``rate_limits.updated``."""

    name: str = ""
    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None


class _ServerEventBase(_ServerModel):
    event_id: str = ""


class SessionCreated(_ServerEventBase):
    """``session.created``: first event after connecting."""

    type: Literal["session.created"]
    session: SessionInfo


class SessionUpdated(_ServerEventBase):
    """``session.updated``: the full effective configuration after a ``session.update``."""

    type: Literal["session.updated"]
    session: SessionInfo


class ConversationCreated(_ServerEventBase):
    """``conversation.created``: sent right after ``session.created``."""

    type: Literal["conversation.created"]
    conversation: ConversationInfo = ConversationInfo()


class _ItemEvent(_ServerEventBase):
    item: ConversationItem
    previous_item_id: str | None = None


class ConversationItemAdded(_ItemEvent):
    """``conversation.item.added``: an item entered the conversation (content may grow)."""

    type: Literal["conversation.item.added"]


class ConversationItemDone(_ItemEvent):
    """``conversation.item.done``: an item is complete."""

    type: Literal["conversation.item.done"]


class ConversationItemCreated(_ItemEvent):
    """``conversation.item.created`` (older name of ``.added``; still accepted)."""

    type: Literal["conversation.item.created"]


class ConversationItemTruncated(_ServerEventBase):
    """``conversation.item.truncated``: the server accepted a truncate."""

    type: Literal["conversation.item.truncated"]
    item_id: str
    content_index: int = 0
    audio_end_ms: int


class ConversationItemDeleted(_ServerEventBase):
    """``conversation.item.deleted``."""

    type: Literal["conversation.item.deleted"]
    item_id: str


class InputAudioBufferSpeechStarted(_ServerEventBase):
    """``input_audio_buffer.speech_started``: the caller started talking (barge-in point)."""

    type: Literal["input_audio_buffer.speech_started"]
    audio_start_ms: int
    item_id: str


class InputAudioBufferSpeechStopped(_ServerEventBase):
    """``input_audio_buffer.speech_stopped``."""

    type: Literal["input_audio_buffer.speech_stopped"]
    audio_end_ms: int
    item_id: str


class InputAudioBufferCommitted(_ServerEventBase):
    """``input_audio_buffer.committed``: a user item was made from the buffer."""

    type: Literal["input_audio_buffer.committed"]
    item_id: str
    previous_item_id: str | None = None


class InputAudioBufferCleared(_ServerEventBase):
    """``input_audio_buffer.cleared``."""

    type: Literal["input_audio_buffer.cleared"]


class InputAudioBufferTimeoutTriggered(_ServerEventBase):
    """``input_audio_buffer.timeout_triggered`` (server_vad ``idle_timeout_ms``)."""

    type: Literal["input_audio_buffer.timeout_triggered"]
    audio_start_ms: int = 0
    audio_end_ms: int = 0
    item_id: str = ""


class InputAudioTranscriptionDelta(_ServerEventBase):
    """``conversation.item.input_audio_transcription.delta``."""

    type: Literal["conversation.item.input_audio_transcription.delta"]
    item_id: str
    content_index: int = 0
    delta: str = ""


class InputAudioTranscriptionCompleted(_ServerEventBase):
    """``conversation.item.input_audio_transcription.completed``: what the caller said."""

    type: Literal["conversation.item.input_audio_transcription.completed"]
    item_id: str
    content_index: int = 0
    transcript: str
    usage: dict[str, Any] | None = None


class InputAudioTranscriptionFailed(_ServerEventBase):
    """``conversation.item.input_audio_transcription.failed``."""

    type: Literal["conversation.item.input_audio_transcription.failed"]
    item_id: str
    content_index: int = 0
    error: ErrorDetail = ErrorDetail()


class ResponseCreated(_ServerEventBase):
    """``response.created``: a response is now active."""

    type: Literal["response.created"]
    response: Response


class ResponseDone(_ServerEventBase):
    """``response.done``: the response ended (see ``response.status``); usage is here."""

    type: Literal["response.done"]
    response: Response


class _OutputItemEvent(_ServerEventBase):
    response_id: str
    output_index: int = 0
    item: ConversationItem


class ResponseOutputItemAdded(_OutputItemEvent):
    """``response.output_item.added``."""

    type: Literal["response.output_item.added"]


class ResponseOutputItemDone(_OutputItemEvent):
    """``response.output_item.done`` (a ``function_call`` item here carries the arguments)."""

    type: Literal["response.output_item.done"]


class _ContentEvent(_ServerEventBase):
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0


class ResponseContentPartAdded(_ContentEvent):
    """``response.content_part.added``."""

    type: Literal["response.content_part.added"]
    part: ContentPart = ContentPart()


class ResponseContentPartDone(_ContentEvent):
    """``response.content_part.done``."""

    type: Literal["response.content_part.done"]
    part: ContentPart = ContentPart()


class ResponseOutputAudioDelta(_ContentEvent):
    """``response.output_audio.delta``: base64 audio in the session's output format.

    This is the hot path (about 50 per second per call); :meth:`audio`
    decodes the payload.
    """

    type: Literal["response.output_audio.delta"]
    delta: str

    def audio(self) -> bytes:
        """The decoded audio bytes."""
        return base64.b64decode(self.delta)


AudioDelta = ResponseOutputAudioDelta

#: Base64 characters of one audio delta handled in one step (48 KiB of audio,
#: 6 s of u-law, about half a millisecond of decoding and resampling).
AUDIO_STEP_CHARS = 64 * 1024


def split_audio_delta(event: ServerEvent, step: int = AUDIO_STEP_CHARS) -> list[ServerEvent]:
    """``event`` as a list of events, each of bounded work.

    An audio delta longer than ``step`` base64 characters becomes several
    deltas of the same item, cut at multiples of 4 characters so each piece
    decodes on its own; the caller handles them one at a time and lets the
    media clock run in between. Any other event comes back alone.

    Args:
        event: a parsed server event.
        step: the longest piece, in base64 characters (rounded down to a multiple of 4).
    """
    if not isinstance(event, ResponseOutputAudioDelta) or len(event.delta) <= step:
        return [event]
    step = max(step - step % 4, 4)
    delta = event.delta
    return [
        event.model_copy(update={"delta": delta[i : i + step]}) for i in range(0, len(delta), step)
    ]


class ResponseOutputAudioDone(_ContentEvent):
    """``response.output_audio.done``: no more audio for this item."""

    type: Literal["response.output_audio.done"]


class ResponseOutputAudioTranscriptDelta(_ContentEvent):
    """``response.output_audio_transcript.delta``."""

    type: Literal["response.output_audio_transcript.delta"]
    delta: str = ""


class ResponseOutputAudioTranscriptDone(_ContentEvent):
    """``response.output_audio_transcript.done``: what the agent said."""

    type: Literal["response.output_audio_transcript.done"]
    transcript: str = ""


class ResponseOutputTextDelta(_ContentEvent):
    """``response.output_text.delta`` (text-only sessions)."""

    type: Literal["response.output_text.delta"]
    delta: str = ""


class ResponseOutputTextDone(_ContentEvent):
    """``response.output_text.done``."""

    type: Literal["response.output_text.done"]
    text: str = ""


class ResponseFunctionCallArgumentsDelta(_ServerEventBase):
    """``response.function_call_arguments.delta``."""

    type: Literal["response.function_call_arguments.delta"]
    response_id: str
    item_id: str
    output_index: int = 0
    call_id: str = ""
    delta: str = ""


class ResponseFunctionCallArgumentsDone(_ServerEventBase):
    """``response.function_call_arguments.done``: a complete tool call.

    Act on this *or* on ``response.output_item.done``, not on both.
    """

    type: Literal["response.function_call_arguments.done"]
    response_id: str
    item_id: str
    output_index: int = 0
    call_id: str
    name: str = ""
    arguments: str = ""


class _McpListToolsEvent(_ServerEventBase):
    item_id: str


class McpListToolsInProgress(_McpListToolsEvent):
    """``mcp_list_tools.in_progress``: the API is asking an MCP server for its tools."""

    type: Literal["mcp_list_tools.in_progress"]


class McpListToolsCompleted(_McpListToolsEvent):
    """``mcp_list_tools.completed``: the server's tools are in the ``mcp_list_tools`` item."""

    type: Literal["mcp_list_tools.completed"]


class McpListToolsFailed(_McpListToolsEvent):
    """``mcp_list_tools.failed``: the MCP server could not be reached or refused."""

    type: Literal["mcp_list_tools.failed"]


class _McpCallEvent(_ServerEventBase):
    item_id: str
    output_index: int = 0


class ResponseMcpCallInProgress(_McpCallEvent):
    """``response.mcp_call.in_progress``: the API is calling an MCP tool."""

    type: Literal["response.mcp_call.in_progress"]


class ResponseMcpCallCompleted(_McpCallEvent):
    """``response.mcp_call.completed``: the item's ``output`` is the result."""

    type: Literal["response.mcp_call.completed"]


class ResponseMcpCallFailed(_McpCallEvent):
    """``response.mcp_call.failed``: the item's ``error`` says why."""

    type: Literal["response.mcp_call.failed"]


class ResponseMcpCallArgumentsDelta(_McpCallEvent):
    """``response.mcp_call_arguments.delta``."""

    type: Literal["response.mcp_call_arguments.delta"]
    response_id: str = ""
    delta: str = ""


class ResponseMcpCallArgumentsDone(_McpCallEvent):
    """``response.mcp_call_arguments.done``: the MCP call's complete arguments."""

    type: Literal["response.mcp_call_arguments.done"]
    response_id: str = ""
    arguments: str = ""


class RateLimitsUpdated(_ServerEventBase):
    """``rate_limits.updated``."""

    type: Literal["rate_limits.updated"]
    rate_limits: list[RateLimit] = []


class ErrorEvent(_ServerEventBase):
    """``error``: the server refused a client event or the session failed."""

    type: Literal["error"]
    error: ErrorDetail

    def to_exception(self) -> RealtimeServerError:
        """The matching :class:`RealtimeServerError` (``.fatal`` tells if the session is over)."""
        err = self.error
        return RealtimeServerError(
            err.message or "(no message)",
            code=err.code or "",
            error_type=err.type,
            event_id=err.event_id or "",
        )


class UnknownEvent(BaseModel):
    """A server event whose ``type`` this module does not know; ``data`` is the raw object."""

    model_config = ConfigDict(frozen=True)

    type: str
    data: dict[str, Any]


#: Every server event with a typed model, discriminated by ``type``.
_KnownServerEventUnion: TypeAlias = (
    SessionCreated
    | SessionUpdated
    | ConversationCreated
    | ConversationItemAdded
    | ConversationItemDone
    | ConversationItemCreated
    | ConversationItemTruncated
    | ConversationItemDeleted
    | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped
    | InputAudioBufferCommitted
    | InputAudioBufferCleared
    | InputAudioBufferTimeoutTriggered
    | InputAudioTranscriptionDelta
    | InputAudioTranscriptionCompleted
    | InputAudioTranscriptionFailed
    | ResponseCreated
    | ResponseDone
    | ResponseOutputItemAdded
    | ResponseOutputItemDone
    | ResponseContentPartAdded
    | ResponseContentPartDone
    | ResponseOutputAudioDelta
    | ResponseOutputAudioDone
    | ResponseOutputAudioTranscriptDelta
    | ResponseOutputAudioTranscriptDone
    | ResponseOutputTextDelta
    | ResponseOutputTextDone
    | ResponseFunctionCallArgumentsDelta
    | ResponseFunctionCallArgumentsDone
    | McpListToolsInProgress
    | McpListToolsCompleted
    | McpListToolsFailed
    | ResponseMcpCallInProgress
    | ResponseMcpCallCompleted
    | ResponseMcpCallFailed
    | ResponseMcpCallArgumentsDelta
    | ResponseMcpCallArgumentsDone
    | RateLimitsUpdated
    | ErrorEvent
)
_KnownServerEvent: TypeAlias = Annotated[_KnownServerEventUnion, Field(discriminator="type")]

ServerEvent: TypeAlias = _KnownServerEventUnion | UnknownEvent

_SERVER_EVENTS: TypeAdapter[_KnownServerEvent] = TypeAdapter(_KnownServerEvent)

#: Every server event ``type`` :func:`parse_server_event` turns into a typed model.
KNOWN_SERVER_EVENT_TYPES: frozenset[str] = frozenset(
    get_args(cls.model_fields["type"].annotation)[0]
    for cls in get_args(ServerEvent)
    if cls is not UnknownEvent
)


def _describe(exc: ValidationError, event_type: str = "") -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = list(first.get("loc", ()))
    if loc and loc[0] == event_type:
        loc = loc[1:]  # the discriminated union puts the tag first
    where = ".".join(str(part) for part in loc)
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def parse_server_event(data: str | bytes) -> ServerEvent:
    """Parse one websocket text message from the model server.

    Args:
        data: the message, as received (``bytes`` avoids a UTF-8 decode step).

    Returns:
        The typed event; an :class:`UnknownEvent` when ``type`` is not one of
        :data:`KNOWN_SERVER_EVENT_TYPES`. Unknown fields are ignored.

    Raises:
        RealtimeProtocolError: not JSON, not an object, no string ``type``, or a
            known type with missing or mistyped fields. The message names the
            event type and the field, never the payload.
    """
    try:
        return _SERVER_EVENTS.validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        kind = first["type"]
        if kind == "union_tag_invalid":
            # Either a type we do not know (fine) or a non-string type (not fine).
            try:
                obj = json.loads(data)
            except (ValueError, RecursionError):
                raise RealtimeProtocolError("server sent invalid JSON") from None
            event_type = obj.get("type")
            if isinstance(event_type, str):
                return UnknownEvent(type=event_type, data=obj)
            raise RealtimeProtocolError("server event 'type' is not a string") from None
        if kind == "json_invalid":
            raise RealtimeProtocolError(f"server sent invalid JSON ({_describe(exc)})") from None
        if kind == "union_tag_not_found":
            raise RealtimeProtocolError("server event has no 'type'") from None
        if kind in ("dict_type", "model_type", "model_attributes_type") and not first["loc"]:
            raise RealtimeProtocolError("server event is not a JSON object") from None
        event_type = _peek_type(data)
        raise RealtimeProtocolError(
            f"invalid {event_type or 'server'} event: {_describe(exc, event_type)}"
        ) from None


def _peek_type(data: str | bytes) -> str:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return ""
    event_type = obj.get("type") if isinstance(obj, dict) else None
    return event_type if isinstance(event_type, str) else ""
