"""The Stasis app supervisor: ARI events in, one :class:`Call` task per call.

Theory of operation:

* One events websocket registers the app. Each event is routed by channel id
  to the call that owns the channel; a StasisStart of a channel nobody owns
  is a new inbound call.
* Each call runs in its own task, inside its own TaskGroup (see
  :mod:`controller.call.call`). A failing call is logged and torn down; it
  never disturbs the supervisor or the other calls. The same holds for
  events: one that a call fails to handle ends that call (the caller is
  handed back to the dialplan), and one the supervisor fails to handle is
  logged and dropped; a new caller whose call cannot even be created is
  handed back at once.
* When the websocket drops, Asterisk keeps the calls (media keeps flowing)
  but drops their events and does not replay StasisStart. We reconnect with
  backoff and reconcile: calls whose caller channel vanished are ended, and
  bridges / externalMedia channels carrying our id prefix that no live call
  owns are deleted (nothing in Asterisk would ever expire them). The same
  reconciliation runs at start-up and cleans up after a crashed predecessor.
* On stop, every call is ended the same way as when the caller hangs up,
  except that the caller is handed back to the dialplan (``continue``), so
  the operator's dialplan decides what happens next (e.g. a human queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from controller.agents import AgentsFile, dialled_number, load_agents_file, parse_stasis_args
from controller.ari.events import (
    AriEvent,
    Channel,
    ChannelDestroyed,
    ChannelHangupRequest,
    StasisEnd,
    StasisStart,
    event_channel,
)
from controller.ari.rest import AriClient
from controller.ari.stream import AriEventStream
from controller.audio.convert import preload
from controller.call.call import RESULT_VARIABLE, Call
from controller.call.http_tools import HttpToolClient
from controller.call.services import (
    CallContext,
    CallServices,
    ChannelOwner,
    OutboundCall,
    no_cost,
    no_count,
)
from controller.call.state import Outcome
from controller.config import Settings, ari_url_advice
from controller.drain import Drain
from controller.errors import AriAuthError, AriConnectionError, AriError, AriNotFound, OutboundBusy
from controller.eventloop import loop_name
from controller.logs import kv
from controller.media.clock import MediaClock
from controller.outbound import OutboundPolicy, OutboundRequest
from controller.records import CallObserver, Observers, UsageTotals

log = logging.getLogger("controller.app")

CallFactory = Callable[[CallContext, CallServices], Call]


class Controller:
    """Runs the Stasis app until :meth:`request_stop` is called.

    Args:
        settings: validated settings.
        call_factory: builds the :class:`Call` for a new inbound channel
            (tests and the demo may pass their own).
        agents: the parsed ``AGENTS_FILE`` (read from the settings if not given).

    Raises:
        ConfigError: ``AGENTS_FILE`` is missing or invalid.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        call_factory: CallFactory | None = None,
        agents: AgentsFile | None = None,
        observers: CallObserver | None = None,
        cost: Callable[[str, UsageTotals], float] | None = None,
        model_errors: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._call_factory: CallFactory = call_factory or Call
        self._ari = AriClient(
            settings.ari_url, settings.ari_user, settings.ari_password.get_secret_value()
        )
        self._http_tools = HttpToolClient()
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self.calls: dict[str, Call] = {}
        self._drain = Drain(self.calls, self._stop, log)
        self._by_channel: dict[str, ChannelOwner] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: The current events websocket (None between connections).
        self.stream: AriEventStream | None = None
        #: Prefix of every bridge / channel id this app creates.
        self.id_prefix = f"{settings.ari_app}-"
        #: One clock drives every call's 20 ms playout (not a timer per call).
        self.clock = MediaClock()
        # pcm24k's resampler (numpy) is imported now, not while a call waits.
        preload(settings.realtime_audio)
        #: Profiles, transfer targets and custom tools (``AGENTS_FILE``).
        self.agents: AgentsFile | None = agents
        if agents is None and settings.agents_file:
            self.agents = load_agents_file(settings.agents_file, settings=settings)
        #: What may be dialled (``OUTBOUND_ALLOW`` and friends).
        self.outbound = OutboundPolicy(
            settings.outbound_patterns,
            settings.outbound_trunk,
            settings.outbound_max_concurrent,
        )
        #: What every call is given (the controller is never a call's service locator).
        self.services = CallServices(
            settings=settings,
            ari=self._ari,
            clock=self.clock,
            router=self,
            http_tools=self._http_tools,
            agents=self.agents,
            id_prefix=self.id_prefix,
            observers=observers or Observers(),
            controller_id=settings.controller_id,
            cost=cost or no_cost,
            model_errors=model_errors or no_count,
        )

    @property
    def ari(self) -> AriClient:
        """The REST client."""
        return self._ari

    @property
    def ready(self) -> asyncio.Event:
        """Set once the app is registered and reconciled (for tests and the demo)."""
        return self._ready

    # --- what the HTTP API asks (controller.http.LiveController) ------------------------

    def hangup(self, call_id: str) -> bool:
        """An operator ends a live call; False when no such call is live."""
        call = self.calls.get(call_id)
        if call is None:
            return False
        call.request_end(Outcome.OPERATOR_HUNG_UP, "an operator ended the call")
        return True

    def originate(self, request: OutboundRequest) -> str:
        """Place an outbound call for ``request``; return its call id at once.

        The phone rings while this returns; the call then runs like any other
        (its record says ``direction: outbound``).

        Raises:
            OutboundRefused: ``OUTBOUND_ALLOW`` does not allow the destination.
            OutboundInvalid: e.g. ``number`` without ``OUTBOUND_TRUNK``.
            OutboundBusy: ``OUTBOUND_MAX_CONCURRENT`` calls are live, or the
                controller is not connected to Asterisk right now.
        """
        dial = self.outbound.dial_string(request)
        live = sum(1 for call in self.calls.values() if call.outbound is not None)
        if live >= self.outbound.max_concurrent:
            raise OutboundBusy(
                f"{live} outbound calls are live (OUTBOUND_MAX_CONCURRENT="
                f"{self.outbound.max_concurrent}); try again when one has ended"
            )
        if not self._ready.is_set():
            raise OutboundBusy("not connected to Asterisk right now; try again shortly")
        if self.draining:
            raise OutboundBusy("the controller is shutting down; place the call elsewhere")
        call_id = self.new_call_id()
        channel = Channel(id=f"{self.id_prefix}out-{call_id}", name=dial)
        context = CallContext(call_id, channel, outbound=OutboundCall(request, dial))
        call = self._call_factory(context, self.services)
        self.calls[call_id] = call
        self.claim_channel(channel.id, call)
        log.info("outbound call %s", kv(call=call_id, dial=dial, profile=request.profile or "-"))
        self._spawn(self._run_call(call))
        return call_id

    def health(self) -> dict[str, bool]:
        """Is the events websocket up, and is the app registered."""
        return {"ari_connected": self.stream is not None, "app_registered": self._ready.is_set()}

    def request_stop(self) -> None:
        """Ask :meth:`run` to end every call (handed back to the dialplan) and return."""
        self._stop.set()

    def request_drain(self, seconds: float) -> None:
        """Stop taking calls; stop once the live calls have ended, or after ``seconds``.

        New callers are handed back to the dialplan at once
        (``ARI_REALTIME_RESULT=controller_draining``) and new outbound calls are
        refused. Asking again (a second SIGTERM) stops at once.
        """
        if self._drain.request(seconds):
            self._spawn(self._drain.run(seconds))

    @property
    def draining(self) -> bool:
        """Set by :meth:`request_drain`: no new calls are taken."""
        return self._drain.draining

    # --- channel ownership ---------------------------------------------------------

    def claim_channel(self, channel_id: str, owner: ChannelOwner) -> None:
        """Route events of ``channel_id`` to ``owner`` (before creating it)."""
        self._by_channel[channel_id] = owner

    def release_channel(self, channel_id: str) -> None:
        """Stop routing events of ``channel_id``."""
        self._by_channel.pop(channel_id, None)

    def new_call_id(self) -> str:
        """A short unique id; bridge and channel ids are derived from it."""
        return uuid.uuid4().hex[:12]

    # --- main loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Register the app and serve calls until stopped.

        Raises:
            AriAuthError: the ARI credentials were rejected (not retried).
        """
        log.info(
            "starting %s",
            kv(
                app=self.settings.ari_app,
                ari=self.settings.ari_url,
                audio=self.settings.realtime_audio,
                loop=loop_name(asyncio.get_running_loop()),
            ),
        )
        self.clock.start()
        loop = asyncio.get_running_loop()
        try:
            backoff = 0.5
            lost_at: float | None = None  # when ARI went away (None: connected)
            lost_handled = False  # the calls of this outage were ended
            while not self._stop.is_set():
                stream = AriEventStream(self._ari, self.settings.ari_app)
                self.stream = stream
                connected = False
                try:
                    await stream.connect()
                    connected = True
                    lost_at, lost_handled = None, False
                    log.info("registered %s", kv(app=self.settings.ari_app))
                    await self.reconcile()
                    self._ready.set()
                    backoff = 0.5
                    await self._consume(stream)
                except AriAuthError:
                    raise
                except AriError as exc:
                    if self._stop.is_set():
                        break
                    self._ready.clear()
                    if lost_at is None:
                        lost_at = loop.time()
                    log.warning("%s", self._retry_message(exc, connected, backoff))
                    wait = backoff
                    limit = self.settings.ari_lost_seconds
                    if limit and self.calls and not lost_handled:
                        left = lost_at + limit - loop.time()
                        if left <= 0:
                            lost_handled = True
                            self._end_calls_asterisk_lost(limit)
                        else:
                            wait = min(wait, left)  # wake at the limit, not after it
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), wait)
                    backoff = min(backoff * 2, 10.0)
                finally:
                    self.stream = None
                    await stream.close()
        finally:
            await self._end_all_calls()
            await self.clock.stop()
            await self._http_tools.close()
            await self._ari.close()
            log.info("stopped")

    def _end_calls_asterisk_lost(self, limit: float) -> None:
        """End every call: Asterisk was unreachable for ``limit`` s (ARI_LOST_SECONDS)."""
        calls = list(self.calls.values())
        log.warning(
            "ending calls: Asterisk unreachable for ARI_LOST_SECONDS %s",
            kv(calls=len(calls), seconds=limit),
        )
        for call in calls:
            call.on_asterisk_lost(f"Asterisk unreachable for {limit:g} s")

    def _retry_message(self, exc: AriError, connected: bool, backoff: float) -> str:
        """The warning for a failed attempt: a connection that never opened is not "lost"."""
        url = self.settings.ari_url
        if connected:
            return f"ARI connection lost, retrying in {backoff:.1f}s: {exc}"
        if isinstance(exc, AriConnectionError):
            return (
                f"cannot reach Asterisk at {url}, retrying in {backoff:.1f}s: {exc.reason or exc}"
            )
        advice = ari_url_advice(url) if isinstance(exc, AriNotFound) else ""
        return (
            f"Asterisk at {url} refused the events websocket, retrying in {backoff:.1f}s: "
            f"{exc}" + (f"; {advice}" if advice else "")
        )

    async def _consume(self, stream: AriEventStream) -> None:
        """Dispatch events until the stream fails or a stop is requested."""
        reader = asyncio.ensure_future(self._read(stream))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        if reader.done() and not reader.cancelled():
            reader.result()  # re-raise AriConnectionError

    async def _read(self, stream: AriEventStream) -> None:
        try:
            async for event in stream.events():
                self.dispatch(event)
        except AriError:
            raise
        except Exception as exc:
            # A bug, never expected: reconnect and reconcile rather than stop
            # serving every call.
            log.exception("reading ARI events failed")
            raise AriConnectionError(f"ARI events stream failed ({type(exc).__name__})") from exc

    def dispatch(self, event: AriEvent) -> None:
        """Route one event; never raises: one bad event must not stop the app.

        A call that fails on its event is ended (handed back to the dialplan);
        the other calls never see it.
        """
        try:
            self._dispatch(event)
        except Exception:
            log.exception("event handling failed %s", kv(type=event.type))

    def _dispatch(self, event: AriEvent) -> None:
        channel = event_channel(event)
        if channel is None:
            if event.type == "ApplicationReplaced":
                log.error(
                    "another connection registered Stasis app %r: new calls go there now; "
                    "run one controller per ARI_APP",
                    self.settings.ari_app,
                )
            return
        call = self._by_channel.get(channel.id)
        if call is not None:
            try:
                call.on_event(event)
            except Exception:
                log.exception("call failed on an ARI event %s", kv(type=event.type))
                call.request_end(Outcome.FAILED, "crashed on an ARI event")
            return
        if isinstance(event, StasisStart):
            if channel.id.startswith(self.id_prefix):
                # One of ours whose call already ended: it must not linger.
                self._spawn(self._delete_channel(channel.id))
                return
            if self.draining:
                log.info("draining: caller handed back %s", kv(channel=channel.id))
                self._spawn(self._hand_back(channel.id, "controller_draining"))
                return
            self._start_call(event)
        elif not isinstance(event, StasisEnd | ChannelHangupRequest | ChannelDestroyed):
            log.debug("event for unknown channel %s", kv(type=event.type, channel=channel.id))

    def _start_call(self, event: StasisStart) -> None:
        context = CallContext(
            call_id=self.new_call_id(), channel=event.channel, args=list(event.args)
        )
        try:
            call = self._call_factory(context, self.services)
        except Exception:
            log.exception("cannot start a call %s", kv(channel=event.channel.id))
            self._spawn(self._hand_back(event.channel.id, "failed_to_start"))
            return
        self.calls[call.call_id] = call
        self.claim_channel(event.channel.id, call)
        dialplan = event.channel.dialplan
        fields: dict[str, object] = {
            "call": call.call_id,
            "channel": event.channel.name,
            "caller": event.channel.caller.number,
            "dialled": dialled_number(context.args, dialplan.exten if dialplan else ""),
        }
        # The profile the dialplan asked for, if any (the "answered" line says which it got).
        profile = parse_stasis_args(context.args).get("profile")
        if profile:
            fields["profile"] = profile
        log.info("StasisStart %s", kv(**fields))
        self._spawn(self._run_call(call))

    async def _run_call(self, call: Call) -> None:
        try:
            await call.run()
        except Exception:
            log.exception("call failed %s", kv(call=call.call_id))
        finally:
            self.calls.pop(call.call_id, None)
            self._drain.call_ended()
            for channel_id in [c for c, owner in self._by_channel.items() if owner is call]:
                self._by_channel.pop(channel_id, None)

    def _spawn(self, coro: asyncio.Future[None] | object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hand_back(self, channel_id: str, result: str) -> None:
        """Send a caller nobody serves back to the dialplan, with ``result`` set."""
        with contextlib.suppress(AriError):
            await self._ari.set_variable(channel_id, RESULT_VARIABLE, result)
            await self._ari.continue_in_dialplan(channel_id)

    async def _delete_channel(self, channel_id: str) -> None:
        with contextlib.suppress(AriError):
            await self._ari.hangup(channel_id)

    # --- reconciliation ----------------------------------------------------------------

    async def reconcile(self) -> None:
        """Make Asterisk's state and ours agree after (re)connecting."""
        channels = await self._ari.list_channels()
        bridges = await self._ari.list_bridges()
        live = {c.id for c in channels}
        for call in list(self.calls.values()):
            if call.caller_channel_id not in live:
                call.on_caller_gone("caller channel vanished while ARI was disconnected")
        owned = set(self._by_channel)
        for channel in channels:
            if channel.id in owned:
                continue
            if channel.id.startswith(self.id_prefix):
                log.info("reconcile: deleting orphaned channel %s", kv(channel=channel.id))
                await self._delete_channel(channel.id)
            elif self._in_our_app(channel):
                # A caller whose call nobody serves: a crashed controller's, or
                # its StasisStart was lost. Silence forever is the worst answer;
                # the dialplan decides (its handed_back branch).
                log.warning(
                    "reconcile: handing back a caller nobody serves %s", kv(channel=channel.id)
                )
                await self._hand_back(channel.id, "controller_restarted")
        active_bridges = {c.bridge_id for c in self.calls.values()}
        for bridge in bridges:
            if bridge.id.startswith(self.id_prefix) and bridge.id not in active_bridges:
                log.info("reconcile: destroying orphaned bridge %s", kv(bridge=bridge.id))
                with contextlib.suppress(AriNotFound):
                    await self._ari.destroy_bridge(bridge.id)

    def _in_our_app(self, channel: Channel) -> bool:
        """True when ``channel`` sits in ``Stasis()`` of this app (per its dialplan location)."""
        where = channel.dialplan
        if where is None or where.app_name != "Stasis":
            return False
        return where.app_data.split(",", 1)[0].strip() == self.settings.ari_app

    async def _end_all_calls(self) -> None:
        calls = list(self.calls.values())
        for call in calls:
            call.request_end(Outcome.HANDED_BACK, "controller stopping")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        for task in list(self._tasks):
            task.cancel()
