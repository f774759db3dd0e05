"""One Realtime session of the local model server, as a pure state machine.

:class:`PeerSession` takes client event text in (:meth:`~PeerSession.receive`)
and puts server event objects into :attr:`~PeerSession.outbox`, in the order
the GA API sends them. It does no I/O and never sleeps: the websocket layer
(:mod:`.server`) sends the outbox and calls :meth:`~PeerSession.step` to
stream the active response, one audio chunk per call, at the pace it chooses.

What it imitates, and how (see realtime-protocol.md for the real API):

* Connect: ``session.created`` (the full default GA session) then
  ``conversation.created``.
* ``session.update``: merged into the session and echoed by
  ``session.updated``. Rejected like the real API: no ``session.type``
  (``missing_required_parameter``), beta fields such as ``session.voice``
  (``unknown_parameter``), a PCM rate other than 24000 (``invalid_value``),
  a voice change after assistant audio (``cannot_update_voice``), a bad
  ``reasoning.effort``, a ``prompt`` without ``id`` or with a bare-string
  variable, an ``idle_timeout_ms`` outside 5000-30000, an ``mcp`` tool
  without ``server_label`` or ``server_url``.
* Input audio is decoded per ``audio.input.format`` (u-law/A-law 8 kHz, PCM
  24 kHz) and fed to an energy VAD (:mod:`.vad`) when ``turn_detection`` is
  set, honouring ``silence_duration_ms`` and ``prefix_padding_ms``
  (``semantic_vad`` maps eagerness to a silence duration). A turn gives
  ``speech_started``, ``speech_stopped``, ``committed``, the user item
  (``conversation.item.added``/``done``), the input transcription when
  configured, and a response when ``create_response`` is true.
* ``speech_started`` during an audio response cancels it when
  ``interrupt_response`` is true: ``response.done`` with status
  ``cancelled``, reason ``turn_detected``.
* Responses: ``response.created``, ``response.output_item.added``,
  ``conversation.item.added``, ``response.content_part.added``, then per
  chunk a transcript delta and an audio delta (both with an ``obfuscation``
  field), then the ``done`` events, ``response.done`` with usage and
  ``rate_limits.updated``. A scripted function call replaces the next reply.
* A session's script (``ServerConfig.script``, :mod:`.script`): each response
  takes the next step: speak, call a function (optionally speaking first) or
  stay silent (``response.created`` then ``response.done`` with no output).
* With ``preamble_ms`` each audio response speaks two items: a short
  preamble (output index 0), then the reply (index 1), as reasoning models
  do; a cancel during either ends the response there.
* MCP: a ``session.update`` naming an ``mcp`` server lists its tools
  (``mcp_list_tools.in_progress``/``completed`` with an ``mcp_list_tools``
  item) when ``mcp_tools`` has its label, else the listing fails. A
  scripted MCP call makes the next response call the tool as the API does
  (``response.mcp_call*`` events); a completed call is followed by the
  spoken reply in the same response, a failed one ends the response.
* ``idle_timeout_ms`` (server VAD): input audio quiet that long after the
  last response had time to play gives ``input_audio_buffer.timeout_triggered``,
  the silence committed as a user item, and a response.
* Refusals: ``input_audio_buffer_commit_empty`` (< 100 ms),
  ``conversation_already_has_active_response``, ``response_cancel_not_active``,
  truncate past the audio sent (``invalid_value``: "Audio content of Nms is
  already shorter than Mms"), unknown item ids, unknown tool call ids
  (``invalid_tool_call_id``), bad JSON and unknown event types (``invalid_event``).

An optional validator (e.g. the ``openai`` package's types, in the tests)
sees every client event the server's own checks accept, before it acts on it.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import math
import random
import string
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from controller.devtools.modelserver.audio import (
    AudioFormat,
    Samples,
    load_wav,
    resample,
    rms_dbfs,
    tone,
)
from controller.devtools.modelserver.config import (
    ClientEventRejected,
    ResponseRecord,
    ScriptedCall,
    ScriptedMcpCall,
    ServerConfig,
    SessionRecord,
    TurnRecord,
    Validator,
)
from controller.devtools.modelserver.script import CallStep, ScriptStep, SilentStep, SpeakStep
from controller.devtools.modelserver.vad import EnergyVad, SpeechStarted, SpeechStopped

__all__ = ["IdFactory", "PeerSession", "default_session"]

Event = dict[str, Any]

_ALPHABET = string.ascii_letters + string.digits
_MIN_COMMIT_MS = 100.0
_RETAIN_MS = 60_000  # input audio kept for echo/energy (the buffer itself is unbounded)
_IDLE_RETAIN_MS = 10_000  # with VAD on and nobody talking
_SEMANTIC_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 300}

# --- the GA session shape, as the server reports it -----------------------------

_SESSION_KEYS = frozenset(
    {
        "type",
        "model",
        "output_modalities",
        "instructions",
        "audio",
        "include",
        "tracing",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "truncation",
        "prompt",
        "parallel_tool_calls",
        "reasoning",
    }
)
_AUDIO_KEYS = frozenset({"input", "output"})
_INPUT_KEYS = frozenset({"format", "transcription", "noise_reduction", "turn_detection"})
_OUTPUT_KEYS = frozenset({"format", "voice", "speed"})
_FORMAT_KEYS = frozenset({"type", "rate"})
_FORMAT_TYPES = ("audio/pcm", "audio/pcmu", "audio/pcma")
_TRANSCRIPTION_KEYS = frozenset({"model", "language", "prompt", "delay", "keywords", "languages"})
_NOISE_KEYS = frozenset({"type", "strength"})
_NOISE_TYPES = ("near_field", "far_field")
_REASONING_EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
_PROMPT_KEYS = frozenset({"id", "version", "variables"})
_MCP_KEYS = frozenset(
    {
        "type",
        "server_label",
        "server_url",
        "connector_id",
        "authorization",
        "headers",
        "allowed_tools",
        "require_approval",
        "server_description",
    }
)
#: ``idle_timeout_ms``: what the real API accepts.
_IDLE_TIMEOUT_MS = (5000, 30000)
_TURN_KEYS = {
    "server_vad": frozenset(
        {
            "type",
            "threshold",
            "prefix_padding_ms",
            "silence_duration_ms",
            "idle_timeout_ms",
            "create_response",
            "interrupt_response",
        }
    ),
    "semantic_vad": frozenset({"type", "eagerness", "create_response", "interrupt_response"}),
}
_TURN_DEFAULTS: dict[str, Event] = {
    "server_vad": {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    },
    "semantic_vad": {
        "type": "semantic_vad",
        "eagerness": "auto",
        "create_response": True,
        "interrupt_response": True,
    },
}
_EVENT_KEYS = {
    "session.update": frozenset({"session"}),
    "input_audio_buffer.append": frozenset({"audio"}),
    "input_audio_buffer.commit": frozenset(),
    "input_audio_buffer.clear": frozenset(),
    "conversation.item.create": frozenset({"item", "previous_item_id"}),
    "conversation.item.truncate": frozenset({"item_id", "content_index", "audio_end_ms"}),
    "conversation.item.delete": frozenset({"item_id"}),
    "conversation.item.retrieve": frozenset({"item_id"}),
    "response.create": frozenset({"response"}),
    "response.cancel": frozenset({"response_id"}),
    "output_audio_buffer.clear": frozenset(),
}


def default_session(session_id: str, model: str, expires_at: int) -> Event:
    """The session object of ``session.created``, with the GA API's defaults."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "You are a local test peer for ari-realtime, not a model.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": expires_at,
        "include": None,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(_TURN_DEFAULTS["server_vad"]),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "marin",
                "speed": 1.0,
            },
        },
    }


