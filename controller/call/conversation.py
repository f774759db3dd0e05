"""The conversation of one call: model events and the caller in, actions out (sans-I/O).

Theory of operation
-------------------
:class:`Conversation` holds every decision of a call that is not I/O, in
the style of h11 and websockets' ``Protocol``: the shell
(:class:`~controller.call.call.Call`) feeds it inputs and carries out the
actions each input returns, in order. It never awaits, opens a socket or
reads a clock: ``now`` (seconds on any monotonic clock) is an argument of
every input that needs it.

Inputs:

* :meth:`~Conversation.session_ready`: the model session is configured
  (sends the greeting, or what waited for the session, e.g. keys);
* :meth:`~Conversation.model_event`: one parsed server event;
* :meth:`~Conversation.caller_dtmf`: a key the caller pressed;
* :meth:`~Conversation.caller_loud`: a loud frame of the caller's own
  audio, wanted only while :attr:`~Conversation.wants_caller_level`;
* :meth:`~Conversation.interrupted`: what the playout discarded when it
  carried out an :class:`Interrupt` (how much of each item was heard);
* :meth:`~Conversation.tool_finished`: a :class:`RunTool` has a result;
* :meth:`~Conversation.timer`: :attr:`~Conversation.next_timer` has come;
* :meth:`~Conversation.stop`: the call is ending; nothing more is decided.

Inputs that depend on what the caller hears take a :class:`Playback`: the
playout's state at that moment.

Actions (frozen dataclasses): :class:`Send` a client event to the model,
:class:`Play` model audio for an item, :class:`EndItem`, :class:`Interrupt`
the playout, :class:`RunTool` (ARI or HTTP work the shell does),
:class:`EndCall`, and :class:`TranscriptLine` (log and record it).

What it owns:

* the response in progress and the responses cut off by barge-in (their
  late deltas are dropped);
* the greeting, and whether it is playing (``PROTECT_GREETING``);
* tool calls: policy checks (is the tool on this call, are the digits
  valid, is the transfer target allowed, at most
  ``max_tool_calls_per_response`` of them per response and running at once)
  and the outputs waiting for the response to end: every output of a
  response goes before *one* ``response.create``, sent once no response is
  active and no tool runs;
* barge-in (see :mod:`controller.call.bargein`): the gate, the 20 ms polls
  while it waits, truncation to what the caller heard;
* the caller's keys, collected for :data:`DTMF_COLLECT_SECONDS`;
* the goodbye before a hang-up or transfer: the agent's current speech is
  allowed to finish playing (capped by ``HANGUP_GRACE_SECONDS``);
* the limits (``MAX_CALL_SECONDS``, ``SILENCE_TIMEOUT_SECONDS``) and the
  caller going quiet (``input_audio_buffer.timeout_triggered``, see below);
* MCP tools: the API calls the servers itself; their calls and tool
  listings are recorded as tool calls, and a failure is reported to the model;
* the transcript and the record of tool calls.

A response may carry several output items: a short preamble ("let me check
that"), tool calls, the answer. Everything about audio is kept per item
(playout, what was heard, truncation, transcript lines); latencies per
response (its first audio, its first frame).

The caller going quiet: with ``IDLE_TIMEOUT_MS`` the server sends
``input_audio_buffer.timeout_triggered`` and normally answers by itself; if
no response has started :data:`IDLE_PROMPT_WAIT_SECONDS` later, the core asks
for one (:data:`IDLE_PROMPT_INSTRUCTIONS`). Such prompts are not activity for
``SILENCE_TIMEOUT_SECONDS``: it still ends a call in which nobody but the
agent's "are you still there?" spoke.

What the model sends is not trusted: an event that parses but cannot be used
(audio that is not base64) is logged, counted in
:attr:`Conversation.unusable_events` and skipped, and text is cut to
:data:`MAX_TEXT_CHARS`, so no event can fail the call or grow it without
bound.
"""

from __future__ import annotations

import binascii
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controller.call.bargein import BargeInGate, Decision, plan_truncation
from controller.call.state import Outcome
from controller.call.tools import parse_arguments, tool_result, validate_dtmf
from controller.errors import RealtimeServerError, ToolError
from controller.logs import kv
from controller.outbound import RESULT_STATUSES
from controller.realtime.events import (
    ClientEvent,
    ConversationItemAdded,
    ConversationItemCreate,
    ConversationItemCreated,
    ConversationItemDone,
    ConversationItemTruncate,
    ErrorEvent,
    InputAudioBufferSpeechStarted,
    InputAudioBufferSpeechStopped,
    InputAudioBufferTimeoutTriggered,
    InputAudioTranscriptionCompleted,
    InputAudioTranscriptionDelta,
    InputAudioTranscriptionFailed,
    McpCallItem,
    McpListToolsCompleted,
    McpListToolsFailed,
    McpListToolsInProgress,
    McpListToolsItem,
    ResponseCancel,
    ResponseCreate,
    ResponseCreated,
    ResponseDone,
    ResponseFunctionCallArgumentsDone,
    ResponseMcpCallArgumentsDone,
    ResponseMcpCallCompleted,
    ResponseMcpCallFailed,
    ResponseMcpCallInProgress,
    ResponseOutputAudioDelta,
    ResponseOutputAudioDone,
    ResponseOutputAudioTranscriptDone,
    ResponseOutputItemAdded,
    ResponseOutputItemDone,
    ResponseParams,
    ServerEvent,
)

