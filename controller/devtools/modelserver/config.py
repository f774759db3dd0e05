"""Configuration of the local model server, and what it records (pure data)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.devtools.modelserver.script import ScriptStep

__all__ = [
    "ClientEventRejected",
    "ReplyMode",
    "ResponseRecord",
    "ScriptedCall",
    "ScriptedMcpCall",
    "ServerConfig",
    "SessionRecord",
    "TurnRecord",
    "Validator",
]

ReplyMode = Literal["echo", "tone", "file"]


class ClientEventRejected(Exception):
    """Raise from a validator hook to reject a client event with a given error.

    The server answers with an ``error`` event carrying ``code``,
    ``message`` and ``param``, as the real API would.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type


#: A hook called with every client event (a parsed JSON object) before the
#: server acts on it. Raise (preferably :class:`ClientEventRejected`) to reject it.
Validator = Callable[[Mapping[str, Any]], None]


@dataclass
class ServerConfig:
    """How the local model server behaves. Mutable: tests may change it between turns.

    Attributes:
        host: address to listen on (loopback by default: this is a test peer).
        port: TCP port; 0 picks a free one (``ModelServer.start`` returns it).
        api_key: if set, only this key is accepted (others get ``invalid_api_key``
            after the upgrade, like the real API); if ``None`` any key is.
        reply: what a response says: ``echo`` (the caller's last utterance; a
            tone when there is none yet), ``tone`` or ``file`` (``reply_file``).
        tone_hz: frequency of the ``tone`` reply.
        tone_ms: duration of the ``tone`` reply.
        tone_dbfs: level of the ``tone`` reply.
        reply_file: a PCM WAV file for ``file`` replies (any rate; resampled).
        transcript: the assistant's transcript sent with each audio reply.
        input_transcript: the caller transcript sent when the session asks for
            input transcription; ``None`` sends none.
        vad_threshold_dbfs: frame RMS level at or above which audio is speech.
        vad_min_speech_ms: voiced audio needed before ``speech_started``.
        chunk_ms: audio per ``response.output_audio.delta``.
        speed: how much faster than real time replies are generated (the real
            API is faster than real time; the client must pace playout);
            0 means as fast as possible.
        session_max_s: if set, sessions end after this long with the GA
            ``session_expired`` error and close code 1001 (real API: 60 min).
        open_delay_s: wait this long after the websocket upgrade before
            ``session.created`` (a slow model: tests of audio sent early).
        seed: seed for ids and ``obfuscation`` strings (reproducible runs).
        record_events: keep every event in ``SessionRecord.received``/``sent``
            (tests); the command turns this off and keeps only recent sessions,
            so a long demo does not grow without bound.
        script: what each response of a session does, in order (speak, call a
            function, stay silent; see :mod:`.script`); then the reply above.
            Each session copies it when it opens: a change applies to the next.
        preamble_ms: when positive, every audio response first speaks a short
            preamble item (a ``preamble_hz`` tone of this length, transcript
            ``preamble_transcript``), then the reply item, as reasoning models
            do ("One moment." then the answer); 0: one item per response.
        preamble_hz: frequency of the preamble tone.
        preamble_transcript: the preamble's transcript.
        mcp_tools: the tools each MCP server offers, by server label; the
            server reaches no real MCP server: listing the tools of a label
            not here fails (``mcp_list_tools.failed``).
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None
    reply: ReplyMode = "tone"
    tone_hz: float = 440.0
    tone_ms: int = 1000
    tone_dbfs: float = -12.0
    reply_file: str | None = None
    transcript: str = "Hello, this is the local model server."
    input_transcript: str | None = "Hello."
    vad_threshold_dbfs: float = -40.0
    vad_min_speech_ms: int = 30
    chunk_ms: int = 100
    speed: float = 4.0
    session_max_s: float | None = None
    open_delay_s: float = 0.0
    seed: int | None = None
    record_events: bool = True
    script: Sequence[ScriptStep] = ()
    preamble_ms: int = 0
    preamble_hz: float = 500.0
    preamble_transcript: str = "One moment."
    mcp_tools: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ScriptedCall:
    """A function call the server makes instead of its next spoken reply.

    With ``speak_first`` the next response speaks its usual reply and then
    makes the call in the same response (output items 0 and 1), as real
    models do for "say goodbye, then hang up"; a response cancelled while
    speaking makes no call.
    """

    name: str
    arguments: str
    call_id: str
    speak_first: bool = False


@dataclass(frozen=True)
class ScriptedMcpCall:
    """An MCP call the server makes (as the real API does for ``mcp`` tools) in its next
    response, instead of the model calling a function.

    With ``output`` the call completes and the response goes on to speak its
    usual reply (output items 0 and 1); with ``error`` the call fails and the
    response ends there, without a word after it.
    """

    server_label: str
    name: str
    arguments: str
    output: str | None = None
    error: str | None = None


@dataclass
class TurnRecord:
    """One committed caller turn (server VAD or an explicit commit)."""

    item_id: str
    source: Literal["server_vad", "commit"]
    audio_start_ms: int
    audio_end_ms: int
    audio_ms: float
    rms_dbfs: float
    transcript: str | None


@dataclass
class ResponseRecord:
    """One response the server produced.

    ``kind`` ``silent``: a response without output (a script's silent step;
    ``item_id`` is then empty). ``step``: the index of the script step that
    made it (None: the configured reply or a queued function call).
    """

    id: str
    trigger: Literal["turn", "response.create", "idle_timeout"]
    kind: Literal["audio", "text", "function_call", "mcp_call", "silent"]
    item_id: str
    status: str = "in_progress"
    reason: str | None = None
    audio_ms_total: float = 0.0
    audio_ms_sent: float = 0.0
    transcript: str = ""
    instructions: str | None = None
    function_name: str | None = None
    call_id: str | None = None
    step: int | None = None
    #: The preamble item before the reply (``ServerConfig.preamble_ms``), if any.
    preamble_item_id: str | None = None
    preamble_ms_sent: float = 0.0
    #: ``server_label.name`` of the MCP call made in this response, if any.
    mcp_call: str | None = None


@dataclass
class SessionRecord:
    """Everything one websocket session did, for tests to assert on.

    ``received`` and ``sent`` hold every event in order; the base64 audio of
    ``input_audio_buffer.append`` and ``response.output_audio.delta`` is
    replaced by its decoded length (``"audio": "<320 bytes>"``) to bound memory.
    """

    id: str
    model: str
    auth: str
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    session_updates: list[dict[str, Any]] = field(default_factory=list)
    session: dict[str, Any] = field(default_factory=dict)
    turns: list[TurnRecord] = field(default_factory=list)
    responses: list[ResponseRecord] = field(default_factory=list)
    truncates: list[dict[str, Any]] = field(default_factory=list)
    items_created: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    validation_failures: list[str] = field(default_factory=list)
    input_audio_bytes: int = 0
    input_audio_ms: float = 0.0
    #: ``input_audio_buffer.timeout_triggered`` events sent (``idle_timeout_ms``).
    idle_timeouts: int = 0
    closed: bool = False
    close_code: int | None = None

    def received_types(self) -> list[str]:
        """The ``type`` of every client event received, in order."""
        return [str(e.get("type")) for e in self.received]

    def sent_types(self, *, audio: bool = True) -> list[str]:
        """The ``type`` of every server event sent, in order (``audio=False`` drops
        ``response.output_audio.delta`` and transcript deltas)."""
        noisy = {"response.output_audio.delta", "response.output_audio_transcript.delta"}
        return [str(e.get("type")) for e in self.sent if audio or e.get("type") not in noisy]

    def error_codes(self) -> list[str | None]:
        """The ``code`` of every error event sent, in order."""
        return [e.get("code") for e in self.errors]
