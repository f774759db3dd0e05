"""One call: the I/O shell around the :class:`~controller.call.conversation.Conversation`.

Theory of operation
-------------------
A :class:`Call` is born on the caller's StasisStart and lives in one task
with one :class:`asyncio.TaskGroup`. It decides nothing about the
conversation: it feeds the core its inputs (model events, the caller's
keys and level, playout cuts, tool results, timers) and carries out the
actions the core returns. Set-up, in order, with the model session opening
in parallel from the start (it is the slowest step):

1. answer the caller; bind this call's UDP socket in ``MEDIA_PORTS``;
2. create a mixing bridge; ``POST /channels/externalMedia`` (ulaw, our own
   channel id, ``data`` = the call id) pointed at our socket; learn
   Asterisk's RTP address from ``channelvars`` and accept RTP only from it;
3. wait for *that* channel's StasisStart, then add both channels to the
   bridge (adding earlier fails with 422: not in Stasis yet).

Caller audio flows from the first packet: it is queued (bounded) and sent to
the model as soon as the session is ready, so nothing said early is lost.

Whatever ends the call (the caller hangs up, the model session fails, the
agent hangs up or transfers, a limit, the controller stopping) fixes one
:class:`~controller.call.state.Outcome` and the TaskGroup unwinds;
:meth:`Call._teardown` then releases the socket, the model session, the
externalMedia channel and the bridge exactly once, and hangs up the caller
or hands it back to the dialplan.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import replace

from pydantic import BaseModel

from controller.agents import Agent, dialled_number, parse_stasis_args, resolve_agent
from controller.ari.events import (
    AriEvent,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    StasisEnd,
    StasisStart,
    event_channel,
)
from controller.audio.convert import converters_for
from controller.call.bargein import is_loud
from controller.call.bridge import MediaLeg
from controller.call.configure import conversation_config, outbound_agent, session_update
from controller.call.conversation import (
    SILENT,
    Action,
    Conversation,
    EndCall,
    EndItem,
    Heard,
    Interrupt,
    ModelError,
    Play,
    Playback,
    RenewSession,
    RunTool,
    Send,
    ToolCall,
    ToolCallEnded,
    TranscriptLine,
    TurnEnded,
)
from controller.call.dialer import Dialer
from controller.call.model_link import ModelLink
from controller.call.record import (
    CallFacts,
    build_record,
    tool_call_entry,
    transcript_entry,
    turn_entry,
)
from controller.call.services import CallContext, CallServices, OutboundCall
from controller.call.state import CallLifecycle, CallState, Outcome
from controller.call.tool_runner import ToolRunner
from controller.call.tools import tool_result
from controller.errors import (
    AriError,
    AriNotFound,
    AriRealtimeError,
    RealtimeError,
    ToolError,
)
from controller.logs import CallLogger, kv
from controller.media.call_media import CallMedia
from controller.media.uplink import Uplink
from controller.realtime.events import (
    InputAudioBufferSpeechStarted,
    InputAudioBufferSpeechStopped,
    ServerEvent,
)
from controller.realtime.session import RealtimeSession, connect_realtime
from controller.records import CallRecord, Direction, DtmfEntry, LiveEventKind

log = logging.getLogger("controller.call")

#: Channel variable set on the caller before it is handed back to the
#: dialplan, so the dialplan can tell why (e.g. ``controller_stopping``).
RESULT_VARIABLE = "ARI_REALTIME_RESULT"


class _CallOver(Exception):
    """Raised inside the TaskGroup to unwind it once the call has ended."""


class Call:
    """One call. :meth:`run` returns when the call is over and cleaned up."""

    def __init__(self, context: CallContext, services: CallServices) -> None:
        loop = asyncio.get_running_loop()
        self.services = services
        self.settings = settings = services.settings
        self.call_id = context.call_id
        self.caller = context.channel
        self.args = context.args
        self.bridge_id = f"{services.id_prefix}br-{self.call_id}"
        self.external_channel_id = f"{services.id_prefix}em-{self.call_id}"
        self._now: Callable[[], float] = loop.time
        self.started = self._now()
        self.started_at = dt.datetime.now(dt.UTC)
        self.answered_at: dt.datetime | None = None
        #: Set for a call the agent places (see :class:`OutboundCall`).
        self.outbound = context.outbound
        self.lifecycle = CallLifecycle(ringing=self.outbound is not None)
        dialplan = self.caller.dialplan
        # Who and what the call is, for its record: built once, the agent's
        # profile and model filled in when it is chosen.
        self._facts = CallFacts(
            call_id=self.call_id,
            direction=self.direction,
            purpose=self.outbound.request.purpose if self.outbound else "",
            started_at=self.started_at,
            controller_id=services.controller_id,
            caller_number=self.caller.caller.number,
            caller_name=self.caller.caller.name,
            dialled_number=dialled_number(self.args, dialplan.exten if dialplan else ""),
            model=settings.realtime_model,
            caller_channel_id=self.caller_channel_id,
            bridge_id=self.bridge_id,
            external_channel_id=self.external_channel_id,
        )
        self._dialer: Dialer | None = None
        self.agent: Agent | None = None
        self.media: CallMedia | None = None
        self._log = CallLogger(log, self.call_id)
        self._conversation: Conversation | None = None
        self._ended = asyncio.Event()
        self._caller_gone = False
        self._tools: ToolRunner | None = None
        self._leg = MediaLeg(
            services.ari,
            app=services.app,
            call_id=self.call_id,
            bridge_id=self.bridge_id,
            channel_id=self.external_channel_id,
            log=self._log,
        )
        self._model: ModelLink | None = None
        # When each frame of the caller's goes to the model (at once or paired).
        self._uplink = Uplink()
        self._input_convert, self._output_convert = converters_for(settings.realtime_audio)
        self._tasks: asyncio.TaskGroup | None = None
        self._timer_wake = asyncio.Event()
        self._timer_armed: float | None = None
        self._early_keys: list[tuple[str, float]] = []

    # --- what the outside reads ---------------------------------------------------------

    @property
    def caller_channel_id(self) -> str:
        """The id of the caller's channel."""
        return self.caller.id

    @property
    def direction(self) -> Direction:
        """``inbound`` or ``outbound``."""
        return "inbound" if self.outbound is None else "outbound"

    @property
    def state(self) -> CallState:
        """Where the call is in its life."""
        return self.lifecycle.state

    @property
    def end_reason(self) -> str:
        """Why the call ended, in words ("" while it goes on)."""
        ending = self.lifecycle.ending
        return ending.reason if ending else ""

    @property
    def elapsed(self) -> float:
        """Seconds since the call started."""
        return self._now() - self.started

    @property
    def input_chunks_dropped(self) -> int:
        """Caller audio chunks dropped because the model side stalled."""
        return self._model.audio_dropped if self._model is not None else 0

    @property
    def model_events_skipped(self) -> tuple[int, int]:
        """Model events skipped: ``(unparsable, unusable)`` (this session; the whole call)."""
        session = self._model.session if self._model is not None else None
        invalid = session.invalid_events if session is not None else 0
        unusable = self._conversation.unusable_events if self._conversation is not None else 0
        return invalid, unusable

    @property
    def model_ready(self) -> bool:
        """True once the model session is configured."""
        return self._model is not None and self._model.ready.is_set()

    @property
    def model_session_id(self) -> str:
        """The model server's id of this call's session ("" before it is known)."""
        session = self._model.session if self._model is not None else None
        return session.info.id if session is not None and session.info is not None else ""

    @property
    def truncations(self) -> int:
        """Agent items cut short by the caller talking over them."""
        return self._conversation.truncations if self._conversation else 0

    @property
    def transcript(self) -> list[TranscriptLine]:
        """Every utterance so far."""
        return self._conversation.transcript if self._conversation else []

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every function call of the model so far."""
        return self._conversation.tool_calls if self._conversation else []

    # --- inputs from the controller ---------------------------------------------------

    def on_event(self, event: AriEvent) -> None:
        """An ARI event about one of this call's channels (never blocks)."""
        channel = event_channel(event)
        if channel is None:
            return
        if channel.id == self.external_channel_id:
            if isinstance(event, StasisStart):
                self._leg.channel_started()
            elif isinstance(event, ChannelDestroyed | StasisEnd):
                self.request_end(Outcome.FAILED, "externalMedia channel went away")
            return
        if channel.id != self.caller_channel_id:
            return
        if self._dialer is not None and self._dialer.on_event(event):
            return
        if isinstance(event, ChannelDtmfReceived):
            conversation = self._conversation
            if conversation is None:  # the agent is still being chosen
                self._early_keys.append((event.digit, self._now()))
            else:
                conversation.caller_dtmf(event.digit, self._now())
                self._poke_timer()
            at_ms = round(self.elapsed * 1000)
            self._observe("dtmf", DtmfEntry(direction="caller", digits=event.digit, at_ms=at_ms))
        elif isinstance(event, ChannelHangupRequest | ChannelDestroyed):
            self.on_caller_gone("caller hung up")
        elif isinstance(event, StasisEnd):
            self.on_caller_gone("caller left Stasis")

    def on_caller_gone(self, reason: str) -> None:
        """The caller's channel is gone or left the app."""
        self._caller_gone = True
        transferring = self._tools.transferring_to if self._tools else None
        if transferring is not None:
            self.request_end(Outcome.TRANSFERRED, f"transferred to {transferring}")
        else:
            self.request_end(Outcome.CALLER_HUNG_UP, reason)

    def on_asterisk_lost(self, reason: str) -> None:
        """ARI has been unreachable too long: end the call, asking nothing of Asterisk.

        If the caller's channel outlives this, the reconcile after the next
        connection hands it back to the dialplan (nobody serves it).
        """
        self._caller_gone = True
        self.request_end(Outcome.FAILED, reason)

    def request_end(self, outcome: Outcome, reason: str) -> None:
        """End the call; the first outcome given wins."""
        if self.lifecycle.end(outcome, reason):
            if self._conversation is not None:
                self._conversation.stop()
            self._ended.set()

    # --- life ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Set up, serve until something ends the call, and tear down exactly once."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                # Set-up runs beside the wait: whatever ends the call while it
                # rings or sets up (no answer, a hang-up) cancels it at once.
                tasks.create_task(self._setup(tasks), name=f"setup-{self.call_id}")
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
            self._log.warning("call failed %s", kv(error=exc))
            self.request_end(Outcome.FAILED, f"failed: {type(exc).__name__}")
        except* Exception:
            self._log.exception("call crashed")
            self.request_end(Outcome.FAILED, "crashed")
        finally:
            await asyncio.shield(self._teardown())

    async def _setup(self, tasks: asyncio.TaskGroup) -> None:
        services = self.services
        ari, settings = services.ari, self.settings
        outbound = self.outbound
        if outbound is None:
            args = parse_stasis_args(self.args)
            profile = args.get("profile") or await self._channel_profile()
        else:
            profile = outbound.request.profile
        fields = self._template_fields()
        agent, warning = resolve_agent(settings, services.agents, profile, fields)
        if warning:
            self._log.warning("agent %s", kv(warning=warning))
        if outbound is not None:
            agent = outbound_agent(agent, outbound.request, fields, settings)
        self.agent = agent
        self._facts = replace(self._facts, profile=agent.profile, model=agent.model)
        config = conversation_config(agent, settings)
        if outbound is not None:
            config = replace(
                config,
                max_hold_seconds=settings.max_hold_seconds,
                max_call_seconds=outbound.request.max_duration or config.max_call_seconds,
            )
        conversation = self._conversation = Conversation(config, now=self.started, log=self._log)
        self._tools = ToolRunner(
            ari,
            services.http_tools,
            agent,
            channel_id=self.caller_channel_id,
            call_id=self.call_id,
            caller_number=self.caller.caller.number,
            log=self._log,
        )
        for digit, at in self._early_keys:
            conversation.caller_dtmf(digit, at)
        tasks.create_task(self._run_timers(conversation), name=f"timers-{self.call_id}")

        # The model session opens while the phone rings or is answered: the
        # slowest step, so the agent is ready when the far end is.
        link = self._model = self._link(agent, conversation)
        model = tasks.create_task(link.open(), name=f"model-open-{self.call_id}")
        if outbound is None:
            await ari.answer(self.caller_channel_id)
            self.answered_at = dt.datetime.now(dt.UTC)
            self._log.info("answered %s", kv(profile=agent.profile))
            services.observers.call_started(self.record())
        elif not await self._dial(outbound):
            model.cancel()  # no model session outlives a call nobody answered
            return

        media = self.media = await CallMedia.open(
            services.clock,
            settings.media_address,
            settings.media_port_range,
            self._on_caller_audio,
            on_item_started=conversation.playback_started,
        )
        services.router.claim_channel(self.external_channel_id, self)
        await self._leg.connect(self.caller_channel_id, media)
        local, asterisk = media.local_address, self._leg.asterisk_address
        self._log.info(
            "media up %s",
            kv(local=_address(local), asterisk=_address(asterisk), audio=settings.realtime_audio),
        )
        tasks.create_task(link.pump_audio(), name=f"model-audio-{self.call_id}")
        await model
        if self.lifecycle.over:
            return  # ended while setting up (e.g. the caller hung up): teardown follows
        self.lifecycle.connected()
        tasks.create_task(link.run(), name=f"model-recv-{self.call_id}")
        tasks.create_task(link.pump_events(), name=f"model-send-{self.call_id}")
        self._execute(conversation.session_ready(self._now(), link.expires_in))
        dialer = self._dialer
        if dialer is not None and (message := dialer.machine_message) is not None:
            self._execute(conversation.machine_answered(message, self._now()))

    async def _dial(self, outbound: OutboundCall) -> bool:
        """Ring the far end (and run AMD); False when the call ends here."""
        dialer = self._dialer = Dialer.for_call(
            self.services,
            outbound,
            call_id=self.call_id,
            channel_id=self.caller_channel_id,
            log=self._log,
        )
        self.services.observers.call_started(self.record())  # a ringing call is listed too
        ended = await dialer.connect(on_answer=self._answered)
        if ended is None:
            return True
        if ended.channel_gone:
            self._caller_gone = True
        if ended.result is not None:
            assert self._conversation is not None
            self._conversation.result = ended.result
        self.request_end(ended.outcome, ended.reason)
        return False

    def _answered(self) -> None:
        self.lifecycle.answered()
        self.answered_at = dt.datetime.now(dt.UTC)

    async def _channel_profile(self) -> str | None:
        """The profile from the ``ARI_REALTIME_PROFILE`` channel variable, if set."""
        try:
            value = await self.services.ari.get_variable(
                self.caller_channel_id, "ARI_REALTIME_PROFILE"
            )
        except AriError:  # 404 when the variable is unset: the usual case
            return None
        return value or None

    def _template_fields(self) -> dict[str, str]:
        facts = self._facts
        return {
            "caller_number": facts.caller_number,
            "caller_name": facts.caller_name,
            "dialed_number": facts.dialled_number,
            "date": dt.date.today().isoformat(),
            "call_id": self.call_id,
        }

    # --- the model session --------------------------------------------------------------

    def _link(self, agent: Agent, conversation: Conversation) -> ModelLink:
        settings = self.settings

        async def open_session() -> RealtimeSession:
            session = await connect_realtime(
                settings.realtime_url,
                settings.openai_api_key,
                agent.model,
                azure=settings.is_azure,
                timeout=settings.realtime_connect_timeout,
                max_message_bytes=settings.realtime_max_message_bytes,
            )
            update = session_update(
                agent,
                settings,
                interrupt_response=conversation.server_interrupts,
                today=dt.date.today(),
            )
            try:
                await session.start(update)
            except BaseException:
                with contextlib.suppress(RealtimeError, OSError):
                    await session.close()
                raise
            self._log.info("model ready %s", kv(model=agent.model))
            return session

        uplink = self._uplink

        def on_event(event: ServerEvent) -> None:
            # The uplink sends at once what could move the turn detection.
            if isinstance(event, InputAudioBufferSpeechStarted):
                uplink.model_hears_speech = True
            elif isinstance(event, InputAudioBufferSpeechStopped):
                uplink.model_hears_speech = False
            self._execute(conversation.model_event(event, self._now(), self._playback()))

        def on_lost(reason: str) -> None:
            conversation.session_lost(self._now())

        def on_restored(expires_in: float | None) -> None:
            self._execute(conversation.session_restored(self._now(), expires_in))

        return ModelLink(
            open_session,
            on_event=on_event,
            on_lost=on_lost,
            on_restored=on_restored,
            reconnect_seconds=settings.realtime_reconnect_seconds,
            log=self._log,
        )

    def _on_caller_audio(self, payload: bytes) -> None:
        """u-law from Asterisk (or filled silence), called per frame as it arrives: keep it cheap.

        The :class:`Uplink` says whether the frame goes to the model now or
        with the next one; what goes is written to the websocket at once when
        it can take it (:meth:`RealtimeSession.send_audio_now`), else queued.
        """
        conversation = self._conversation
        if conversation is not None and conversation.wants_caller_level and is_loud(payload):
            conversation.caller_loud(self._now())
        ulaw = self._uplink.push(payload)
        if ulaw is None:
            return  # paired with the next frame (it cannot move the turn detection)
        chunk = self._input_convert.convert(ulaw)
        if self._model is not None and (conversation is None or conversation.forwards_audio):
            self._model.send_audio(chunk)

    # --- carrying out the conversation's actions ---------------------------------------------

    def _playback(self) -> Playback:
        media = self.media
        return SILENT if media is None else Playback(media.speaking, media.current_item)

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Play):
                if self.media is not None:
                    self.media.play(action.item_id, self._output_convert.convert(action.audio))
            elif isinstance(action, Send):
                if self._model is not None:
                    self._model.send(action.event)
            elif isinstance(action, EndItem):
                if self.media is not None:
                    # The resampler holds a few ms back; they belong to this item.
                    tail = self._output_convert.flush()
                    if tail:
                        self.media.play(action.item_id, tail)
                    self.media.end_item(action.item_id)
            elif isinstance(action, Interrupt):
                self._interrupt()
            elif isinstance(action, RunTool):
                assert self._tasks is not None
                self._tasks.create_task(self._run_tool(action))
            elif isinstance(action, EndCall):
                self.request_end(action.outcome, action.reason)
            elif isinstance(action, TranscriptLine):
                self._log.info("transcript %s", kv(role=action.role, t=action.at, text=action.text))
                self._observe("transcript", transcript_entry(action))
            elif isinstance(action, TurnEnded):
                self._observe("turn", turn_entry(action.turn))
            elif isinstance(action, RenewSession):
                if self._model is not None:
                    self._model.renew(action.reason)
            elif isinstance(action, ModelError):
                self.services.model_errors(action.code)
            elif isinstance(action, ToolCallEnded):
                self._observe("tool_call", tool_call_entry(action.call, self.started))
        self._poke_timer()

    def _observe(self, kind: LiveEventKind, entry: BaseModel) -> None:
        data = entry.model_dump(mode="json")
        self.services.observers.call_event(self.call_id, kind, data)

    def _interrupt(self) -> None:
        cuts = self.media.interrupt() if self.media is not None else []
        self._output_convert.reset()
        assert self._conversation is not None
        heard = [Heard(c.item_id, c.played_ms, c.received_ms) for c in cuts if not c.finished]
        self._execute(self._conversation.interrupted(heard))

    def _poke_timer(self) -> None:
        conversation = self._conversation
        if conversation is not None and conversation.next_timer != self._timer_armed:
            self._timer_wake.set()

    async def _run_timers(self, conversation: Conversation) -> None:
        """Call the conversation's timer when it is due (it says when)."""
        wake = self._timer_wake
        while True:
            due = conversation.next_timer
            if due is not None and due <= self._now():
                self._execute(conversation.timer(self._now(), self._playback()))
                continue
            wake.clear()
            self._timer_armed = due
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due):
                    await wake.wait()

    # --- tools --------------------------------------------------------------------------

    async def _run_tool(self, run: RunTool) -> None:
        assert self._tools is not None and self._conversation is not None
        ok = True
        try:
            result = await self._tools.run(run.name, run.arguments)
        except ToolError as exc:
            ok, result = False, tool_result(False, error=str(exc))
            self._log.info("tool refused %s", kv(tool=run.name, error=exc))
        if self._tools.handed_off:
            self.request_end(Outcome.TRANSFERRED, f"transferred to {run.arguments['target']}")
        self._execute(self._conversation.tool_finished(run.call_id, result, self._now(), ok=ok))

    # --- the record ---------------------------------------------------------------------------

    def record(self, *, final: bool = False) -> CallRecord:
        """The call's record so far (``final``: after teardown)."""
        record = build_record(
            self._facts,
            self._conversation,
            answered_at=self.answered_at,
            ended_at=dt.datetime.now(dt.UTC) if final else None,
            ending=self.lifecycle.ending if final else None,
            media=self.media.summary() if self.media is not None else None,
            cost=self.services.cost,
        )
        if self._dialer is not None:
            self._dialer.fill_record(record)
        return record

    # --- teardown --------------------------------------------------------------------------

    async def _teardown(self) -> None:
        """Release everything this call holds, exactly once, whatever ended it."""
        services = self.services
        ari = services.ari
        if not self.lifecycle.over:  # e.g. cancelled from outside
            self.request_end(Outcome.HANDED_BACK, "controller stopping")
        media = self.media
        if media is not None:
            media.close()
        if self._model is not None:
            await self._model.close()
        await self._leg.release()
        ending = self.lifecycle.ending
        assert ending is not None
        handed_off = self._tools is not None and self._tools.handed_off
        if not self._caller_gone and not handed_off:
            try:
                if ending.outcome.to_dialplan:
                    result = ending.reason.replace(" ", "_").replace(":", "")
                    await ari.set_variable(self.caller_channel_id, RESULT_VARIABLE, result)
                    await ari.continue_in_dialplan(self.caller_channel_id)
                else:
                    await ari.hangup(self.caller_channel_id)
            except AriError as exc:
                self._log.debug("caller already gone %s", kv(error=exc))
        services.router.release_channel(self.external_channel_id)
        self.lifecycle.ended()
        fields: dict[str, object] = {
            "outcome": ending.outcome.value,
            "reason": ending.reason,
            "duration_s": round(self.elapsed, 3),
        }
        if media is not None:
            fields.update(media.summary().as_fields())
        fields.update(
            input_dropped=self.input_chunks_dropped,
            truncations=self.truncations,
            model_renewals=self._model.renewals if self._model is not None else 0,
        )
        link_session = self._model.session if self._model is not None else None
        skipped = (link_session.invalid_events if link_session is not None else 0) + (
            self._conversation.unusable_events if self._conversation is not None else 0
        )
        fields["model_events_skipped"] = skipped
        record = self.record(final=True)
        fields["cost_usd"] = record.cost_usd
        self._log.info("StasisEnd %s", kv(**fields))
        services.observers.call_ended(record)


def _address(address: tuple[str, int] | None) -> str:
    return "-" if address is None else f"{address[0]}:{address[1]}"