class IdFactory:
    """Unique ids shaped like the real ones (``event_…``, ``item_…``, ``resp_…``)."""

    _counter = itertools.count(1)  # shared by all factories: unique per process

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def new(self, prefix: str) -> str:
        """A new id: ``prefix_`` + a unique counter + random letters (21 characters)."""
        n = next(self._counter)
        head = ""
        while n:
            n, digit = divmod(n, 62)
            head = _ALPHABET[digit] + head
        body = head + "".join(self._rng.choices(_ALPHABET, k=max(4, 21 - len(head))))
        return f"{prefix}_{body}"

    def obfuscation(self) -> str:
        """A random padding string like the real API's ``obfuscation`` field."""
        return "".join(self._rng.choices(_ALPHABET, k=self._rng.randint(4, 16)))


class _Reject(Exception):
    """A client event the server refuses (becomes an ``error`` event)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass
class _Item:
    item: Event
    audio_ms: float = 0.0  # assistant audio sent for this item (truncate bound)


@dataclass
class _Speech:
    """One audio item of a response, still to be streamed."""

    audio: bytes
    transcript: str
    preamble: bool = False


@dataclass
class _ActiveResponse:
    record: ResponseRecord
    response: Event
    chunk_bytes: int
    bytes_per_ms: int
    started_ms: float  # input audio time at response.created (idle timeout)
    then_call: ScriptedCall | None = None  # made after the audio (speak_first)
    to_speak: list[_Speech] = field(default_factory=list)  # audio items after this one
    output: list[Event] = field(default_factory=list)  # items finished so far
    audio_ms_sent: float = 0.0  # over every item
    # The audio item being streamed (see PeerSession._next_item):
    item: Event = field(default_factory=dict)
    output_index: int = 0
    preamble: bool = False
    audio: bytes = b""
    words: list[str] = field(default_factory=list)
    pos: int = 0
    words_sent: int = 0
    transcript_sent: list[str] = field(default_factory=list)


def _compact(event: Mapping[str, Any], key: str) -> Event:
    """A copy of ``event`` with its base64 ``key`` replaced by the decoded length."""
    out = dict(event)
    value = out.get(key)
    if isinstance(value, str):
        out[key] = f"<{len(value) * 3 // 4 - value[-2:].count('=')} bytes>"
    return out


def _unknown_keys(obj: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            name = f"{path}.{key}" if path else key
            raise _Reject("unknown_parameter", f"Unknown parameter: '{name}'.", name)


_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "string": ((str,), "a string"),
    "integer": ((int,), "an integer"),
    "number": ((int, float), "a decimal"),
    "boolean": ((bool,), "a boolean"),
    "object": ((dict,), "an object"),
    "array": ((list,), "an array"),
}
_JSON_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    dict: "an object",
    list: "an array",
    type(None): "null",
}


def _field(
    obj: Mapping[str, Any], key: str, kind: str, path: str = "", *, required: bool = False
) -> Any:
    """``obj[key]`` checked against a JSON ``kind``; ``None`` when absent or null and optional."""
    name = f"{path}.{key}" if path else key
    value = obj.get(key)
    if value is None:
        if required:
            raise _Reject(
                "missing_required_parameter", f"Missing required parameter: '{name}'.", name
            )
        return None
    types, expected = _KINDS[kind]
    is_bool = isinstance(value, bool)
    if not isinstance(value, types) or (is_bool and kind in ("integer", "number")):
        got = _JSON_NAMES.get(type(value), "another type")
        raise _Reject(
            "invalid_type",
            f"Invalid type for '{name}': expected {expected}, but got {got} instead.",
            name,
        )
    return value


def _in_range(value: float | None, low: float, high: float, name: str) -> None:
    if value is not None and not low <= value <= high:
        raise _Reject(
            "invalid_value",
            f"Invalid '{name}': expected a value between {low:g} and {high:g}, got {value:g}.",
            name,
        )


def _one_of(value: str | None, allowed: tuple[str, ...], name: str) -> None:
    if value is not None and value not in allowed:
        listed = ", ".join(f"'{a}'" for a in allowed[:-1]) + f", and '{allowed[-1]}'"
        raise _Reject(
            "invalid_value", f"Invalid value: '{value}'. Supported values are: {listed}.", name
        )


#: Session fields a ``null`` turns off; a ``null`` anywhere else leaves the field as it was.
_NULLABLE = frozenset(
    {
        "turn_detection",
        "transcription",
        "noise_reduction",
        "tracing",
        "prompt",
        "include",
        "idle_timeout_ms",
    }
)


def _deep_merge(base: Event, update: Mapping[str, Any]) -> Event:
    out = dict(base)
    for key, value in update.items():
        if value is None and key not in _NULLABLE:
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class PeerSession:
    """The protocol state of one model-server session (pure; see the module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        record: SessionRecord,
        *,
        ids: IdFactory,
        function_calls: deque[ScriptedCall | ScriptedMcpCall],
        validator: Validator | None = None,
        now: Callable[[], float] = time.time,
        wav_cache: dict[tuple[str, int], Samples] | None = None,
    ) -> None:
        self.config = config
        self.record = record
        self.ids = ids
        self.validator = validator
        self.outbox: deque[Event] = deque()
        #: Set when the server must close the websocket (code, reason).
        self.close_code: int | None = None
        self.close_reason = ""
        self._function_calls = function_calls
        self._wav_cache = wav_cache if wav_cache is not None else {}
        self._now = now
        lifetime = int(config.session_max_s) if config.session_max_s else 3600
        self.session = default_session(record.id, record.model, int(now()) + lifetime)
        self.conversation_id = ids.new("conv")
        self._items: dict[str, _Item] = {}
        self._order: list[str] = []
        self._calls: set[str] = set()
        self._active: _ActiveResponse | None = None
        self._audio_produced = False
        self._last_utterance: tuple[Samples, int] | None = None
        # Input audio: absolute time in ms of input audio since the session began.
        self._in_fmt = AudioFormat.from_session(self.session["audio"]["input"]["format"])
        self._audio_ms = 0.0
        self._buffer = np.zeros(0, dtype=np.int16)  # retained input, at _in_fmt.rate
        self._buffer_origin_ms = 0.0  # time of _buffer[0]
        self._buffered_ms = 0.0  # since the last commit or clear (what commit checks)
        self._vad: EnergyVad | None = None
        self._speech_item: str | None = None
        # The script: steps left, the index of the first, uses of it, and the
        # input audio time (ms) at which it became current.
        self._script: deque[ScriptStep] = deque(config.script)
        self._step_index = 0
        self._step_uses = 0
        self._step_began_ms = 0.0
        # Input audio time since which the caller is quiet with nothing playing
        # (idle_timeout_ms counts from here); None while they speak.
        self._idle_from_ms: float | None = 0.0
        self._mcp_listed: set[str] = set()  # MCP server labels whose tools were listed
        self._rebuild_vad()
        self._handlers: dict[str, Callable[[Event], None]] = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.truncate": self._truncate,
            "conversation.item.delete": self._item_delete,
            "conversation.item.retrieve": self._item_retrieve,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
            "output_audio_buffer.clear": self._output_buffer_clear,
        }

    # --- public API ---------------------------------------------------------------

    @property
    def generating(self) -> bool:
        """True while an audio response is being streamed (call :meth:`step`)."""
        return self._active is not None

    def open(self) -> None:
        """Queue what the server sends on connect."""
        self.record.session = copy.deepcopy(self.session)
        self._emit("session.created", session=copy.deepcopy(self.session))
        self._emit(
            "conversation.created",
            conversation={"id": self.conversation_id, "object": "realtime.conversation"},
        )

    def fail(self, code: str, message: str, *, close_code: int, error_type: str) -> None:
        """Queue a fatal error and ask the server to close with ``close_code``."""
        self._error(code, message, error_type=error_type)
        self.close_code = close_code
        self.close_reason = code

    def expire(self) -> None:
        """End the session like the real API at its maximum duration."""
        self.fail(
            "session_expired",
            "Your session hit the maximum duration of 60 minutes.",
            close_code=1001,
            error_type="invalid_request_error",
        )

    def receive(self, data: str | bytes) -> None:
        """Handle one websocket text message from the client."""
        if self.close_code is not None:
            return
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            self._error("invalid_event", "The server could not parse the event: invalid JSON.")
            return
        if not isinstance(event, dict):
            self._error("invalid_event", "The event must be a JSON object.")
            return
        event_type = event.get("type")
        client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        if not self.config.record_events:
            pass
        elif event_type == "input_audio_buffer.append":
            self.record.received.append(_compact(event, "audio"))
        else:
            self.record.received.append(event)
        handler = self._handlers.get(event_type) if isinstance(event_type, str) else None
        if handler is None:
            if event_type is None:
                self._error("invalid_event", "Missing required parameter: 'type'.", param="type")
            else:
                self._error(
                    "invalid_event",
                    f"Invalid value: '{event_type}'. Supported values are: "
                    + ", ".join(f"'{name}'" for name in self._handlers)
                    + ".",
                    param="type",
                    client_event_id=client_event_id,
                )
            return
        try:
            _unknown_keys(event, _EVENT_KEYS[str(event_type)] | {"type", "event_id"}, "")
            self._check(str(event_type), event)
        except _Reject as exc:
            self._error(exc.code, exc.message, param=exc.param, client_event_id=client_event_id)
            return
        if self.validator is not None:
            try:
                self.validator(event)
            except ClientEventRejected as exc:
                self.record.validation_failures.append(f"{event_type}: {exc.code}: {exc.message}")
                self._error(
                    exc.code,
                    exc.message,
                    param=exc.param,
                    client_event_id=client_event_id,
                    error_type=exc.error_type,
                )
                return
            except Exception as exc:  # any validator failure is a rejection
                self.record.validation_failures.append(f"{event_type}: {exc}")
                self._error(
                    "invalid_value",
                    f"Invalid {event_type} event: {exc}",
                    client_event_id=client_event_id,
                )
                return
        try:
            handler(event)
        except _Reject as exc:
            self._error(exc.code, exc.message, param=exc.param, client_event_id=client_event_id)

    def step(self) -> float:
        """Stream the next chunk of the active response; return its audio in ms."""
        active = self._active
        if active is None:
            return 0.0
        chunk = active.audio[active.pos : active.pos + active.chunk_bytes]
        ms = len(chunk) / active.bytes_per_ms
        if chunk:
            end = active.pos + len(chunk)
            due = math.ceil(len(active.words) * end / len(active.audio))
            if due > active.words_sent:
                text = "".join(w + " " for w in active.words[active.words_sent : due])
                if due == len(active.words):
                    text = text.rstrip()
                active.words_sent = due
                active.transcript_sent.append(text)
                self._emit(
                    "response.output_audio_transcript.delta",
                    **self._content_ids(active),
                    delta=text,
                    obfuscation=self.ids.obfuscation(),
                )
            self._emit(
                "response.output_audio.delta",
                **self._content_ids(active),
                delta=base64.b64encode(chunk).decode("ascii"),
                obfuscation=self.ids.obfuscation(),
            )
            active.pos = end
            active.audio_ms_sent += ms
            sent_ms = end / active.bytes_per_ms
            if active.preamble:
                active.record.preamble_ms_sent = sent_ms
            else:
                active.record.audio_ms_sent = sent_ms
            entry = self._items.get(active.item["id"])  # None if the client deleted it
            if entry is not None:
                entry.audio_ms = sent_ms
            self._audio_produced = True
        if active.pos >= len(active.audio):
            self._advance(active)
        return ms

    # --- validation ---------------------------------------------------------------

    def _check(self, event_type: str, event: Event) -> None:
        """The server's own checks of required fields and their JSON types."""
        _field(event, "event_id", "string")
        if event_type == "session.update":
            self._check_session(event.get("session"))
        elif event_type == "input_audio_buffer.append":
            _field(event, "audio", "string", required=True)
        elif event_type == "conversation.item.truncate":
            _field(event, "item_id", "string", required=True)
            _field(event, "content_index", "integer", required=True)
            end = _field(event, "audio_end_ms", "integer", required=True)
            _in_range(end, 0, 2**31, "audio_end_ms")
        elif event_type in ("conversation.item.delete", "conversation.item.retrieve"):
            _field(event, "item_id", "string", required=True)
        elif event_type == "conversation.item.create":
            _field(event, "previous_item_id", "string")
            item = _field(event, "item", "object", required=True)
            _field(item, "type", "string", "item", required=True)
            _field(item, "id", "string", "item")
            for key in ("role", "call_id", "output", "name", "arguments"):
                _field(item, key, "string", "item")
            _field(item, "content", "array", "item")
        elif event_type == "response.create":
            params = _field(event, "response", "object")
            if params is not None:
                _field(params, "instructions", "string", "response")
                self._check_modalities(params, "response")
                _field(params, "metadata", "object", "response")
                _field(params, "tools", "array", "response")
        elif event_type == "response.cancel":
            _field(event, "response_id", "string")

    @staticmethod
    def _check_modalities(obj: Mapping[str, Any], path: str) -> None:
        modalities = _field(obj, "output_modalities", "array", path)
        if modalities is not None and (
            len(modalities) != 1 or modalities[0] not in ("audio", "text")
        ):
            raise _Reject(
                "invalid_value",
                f"Invalid '{path}.output_modalities': use ['audio'] or ['text'], not both.",
                f"{path}.output_modalities",
            )

    def _check_session(self, session: Any) -> None:
        if not isinstance(session, dict):
            raise _Reject(
                "invalid_type", "Invalid type for 'session': expected an object.", "session"
            )
        if "type" not in session:
            raise _Reject(
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
                "session.type",
            )
        if session["type"] != "realtime":
            raise _Reject(
                "invalid_value",
                f"Invalid value: '{session['type']}'. This server supports only 'realtime'.",
                "session.type",
            )
        _unknown_keys(session, _SESSION_KEYS, "session")
        self._check_modalities(session, "session")
        _field(session, "instructions", "string", "session")
        _field(session, "model", "string", "session")
        tools = _field(session, "tools", "array", "session")
        for index, tool in enumerate(tools or []):
            if not isinstance(tool, dict) or tool.get("type", "function") not in (
                "function",
                "mcp",
            ):
                raise _Reject(
                    "invalid_value",
                    f"Invalid 'session.tools[{index}]': expected a function or mcp tool.",
                    f"session.tools[{index}]",
                )
            if tool.get("type") == "mcp":
                self._check_mcp_tool(tool, f"session.tools[{index}]")
        _field(session, "parallel_tool_calls", "boolean", "session")
        reasoning = _field(session, "reasoning", "object", "session")
        if reasoning is not None:
            _unknown_keys(reasoning, frozenset({"effort"}), "session.reasoning")
            _one_of(
                _field(reasoning, "effort", "string", "session.reasoning"),
                _REASONING_EFFORTS,
                "session.reasoning.effort",
            )
        prompt = _field(session, "prompt", "object", "session")
        if prompt is not None:
            _unknown_keys(prompt, _PROMPT_KEYS, "session.prompt")
            _field(prompt, "id", "string", "session.prompt", required=True)
            _field(prompt, "version", "string", "session.prompt")
            variables = _field(prompt, "variables", "object", "session.prompt")
            for name, value in (variables or {}).items():
                path = f"session.prompt.variables.{name}"
                if not isinstance(value, dict):
                    # What the real API answered to a bare string (September 2025).
                    got = _JSON_NAMES.get(type(value), "another type")
                    raise _Reject(
                        "invalid_type",
                        f"Invalid type for '{path}': expected an object, but got {got} instead.",
                        path,
                    )
                _field(value, "type", "string", path, required=True)
        max_tokens = session.get("max_output_tokens")
        if max_tokens is not None and max_tokens != "inf":
            _in_range(
                _field(session, "max_output_tokens", "integer", "session"),
                1,
                4096,
                "session.max_output_tokens",
            )
        audio = _field(session, "audio", "object", "session")
        if audio is None:
            return
        _unknown_keys(audio, _AUDIO_KEYS, "session.audio")
        for direction, keys in (("input", _INPUT_KEYS), ("output", _OUTPUT_KEYS)):
            path = f"session.audio.{direction}"
            section = _field(audio, direction, "object", "session.audio")
            if section is None:
                continue
            _unknown_keys(section, keys, path)
            if section.get("format") is not None:
                self._check_format(section["format"], f"{path}.format")
        section = audio.get("input") or {}
        path = "session.audio.input.turn_detection"
        turn = _field(section, "turn_detection", "object", "session.audio.input")
        if turn is not None:
            kind = _field(turn, "type", "string", path, required=True)
            if kind not in _TURN_KEYS:
                raise _Reject(
                    "invalid_value",
                    f"Invalid value: '{kind}'. Supported values are: 'server_vad' and "
                    "'semantic_vad'.",
                    f"{path}.type",
                )
            _unknown_keys(turn, _TURN_KEYS[kind], path)
            _in_range(_field(turn, "threshold", "number", path), 0.0, 1.0, f"{path}.threshold")
            for key in ("prefix_padding_ms", "silence_duration_ms"):
                _in_range(_field(turn, key, "integer", path), 0, 600_000, f"{path}.{key}")
            low, high = _IDLE_TIMEOUT_MS
            idle = _field(turn, "idle_timeout_ms", "integer", path)
            _in_range(idle, low, high, f"{path}.idle_timeout_ms")
            for key in ("create_response", "interrupt_response"):
                _field(turn, key, "boolean", path)
            eagerness = _field(turn, "eagerness", "string", path)
            if eagerness is not None and eagerness not in _SEMANTIC_SILENCE_MS:
                raise _Reject(
                    "invalid_value",
                    f"Invalid value: '{eagerness}'. Supported values are: 'low', 'medium', "
                    "'high', and 'auto'.",
                    f"{path}.eagerness",
                )
        for key, keys in (("transcription", _TRANSCRIPTION_KEYS), ("noise_reduction", _NOISE_KEYS)):
            value = _field(section, key, "object", "session.audio.input")
            if value is not None:
                _unknown_keys(value, keys, f"session.audio.input.{key}")
        noise = section.get("noise_reduction")
        if isinstance(noise, dict):
            path = "session.audio.input.noise_reduction"
            _one_of(_field(noise, "type", "string", path), _NOISE_TYPES, f"{path}.type")
            _in_range(_field(noise, "strength", "number", path), 0.0, 1.0, f"{path}.strength")
        output = audio.get("output") or {}
        _in_range(
            _field(output, "speed", "number", "session.audio.output"),
            0.25,
            1.5,
            "session.audio.output.speed",
        )
        voice = output.get("voice")
        if voice is not None and not isinstance(voice, str | dict):
            raise _Reject(
                "invalid_type",
                "Invalid type for 'session.audio.output.voice': expected a string or an object.",
                "session.audio.output.voice",
            )
        current = self.session["audio"]["output"].get("voice")
        if voice is not None and voice != current and self._audio_produced:
            raise _Reject(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                "session.audio.output.voice",
            )

    @staticmethod
    def _check_mcp_tool(tool: Mapping[str, Any], path: str) -> None:
        _unknown_keys(tool, _MCP_KEYS, path)
        _field(tool, "server_label", "string", path, required=True)
        url = _field(tool, "server_url", "string", path)
        if url is None and _field(tool, "connector_id", "string", path) is None:
            raise _Reject(
                "missing_required_parameter",
                f"Missing required parameter: '{path}.server_url' (or connector_id).",
                f"{path}.server_url",
            )
        headers = _field(tool, "headers", "object", path)
        for name in headers or {}:
            _field(headers, name, "string", f"{path}.headers")
        approval = tool.get("require_approval")
        if isinstance(approval, str):
            _one_of(approval, ("always", "never"), f"{path}.require_approval")

    @staticmethod
    def _check_format(fmt: Any, path: str) -> None:
        if not isinstance(fmt, dict):
            raise _Reject("invalid_type", f"Invalid type for '{path}': expected an object.", path)
        _unknown_keys(fmt, _FORMAT_KEYS, path)
        kind = fmt.get("type")
        if kind not in _FORMAT_TYPES:
            raise _Reject(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: 'audio/pcm', 'audio/pcmu', "
                "and 'audio/pcma'.",
                f"{path}.type",
            )
        rate = fmt.get("rate")
        if kind == "audio/pcm" and rate is not None and rate != 24000:
            raise _Reject(
                "invalid_value",
                f"Invalid value: {rate}. Supported values are: 24000.",
                f"{path}.rate",
            )

    # --- session ------------------------------------------------------------------

    def _session_update(self, event: Event) -> None:
        update: Event = event["session"]
        self.record.session_updates.append(copy.deepcopy(update))
        merged = _deep_merge(self.session, {k: v for k, v in update.items() if k != "audio"})
        audio = update.get("audio") or {}
        for direction in ("input", "output"):
            section = audio.get(direction)
            if not section:
                continue
            target = merged["audio"][direction] = dict(merged["audio"][direction])
            for key, value in section.items():
                if value is None and key not in _NULLABLE:
                    continue
                if key == "format":
                    fmt = {"type": value["type"]}
                    if value["type"] == "audio/pcm":
                        fmt["rate"] = 24000
                    target[key] = fmt
                elif key == "turn_detection" and isinstance(value, dict):
                    given = {k: v for k, v in value.items() if v is not None or k in _NULLABLE}
                    target[key] = {**_TURN_DEFAULTS[value["type"]], **given}
                else:
                    target[key] = copy.deepcopy(value)
        if update.get("tools") is not None:  # lists are replaced, not merged
            merged["tools"] = copy.deepcopy(update["tools"])
        old_format = self._in_fmt
        self.session = merged
        self._in_fmt = AudioFormat.from_session(merged["audio"]["input"]["format"])
        if self._in_fmt != old_format:
            # A new input format starts a new buffer (the old samples have another rate).
            self._buffer = np.zeros(0, dtype=np.int16)
            self._buffer_origin_ms = self._audio_ms
            self._buffered_ms = 0.0
        self._rebuild_vad()
        self.record.session = copy.deepcopy(merged)
        self._emit("session.updated", session=copy.deepcopy(merged))
        for tool in update.get("tools") or []:
            label = tool.get("server_label")
            if (
                tool.get("type") == "mcp"
                and isinstance(label, str)
                and label not in self._mcp_listed
            ):
                self._list_mcp_tools(label)

    def _turn_detection(self) -> Event | None:
        turn = self.session["audio"]["input"].get("turn_detection")
        return turn if isinstance(turn, dict) else None

    def _rebuild_vad(self) -> None:
        turn = self._turn_detection()
        if turn is None:
            self._vad = None
            return
        if turn["type"] == "semantic_vad":
            silence = _SEMANTIC_SILENCE_MS.get(str(turn.get("eagerness")), 500)
            prefix = 300
        else:
            silence = int(turn.get("silence_duration_ms") or 500)
            prefix = int(turn.get("prefix_padding_ms") or 0)
        vad = EnergyVad(
            self._in_fmt.rate,
            threshold_dbfs=self.config.vad_threshold_dbfs,
            silence_duration_ms=silence,
            prefix_padding_ms=prefix,
            min_speech_ms=self.config.vad_min_speech_ms,
            origin_ms=int(self._audio_ms),
            floor_ms=int(self._buffer_origin_ms),
        )
        self._vad = vad
        self._speech_item = None

    # --- input audio --------------------------------------------------------------

    def _append(self, event: Event) -> None:
        try:
            raw = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise _Reject(
                "invalid_value", "Invalid 'audio': expected base64-encoded audio.", "audio"
            ) from None
        samples = self._in_fmt.decode(raw)
        ms = samples.size * 1000.0 / self._in_fmt.rate
        self.record.input_audio_bytes += len(raw)
        self.record.input_audio_ms += ms
        self._buffer = np.concatenate((self._buffer, samples))
        self._audio_ms += ms
        self._buffered_ms += ms
        if self._vad is not None:
            for vad_event in self._vad.feed(samples):
                if isinstance(vad_event, SpeechStarted):
                    self._speech_started(vad_event)
                else:
                    self._speech_stopped(vad_event)
            self._check_idle()
        retain = _IDLE_RETAIN_MS if self._vad is not None and not self._vad.speaking else _RETAIN_MS
        self._trim(self._audio_ms - retain)

    def _check_idle(self) -> None:
        """``idle_timeout_ms`` (server VAD): the caller has been quiet that long after the
        agent's last audio: commit the silence and answer, as the API does."""
        turn = self._turn_detection() or {}
        timeout = turn.get("idle_timeout_ms") if turn.get("type") == "server_vad" else None
        since = self._idle_from_ms
        if not timeout or since is None or self._active is not None:
            return
        if self._vad is not None and self._vad.speaking:
            return
        if self._audio_ms - since < timeout:
            return
        item_id = self.ids.new("item")
        self._emit(
            "input_audio_buffer.timeout_triggered",
            audio_start_ms=int(since),
            audio_end_ms=int(self._audio_ms),
            item_id=item_id,
        )
        self._commit_user_item(item_id)
        self.record.idle_timeouts += 1
        self._idle_from_ms = self._audio_ms
        self._buffered_ms = 0.0
        self._trim(self._audio_ms)
        if self._vad is not None:
            self._vad.reset(int(self._audio_ms))
        if turn.get("create_response", True):
            self._start_response("idle_timeout", None)

    def _trim(self, before_ms: float) -> None:
        drop = int((before_ms - self._buffer_origin_ms) * self._in_fmt.rate / 1000)
        if drop > 0:
            drop = min(drop, self._buffer.size)
            self._buffer = self._buffer[drop:]
            self._buffer_origin_ms += drop * 1000.0 / self._in_fmt.rate

    def _slice(self, start_ms: float, end_ms: float) -> Samples:
        rate = self._in_fmt.rate
        lo = max(0, int((start_ms - self._buffer_origin_ms) * rate / 1000))
        hi = max(lo, int((end_ms - self._buffer_origin_ms) * rate / 1000))
        return self._buffer[lo:hi]

    def _speech_started(self, vad_event: SpeechStarted) -> None:
        self._speech_item = self.ids.new("item")
        self._idle_from_ms = None
        self._emit(
            "input_audio_buffer.speech_started",
            audio_start_ms=vad_event.audio_start_ms,
            item_id=self._speech_item,
        )
        turn = self._turn_detection() or {}
        if self._active is not None and turn.get("interrupt_response", True):
            self._finish(self._active, "cancelled", reason="turn_detected")

    def _speech_stopped(self, vad_event: SpeechStopped) -> None:
        item_id = self._speech_item or self.ids.new("item")
        self._speech_item = None
        self._idle_from_ms = float(vad_event.audio_end_ms)
        self._emit(
            "input_audio_buffer.speech_stopped",
            audio_end_ms=vad_event.audio_end_ms,
            item_id=item_id,
        )
        committed = self._slice(vad_event.audio_start_ms, vad_event.audio_end_ms)
        spoken = self._slice(vad_event.audio_start_ms, vad_event.speech_end_ms)
        self._commit_turn(
            item_id,
            "server_vad",
            vad_event.audio_start_ms,
            vad_event.audio_end_ms,
            committed,
            spoken,
        )
        self._trim(vad_event.audio_end_ms)
        self._buffered_ms = max(0.0, self._audio_ms - vad_event.audio_end_ms)
        turn = self._turn_detection() or {}
        if turn.get("create_response", True) and self._active is None:
            self._start_response("turn", None)

    def _commit_turn(
        self,
        item_id: str,
        source: Literal["server_vad", "commit"],
        start_ms: int,
        end_ms: int,
        committed: Samples,
        spoken: Samples,
    ) -> None:
        self._commit_user_item(item_id)
        if spoken.size:
            self._last_utterance = (spoken.copy(), self._in_fmt.rate)
        transcript = None
        if (
            self.session["audio"]["input"].get("transcription")
            and self.config.input_transcript is not None
        ):
            transcript = self.config.input_transcript
            self._emit(
                "conversation.item.input_audio_transcription.delta",
                item_id=item_id,
                content_index=0,
                delta=transcript,
                obfuscation=self.ids.obfuscation(),
            )
            audio_tokens = max(1, int(committed.size * 10 / self._in_fmt.rate))
            text_tokens = max(1, len(transcript) // 4)
            self._emit(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=transcript,
                usage={
                    "type": "tokens",
                    "total_tokens": audio_tokens + text_tokens,
                    "input_tokens": audio_tokens,
                    "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                    "output_tokens": text_tokens,
                },
            )
        self.record.turns.append(
            TurnRecord(
                item_id=item_id,
                source=source,
                audio_start_ms=start_ms,
                audio_end_ms=end_ms,
                audio_ms=committed.size * 1000.0 / self._in_fmt.rate,
                rms_dbfs=rms_dbfs(committed),
                transcript=transcript,
            )
        )

    def _commit(self, event: Event) -> None:
        if self._buffered_ms < _MIN_COMMIT_MS:
            raise _Reject(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {self._buffered_ms:.2f}ms of audio.",
            )
        start = self._audio_ms - self._buffered_ms
        committed = self._slice(start, self._audio_ms)
        item_id = self._speech_item or self.ids.new("item")
        self._speech_item = None
        self._commit_turn(item_id, "commit", int(start), int(self._audio_ms), committed, committed)
        self._buffered_ms = 0.0
        self._trim(self._audio_ms)
        if self._vad is not None:
            self._vad.reset(int(self._audio_ms))

    def _clear(self, event: Event) -> None:
        self._buffered_ms = 0.0
        self._trim(self._audio_ms)
        self._speech_item = None
        if self._vad is not None:
            self._vad.reset(int(self._audio_ms))
        self._emit("input_audio_buffer.cleared")

    # --- conversation items -------------------------------------------------------

    def _commit_user_item(self, item_id: str) -> None:
        """The caller's audio so far becomes a user message item (committed, then added)."""
        previous = self._order[-1] if self._order else None
        self._emit("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._add_item(item, previous)

    def _item_added(
        self, item: Event, response_id: str | None = None, output_index: int = 0
    ) -> str | None:
        """Append ``item`` to the conversation as the API does: ``response.output_item.added``
        (for a response's output) then ``conversation.item.added``; return the previous id."""
        previous = self._order[-1] if self._order else None
        self._items[item["id"]] = _Item(item)
        self._order.append(item["id"])
        if response_id is not None:
            self._emit(
                "response.output_item.added",
                response_id=response_id,
                output_index=output_index,
                item=copy.deepcopy(item),
            )
        self._emit("conversation.item.added", previous_item_id=previous, item=copy.deepcopy(item))
        return previous

    def _item_done(
        self,
        item: Event,
        previous: str | None,
        response_id: str | None = None,
        output_index: int = 0,
    ) -> None:
        """``response.output_item.done`` (for a response's output), ``conversation.item.done``."""
        if response_id is not None:
            self._emit(
                "response.output_item.done",
                response_id=response_id,
                output_index=output_index,
                item=copy.deepcopy(item),
            )
        self._emit("conversation.item.done", previous_item_id=previous, item=copy.deepcopy(item))

    def _add_item(self, item: Event, previous: str | None) -> None:
        self._items[item["id"]] = _Item(item)
        self._order.append(item["id"])
        self._emit("conversation.item.added", previous_item_id=previous, item=copy.deepcopy(item))
        self._item_done(item, previous)

    def _item_create(self, event: Event) -> None:
        raw = event.get("item")
        if not isinstance(raw, dict):
            raise _Reject(
                "missing_required_parameter", "Missing required parameter: 'item'.", "item"
            )
        kind = raw.get("type")
        item_id = raw.get("id") or self.ids.new("item")
        if item_id in self._items:
            raise _Reject("invalid_value", f"Item with id '{item_id}' already exists.", "item.id")
        previous = event.get("previous_item_id")
        if previous is not None and previous != "root" and previous not in self._items:
            raise _Reject(
                "invalid_value",
                f"Previous item with id '{previous}' not found.",
                "previous_item_id",
            )
        item: Event
        if kind == "message":
            role = raw.get("role")
            allowed = {
                "user": {"input_text", "input_audio", "input_image"},
                "system": {"input_text"},
                "assistant": {"output_text", "output_audio"},
            }.get(str(role))
            if allowed is None:
                raise _Reject(
                    "invalid_value",
                    f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', "
                    "and 'system'.",
                    "item.role",
                )
            content = raw.get("content")
            if not isinstance(content, list) or not all(
                isinstance(part, dict) and part.get("type") in allowed for part in content
            ):
                raise _Reject(
                    "invalid_value",
                    f"Invalid content for a {role} message: use "
                    + " or ".join(sorted(allowed))
                    + " parts.",
                    "item.content",
                )
            item = {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": role,
                "content": copy.deepcopy(content),
            }
        elif kind == "function_call_output":
            call_id = raw.get("call_id")
            if not isinstance(call_id, str) or not isinstance(raw.get("output"), str):
                raise _Reject(
                    "missing_required_parameter",
                    "Missing required parameter: 'item.call_id' or 'item.output'.",
                    "item.call_id",
                )
            if call_id not in self._calls:
                raise _Reject(
                    "invalid_tool_call_id", f"Tool call ID '{call_id}' not found in conversation."
                )
            item = {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call_output",
                "status": "completed",
                "call_id": call_id,
                "output": raw["output"],
            }
        elif kind == "function_call":
            item = {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": "completed",
                "call_id": raw.get("call_id") or self.ids.new("call")[:32],
                "name": raw.get("name", ""),
                "arguments": raw.get("arguments", ""),
            }
            self._calls.add(item["call_id"])
        else:
            raise _Reject(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call', "
                "and 'function_call_output'.",
                "item.type",
            )
        self.record.items_created.append(copy.deepcopy(item))
        if previous is None:
            previous = self._order[-1] if self._order else None
        self._add_item(item, None if previous == "root" else previous)

    def _find_item(self, event: Event) -> _Item:
        item_id = event.get("item_id")
        found = self._items.get(item_id) if isinstance(item_id, str) else None
        if found is None:
            raise _Reject(
                "invalid_value",
                f"Item with item_id '{item_id}' not found in the conversation.",
                "item_id",
            )
        return found

    def _truncate(self, event: Event) -> None:
        entry = self._find_item(event)
        item = entry.item
        if item.get("type") != "message" or item.get("role") != "assistant":
            raise _Reject("invalid_value", "Only assistant messages can be truncated.", "item_id")
        content_index = event.get("content_index")
        if content_index != 0:
            raise _Reject(
                "invalid_value",
                f"Invalid value: {content_index}. The item has one content part (index 0).",
                "content_index",
            )
        end = event.get("audio_end_ms")
        if not isinstance(end, int) or isinstance(end, bool) or end < 0:
            raise _Reject(
                "invalid_value", "Invalid 'audio_end_ms': expected an integer >= 0.", "audio_end_ms"
            )
        have = int(entry.audio_ms)
        if end > have:
            raise _Reject(
                "invalid_value",
                f"Audio content of {have}ms is already shorter than {end}ms",
                "audio_end_ms",
            )
        entry.audio_ms = float(end)
        for part in item.get("content", []):
            if part.get("type") == "output_audio":
                part["transcript"] = ""
        self.record.truncates.append(
            {"item_id": item["id"], "content_index": 0, "audio_end_ms": end, "audio_ms": have}
        )
        self._emit(
            "conversation.item.truncated",
            item_id=item["id"],
            content_index=0,
            audio_end_ms=end,
        )

    def _item_delete(self, event: Event) -> None:
        entry = self._find_item(event)
        item_id = entry.item["id"]
        del self._items[item_id]
        self._order.remove(item_id)
        self._emit("conversation.item.deleted", item_id=item_id)

    def _item_retrieve(self, event: Event) -> None:
        entry = self._find_item(event)
        self._emit("conversation.item.retrieved", item=copy.deepcopy(entry.item))

    def _output_buffer_clear(self, event: Event) -> None:
        raise _Reject(
            "invalid_event",
            "output_audio_buffer.clear is only supported on WebRTC and SIP connections.",
        )

    # --- responses ----------------------------------------------------------------

    def _response_create(self, event: Event) -> None:
        if self._active is not None:
            raise _Reject(
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress: "
                f"{self._active.record.id}. Wait until the response is finished before "
                "creating a new one.",
            )
        params = event.get("response")
        self._start_response("response.create", params if isinstance(params, dict) else None)

    def _response_cancel(self, event: Event) -> None:
        active = self._active
        wanted = event.get("response_id")
        if active is None or (wanted is not None and wanted != active.record.id):
            raise _Reject(
                "response_cancel_not_active", "Cancellation failed: no active response found"
            )
        self._finish(active, "cancelled", reason="client_cancelled")

    def _content_ids(self, active: _ActiveResponse) -> Event:
        return {
            "response_id": active.record.id,
            "item_id": active.item["id"],
            "output_index": active.output_index,
            "content_index": 0,
        }

    def _start_response(
        self, trigger: Literal["turn", "response.create", "idle_timeout"], params: Event | None
    ) -> None:
        params = params or {}
        response_id = self.ids.new("resp")
        out_format = copy.deepcopy(self.session["audio"]["output"]["format"])
        modalities = params.get("output_modalities") or self.session["output_modalities"]
        response: Event = {
            "object": "realtime.response",
            "id": response_id,
            "status": "in_progress",
            "status_details": None,
            "output": [],
            "conversation_id": (
                None if params.get("conversation") == "none" else self.conversation_id
            ),
            "output_modalities": list(modalities),
            "max_output_tokens": params.get(
                "max_output_tokens", self.session.get("max_output_tokens", "inf")
            ),
            "audio": {
                "output": {"format": out_format, "voice": self.session["audio"]["output"]["voice"]}
            },
            "usage": None,
            "metadata": params.get("metadata"),
        }
        self._emit("response.created", response=copy.deepcopy(response))
        item_id = self.ids.new("item")
        instructions = params.get("instructions")
        then_call: ScriptedCall | None = None
        call: ScriptedCall | None = None
        speak: SpeakStep | None = None
        step_index: int | None = None
        done_items: list[Event] = []
        mcp_call: str | None = None
        head = self._function_calls[0] if self._function_calls else None
        if isinstance(head, ScriptedMcpCall):
            self._function_calls.popleft()
            mcp_call = f"{head.server_label}.{head.name}"
            done_items.append(self._mcp_call_item(response_id, item_id, head, output_index=0))
            item_id = self.ids.new("item")
            if head.error is not None:
                # A failed call ends the response: the model said nothing after it.
                record = ResponseRecord(
                    id=response_id,
                    trigger=trigger,
                    kind="mcp_call",
                    item_id=done_items[0]["id"],
                    instructions=instructions,
                    status="completed",
                    mcp_call=mcp_call,
                )
                self.record.responses.append(record)
                self._response_done(
                    response, "completed", None, done_items, audio_ms=0.0, text=head.arguments
                )
                self._idle_from_ms = self._audio_ms
                return
        elif head is not None:
            self._function_calls.popleft()
            call = head
        elif (taken := self._take_step()) is not None:
            step_index, step = taken
            if isinstance(step, SilentStep):
                record = ResponseRecord(
                    id=response_id,
                    trigger=trigger,
                    kind="silent",
                    item_id="",
                    instructions=instructions,
                    status="completed",
                    step=step_index,
                )
                self.record.responses.append(record)
                self._response_done(response, "completed", None, [], audio_ms=0.0, text="")
                return
            if isinstance(step, CallStep):
                call = ScriptedCall(
                    name=step.name,
                    arguments=step.arguments_json,
                    call_id=step.call_id or self.ids.new("call")[:32],
                    speak_first=step.speak_first is not False,
                )
                if isinstance(step.speak_first, SpeakStep):
                    speak = step.speak_first
            else:
                speak = step
        if call is not None and call.speak_first and modalities != ["text"]:
            then_call = call
        elif call is not None:
            record = ResponseRecord(
                id=response_id,
                trigger=trigger,
                kind="function_call",
                item_id=item_id,
                instructions=instructions,
                function_name=call.name,
                call_id=call.call_id,
                step=step_index,
            )
            self.record.responses.append(record)
            self._function_call(response, record, call)
            return
        transcript = self.config.transcript
        if speak is not None and speak.transcript is not None:
            transcript = speak.transcript
        if modalities == ["text"]:
            record = ResponseRecord(
                id=response_id,
                trigger=trigger,
                kind="text",
                item_id=item_id,
                instructions=instructions,
                transcript=transcript,
                step=step_index,
            )
            self.record.responses.append(record)
            self._text_response(response, record, transcript)
            return
        fmt = AudioFormat.from_session(out_format)
        audio = fmt.encode(self._reply_samples(fmt.rate, speak))
        record = ResponseRecord(
            id=response_id,
            trigger=trigger,
            kind="audio",
            item_id=item_id,
            instructions=instructions,
            transcript=transcript,
            audio_ms_total=len(audio) / fmt.bytes_per_ms,
            function_name=then_call.name if then_call else None,
            call_id=then_call.call_id if then_call else None,
            step=step_index,
            mcp_call=mcp_call,
        )
        self.record.responses.append(record)
        speeches = [_Speech(audio, transcript)]
        config = self.config
        if config.preamble_ms > 0:
            preamble = tone(config.preamble_hz, config.preamble_ms, fmt.rate, level_dbfs=-12.0)
            speeches.insert(0, _Speech(fmt.encode(preamble), config.preamble_transcript, True))
        active = _ActiveResponse(
            record=record,
            response=response,
            chunk_bytes=max(1, config.chunk_ms) * fmt.bytes_per_ms,
            bytes_per_ms=fmt.bytes_per_ms,
            started_ms=self._audio_ms,
            then_call=then_call,
            to_speak=speeches,
            output=done_items,
        )
        self._active = active
        self._next_item(active)
        if not active.audio:
            self._advance(active)

    def _next_item(self, active: _ActiveResponse) -> None:
        """Open the next audio item of ``active`` (its output item and content part)."""
        speech = active.to_speak.pop(0)
        record = active.record
        item_id = self.ids.new("item") if speech.preamble else record.item_id
        if speech.preamble:
            record.preamble_item_id = item_id
        item: Event = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        active.item, active.output_index, active.preamble = (
            item,
            len(active.output),
            speech.preamble,
        )
        active.audio, active.words, active.pos = speech.audio, speech.transcript.split(), 0
        active.words_sent, active.transcript_sent = 0, []
        self._item_added(item, record.id, active.output_index)
        self._emit(
            "response.content_part.added",
            **self._content_ids(active),
            part={"type": "audio", "transcript": ""},
        )

    def _advance(self, active: _ActiveResponse) -> None:
        """The item's audio is all sent: close it, then open the next or end the response."""
        while True:
            self._close_item(active, "completed")
            if not active.to_speak:
                self._end_response(active, "completed", None)
                return
            self._next_item(active)
            if active.audio:
                return

    def _take_step(self) -> tuple[int, ScriptStep] | None:
        """The script step for the response being made (and its index), if any left."""
        while self._script:
            step = self._script[0]
            index = self._step_index
            if isinstance(step, SilentStep) and step.ms is not None:
                if self._audio_ms - self._step_began_ms < step.ms:
                    return index, step
                # The window is over: the next step became current when it ended.
                self._next_step(self._step_began_ms + step.ms)
                continue
            self._step_uses += 1
            if not isinstance(step, SilentStep) or self._step_uses >= step.turns:
                self._next_step(self._audio_ms)
            return index, step
        return None

    def _next_step(self, began_ms: float) -> None:
        self._script.popleft()
        self._step_index += 1
        self._step_uses = 0
        self._step_began_ms = began_ms

    def _reply_samples(self, rate: int, speak: SpeakStep | None = None) -> Samples:
        config = self.config
        if speak is not None and speak.file is not None:
            return self._wav(speak.file, rate)
        if speak is not None and (speak.tone_hz is not None or speak.tone_ms is not None):
            hz = speak.tone_hz if speak.tone_hz is not None else config.tone_hz
            ms = speak.tone_ms if speak.tone_ms is not None else config.tone_ms
            return tone(hz, ms, rate, level_dbfs=config.tone_dbfs)
        if config.reply == "echo" and self._last_utterance is not None:
            samples, src_rate = self._last_utterance
            return resample(samples, src_rate, rate)
        if config.reply == "file" and config.reply_file:
            return self._wav(config.reply_file, rate)
        return tone(config.tone_hz, config.tone_ms, rate, level_dbfs=config.tone_dbfs)

    def _wav(self, path: str, rate: int) -> Samples:
        key = (path, rate)
        if key not in self._wav_cache:
            samples, src_rate = load_wav(path)
            self._wav_cache[key] = resample(samples, src_rate, rate)
        return self._wav_cache[key]

    def _finish(
        self,
        active: _ActiveResponse,
        status: Literal["completed", "cancelled"],
        reason: str | None = None,
    ) -> None:
        """End ``active`` now: its current item as ``status``, later items never start."""
        self._close_item(active, status)
        self._end_response(active, status, reason)

    def _close_item(
        self, active: _ActiveResponse, status: Literal["completed", "cancelled"]
    ) -> None:
        ids = self._content_ids(active)
        transcript = (
            " ".join(active.words)
            if status == "completed"
            else "".join(active.transcript_sent).strip()
        )
        self._emit("response.output_audio.done", **ids)
        self._emit("response.output_audio_transcript.done", **ids, transcript=transcript)
        self._emit(
            "response.content_part.done", **ids, part={"type": "audio", "transcript": transcript}
        )
        item = active.item
        item["status"] = "completed" if status == "completed" else "incomplete"
        item["content"] = [{"type": "output_audio", "transcript": transcript}]
        self._emit(
            "response.output_item.done",
            response_id=active.record.id,
            output_index=active.output_index,
            item=copy.deepcopy(item),
        )
        previous_index = self._order.index(item["id"]) - 1 if item["id"] in self._order else -1
        previous = self._order[previous_index] if previous_index >= 0 else None
        self._emit("conversation.item.done", previous_item_id=previous, item=copy.deepcopy(item))
        active.output.append(item)

    def _end_response(
        self,
        active: _ActiveResponse,
        status: Literal["completed", "cancelled"],
        reason: str | None,
    ) -> None:
        self._active = None
        output = active.output
        if status == "completed" and active.then_call is not None:
            output.append(
                self._function_call_item(
                    active.record.id,
                    self.ids.new("item"),
                    active.then_call,
                    output_index=len(output),
                )
            )
        active.record.status = status
        active.record.reason = reason
        text = " ".join(
            str(part.get("transcript", ""))
            for item in output
            for part in item.get("content", [])
            if isinstance(part, dict)
        )
        self._response_done(
            active.response, status, reason, output, audio_ms=active.audio_ms_sent, text=text
        )
        # The idle timeout counts from when the caller has heard it all (the
        # client plays it in real time, from about when it was created).
        self._idle_from_ms = max(self._audio_ms, active.started_ms + active.audio_ms_sent)

    def _text_response(self, response: Event, record: ResponseRecord, text: str) -> None:
        item: Event = {
            "id": record.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        ids = {
            "response_id": record.id,
            "item_id": record.item_id,
            "output_index": 0,
            "content_index": 0,
        }
        previous = self._item_added(item, record.id)
        self._emit("response.content_part.added", **ids, part={"type": "text", "text": ""})
        for word in text.split():
            self._emit(
                "response.output_text.delta",
                **ids,
                delta=word + " ",
                obfuscation=self.ids.obfuscation(),
            )
        self._emit("response.output_text.done", **ids, text=text)
        self._emit("response.content_part.done", **ids, part={"type": "text", "text": text})
        item["status"] = "completed"
        item["content"] = [{"type": "output_text", "text": text}]
        self._item_done(item, previous, record.id)
        record.status = "completed"
        self._response_done(response, "completed", None, [item], audio_ms=0.0, text=text)

    def _function_call(self, response: Event, record: ResponseRecord, call: ScriptedCall) -> None:
        item = self._function_call_item(record.id, record.item_id, call, output_index=0)
        record.status = "completed"
        self._response_done(response, "completed", None, [item], audio_ms=0.0, text=call.arguments)

    def _function_call_item(
        self, response_id: str, item_id: str, call: ScriptedCall, *, output_index: int
    ) -> Event:
        """Emit one function call output item of a response; return the completed item."""
        item: Event = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": call.name,
            "call_id": call.call_id,
            "arguments": "",
        }
        self._calls.add(call.call_id)
        previous = self._item_added(item, response_id, output_index)
        args = call.arguments
        step = max(1, math.ceil(len(args) / 3))
        for start in range(0, len(args), step):
            self._emit(
                "response.function_call_arguments.delta",
                response_id=response_id,
                item_id=item_id,
                output_index=output_index,
                call_id=call.call_id,
                delta=args[start : start + step],
                obfuscation=self.ids.obfuscation(),
            )
        self._emit(
            "response.function_call_arguments.done",
            response_id=response_id,
            item_id=item_id,
            output_index=output_index,
            call_id=call.call_id,
            name=call.name,
            arguments=args,
        )
        item["status"] = "completed"
        item["arguments"] = args
        self._item_done(item, previous, response_id, output_index)
        return item

    def _mcp_call_item(
        self, response_id: str, item_id: str, call: ScriptedMcpCall, *, output_index: int
    ) -> Event:
        """Emit one MCP call the API makes for the model; return the completed item."""
        item: Event = {
            "id": item_id,
            "type": "mcp_call",
            "server_label": call.server_label,
            "name": call.name,
            "arguments": "",
        }
        ids = {"item_id": item_id, "output_index": output_index}
        previous = self._item_added(item, response_id, output_index)
        self._emit(
            "response.mcp_call_arguments.delta",
            response_id=response_id,
            **ids,
            delta=call.arguments,
            obfuscation=self.ids.obfuscation(),
        )
        self._emit(
            "response.mcp_call_arguments.done",
            response_id=response_id,
            **ids,
            arguments=call.arguments,
        )
        self._emit("response.mcp_call.in_progress", **ids)
        item["arguments"] = call.arguments
        if call.error is not None:
            item["output"] = None
            item["error"] = {"type": "tool_execution_error", "message": call.error}
            self._emit("response.mcp_call.failed", **ids)
        else:
            item["output"] = call.output or ""
            item["error"] = None
            self._emit("response.mcp_call.completed", **ids)
        self._item_done(item, previous, response_id, output_index)
        return item

    def _list_mcp_tools(self, label: str) -> None:
        """List an MCP server's tools as the API does after a session.update names it."""
        self._mcp_listed.add(label)
        item_id = self.ids.new("item")
        item: Event = {"id": item_id, "type": "mcp_list_tools", "server_label": label, "tools": []}
        previous = self._item_added(item)
        self._emit("mcp_list_tools.in_progress", item_id=item_id)
        names = self.config.mcp_tools.get(label)
        if names is None:  # this test peer reaches no MCP server but the configured ones
            self._emit("mcp_list_tools.failed", item_id=item_id)
            return
        item["tools"] = [
            {"name": name, "input_schema": {"type": "object", "properties": {}}} for name in names
        ]
        self._emit("mcp_list_tools.completed", item_id=item_id)
        self._item_done(item, previous)

    def _response_done(
        self,
        response: Event,
        status: str,
        reason: str | None,
        output: list[Event],
        *,
        audio_ms: float,
        text: str,
    ) -> None:
        heard_ms = sum(t.audio_ms for t in self.record.turns)
        input_audio = int(heard_ms / 100)
        input_text = max(1, len(str(self.session.get("instructions") or "")) // 4)
        output_audio = int(audio_ms / 50)
        output_text = len(text) // 4
        done = dict(response)
        done["status"] = status
        done["status_details"] = (
            None if status == "completed" else {"type": status, "reason": reason}
        )
        done["output"] = copy.deepcopy(output)
        done["usage"] = {
            "total_tokens": input_audio + input_text + output_audio + output_text,
            "input_tokens": input_audio + input_text,
            "output_tokens": output_audio + output_text,
            "input_token_details": {
                "text_tokens": input_text,
                "audio_tokens": input_audio,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
        }
        self._emit("response.done", response=done)
        self._emit(
            "rate_limits.updated",
            rate_limits=[
                {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                {
                    "name": "tokens",
                    "limit": 400000,
                    "remaining": 400000 - done["usage"]["total_tokens"],
                    "reset_seconds": 0.5,
                },
            ],
        )

    # --- output -------------------------------------------------------------------

    def _emit(self, event_type: str, **fields: Any) -> None:
        event: Event = {"type": event_type, "event_id": self.ids.new("event"), **fields}
        self.outbox.append(event)
        if not self.config.record_events:
            pass
        elif event_type == "response.output_audio.delta":
            self.record.sent.append(_compact(event, "delta"))
        else:
            self.record.sent.append(event)

    def _error(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        client_event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        error = {
            "type": error_type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        }
        self.record.errors.append(error)
        self._emit("error", error=error)
