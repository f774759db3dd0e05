"""One call: caller <-> Asterisk externalMedia RTP <-> Realtime model.

Theory of operation
-------------------
A :class:`Call` is born on the caller's StasisStart and lives in one task
with one :class:`asyncio.TaskGroup`. Set-up, in order, with the model session
opening in parallel from the start (it is the slowest step):

1. answer the caller; bind this call's UDP socket in ``MEDIA_PORTS``;
2. create a mixing bridge; ``POST /channels/externalMedia`` (ulaw, our own
   channel id, ``data`` = the call id) pointed at our socket; learn
   Asterisk's RTP address from ``channelvars`` and accept RTP only from it;
3. wait for *that* channel's StasisStart, then add both channels to the
   bridge (adding earlier fails with 422: not in Stasis yet).

Caller audio flows from the first packet: it is queued (bounded) and sent to
the model as soon as the session is ready, so nothing said early is lost.
The shared media clock ticks every call's playout every 20 ms; when Asterisk
sends nothing for 100 ms (silence suppression, a Local channel in Wait()),
silence is fed to the model at the real-time rate so its turn detection
still ends the caller's turn.

Whatever ends the call (the caller hangs up, the model session fails, the
agent hangs up or transfers, a limit, the controller stopping) sets one
reason and the TaskGroup unwinds; :meth:`Call._teardown` then releases the
socket, the model session, the externalMedia channel and the bridge exactly
once, and hangs up the caller or hands it back to the dialplan.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from controller.agents import Agent, parse_stasis_args, resolve_agent
from controller.ari.events import (
    AriEvent,
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    StasisEnd,
    StasisStart,
    event_channel,
)
from controller.audio.resample import AudioConverter, converters_for
from controller.call.bargein import BargeInGate, Decision, is_loud, plan_truncation
from controller.call.tools import (
    build_instructions,
    declarations,
    parse_arguments,
    tool_result,
    validate_dtmf,
)
from controller.errors import (
    AriError,
    AriNotFound,
    AriRealtimeError,
    CallError,
    RealtimeConnectionError,
    RealtimeError,
    RealtimeServerError,
    ToolError,
)
from controller.logs import kv
from controller.media.call_media import CallMedia
from controller.realtime.events import (
    ConversationItemCreate,
    ConversationItemTruncate,
    ErrorEvent,
    InputAudioBufferSpeechStarted,
    InputAudioBufferSpeechStopped,
    InputAudioTranscriptionCompleted,
    InputAudioTranscriptionDelta,
    InputAudioTranscriptionFailed,
    ResponseCancel,
    ResponseCreate,
    ResponseCreated,
    ResponseDone,
    ResponseFunctionCallArgumentsDone,
    ResponseOutputAudioDelta,
    ResponseOutputAudioDone,
    ResponseOutputAudioTranscriptDelta,
    ResponseOutputAudioTranscriptDone,
    ResponseParams,
    ServerEvent,
    build_session_update,
)
from controller.realtime.session import RealtimeSession, connect_realtime

if TYPE_CHECKING:
    from controller.app import Controller

log = logging.getLogger("controller.call")

#: Channel variable set on the caller before it is handed back to the
#: dialplan, so the dialplan can tell why (e.g. ``controller_stopping``).
RESULT_VARIABLE = "ARI_REALTIME_RESULT"
#: Caller audio is sent to the model in chunks of this many u-law bytes
#: (40 ms): half the websocket messages of 20 ms chunks, for 20 ms of latency
#: on a turn end that server VAD waits 500 ms for anyway.
INPUT_CHUNK_BYTES = 320
#: Caller audio kept while the model session opens: 10 s of 40 ms chunks.
INPUT_QUEUE_CHUNKS = 250
#: How long to wait for the externalMedia channel's own StasisStart.
EXTERNAL_MEDIA_TIMEOUT = 5.0
#: While the barge-in gate waits, the caller counts as still talking if a loud
#: frame of theirs arrived this recently (three frames; a dip between words
#: only defers the decision to a later 20 ms poll).
CALLER_LOUD_SECONDS = 0.06
#: Keys pressed within this pause are sent to the model as one message.
DTMF_COLLECT_SECONDS = 0.8
#: After the goodbye's last frame left our socket, the time Asterisk needs to
#: pass it on to the caller (the mixing bridge works in 20 ms intervals); a
#: hang-up or transfer sooner cuts the end of the goodbye.
GOODBYE_TAIL_SECONDS = 0.1
#: Error codes that are expected in a race and need no more than a debug line.
QUIET_ERROR_CODES = frozenset(
    {"response_cancel_not_active", "conversation_already_has_active_response"}
)


@dataclass
class CallContext:
    """What a call is born with."""

    controller: Controller
    call_id: str
    channel: Channel
    args: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TranscriptLine:
    """One utterance, for the log and the call's record."""

    at: float  # seconds since the call started
    role: str  # "caller" | "agent"
    text: str