#: Keys pressed within this pause are sent to the model as one message.
DTMF_COLLECT_SECONDS = 0.8
#: How often a pending barge-in decision or a goodbye is looked at again.
POLL_SECONDS = 0.02
#: While the barge-in gate waits, the caller counts as still talking if a loud
#: frame of theirs arrived this recently (three frames; a dip between words
#: only defers the decision to a later poll).
CALLER_LOUD_SECONDS = 0.06
#: A goodbye's response is given this long to start before "quiet" counts.
GOODBYE_START_SECONDS = 0.1
#: After the goodbye's last frame left our socket, the time Asterisk needs to
#: pass it on to the caller (the mixing bridge works in 20 ms intervals); a
#: hang-up or transfer sooner cuts the end of the goodbye.
GOODBYE_TAIL_SECONDS = 0.1
#: A due renewal waits this long for a quiet moment between turns, then looks again.
RENEW_RECHECK_SECONDS = 1.0
#: A limit is checked again this often while the agent is still speaking.
LIMIT_RECHECK_SECONDS = 0.5
#: Longest transcript line or partial transcript kept (a model's text is not trusted).
MAX_TEXT_CHARS = 4000
#: Error codes that are expected in a race and need no more than a debug line.
QUIET_ERROR_CODES = frozenset(
    {"response_cancel_not_active", "conversation_already_has_active_response"}
)
# The greeting and the message go in as JSON strings: they may hold a caller's
# name, which must be said, never obeyed.
GREETING_INSTRUCTIONS = (
    "Greet the caller now. Say exactly the text of this JSON string, then wait for them: {greeting}"
)
GOODBYE_INSTRUCTIONS = "Say a short, polite goodbye to the caller now."
#: An answering machine's greeting and beep are over once it has been quiet this long.
BEEP_QUIET_SECONDS = 1.0
#: The message is left after this long at the latest, quiet or not.
BEEP_WAIT_SECONDS = 20.0
MESSAGE_INSTRUCTIONS = (
    "You reached an answering machine and its beep has sounded. Say exactly the text of "
    "this JSON string, clearly, then stop: {message}"
)
#: After ``timeout_triggered`` the server answers by itself; the core asks for
#: a response only when none has started this long after it.
IDLE_PROMPT_WAIT_SECONDS = 0.5
IDLE_PROMPT_INSTRUCTIONS = (
    "The caller has said nothing for a while. Ask briefly whether they are still there, "
    "then wait for them."
)
#: Told to the model when an MCP tool failed and it said nothing after that.
MCP_CALL_FAILED = (
    "[The tool {tool} of {server} failed: {error}. Tell the caller you could not do that "
    "just now, and carry on.]"
)
#: Told to the model when the tools of an MCP server could not be listed.
MCP_TOOLS_FAILED = (
    "[The tools of {server} are not available right now. If the caller needs them, say "
    "you cannot do that at the moment.]"
)


# --- inputs that describe the outside world ----------------------------------------------


@dataclass(frozen=True)
class Playback:
    """The playout at one moment: is the agent audible, and which item plays."""

    speaking: bool = False
    current_item: str | None = None


SILENT = Playback()


@dataclass(frozen=True)
class Heard:
    """How much of one item the caller heard when playback was interrupted."""

    item_id: str
    played_ms: int
    received_ms: int


# --- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send this client event to the model (after any sent before it)."""

    event: ClientEvent


@dataclass(frozen=True)
class Play:
    """Queue the model's audio (in the session's output format) for an item."""

    item_id: str
    audio: bytes


@dataclass(frozen=True)
class EndItem:
    """The model finished sending an item's audio."""

    item_id: str


@dataclass(frozen=True)
class Interrupt:
    """Stop the agent's audio now; report what was discarded with
    :meth:`Conversation.interrupted`."""


@dataclass(frozen=True)
class RunTool:
    """Work only the shell can do (ARI, HTTP); answer with
    :meth:`Conversation.tool_finished`.

    ``name`` is ``send_dtmf`` (``arguments["digits"]`` validated),
    ``transfer`` (``arguments["target"]`` allowed on this call), or an HTTP
    tool of the agent.
    """

    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class EndCall:
    """End the call."""

    outcome: Outcome
    reason: str


@dataclass(frozen=True)
class TranscriptLine:
    """One utterance: ``at`` (its start) and ``end`` are seconds since the call started."""

    at: float
    role: str  # "caller" | "agent"
    text: str
    end: float | None = None


@dataclass
class Turn:
    """One response of the agent and how long the caller waited for it.

    Times are seconds since the call started (``None``: did not happen or
    not known). Latencies count from ``caller_stopped`` (the model's
    ``speech_stopped``): the response is created, its first audio arrives,
    its first frame leaves for Asterisk.
    """

    index: int
    response_id: str
    created: float
    caller_stopped: float | None = None
    first_audio: float | None = None
    first_frame: float | None = None
    barge_in: bool = False
    barge_in_stop_latency: float | None = None
    done: bool = False

    def latency(self, at: float | None) -> float | None:
        """Seconds from the caller's end of speech to ``at``."""
        if at is None or self.caller_stopped is None:
            return None
        return at - self.caller_stopped


@dataclass(frozen=True)
class RenewSession:
    """Open a new model session and replay the conversation into it
    (:meth:`Conversation.session_lost`, then :meth:`Conversation.session_restored`)."""

    reason: str


@dataclass(frozen=True)
class ModelError:
    """The model sent an ``error`` event (counted; fatal ones also end the call)."""

    code: str


@dataclass(frozen=True)
class TurnEnded:
    """A response is done (for live watchers; the turn may still gain its first frame)."""

    turn: Turn


@dataclass(frozen=True)
class ToolCallEnded:
    """A function call has its result (run, or refused)."""

    call: ToolCall


@dataclass
class UsageSum:
    """Token usage summed over the call's responses."""

    input_audio_tokens: int = 0
    input_text_tokens: int = 0
    input_cached_tokens: int = 0
    output_audio_tokens: int = 0
    output_text_tokens: int = 0


@dataclass(frozen=True)
class Keys:
    """Keys pressed: by the caller (one per event) or sent by the agent."""

    direction: str  # "caller" | "agent"
    digits: str
    at: float


Action = (
    Send
    | Play
    | EndItem
    | Interrupt
    | RunTool
    | EndCall
    | TranscriptLine
    | TurnEnded
    | ToolCallEnded
    | ModelError
    | RenewSession
)


@dataclass
class ToolCall:
    """One function call of the model, as it is recorded."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    started: float
    result: str = ""
    refused: bool = False
    finished: float | None = None
    #: The arguments exactly as the model sent them (replayed into a new session).
    raw_arguments: str = ""


@dataclass(frozen=True)
class ConversationConfig:
    """What one call's conversation may do (from the agent and the settings)."""

    greeting: str = ""
    dtmf_to_model: bool = True
    tools: frozenset[str] = frozenset()
    transfer_targets: frozenset[str] = frozenset()
    http_tools: frozenset[str] = frozenset()
    barge_in_min_ms: int = 0
    protect_greeting: bool = False
    hangup_grace_seconds: float = 5.0
    max_call_seconds: float = 0.0  # 0: no limit
    silence_timeout_seconds: float = 0.0  # 0: no limit
    #: Bytes of the model's output audio per millisecond (8: pcmu, 48: pcm 24 kHz).
    audio_bytes_per_ms: int = 8
    #: A response with no event from the model for this long is a stalled session.
    stall_seconds: float = 15.0
    #: Sessions are renewed this long before they expire, between turns.
    renew_before_seconds: float = 300.0
    #: History replayed into a new session: at most this many items, newest kept.
    replay_items: int = 100
    #: Outbound: the call ends as ``not_achieved`` if the agent has not spoken
    #: this long after the far end answered (menus and hold only); 0: no limit.
    max_hold_seconds: float = 0.0
    #: Tool calls one response may make, and tools that may run at once
    #: (``MAX_TOOL_CALLS_PER_RESPONSE``); the rest are refused.
    max_tool_calls_per_response: int = 8