class _CallOver(Exception):
    """Raised inside the TaskGroup to unwind it once the call has ended."""


class Call:
    """One call. :meth:`run` returns when the call is over and cleaned up."""

    def __init__(self, context: CallContext) -> None:
        controller = context.controller
        self.context = context
        self.settings = controller.settings
        self.call_id = context.call_id
        self.caller = context.channel
        self.bridge_id = f"{controller.id_prefix}br-{self.call_id}"
        self.external_channel_id = f"{controller.id_prefix}em-{self.call_id}"
        self.started = time.monotonic()
        self.end_reason = ""
        self.transcript: list[TranscriptLine] = []
        self.tool_calls: list[tuple[str, dict[str, Any], str]] = []
        self.agent: Agent | None = None

        self._ended = asyncio.Event()
        self._to_dialplan = False
        self._caller_gone = False
        self._handed_off = False
        #: The transfer target while the transfer request is under way: the
        #: caller's StasisEnd may arrive before ARI answers the request.
        self._transferring_to: str | None = None
        self._bridge_created = False
        self._external_created = False
        self._external_started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._media: CallMedia | None = None
        self._session: RealtimeSession | None = None
        self._session_ready = asyncio.Event()
        self._to_model: asyncio.Queue[bytes] = asyncio.Queue(INPUT_QUEUE_CHUNKS)
        self._pending_input = bytearray()
        self._input_convert: AudioConverter
        self._output_convert: AudioConverter
        self._input_convert, self._output_convert = converters_for(self.settings.realtime_audio)
        self._tasks: asyncio.TaskGroup | None = None

        # Conversation state (driven by model events).
        self._active_response: str | None = None
        self._cancelled_responses: set[str] = set()
        self._greeting_requested = False
        self._greeting_response: str | None = None
        self._greeting_items: set[str] = set()
        self._pending_outputs: list[ConversationItemCreate] = []
        self._wants_response = False
        #: Tool calls still running: their outputs go with the others, before
        #: one response.create (a response can call several tools at once).
        self._tools_running = 0
        self._gate = BargeInGate(self.settings.barge_in_min_ms, self.settings.protect_greeting)
        self._caller_loud_at = 0.0  # last loud caller frame, tracked while the gate waits
        #: A barge-in decision is being polled: only then is the caller's level measured.
        self._gate_polling = False
        self._last_activity = time.monotonic()
        self._dtmf_digits = ""
        self._dtmf_flush: asyncio.TimerHandle | None = None
        self._caller_partial = ""

        #: Counters for the end-of-call line.
        self.input_chunks_dropped = 0
        self.truncations = 0

    # --- identity ---------------------------------------------------------------------

    @property
    def caller_channel_id(self) -> str:
        """The id of the caller's channel."""
        return self.caller.id

    @property
    def elapsed(self) -> float:
        """Seconds since the call started."""
        return time.monotonic() - self.started

    # --- inputs from the controller ---------------------------------------------------

    def on_event(self, event: AriEvent) -> None:
        """An ARI event about one of this call's channels (never blocks)."""
        channel = event_channel(event)
        if channel is None:
            return
        if channel.id == self.external_channel_id:
            if isinstance(event, StasisStart) and not self._external_started.done():
                self._external_started.set_result(None)
            elif isinstance(event, ChannelDestroyed | StasisEnd) and not self._ended.is_set():
                self.request_end("externalMedia channel went away")
            return
        if channel.id != self.caller_channel_id:
            return
        if isinstance(event, ChannelDtmfReceived):
            self._on_dtmf(event.digit)
        elif isinstance(event, ChannelHangupRequest | ChannelDestroyed):
            self.on_caller_gone("caller hung up")
        elif isinstance(event, StasisEnd):
            self.on_caller_gone("caller left Stasis")

    def on_caller_gone(self, reason: str) -> None:
        """The caller's channel is gone or left the app."""
        self._caller_gone = True
        if self._transferring_to is not None:
            reason = f"transferred to {self._transferring_to}"
        self.request_end(reason)

    def request_end(self, reason: str, *, to_dialplan: bool = False) -> None:
        """End the call; the first reason given wins."""
        if self._ended.is_set():
            return
        self.end_reason = reason
        self._to_dialplan = to_dialplan
        self._ended.set()

    # --- life ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Set up, serve until something ends the call, and tear down exactly once."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                await self._setup(tasks)
                tasks.create_task(self._limits(), name=f"limits-{self.call_id}")
                await self._ended.wait()
                raise _CallOver
        except* _CallOver:
            pass
        except* AriNotFound:
            self.on_caller_gone("caller hung up during set-up")
        except* AriRealtimeError as group:
            # Expected failures (model unreachable, no free port, ARI refused):
            # one warning line, and the caller goes back to the dialplan.
            exc = group.exceptions[0]
            log.warning("call failed %s", kv(call=self.call_id, error=exc))
            self.request_end(f"failed: {type(exc).__name__}", to_dialplan=True)
        except* Exception:
            log.exception("call crashed %s", kv(call=self.call_id))
            self.request_end("crashed", to_dialplan=True)
        finally:
            await asyncio.shield(self._teardown())

    async def _setup(self, tasks: asyncio.TaskGroup) -> None:
        ari = self.context.controller.ari
        settings = self.settings
        fields = self._template_fields()
        args = parse_stasis_args(self.context.args)
        profile = args.get("profile") or await self._channel_profile()
        agents = self.context.controller.agents
        self.agent, warning = resolve_agent(settings, agents, profile, fields)
        if warning:
            log.warning("%s %s", warning, kv(call=self.call_id))

        await ari.answer(self.caller_channel_id)
        log.info("answered %s", kv(call=self.call_id, profile=self.agent.profile))
        model = tasks.create_task(self._open_model(), name=f"model-open-{self.call_id}")

        controller = self.context.controller
        self._media = await CallMedia.open(
            controller.clock,
            settings.media_address,
            settings.media_port_range,
            self._on_caller_audio,
        )
        host, port = self._media.local_address
        # Mark before asking: if a failure elsewhere (the model) cancels set-up
        # while the request is in flight, Asterisk may still create the
        # resource, and teardown must delete it (a 404 there is harmless).
        self._bridge_created = True
        await ari.create_bridge(bridge_id=self.bridge_id, type="mixing", name=self.call_id)
        controller.claim_channel(self.external_channel_id, self)
        self._external_created = True
        external = await ari.external_media(
            app=settings.ari_app,
            external_host=f"{host}:{port}",
            format="ulaw",
            channel_id=self.external_channel_id,
            data=self.call_id,
        )
        variables = external.channelvars or {}
        remote_host = variables.get("UNICASTRTP_LOCAL_ADDRESS")
        remote_port = variables.get("UNICASTRTP_LOCAL_PORT")
        if not remote_host or not remote_port:
            remote_host = await ari.get_variable(
                self.external_channel_id, "UNICASTRTP_LOCAL_ADDRESS"
            )
            remote_port = await ari.get_variable(self.external_channel_id, "UNICASTRTP_LOCAL_PORT")
        self._media.set_remote(remote_host, int(remote_port))
        try:
            async with asyncio.timeout(EXTERNAL_MEDIA_TIMEOUT):
                await self._external_started
        except TimeoutError:
            # The event may have been lost (e.g. the events websocket blipped):
            # ask Asterisk where the channel is before giving up.
            state = await ari.get_channel(self.external_channel_id)
            where = state.dialplan.app_name if state.dialplan else ""
            if where != "Stasis":
                raise CallError(
                    f"externalMedia channel did not enter Stasis within "
                    f"{EXTERNAL_MEDIA_TIMEOUT:g}s (state {state.state}, app {where or '-'})"
                ) from None
            log.warning("externalMedia StasisStart not seen; channel is in Stasis, going on")
        await ari.add_channel(self.bridge_id, self.caller_channel_id, self.external_channel_id)
        log.info(
            "media up %s",
            kv(
                call=self.call_id,
                local=f"{host}:{port}",
                asterisk=f"{remote_host}:{remote_port}",
                audio=settings.realtime_audio,
            ),
        )
        tasks.create_task(self._send_to_model(), name=f"model-send-{self.call_id}")
        session = await model
        tasks.create_task(self._receive_from_model(session), name=f"model-recv-{self.call_id}")
        if self.agent.greeting:
            self._greeting_requested = True
            await session.send(
                ResponseCreate(
                    response=ResponseParams(
                        instructions=(
                            "Greet the caller now. Say exactly this, then wait for them: "
                            f"{self.agent.greeting}"
                        )
                    )
                )
            )
        else:
            self._flush_outputs()  # e.g. keys the caller pressed while we connected

    async def _channel_profile(self) -> str | None:
        """The profile from the ``ARI_REALTIME_PROFILE`` channel variable, if set."""
        try:
            value = await self.context.controller.ari.get_variable(
                self.caller_channel_id, "ARI_REALTIME_PROFILE"
            )
        except AriError:  # 404 when the variable is unset: the usual case
            return None
        return value or None

    def _template_fields(self) -> dict[str, str]:
        dialplan = self.caller.dialplan
        args = [a for a in self.context.args if a and "=" not in a]
        return {
            "caller_number": self.caller.caller.number,
            "caller_name": self.caller.caller.name,
            "dialed_number": args[0] if args else (dialplan.exten if dialplan else ""),
            "date": dt.date.today().isoformat(),
            "call_id": self.call_id,
        }

    # --- the model session --------------------------------------------------------------

    async def _open_model(self) -> RealtimeSession:
        settings = self.settings
        agent = self.agent
        assert agent is not None
        session = await connect_realtime(
            settings.realtime_url,
            settings.openai_api_key,
            settings.realtime_model,
            azure=settings.is_azure,
            timeout=settings.realtime_connect_timeout,
        )
        self._session = session
        vad = agent.vad
        call_settings = settings.model_copy(
            update={
                "vad_type": vad.type,
                "vad_threshold": vad.threshold,
                "vad_silence_ms": vad.silence_ms,
                "vad_prefix_ms": vad.prefix_ms,
                "vad_eagerness": vad.eagerness,
            }
        )
        update = build_session_update(
            call_settings,
            tools=declarations(agent),
            instructions=build_instructions(agent, dt.date.today()),
            voice=agent.voice,
            interrupt_response=self._gate.server_interrupts,
        )
        await session.start(update)
        self._session_ready.set()
        log.info("model ready %s", kv(call=self.call_id, model=settings.realtime_model))
        return session

    def _on_caller_audio(self, payload: bytes) -> None:
        """u-law from Asterisk (or filled silence), called per packet: keep it cheap."""
        if self._gate_polling and is_loud(payload):
            self._caller_loud_at = time.monotonic()
        pending = self._pending_input
        pending += payload
        if len(pending) < INPUT_CHUNK_BYTES:
            return
        chunk = self._input_convert.convert(bytes(pending))
        pending.clear()
        queue = self._to_model
        if queue.full():
            # The model side is stalled: keep the newest audio, count the loss.
            queue.get_nowait()
            self.input_chunks_dropped += 1
        queue.put_nowait(chunk)

    async def _send_to_model(self) -> None:
        await self._session_ready.wait()
        session = self._session
        assert session is not None
        queue = self._to_model
        while True:
            chunk = await queue.get()
            await session.send_audio(chunk)

    async def _receive_from_model(self, session: RealtimeSession) -> None:
        async for event in session:
            self._on_model_event(event)
        if not self._ended.is_set():
            raise RealtimeConnectionError("model session ended")

    def _on_model_event(self, event: ServerEvent) -> None:
        if isinstance(event, ResponseOutputAudioDelta):
            if event.response_id in self._cancelled_responses or self._media is None:
                return
            if event.response_id == self._greeting_response:
                self._greeting_items.add(event.item_id)
            audio = self._output_convert.convert(base64.b64decode(event.delta))
            self._media.play(event.item_id, audio)
            self._last_activity = time.monotonic()
        elif isinstance(event, ResponseOutputAudioDone):
            if self._media is not None and event.response_id not in self._cancelled_responses:
                # The resampler holds a few ms back; they belong to this item.
                tail = self._output_convert.flush()
                if tail:
                    self._media.play(event.item_id, tail)
                self._media.end_item(event.item_id)
        elif isinstance(event, InputAudioBufferSpeechStarted):
            self._last_activity = time.monotonic()
            decision = self._gate.speech_started(
                time.monotonic(), self._agent_speaking(), self._greeting_playing()
            )
            self._apply(decision)
        elif isinstance(event, InputAudioBufferSpeechStopped):
            self._last_activity = time.monotonic()
            self._gate.speech_stopped()
        elif isinstance(event, ResponseCreated):
            self._active_response = event.response.id
            if self._greeting_requested and self._greeting_response is None:
                self._greeting_response = event.response.id
        elif isinstance(event, ResponseDone):
            self._on_response_done(event)
        elif isinstance(event, ResponseFunctionCallArgumentsDone):
            # Act on arguments.done only; output_item.done repeats the same call.
            assert self._tasks is not None
            self._tools_running += 1
            self._tasks.create_task(self._run_tool(event.name, event.arguments, event.call_id))
        elif isinstance(event, InputAudioTranscriptionDelta):
            self._caller_partial += event.delta
            log.debug("transcript delta %s", kv(call=self.call_id, role="caller", text=event.delta))
        elif isinstance(event, InputAudioTranscriptionCompleted):
            # Some servers send only deltas; the text so far then stands.
            text, self._caller_partial = event.transcript or self._caller_partial, ""
            self._record("caller", text)
        elif isinstance(event, InputAudioTranscriptionFailed):
            text, self._caller_partial = self._caller_partial, ""
            log.info("caller transcription failed %s", kv(call=self.call_id, partial=text))
            self._record("caller", text)
        elif isinstance(event, ResponseOutputAudioTranscriptDone):
            self._record("agent", event.transcript)
        elif isinstance(event, ResponseOutputAudioTranscriptDelta):
            pass  # the .done event carries the whole text; no per-delta log lines
        elif isinstance(event, ErrorEvent):
            self._on_error(event)

    def _on_response_done(self, event: ResponseDone) -> None:
        response = event.response
        if response.id == self._active_response:
            self._active_response = None
        usage = response.usage
        log.debug(
            "response done %s",
            kv(
                call=self.call_id,
                response=response.id,
                status=response.status,
                tokens=usage.total_tokens if usage else 0,
            ),
        )
        self._flush_outputs()

    def _on_error(self, event: ErrorEvent) -> None:
        error = event.error
        code = error.code or ""
        if code in QUIET_ERROR_CODES:
            log.debug("model error (expected) %s", kv(call=self.call_id, code=code))
            return
        log.warning(
            "model error %s",
            kv(
                call=self.call_id,
                code=code or error.type,
                message=error.message,
                param=error.param or "-",
                event_id=error.event_id or "-",
            ),
        )
        if code in RealtimeServerError.FATAL_CODES:
            self.request_end(f"model error {code}", to_dialplan=True)

    def _record(self, role: str, text: str) -> None:
        text = text.strip()
        if not text:
            return
        line = TranscriptLine(round(self.elapsed, 3), role, text)
        self.transcript.append(line)
        log.info("transcript %s", kv(call=self.call_id, role=role, t=line.at, text=text))

    # --- barge-in ---------------------------------------------------------------------

    def _agent_speaking(self) -> bool:
        media = self._media
        return self._active_response is not None or (media is not None and media.speaking)

    def _greeting_playing(self) -> bool:
        greeting = self._greeting_response
        if greeting is None:
            return False
        media = self._media
        playing = media.current_item if media is not None else None
        return self._active_response == greeting or playing in self._greeting_items

    def _apply(self, decision: Decision) -> None:
        if decision is Decision.INTERRUPT:
            self._interrupt()
        elif decision is Decision.WAIT and not self._gate_polling:
            assert self._tasks is not None
            self._gate_polling = True
            self._caller_loud_at = time.monotonic()  # speech_started: the caller is talking
            self._tasks.create_task(self._poll_gate())

    async def _poll_gate(self) -> None:
        try:
            while True:
                await asyncio.sleep(0.02)
                now = time.monotonic()
                decision = self._gate.poll(
                    now,
                    self._agent_speaking(),
                    self._greeting_playing(),
                    caller_loud=now - self._caller_loud_at <= CALLER_LOUD_SECONDS,
                )
                if decision is not Decision.WAIT:
                    break
        finally:
            self._gate_polling = False
        self._apply(decision)

    def _interrupt(self) -> None:
        """Stop the agent within one frame and tell the model what was heard."""
        media = self._media
        session = self._session
        if media is None or session is None:
            return
        discarded = media.interrupt()
        self._output_convert.reset()
        active = self._active_response
        if active is not None:
            self._cancelled_responses.add(active)
        assert self._tasks is not None
        for cut in discarded:
            if cut.received_ms == 0:
                continue  # no audio of it reached us: nothing to truncate
            truncation = plan_truncation(cut.item_id, cut.played_ms, cut.received_ms, cut.finished)
            if truncation is None:
                continue
            self.truncations += 1
            log.info(
                "barge-in %s",
                kv(call=self.call_id, item=cut.item_id, heard_ms=truncation.audio_end_ms),
            )
            self._tasks.create_task(
                session.send(
                    ConversationItemTruncate(
                        item_id=truncation.item_id, audio_end_ms=truncation.audio_end_ms
                    )
                )
            )
        if active is not None and not self._gate.server_interrupts:
            self._tasks.create_task(session.send(ResponseCancel(response_id=active)))

    # --- tools --------------------------------------------------------------------------

    async def _run_tool(self, name: str, arguments: str, call_id: str) -> None:
        agent = self.agent
        assert agent is not None
        try:
            if name not in agent.tools or (name == "transfer" and not agent.transfer_targets):
                raise ToolError(f"tool {name!r} is not available on this call")
            args = parse_arguments(arguments)
            if name == "hangup":
                await self._tool_hangup(args)
                result = tool_result(True)
            elif name == "send_dtmf":
                result = await self._tool_send_dtmf(args)
            elif name == "transfer":
                result = await self._tool_transfer(args)
            else:
                result = await self._tool_http(name, args)
        except ToolError as exc:
            result = tool_result(False, error=str(exc))
            log.info("tool refused %s", kv(call=self.call_id, tool=name, error=exc))
        finally:
            self._tools_running -= 1
        self.tool_calls.append((name, _safe_args(arguments), result))
        if self._ended.is_set() or self._handed_off:
            return
        self._pending_outputs.append(ConversationItemCreate.function_output(call_id, result))
        self._wants_response = True
        self._flush_outputs()

    def _flush_outputs(self) -> None:
        """Send tool results, then one response.create, once no response is active
        and no tool is still running."""
        if (
            not self._session_ready.is_set()
            or self._active_response is not None
            or self._tools_running
            or self._ended.is_set()
        ):
            return
        outputs, self._pending_outputs = self._pending_outputs, []
        wants, self._wants_response = self._wants_response, False
        if not outputs and not wants:
            return
        assert self._tasks is not None
        self._tasks.create_task(self._send_all([*outputs, ResponseCreate()]))

    async def _send_all(self, events: list[Any]) -> None:
        session = self._session
        assert session is not None
        for event in events:
            await session.send(event)

    async def _wait_for_goodbye(self) -> None:
        """Let the agent's current speech finish playing (capped)."""
        cap = self.settings.hangup_grace_seconds
        deadline = time.monotonic() + cap
        # Give the response that carries the goodbye a moment to start.
        await asyncio.sleep(0.1)
        while time.monotonic() < deadline:
            media = self._media
            if self._active_response is None and (media is None or not media.speaking):
                if media is not None:
                    await asyncio.sleep(GOODBYE_TAIL_SECONDS)
                return
            await asyncio.sleep(0.02)
        log.info("goodbye cut at the cap %s", kv(call=self.call_id, cap_s=cap))

    async def _tool_hangup(self, args: dict[str, Any]) -> None:
        reason = str(args.get("reason", ""))[:200] or "agent ended the call"
        log.info("hangup requested %s", kv(call=self.call_id, reason=reason))
        await self._wait_for_goodbye()
        self.request_end(f"agent hung up: {reason}")

    async def _tool_send_dtmf(self, args: dict[str, Any]) -> str:
        digits = validate_dtmf(args.get("digits"))
        try:
            await self.context.controller.ari.send_dtmf(self.caller_channel_id, digits)
        except AriError as exc:
            raise ToolError(f"the phone system did not accept the keys: {exc.args[0]}") from exc
        log.info("dtmf sent %s", kv(call=self.call_id, digits=digits))
        return tool_result(True, pressed=digits)

    async def _tool_transfer(self, args: dict[str, Any]) -> str:
        agent = self.agent
        assert agent is not None
        name = args.get("target")
        target = agent.transfer_targets.get(name) if isinstance(name, str) else None
        if target is None:
            allowed = ", ".join(sorted(agent.transfer_targets))
            raise ToolError(f"cannot transfer to {name!r}; allowed targets are: {allowed}")
        await self._wait_for_goodbye()
        ari = self.context.controller.ari
        self._transferring_to = name
        try:
            if target.endpoint is not None:
                await ari.redirect(self.caller_channel_id, target.endpoint)
            else:
                await ari.continue_in_dialplan(
                    self.caller_channel_id,
                    context=target.context,
                    extension=target.extension,
                    priority=target.priority if target.label is None else None,
                    label=target.label,
                )
        except AriError as exc:
            self._transferring_to = None
            raise ToolError(f"the transfer to {name} failed: {exc.args[0]}") from exc
        self._handed_off = True
        log.info("transferred %s", kv(call=self.call_id, target=name))
        self.request_end(f"transferred to {name}")
        return tool_result(True, target=name)

    async def _tool_http(self, name: str, args: dict[str, Any]) -> str:
        agent = self.agent
        assert agent is not None
        tool = agent.http_tools[name]
        body = {
            "call_id": self.call_id,
            "caller_number": self.caller.caller.number,
            "arguments": args,
        }
        timeout = aiohttp.ClientTimeout(total=tool.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(tool.url, json=body, headers=tool.headers) as response,
            ):
                text = await response.text()
                if response.status >= 400:
                    raise ToolError(f"{name} failed: the service answered HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ToolError(
                f"{name} failed: {type(exc).__name__} (service unreachable or slow)"
            ) from exc
        return text[:16_000] or tool_result(True)

    # --- caller keypresses ----------------------------------------------------------------

    def _on_dtmf(self, digit: str) -> None:
        self._last_activity = time.monotonic()
        agent = self.agent
        if agent is None or not agent.dtmf_to_model:
            return
        # Keys pressed before the model is ready wait in _pending_outputs.
        self._dtmf_digits += digit
        if self._dtmf_flush is not None:
            self._dtmf_flush.cancel()
        loop = asyncio.get_running_loop()
        delay = 0.0 if digit == "#" else DTMF_COLLECT_SECONDS
        self._dtmf_flush = loop.call_later(delay, self._send_dtmf_to_model)

    def _send_dtmf_to_model(self) -> None:
        digits, self._dtmf_digits = self._dtmf_digits, ""
        self._dtmf_flush = None
        if not digits or self._tasks is None or self._ended.is_set():
            return
        log.info("caller keys %s", kv(call=self.call_id, digits=digits))
        self._pending_outputs.append(
            ConversationItemCreate.user_text(f"[The caller pressed the keys: {digits}]")
        )
        self._wants_response = True
        self._flush_outputs()

    # --- limits ----------------------------------------------------------------------------

    async def _limits(self) -> None:
        """Maximum call duration and the silence timeout."""
        settings = self.settings
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if settings.max_call_seconds and now - self.started >= settings.max_call_seconds:
                await self._say_goodbye_and_end("the call reached its maximum duration")
                return
            silence = settings.silence_timeout_seconds
            if silence and not self._agent_speaking() and now - self._last_activity >= silence:
                await self._say_goodbye_and_end(f"nobody spoke for {silence}s")
                return

    async def _say_goodbye_and_end(self, why: str) -> None:
        log.info("limit reached %s", kv(call=self.call_id, why=why))
        session = self._session
        if session is not None and self._active_response is None:
            with contextlib.suppress(RealtimeError):
                await session.send(
                    ResponseCreate(
                        response=ResponseParams(
                            instructions="Say a short, polite goodbye to the caller now.",
                            tool_choice="none",
                        )
                    )
                )
            await self._wait_for_goodbye()
        self.request_end(why)

    # --- teardown --------------------------------------------------------------------------

    async def _teardown(self) -> None:
        """Release everything this call holds, exactly once, whatever ended it."""
        controller = self.context.controller
        ari = controller.ari
        if self._dtmf_flush is not None:
            self._dtmf_flush.cancel()
        media = self._media
        if media is not None:
            media.close()
        session = self._session
        if session is not None:
            with contextlib.suppress(RealtimeError, OSError):
                await session.close()
        if self._external_created:
            with contextlib.suppress(AriError):
                await ari.hangup(self.external_channel_id)
        if self._bridge_created:
            with contextlib.suppress(AriError):
                await ari.destroy_bridge(self.bridge_id)
        if not self._caller_gone and not self._handed_off:
            try:
                if self._to_dialplan:
                    result = self.end_reason.replace(" ", "_").replace(":", "")
                    await ari.set_variable(self.caller_channel_id, RESULT_VARIABLE, result)
                    await ari.continue_in_dialplan(self.caller_channel_id)
                else:
                    await ari.hangup(self.caller_channel_id)
            except AriError as exc:
                log.debug("caller already gone %s", kv(call=self.call_id, error=exc))
        controller.release_channel(self.external_channel_id)
        fields: dict[str, object] = {
            "call": self.call_id,
            "reason": self.end_reason,
            "duration_s": round(self.elapsed, 3),
        }
        if media is not None:
            fields.update(media.summary().as_fields())
            fields.update(input_dropped=self.input_chunks_dropped, truncations=self.truncations)
        log.info("StasisEnd %s", kv(**fields))


def _safe_args(arguments: str) -> dict[str, Any]:
    try:
        value = parse_arguments(arguments)
    except ToolError:
        return {"raw": arguments[:200]}
    return value