@dataclass(frozen=True)
class CallResult:
    """What an outbound call achieved, as the agent reported it (``report_outcome``)."""

    status: str
    summary: str = ""
    data: dict[str, str] = field(default_factory=dict)


@dataclass
class _Goodbye:
    """Waiting for the agent's current speech to finish, then ``then``."""

    then: list[Action]
    why: str
    check_from: float  # the goodbye's response has had time to start
    deadline: float  # HANGUP_GRACE_SECONDS
    tail_until: float | None = None  # quiet: this much longer for Asterisk's bridge


@dataclass
class _Responses:
    """The model's responses as far as this call is concerned."""

    active: str | None = None
    cancelled: set[str] = field(default_factory=set)
    greeting_requested: bool = False
    greeting: str | None = None
    greeting_items: set[str] = field(default_factory=set)
    #: Responses that prompt a caller who went quiet (not activity).
    idle_prompts: set[str] = field(default_factory=set)
    #: The next response created prompts a caller who went quiet.
    idle_prompt_next: bool = False


class Conversation:
    """One call's conversation state; see the module docstring.

    Args:
        config: what this call may do.
        now: the call's start on the clock every later ``now`` comes from.
        log: where decisions are logged (a logger adapter carrying the call id).
    """

    def __init__(
        self,
        config: ConversationConfig,
        *,
        now: float,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.config = config
        self.started = now
        self._log = log
        self._gate = BargeInGate(config.barge_in_min_ms, config.protect_greeting)
        self._ready = False
        self._stopped = False
        self._responses = _Responses()
        self._pending_outputs: list[ConversationItemCreate] = []
        self._wants_response = False
        self._tools_running: set[str] = set()
        self._goodbye: _Goodbye | None = None
        self._last_activity = now
        self._limit_check_at: float | None = None
        self._gate_poll_at: float | None = None
        self._caller_loud_at = now
        self._dtmf_digits = ""
        self._dtmf_due: float | None = None
        self._caller_partial = ""
        self._tool_calls_in: dict[str, int] = {}  # response id -> tool calls it made
        #: Events from the model that parsed but could not be used (skipped).
        self.unusable_events = 0
        #: Every utterance so far.
        self.transcript: list[TranscriptLine] = []
        #: Every function call of the model so far, in the order they came.
        self.tool_calls: list[ToolCall] = []
        #: Model audio items cut short by barge-in (a truncate was sent).
        self.truncations = 0
        #: Every response of the agent, with its latencies.
        self.turns: list[Turn] = []
        #: Token usage so far.
        self.usage = UsageSum()
        #: Keys pressed both ways.
        self.keys: list[Keys] = []
        self._renewing = False
        self._renew_at: float | None = None
        self._message: str | None = None  # for an answering machine, after its beep
        self._message_by: float | None = None
        self._caller_speaking = False
        self._last_model_event = now
        #: What the call achieved (outbound calls; None until reported).
        self.result: CallResult | None = None
        self._connected_at: float | None = None
        self._agent_spoke = False
        self._turn_by_response: dict[str, Turn] = {}
        self._turn_by_item: dict[str, Turn] = {}
        self._caller_stopped: float | None = None
        self._speech_started: float | None = None
        self._caller_speech: dict[str, float] = {}  # caller item -> speech_started
        self._item_start: dict[str, float] = {}  # agent item -> first audio, then first frame
        self._item_bytes: dict[str, int] = {}  # agent item -> audio bytes received
        self._item_heard_ms: dict[str, int] = {}  # agent item -> ms heard, when cut short
        self._agent_lines: dict[str, TranscriptLine] = {}  # agent item -> its line
        self._idle_prompt_due: float | None = None  # ask for the idle prompt ourselves then
        self._mcp: dict[str, ToolCall] = {}  # MCP item -> its record (calls and listings)
        self._mcp_response: dict[str, str] = {}  # MCP call item -> its response
        # Response -> MCP calls that ended with no agent audio after them yet.
        self._mcp_unanswered: dict[str, list[ToolCall]] = {}

    # --- what the shell asks ------------------------------------------------------------

    @property
    def server_interrupts(self) -> bool:
        """True when the session should interrupt responses itself
        (``turn_detection.interrupt_response``)."""
        return self._gate.server_interrupts

    @property
    def wants_caller_level(self) -> bool:
        """True while a barge-in decision, or a machine's beep, waits: report
        loud caller frames then."""
        return self._gate_poll_at is not None or self._message is not None

    @property
    def active_response(self) -> str | None:
        """The id of the response the model is producing, if any."""
        return self._responses.active

    @property
    def next_timer(self) -> float | None:
        """When :meth:`timer` must be called next (None: no timer is pending)."""
        if self._stopped:
            return None
        times = [
            t
            for t in (
                self._dtmf_due,
                self._gate_poll_at,
                self._goodbye_check_at(),
                self._limit_due(),
                self._renew_due(),
                self._beep_due(),
                self._idle_prompt_due,
            )
            if t is not None
        ]
        return min(times) if times else None

    # --- inputs ---------------------------------------------------------------------------

    def session_ready(self, now: float, expires_in: float | None = None) -> list[Action]:
        """The model session is configured: greet, or send what waited for it.

        ``expires_in``: seconds until the server ends the session (its
        ``expires_at``), to renew it in time; None when the server said nothing.
        """
        self._ready = True
        self._expect_expiry(now, expires_in)
        self._connected_at = now
        if self._stopped:
            return []
        greeting = self.config.greeting
        if greeting:
            self._responses.greeting_requested = True
            quoted = json.dumps(greeting, ensure_ascii=False)
            params = ResponseParams(instructions=GREETING_INSTRUCTIONS.format(greeting=quoted))
            return [Send(ResponseCreate(response=params))]
        return self._flush_outputs()

    def model_event(self, event: ServerEvent, now: float, playback: Playback) -> list[Action]:
        """One event from the model server."""
        if self._stopped:
            return []
        self._last_model_event = now
        responses = self._responses
        if isinstance(event, ResponseOutputAudioDelta):
            if event.response_id in responses.cancelled:
                return []
            try:
                audio = binascii.a2b_base64(event.delta)
            except (binascii.Error, ValueError):
                self.unusable_events += 1
                self._log.warning(
                    "model audio is not base64; delta skipped %s",
                    kv(item=event.item_id, skipped=self.unusable_events),
                )
                return []
            if event.response_id == responses.greeting:
                responses.greeting_items.add(event.item_id)
            if event.response_id not in responses.idle_prompts:
                self._last_activity = now  # "are you still there?" is not activity
            self._mcp_unanswered.pop(event.response_id, None)  # the agent speaks after it
            self._agent_spoke = True
            item = event.item_id
            self._item_bytes[item] = self._item_bytes.get(item, 0) + len(audio)
            self._item_start.setdefault(item, now)
            turn = self._turn_by_response.get(event.response_id)
            if turn is not None and event.item_id not in self._turn_by_item:
                self._turn_by_item[event.item_id] = turn
                if turn.first_audio is None:
                    turn.first_audio = now - self.started
            return [Play(event.item_id, audio)]
        if isinstance(event, ResponseOutputAudioDone):
            if event.response_id in responses.cancelled:
                return []
            return [EndItem(event.item_id)]
        if isinstance(event, InputAudioBufferSpeechStarted):
            self._last_activity = now
            self._speech_started = now
            self._caller_speaking = True
            responses.idle_prompt_next, self._idle_prompt_due = False, None
            self._caller_speech[event.item_id] = now
            decision = self._gate.speech_started(
                now, self._agent_speaking(playback), self._greeting_playing(playback)
            )
            return self._apply(decision, now)
        if isinstance(event, InputAudioBufferSpeechStopped):
            self._last_activity = now
            self._caller_stopped = now
            self._caller_speaking = False
            self._gate.speech_stopped()
            return []
        if isinstance(event, ResponseCreated):
            responses.active = event.response.id
            if responses.greeting_requested and responses.greeting is None:
                responses.greeting = event.response.id
            if responses.idle_prompt_next:
                responses.idle_prompts.add(event.response.id)
                responses.idle_prompt_next, self._idle_prompt_due = False, None
            self._new_turn(event.response.id, now)
            return []
        if isinstance(event, InputAudioBufferTimeoutTriggered):
            self._log.info(
                "caller quiet %s", kv(silent_ms=event.audio_end_ms - event.audio_start_ms)
            )
            responses.idle_prompt_next = True
            self._idle_prompt_due = now + IDLE_PROMPT_WAIT_SECONDS
            return []
        if isinstance(event, ResponseDone):
            return self._response_done(event)
        if isinstance(event, ResponseFunctionCallArgumentsDone):
            # Act on arguments.done only; output_item.done repeats the same call.
            return self._function_call(
                event.call_id, event.name, event.arguments, now, event.response_id
            )
        if isinstance(event, InputAudioTranscriptionDelta):
            if len(self._caller_partial) < MAX_TEXT_CHARS:
                self._caller_partial += event.delta[:MAX_TEXT_CHARS]
            return []
        if isinstance(event, InputAudioTranscriptionCompleted):
            # Some servers send only deltas; the text so far then stands.
            text, self._caller_partial = event.transcript or self._caller_partial, ""
            return self._utterance(
                "caller", text, now, self._caller_speech.pop(event.item_id, None)
            )
        if isinstance(event, InputAudioTranscriptionFailed):
            text, self._caller_partial = self._caller_partial, ""
            self._log.info("caller transcription failed %s", kv(partial=text))
            return self._utterance(
                "caller", text, now, self._caller_speech.pop(event.item_id, None)
            )
        if isinstance(event, ResponseOutputAudioTranscriptDone):
            return self._agent_utterance(event.item_id, event.transcript, now)
        if isinstance(event, ErrorEvent):
            return self._model_error(event)
        return self._mcp_event(event, now)

    def caller_dtmf(self, digit: str, now: float) -> list[Action]:
        """The caller pressed a key (``ChannelDtmfReceived``)."""
        self._last_activity = now
        self.keys.append(Keys("caller", digit, round(now - self.started, 3)))
        if self._stopped or not self.config.dtmf_to_model:
            return []
        self._dtmf_digits += digit
        # '#' ends an entry: send at once rather than after the pause.
        self._dtmf_due = now if digit == "#" else now + DTMF_COLLECT_SECONDS
        return []

    def playback_started(self, item_id: str, now: float) -> None:
        """The first frame of an item's audio left for Asterisk."""
        self._item_start[item_id] = now
        turn = self._turn_by_item.get(item_id)
        if turn is not None and turn.first_frame is None:
            turn.first_frame = now - self.started

    def machine_answered(self, message: str, now: float) -> list[Action]:
        """An answering machine took the call: wait until its greeting and beep
        are over (the far end quiet for :data:`BEEP_QUIET_SECONDS`, at most
        :data:`BEEP_WAIT_SECONDS`), then leave ``message`` and end the call.

        Meanwhile nothing the machine says reaches the model
        (:attr:`forwards_audio` is False): it must not answer a greeting.
        """
        if self._stopped:
            return []
        self._agent_spoke = True  # no hold limit: the agent is about to speak
        self.result = CallResult("voicemail", "left a message")
        self._message = message
        self._message_by = now + BEEP_WAIT_SECONDS
        self._caller_loud_at = now
        return []

    @property
    def forwards_audio(self) -> bool:
        """False while the far end's audio must not reach the model (a machine's greeting)."""
        return self._message is None

    def _leave_message(self, now: float) -> list[Action]:
        message, self._message, self._message_by = self._message or "", None, None
        quoted = json.dumps(message, ensure_ascii=False)
        params = ResponseParams(
            instructions=MESSAGE_INSTRUCTIONS.format(message=quoted), tool_choice="none"
        )
        ending = EndCall(Outcome.AGENT_HUNG_UP, "left a message on the answering machine")
        return [
            Send(ResponseCreate(response=params)),
            *self._start_goodbye([ending], "message", now),
        ]

    def caller_loud(self, now: float) -> None:
        """A frame of the caller's audio was loud (see :func:`bargein.is_loud`)."""
        self._caller_loud_at = now

    def interrupted(self, heard: Sequence[Heard]) -> list[Action]:
        """What the playout discarded when it carried out an :class:`Interrupt`."""
        actions: list[Action] = []
        for cut in heard:
            if cut.received_ms == 0:
                continue  # no audio of it reached us: nothing to truncate
            truncation = plan_truncation(cut.item_id, cut.played_ms, cut.received_ms, False)
            if truncation is None:
                continue
            self.truncations += 1
            self._item_heard_ms[truncation.item_id] = truncation.audio_end_ms
            self._correct_line(truncation.item_id)
            self._log.info(
                "barge-in %s", kv(item=truncation.item_id, heard_ms=truncation.audio_end_ms)
            )
            actions.append(
                Send(
                    ConversationItemTruncate(
                        item_id=truncation.item_id, audio_end_ms=truncation.audio_end_ms
                    )
                )
            )
        return actions

    def tool_finished(self, call_id: str, result: str, now: float, *, ok: bool) -> list[Action]:
        """A :class:`RunTool` is done; ``result`` goes back to the model.

        ``ok`` False records the call as refused (the result says why).
        """
        self._tools_running.discard(call_id)
        record = next((t for t in self.tool_calls if t.call_id == call_id), None)
        ended: list[Action] = []
        if record is not None:
            record.result, record.refused, record.finished = result, not ok, now
            ended.append(ToolCallEnded(record))
            if ok and record.name == "send_dtmf":
                digits = str(record.arguments.get("digits", ""))
                self.keys.append(Keys("agent", digits, round(now - self.started, 3)))
        if self._stopped:
            return ended
        self._pending_outputs.append(ConversationItemCreate.function_output(call_id, result))
        self._wants_response = True
        return [*ended, *self._flush_outputs()]

    def timer(self, now: float, playback: Playback) -> list[Action]:
        """Run whatever is due at ``now`` (call at or after :attr:`next_timer`)."""
        if self._stopped:
            return []
        actions: list[Action] = []
        if self._dtmf_due is not None and now >= self._dtmf_due:
            actions += self._send_keys()
        if self._gate_poll_at is not None and now >= self._gate_poll_at:
            actions += self._poll_gate(now, playback)
        if self._idle_prompt_due is not None and now >= self._idle_prompt_due:
            actions += self._idle_prompt()
        goodbye = self._goodbye
        check_at = self._goodbye_check_at()
        if goodbye is not None and check_at is not None and now >= check_at:
            actions += self._check_goodbye(goodbye, now, playback)
        limit_due = self._limit_due()
        if not self._stopped and limit_due is not None and now >= limit_due:
            actions += self._check_limits(now, playback)
        renew_due = self._renew_due()
        if not self._stopped and renew_due is not None and now >= renew_due:
            actions += self._check_renewal(now, playback)
        beep_due = self._beep_due()
        if self._ready and beep_due is not None and now >= beep_due:
            actions += self._leave_message(now)
        return actions

    def _beep_due(self) -> float | None:
        if self._message is None or self._message_by is None:
            return None
        return min(self._caller_loud_at + BEEP_QUIET_SECONDS, self._message_by)

    # --- the model session's continuity ---------------------------------------------------

    def session_lost(self, now: float) -> None:
        """The model session is gone (dropped, failed, expired, or being renewed).

        The response in progress went with it; caller audio and tool results
        wait for :meth:`session_restored`.
        """
        self._ready = False
        self._renewing = True
        active = self._responses.active
        if active is not None:
            self._responses.cancelled.add(active)
            self._responses.active = None

    def session_restored(self, now: float, expires_in: float | None = None) -> list[Action]:
        """A new session is configured: replay the conversation so far into it,
        then send what waited (tool results, a response the caller is owed)."""
        self._ready = True
        self._renewing = False
        self._last_model_event = now
        self._expect_expiry(now, expires_in)
        if self._stopped:
            return []
        pending = {o.item.call_id for o in self._pending_outputs if hasattr(o.item, "call_id")}
        history = self.history(exclude_outputs=pending)
        actions: list[Action] = [Send(event) for event in history]
        owed = bool(history) and (
            history[-1].item.type == "function_call_output"
            or (history[-1].item.type == "message" and history[-1].item.role == "user")
        )
        if owed and not self._pending_outputs:
            self._wants_response = True
        return actions + self._flush_outputs()

    def history(self, *, exclude_outputs: set[str] | None = None) -> list[ConversationItemCreate]:
        """The conversation so far as items for a new session, oldest first:
        caller and agent lines as text, function calls and their outputs.
        At most ``replay_items``, the newest kept."""
        skip = exclude_outputs or set()
        timed: list[tuple[float, int, ConversationItemCreate]] = []
        for n, line in enumerate(self.transcript):
            item = (
                ConversationItemCreate.assistant_text(line.text)
                if line.role == "agent"
                else ConversationItemCreate.user_text(line.text)
            )
            timed.append((line.at, n, item))
        base = len(timed)
        for n, call in enumerate(self.tool_calls):
            at = call.started - self.started
            args = call.raw_arguments or "{}"
            timed.append(
                (
                    at,
                    base + 2 * n,
                    ConversationItemCreate.function_call(call.call_id, call.name, args),
                )
            )
            if call.finished is not None and call.call_id not in skip:
                output = ConversationItemCreate.function_output(call.call_id, call.result)
                timed.append((call.finished - self.started, base + 2 * n + 1, output))
        timed.sort(key=lambda t: (t[0], t[1]))
        return [item for _, _, item in timed][-self.config.replay_items :]

    def _expect_expiry(self, now: float, expires_in: float | None) -> None:
        if expires_in is None:
            self._renew_at = None
        else:
            # Well before the end; for short sessions (tests, small limits) a
            # quarter of their life, so renewals never follow each other at once.
            lead = min(self.config.renew_before_seconds, expires_in / 4)
            self._renew_at = now + max(0.0, expires_in - lead)

    def _renew_due(self) -> float | None:
        if self._renewing or not self._ready:
            return None
        times = []
        if self._renew_at is not None:
            times.append(self._renew_at)
        if self._responses.active is not None and self.config.stall_seconds:
            times.append(self._last_model_event + self.config.stall_seconds)
        return min(times) if times else None

    def _check_renewal(self, now: float, playback: Playback) -> list[Action]:
        responses = self._responses
        if (
            responses.active is not None
            and now - self._last_model_event >= self.config.stall_seconds
        ):
            self._renewing = True
            self._log.warning(
                "model stalled %s",
                kv(response=responses.active, silent_s=round(now - self._last_model_event, 1)),
            )
            return [RenewSession("the model stalled")]
        if self._renew_at is not None and now >= self._renew_at:
            caller_talking = self._gate.pending or self._caller_speaking
            if responses.active is None and not playback.speaking and not caller_talking:
                self._renewing = True
                return [RenewSession("the session expires soon")]
            self._renew_at = now + RENEW_RECHECK_SECONDS  # not quiet yet: between turns
        return []

    def stop(self) -> None:
        """The call is ending: no timer, no action from now on."""
        self._stopped = True

    # --- responses and outputs -----------------------------------------------------------

    def _new_turn(self, response_id: str, now: float) -> None:
        # A response to the caller's speech counts from its end; a response
        # that follows a tool result or a greeting has no such moment.
        stopped, self._caller_stopped = self._caller_stopped, None
        turn = Turn(
            index=len(self.turns),
            response_id=response_id,
            created=now - self.started,
            caller_stopped=None if stopped is None else stopped - self.started,
        )
        self.turns.append(turn)
        self._turn_by_response[response_id] = turn

    def _response_done(self, event: ResponseDone) -> list[Action]:
        response = event.response
        if response.id == self._responses.active:
            self._responses.active = None
        usage = response.usage
        if usage is not None:
            sums, inp, out = self.usage, usage.input_token_details, usage.output_token_details
            if inp is not None:
                sums.input_audio_tokens += inp.audio_tokens
                sums.input_text_tokens += inp.text_tokens
                sums.input_cached_tokens += inp.cached_tokens
            if out is not None:
                sums.output_audio_tokens += out.audio_tokens
                sums.output_text_tokens += out.text_tokens
        ended: list[Action] = []
        turn = self._turn_by_response.get(response.id)
        if turn is not None and not turn.done:
            turn.done = True
            ended.append(TurnEnded(turn))
        unanswered = self._mcp_unanswered.pop(response.id, [])
        if unanswered and response.status == "completed":
            # MCP calls ended and the agent said nothing since: let it speak
            # (and tell it what failed) rather than leave the caller waiting.
            for call in unanswered:
                if call.refused:
                    notice = MCP_CALL_FAILED.format(
                        tool=call.name.partition(".")[2] or call.name,
                        server=call.name.partition(".")[0],
                        error=_error_text(call.result),
                    )
                    self._pending_outputs.append(
                        ConversationItemCreate.user_text(notice, role="system")
                    )
            self._wants_response = True
        self._log.debug(
            "response done %s",
            kv(
                response=response.id,
                status=response.status,
                tokens=usage.total_tokens if usage else 0,
            ),
        )
        return [*ended, *self._flush_outputs()]

    def _flush_outputs(self) -> list[Action]:
        """Tool results, then one response.create, once no response is active,
        no tool is still running and no goodbye is under way."""
        if (
            not self._ready
            or self._responses.active is not None
            or self._tools_running
            or self._goodbye is not None
        ):
            return []
        outputs, self._pending_outputs = self._pending_outputs, []
        wants, self._wants_response = self._wants_response, False
        if not outputs and not wants:
            return []
        return [*(Send(o) for o in outputs), Send(ResponseCreate())]

    def _send_keys(self) -> list[Action]:
        digits, self._dtmf_digits = self._dtmf_digits, ""
        self._dtmf_due = None
        if not digits:
            return []
        self._log.info("caller keys %s", kv(digits=digits))
        self._pending_outputs.append(
            ConversationItemCreate.user_text(f"[The caller pressed the keys: {digits}]")
        )
        self._wants_response = True
        return self._flush_outputs()

    def _agent_utterance(self, item_id: str, text: str, now: float) -> list[Action]:
        # The caller hears it from its first frame, for as long as its audio
        # (or as much as they heard before talking over it).
        if self._item_heard_ms.get(item_id) == 0:
            return []  # cut before any of it played (a later item of the response)
        actions = self._utterance("agent", text, now, *self._item_span(item_id))
        if actions:
            self._agent_lines[item_id] = self.transcript[-1]
        return actions

    def _item_span(self, item_id: str) -> tuple[float | None, float | None]:
        start = self._item_start.get(item_id)
        audio_ms = self._item_bytes.get(item_id, 0) / self.config.audio_bytes_per_ms
        heard_ms = self._item_heard_ms.get(item_id, audio_ms)
        return start, None if start is None else start + min(audio_ms, heard_ms) / 1000

    def _correct_line(self, item_id: str) -> None:
        """An item cut after its line was written (its transcript comes before it has
        played): the record keeps what the caller heard."""
        line = self._agent_lines.pop(item_id, None)
        if line is None:
            return
        index = next(i for i, x in enumerate(self.transcript) if x is line)
        start, end = self._item_span(item_id)
        if self._item_heard_ms.get(item_id) == 0:
            del self.transcript[index]
        elif start is not None and end is not None:
            self.transcript[index] = replace(line, end=round(end - self.started, 3))

    def _utterance(
        self,
        role: str,
        text: str,
        now: float,
        start: float | None = None,
        end: float | None = None,
    ) -> list[Action]:
        text = text.strip()
        if not text:
            return []
        if len(text) > MAX_TEXT_CHARS:
            text = text[:MAX_TEXT_CHARS] + "..."
        at = round((now if start is None else start) - self.started, 3)
        until = round((now if end is None else end) - self.started, 3)
        line = TranscriptLine(at, role, text, end=until)
        self.transcript.append(line)
        return [line]

    def _model_error(self, event: ErrorEvent) -> list[Action]:
        error = event.error
        code = error.code or ""
        counted = ModelError(code or error.type or "unknown")
        if code == "session_expired":
            # Not the end of the call: a new session takes over (unless one
            # is already on its way).
            if self._renewing:
                return [counted]
            self._renewing = True
            self._log.info("model session expired; renewing")
            return [counted, RenewSession("the session expired")]
        if code in QUIET_ERROR_CODES:
            self._log.debug("model error (expected) %s", kv(code=code))
            return [counted]
        self._log.warning(
            "model error %s",
            kv(
                code=code or error.type,
                message=error.message,
                param=error.param or "-",
                event_id=error.event_id or "-",
            ),
        )
        if code in RealtimeServerError.FATAL_CODES:
            self._stopped = True
            return [counted, EndCall(Outcome.FAILED, f"model error {code}")]
        return [counted]

    # --- tools -------------------------------------------------------------------------------

    def _function_call(
        self, call_id: str, name: str, arguments: str, now: float, response_id: str = ""
    ) -> list[Action]:
        name, call_id = name[:64], call_id[:128]  # the model's strings, kept bounded
        record = ToolCall(call_id, name, _safe_args(arguments), now, raw_arguments=arguments)
        self.tool_calls.append(record)
        config = self.config
        limit = config.max_tool_calls_per_response
        made = self._tool_calls_in[response_id] = self._tool_calls_in.get(response_id, 0) + 1
        try:
            if made > limit or len(self._tools_running) >= limit:
                raise ToolError(
                    f"too many tool calls: at most {limit} per response and at a time; "
                    "this one was not run. Wait for the results, then call again if needed"
                )
            if name not in config.tools or (name == "transfer" and not config.transfer_targets):
                raise ToolError(f"tool {name!r} is not available on this call")
            args = parse_arguments(arguments)
            if name == "hangup":
                reason = str(args.get("reason", ""))[:200] or "agent ended the call"
                record.result, record.finished = tool_result(True), now
                self._log.info("hangup requested %s", kv(reason=reason))
                # The goodbye is playing or about to: let it finish, then end.
                ending = EndCall(Outcome.AGENT_HUNG_UP, f"agent hung up: {reason}")
                return [ToolCallEnded(record), *self._start_goodbye([ending], "hangup", now)]
            if name == "report_outcome":
                result = parse_result(args)
                self.result = result
                record.result, record.finished = tool_result(True), now
                self._log.info("outcome reported %s", kv(status=result.status))
                ending = EndCall(Outcome.AGENT_HUNG_UP, f"agent reported {result.status}")
                return [ToolCallEnded(record), *self._start_goodbye([ending], "outcome", now)]
            if name == "send_dtmf":
                run = RunTool(call_id, name, {"digits": validate_dtmf(args.get("digits"))})
            elif name == "transfer":
                target = args.get("target")
                if not isinstance(target, str) or target not in config.transfer_targets:
                    allowed = ", ".join(sorted(config.transfer_targets))
                    raise ToolError(
                        f"cannot transfer to {target!r}; allowed targets are: {allowed}"
                    )
                self._tools_running.add(call_id)
                run = RunTool(call_id, name, {"target": target})
                return self._start_goodbye([run], "transfer", now)
            else:
                run = RunTool(call_id, name, args)
        except ToolError as exc:
            self._log.info("tool refused %s", kv(tool=name, error=exc))
            record.result = tool_result(False, error=str(exc))
            record.refused, record.finished = True, now
            self._pending_outputs.append(
                ConversationItemCreate.function_output(call_id, record.result)
            )
            self._wants_response = True
            return [ToolCallEnded(record), *self._flush_outputs()]
        self._tools_running.add(call_id)
        return [run]

    # --- MCP tools (the API calls the servers) ------------------------------------------------

    def _mcp_event(self, event: ServerEvent, now: float) -> list[Action]:
        """Record MCP calls and tool listings as tool calls; report failures."""
        if isinstance(
            event,
            ResponseOutputItemAdded
            | ResponseOutputItemDone
            | ConversationItemAdded
            | ConversationItemDone
            | ConversationItemCreated,
        ):
            item = event.item
            if not isinstance(item, McpCallItem | McpListToolsItem):
                return []
            if isinstance(event, ResponseOutputItemAdded | ResponseOutputItemDone):
                self._mcp_response.setdefault(item.id, event.response_id)
            record = self._mcp_record(item.id, now)
            label = item.server_label or "mcp"
            if isinstance(item, McpListToolsItem):
                record.name = f"{label}.mcp_list_tools"
                if not record.refused:  # the tools found (the item may come after completed)
                    record.result = _tools_result(item)
            else:
                record.name = f"{label}.{item.name}"
                if item.arguments:
                    record.arguments = _safe_args(item.arguments)
                if item.error is not None:
                    return self._mcp_call_ended(record, now, error=item.error.message or "failed")
                if item.output is not None:
                    return self._mcp_call_ended(record, now, output=item.output)
            return [ToolCallEnded(record)] if record.finished is not None else []
        if isinstance(event, McpListToolsInProgress | ResponseMcpCallInProgress):
            self._mcp_record(event.item_id, now)
            return []
        if isinstance(event, ResponseMcpCallArgumentsDone):
            self._mcp_response.setdefault(event.item_id, event.response_id)
            self._mcp_record(event.item_id, now).arguments = _safe_args(event.arguments)
            return []
        if isinstance(event, ResponseMcpCallCompleted | ResponseMcpCallFailed):
            record = self._mcp_record(event.item_id, now)
            if isinstance(event, ResponseMcpCallFailed):
                return self._mcp_call_ended(record, now, error="failed")
            return self._mcp_call_ended(record, now, output=None)
        if isinstance(event, McpListToolsCompleted | McpListToolsFailed):
            record = self._mcp_record(event.item_id, now)
            if record.finished is not None:
                return []
            record.finished = now
            if isinstance(event, McpListToolsCompleted):
                record.result = record.result or tool_result(True, tools=[])
                return [ToolCallEnded(record)]
            record.refused = True
            record.result = tool_result(False, error="listing the tools failed")
            server = record.name.partition(".")[0] or "an MCP server"
            self._log.warning("MCP tools unavailable %s", kv(server=server))
            notice = ConversationItemCreate.user_text(
                MCP_TOOLS_FAILED.format(server=server), role="system"
            )
            return [ToolCallEnded(record), Send(notice)]
        return []

    def _mcp_record(self, item_id: str, now: float) -> ToolCall:
        record = self._mcp.get(item_id)
        if record is None:
            record = ToolCall(item_id, "mcp", {}, now)
            self._mcp[item_id] = record
            self.tool_calls.append(record)
        return record

    def _mcp_call_ended(
        self, record: ToolCall, now: float, *, output: str | None = None, error: str | None = None
    ) -> list[Action]:
        first = record.finished is None
        if first:
            record.finished = now
        # A reason from the item beats the bare "failed" of the event, whatever comes first.
        if error is not None and (not record.refused or error != "failed"):
            record.refused = True
            record.result = tool_result(False, error=error)
        elif output is not None and not record.refused:
            record.result = output
        if first:
            self._log.info(
                "MCP call %s", kv(tool=record.name, ok=not record.refused, error=error or "-")
            )
            response = self._mcp_response.get(record.call_id) or self._responses.active
            if response is not None:
                self._mcp_unanswered.setdefault(response, []).append(record)
        return [ToolCallEnded(record)]

    def _idle_prompt(self) -> list[Action]:
        """The caller went quiet and the server did not answer: ask whether they are there."""
        self._idle_prompt_due = None
        responses = self._responses
        if not responses.idle_prompt_next:
            return []  # a response started meanwhile
        busy = responses.active is not None or self._tools_running or self._goodbye is not None
        if not self._ready or busy:
            responses.idle_prompt_next = False
            return []
        params = ResponseParams(instructions=IDLE_PROMPT_INSTRUCTIONS)
        return [Send(ResponseCreate(response=params))]

    # --- goodbye before hang-up or transfer ------------------------------------------------

    def _start_goodbye(self, then: list[Action], why: str, now: float) -> list[Action]:
        if self._goodbye is not None:
            # Already leaving: a second hang-up or transfer changes nothing.
            return []
        self._goodbye = _Goodbye(
            then=then,
            why=why,
            check_from=now + GOODBYE_START_SECONDS,
            deadline=now + self.config.hangup_grace_seconds,
        )
        return []

    def _goodbye_check_at(self) -> float | None:
        goodbye = self._goodbye
        if goodbye is None:
            return None
        if goodbye.tail_until is not None:
            return goodbye.tail_until
        return min(goodbye.check_from, goodbye.deadline)

    def _check_goodbye(self, goodbye: _Goodbye, now: float, playback: Playback) -> list[Action]:
        done = goodbye.tail_until is not None and now >= goodbye.tail_until
        if not done and now >= goodbye.deadline:
            self._log.info("goodbye cut at the cap %s", kv(cap_s=self.config.hangup_grace_seconds))
            done = True
        if not done:
            if goodbye.tail_until is None and not self._agent_speaking(playback):
                goodbye.tail_until = now + GOODBYE_TAIL_SECONDS
            else:
                goodbye.check_from = now + POLL_SECONDS
            return []
        self._goodbye = None
        if any(isinstance(a, EndCall) for a in goodbye.then):
            self._stopped = True
        return goodbye.then

    # --- barge-in ----------------------------------------------------------------------------

    def _agent_speaking(self, playback: Playback) -> bool:
        return self._responses.active is not None or playback.speaking

    def _greeting_playing(self, playback: Playback) -> bool:
        responses = self._responses
        if responses.greeting is None:
            return False
        return (
            responses.active == responses.greeting
            or playback.current_item in responses.greeting_items
        )

    def _apply(self, decision: Decision, now: float) -> list[Action]:
        if decision is Decision.INTERRUPT:
            self._gate_poll_at = None
            return self._interrupt(now)
        if decision is Decision.WAIT:
            if self._gate_poll_at is None:
                self._caller_loud_at = now  # speech_started: the caller is talking
            self._gate_poll_at = now + POLL_SECONDS
        else:
            self._gate_poll_at = None
        return []

    def _poll_gate(self, now: float, playback: Playback) -> list[Action]:
        decision = self._gate.poll(
            now,
            self._agent_speaking(playback),
            self._greeting_playing(playback),
            caller_loud=now - self._caller_loud_at <= CALLER_LOUD_SECONDS,
        )
        return self._apply(decision, now)

    def _interrupt(self, now: float) -> list[Action]:
        """Stop the agent within one frame; the truncation follows :meth:`interrupted`."""
        active = self._responses.active
        turn = self._turn_by_response.get(active) if active else None
        turn = turn or (self.turns[-1] if self.turns else None)
        if turn is not None and not turn.barge_in:
            turn.barge_in = True
            if self._speech_started is not None:
                turn.barge_in_stop_latency = now - self._speech_started
        actions: list[Action] = [Interrupt()]
        if active is not None:
            self._responses.cancelled.add(active)
            if not self._gate.server_interrupts:
                actions.append(Send(ResponseCancel(response_id=active)))
        return actions

    # --- limits ----------------------------------------------------------------------------

    def _limit_due(self) -> float | None:
        if self._goodbye is not None:
            return None
        if self._limit_check_at is not None:
            return self._limit_check_at
        config = self.config
        times = []
        if config.max_call_seconds:
            times.append(self.started + config.max_call_seconds)
        if config.silence_timeout_seconds:
            times.append(self._last_activity + config.silence_timeout_seconds)
        if config.max_hold_seconds and self._connected_at is not None and not self._agent_spoke:
            times.append(self._connected_at + config.max_hold_seconds)
        return min(times) if times else None

    def _check_limits(self, now: float, playback: Playback) -> list[Action]:
        self._limit_check_at = None
        config = self.config
        why = ""
        if config.max_call_seconds and now - self.started >= config.max_call_seconds:
            why = "the call reached its maximum duration"
        elif config.silence_timeout_seconds and now - self._last_activity >= (
            config.silence_timeout_seconds
        ):
            if self._agent_speaking(playback):
                # Not silence: the agent talks. Look again soon.
                self._limit_check_at = now + LIMIT_RECHECK_SECONDS
                return []
            why = f"nobody spoke for {config.silence_timeout_seconds:g}s"
        elif (
            config.max_hold_seconds
            and self._connected_at is not None
            and not self._agent_spoke
            and now - self._connected_at >= config.max_hold_seconds
        ):
            why = f"no person answered within {config.max_hold_seconds:g}s"
            self.result = CallResult("not_achieved", why)
        if not why:
            return []
        self._log.info("limit reached %s", kv(why=why))
        ending = EndCall(Outcome.AGENT_HUNG_UP, why)
        if not self._ready or self._responses.active is not None:
            self._stopped = True
            return [ending]
        params = ResponseParams(instructions=GOODBYE_INSTRUCTIONS, tool_choice="none")
        return [Send(ResponseCreate(response=params)), *self._start_goodbye([ending], why, now)]


def parse_result(args: dict[str, Any]) -> CallResult:
    """The arguments of ``report_outcome``.

    Raises:
        ToolError: a status that is not one of ``RESULT_STATUSES``, or data
            that is not a small object of strings.
    """
    status = args.get("status")
    if status not in RESULT_STATUSES:
        raise ToolError(f"status must be one of: {', '.join(RESULT_STATUSES)}")
    summary = str(args.get("summary", ""))[:500]
    data = args.get("data") or {}
    if not isinstance(data, dict) or len(data) > 20:
        raise ToolError("data must be an object of at most 20 short facts")
    facts = {str(k)[:64]: str(v)[:500] for k, v in data.items()}
    return CallResult(str(status), summary, facts)


def _tools_result(item: McpListToolsItem) -> str:
    return tool_result(True, tools=[t.name for t in item.tools])


def _error_text(result: str) -> str:
    try:
        error = json.loads(result).get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error or "no reason given")


def _safe_args(arguments: str) -> dict[str, Any]:
    try:
        return parse_arguments(arguments)
    except ToolError:
        return {"raw": arguments[:200]}
