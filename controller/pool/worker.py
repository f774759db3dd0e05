"""The controller of ``ARI_MODE=outbound``: one websocket from Asterisk per call.

Theory of operation:

* Nothing is registered with Asterisk. ``Stasis(app)`` finds no app of that
  name registered and uses the per-call template of ari.conf
  (``type=outbound_websocket``, websocket_client.conf
  ``connection_type=per_call_config``): Asterisk connects to ``ARI_LISTEN``
  (Basic auth = ``ARI_USER``/``ARI_PASSWORD``), names the application
  ``app:<channel name>`` and sends that call's events on that connection.
  The connection closes when ``Stasis()`` returns.
* Each connection is one call (:class:`_Session`), run by an ordinary
  :class:`~controller.call.call.Call` whose REST client is the connection
  itself (:class:`~controller.ari.percall.WebsocketAriClient`) and whose own
  channels (externalMedia, the dialled channel of an outbound call) join the
  per-call application, so their events come back on the same connection:
  one worker owns the whole call. Any number of workers can therefore serve
  the app behind an ordinary TCP load balancer.
* A connection without StasisStart is a reconnect of a call whose worker was
  lost; see :mod:`controller.pool.takeover`.
* Outbound calls (``POST /calls``): the worker that is asked originates, over
  HTTP to ``ARI_URL``, a *seed* channel (``Local/s@ari-realtime-seed``) into
  ``Stasis(app,outbound,CALL)`` with the request in a channel variable.
  Asterisk opens a per-call websocket for the seed to some worker, which
  dials the destination into *its* per-call application (so ringing, the
  answer, AMD and hang-up all come back on that connection) and runs the
  call as the inbound-mode controller does. The seed holds the connection
  open for the call and is hung up when it ends.
* Drain (first SIGTERM): the listening socket closes at once, so new calls go
  to the other workers (or, with none, ``Stasis()`` fails into the dialplan's
  unavailable branch); live calls finish for ``DRAIN_SECONDS``, then are
  handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

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
from controller.ari.listener import AriListener, tls_context
from controller.ari.percall import AriWebsocket, WebsocketAriClient
from controller.ari.rest import AriClient
from controller.ari.wsrest import per_call_channel_name
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
from controller.config import Settings, is_loopback_host
from controller.drain import Drain
from controller.errors import AriError, AriNotFound, OutboundBusy, OutboundError
from controller.eventloop import loop_name
from controller.logs import kv
from controller.media.clock import MediaClock
from controller.outbound import OutboundPolicy, OutboundRequest
from controller.pool.takeover import (
    LOST_RESULT,
    OUTBOUND_VARIABLE,
    SEED_CONTEXT,
    SERVED_VARIABLE,
    TAKEOVER_AFTER,
    Served,
    asterisk_time,
    call_resources,
    orphans,
    parse_served,
    seed_channel_id,
    served_value,
)
from controller.records import CallObserver, CallRecord, Observers, RecordSource, UsageTotals

log = logging.getLogger("controller.pool")

CallFactory = Callable[[CallContext, CallServices], Call]
#: Seconds a connection may go without StasisStart before it is given up.
START_TIMEOUT = 10.0
#: Seconds to wait, after a call ended, for Asterisk to close its connection
#: (it does 3 s after ``Stasis()`` returns).
CLOSE_WAIT = 8.0
#: Seconds between sweeps for what dead workers left behind (per Asterisk).
SWEEP_INTERVAL = 60.0


class PoolController:
    """Serves the per-call websockets on ``ARI_LISTEN`` until :meth:`request_stop`.

    Same interface as :class:`~controller.app.Controller` where they overlap
    (``run``, ``ready``, ``calls``, ``hangup``, ``health``, ``originate``,
    ``request_stop``, ``request_drain``).

    Args:
        settings: validated settings (``ARI_MODE=outbound``).
        call_factory: builds the :class:`Call` (tests pass their own).
        agents: the parsed ``AGENTS_FILE`` (read from the settings if not given).
        observers, cost, model_errors: as for the inbound controller.
        records: the store, to close the record of a call taken over from a lost worker.
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
        records: RecordSource | None = None,
    ) -> None:
        address = settings.ari_listen_address
        if address is None:
            raise ValueError("PoolController needs ARI_LISTEN")
        self.settings = settings
        self._call_factory: CallFactory = call_factory or Call
        self._records = records
        # Only for placing outbound calls' seed channels (HTTP to ARI_URL).
        self._http_ari = AriClient(
            settings.ari_url, settings.ari_user, settings.ari_password.get_secret_value()
        )
        self._http_tools = HttpToolClient()
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self.calls: dict[str, Call] = {}
        self._drain = Drain(self.calls, self._stop, log)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sessions: set[asyncio.Task[Any]] = set()
        self._placing = 0
        self._swept: dict[str, float] = {}
        self.id_prefix = f"{settings.ari_app}-"
        self.clock = MediaClock()
        self.agents: AgentsFile | None = agents
        if agents is None and settings.agents_file:
            self.agents = load_agents_file(settings.agents_file)
        self.outbound = OutboundPolicy(
            settings.outbound_patterns,
            settings.outbound_trunk,
            settings.outbound_max_concurrent,
        )
        self.observers: CallObserver = observers or Observers()
        self.services = CallServices(
            settings=settings,
            ari=self._http_ari,
            clock=self.clock,
            router=_NoRouting(),
            http_tools=self._http_tools,
            agents=self.agents,
            id_prefix=self.id_prefix,
            observers=self.observers,
            controller_id=settings.controller_id,
            cost=cost or no_cost,
            model_errors=model_errors or no_count,
        )
        tls = None
        if settings.ari_listen_cert:
            tls = tls_context(settings.ari_listen_cert, settings.ari_listen_key)
        self.listener = AriListener(
            address[0],
            address[1],
            user=settings.ari_user,
            password=settings.ari_password.get_secret_value(),
            on_connection=self._serve,
            accepting=self._accepting,
            ssl_context=tls,
        )

    @property
    def ready(self) -> asyncio.Event:
        """Set once the listener accepts connections."""
        return self._ready

    @property
    def ari(self) -> AriClient:
        """The HTTP REST client (``ARI_URL``), used only to place outbound calls."""
        return self._http_ari

    def _accepting(self) -> bool:
        return self._ready.is_set() and not self.draining and not self._stop.is_set()

    # --- what the HTTP API asks (controller.http.LiveController) ------------------------

    def hangup(self, call_id: str) -> bool:
        """An operator ends a live call on this worker; False when it is not here."""
        call = self.calls.get(call_id)
        if call is None:
            return False
        call.request_end(Outcome.OPERATOR_HUNG_UP, "an operator ended the call")
        return True

    def health(self) -> dict[str, bool]:
        """Is the listener open and taking calls."""
        return {"listening": self.listener.listening, "accepting_calls": self._accepting()}

    def originate(self, request: OutboundRequest) -> str:
        """Place an outbound call; return its id at once (any worker may end up serving it).

        Raises:
            OutboundRefused, OutboundInvalid: as for the inbound controller.
            OutboundBusy: ``OUTBOUND_MAX_CONCURRENT`` calls placed here are live,
                or this worker is draining.
        """
        self.outbound.dial_string(request)  # refused here, before anything is placed
        live = self._placing + sum(1 for c in self.calls.values() if c.outbound is not None)
        if live >= self.outbound.max_concurrent:
            raise OutboundBusy(
                f"{live} outbound calls are live on this worker (OUTBOUND_MAX_CONCURRENT="
                f"{self.outbound.max_concurrent}); try again when one has ended"
            )
        if not self._accepting():
            raise OutboundBusy("this controller is shutting down; place the call elsewhere")
        call_id = self.new_call_id()
        self._placing += 1
        self._spawn(self._place(call_id, request))
        return call_id

    async def _place(self, call_id: str, request: OutboundRequest) -> None:
        """Originate the seed channel; the worker its websocket reaches dials the call."""
        seed = seed_channel_id(self.id_prefix, call_id)
        started = dt.datetime.now(dt.UTC)
        log.info("placing outbound call %s", kv(call=call_id, seed=seed))
        try:
            await self._http_ari.originate(
                endpoint=f"Local/s@{SEED_CONTEXT}",
                app=self.settings.ari_app,
                app_args=f"outbound,{call_id}",
                timeout=10,
                channel_id=seed,
                variables={OUTBOUND_VARIABLE: request.model_dump_json(exclude_none=True)},
            )
        except AriError as exc:
            log.warning("could not place outbound call %s", kv(call=call_id, error=exc))
            record = CallRecord(
                id=call_id,
                direction="outbound",
                status="ended",
                controller_id=self.settings.controller_id,
                purpose=request.purpose,
                model=self.settings.realtime_model,
                started_at=started,
                ended_at=dt.datetime.now(dt.UTC),
                outcome=Outcome.FAILED.value,
                end_reason=f"could not reach Asterisk at ARI_URL to place it: {exc}",
            )
            self.observers.call_started(record)
            self.observers.call_ended(record)
        finally:
            self._placing -= 1

    def request_stop(self) -> None:
        """Ask :meth:`run` to hand every call back to the dialplan and return."""
        self._stop.set()

    def request_drain(self, seconds: float) -> None:
        """Stop listening at once; stop once live calls have ended, or after ``seconds``.

        Asking again (a second SIGTERM) stops at once.
        """
        if self._drain.request(seconds):
            self._spawn(self._stop_accepting_and_drain(seconds))

    async def _stop_accepting_and_drain(self, seconds: float) -> None:
        await self.listener.stop_accepting()
        await self._drain.run(seconds)

    @property
    def draining(self) -> bool:
        """Set by :meth:`request_drain`: no new calls are taken."""
        return self._drain.draining

    def new_call_id(self) -> str:
        """A short unique id; bridge and channel ids are derived from it."""
        return uuid.uuid4().hex[:12]

    # --- main loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Listen and serve calls until stopped.

        Raises:
            ConfigError: ``ARI_LISTEN`` cannot be bound.
        """
        settings = self.settings
        host = self.listener.host
        log.info(
            "starting %s",
            kv(
                app=settings.ari_app,
                mode="outbound",
                listen=settings.ari_listen,
                loop=loop_name(asyncio.get_running_loop()),
            ),
        )
        if self.listener.url.startswith("ws:") and not is_loopback_host(host):
            log.warning(
                "ARI_LISTEN is not a loopback address and has no TLS: Asterisk's ARI "
                "password crosses the network in clear text; set ARI_LISTEN_CERT and "
                "ARI_LISTEN_KEY, or keep the network private %s",
                kv(listen=settings.ari_listen),
            )
        self.clock.start()
        try:
            await self.listener.start()
            self._ready.set()
            await self._stop.wait()
        finally:
            self._ready.clear()
            await self.listener.stop_accepting()
            await self._end_all_calls()
            await self.listener.close()
            await self.clock.stop()
            await self._http_tools.close()
            await self._http_ari.close()
            log.info("stopped")

    async def _end_all_calls(self) -> None:
        for call in list(self.calls.values()):
            call.request_end(Outcome.HANDED_BACK, "controller stopping")
        pending = self._tasks | self._sessions
        if pending:
            await asyncio.wait(pending, timeout=10)
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: asyncio.Future[None] | object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one connection: one call -------------------------------------------------------

    async def _serve(self, connection: AriWebsocket) -> None:
        """Run one per-call connection (the listener closes it when this returns)."""
        session = _Session(self, connection)
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
        try:
            await session.run()
        finally:
            if task is not None:
                self._sessions.discard(task)

    async def run_call(self, call: Call) -> None:
        """Run ``call`` to its end, listed in :attr:`calls` meanwhile."""
        self.calls[call.call_id] = call
        try:
            await call.run()
        except Exception:
            log.exception("call failed %s", kv(call=call.call_id))
        finally:
            self.calls.pop(call.call_id, None)
            self._drain.call_ended()

    async def close_lost_record(self, call_id: str) -> None:
        """End the record of a call a lost worker was serving (when a store is known)."""
        if self._records is None:
            return
        try:
            record = await self._records.get(call_id)
        except Exception as exc:  # the store's own errors: a record is not worth a call
            log.warning("could not read the lost call's record %s", kv(call=call_id, error=exc))
            return
        if record is None or record.status != "live":
            return
        ended = record.model_copy(
            update={
                "status": "ended",
                "outcome": "controller_crashed",
                "ended_at": dt.datetime.now(dt.UTC),
                "end_reason": "its worker was lost; another handed the caller back",
            }
        )
        self.observers.call_ended(ended)

    async def sweep(self, ari: AriClient, asterisk_id: str, now: dt.datetime) -> None:
        """Delete what lost workers left in this Asterisk (at most every :data:`SWEEP_INTERVAL`)."""
        loop = asyncio.get_running_loop()
        last = self._swept.get(asterisk_id)
        if last is not None and loop.time() - last < SWEEP_INTERVAL:
            return
        self._swept[asterisk_id] = loop.time()
        try:
            channels, bridges = await ari.list_channels(), await ari.list_bridges()
            found = orphans(channels, bridges, self.id_prefix, now)
            for channel_id in found.channel_ids:
                with contextlib.suppress(AriError):
                    await ari.hangup(channel_id)
            for bridge_id in found.bridge_ids:
                with contextlib.suppress(AriError):
                    await ari.destroy_bridge(bridge_id)
        except AriError as exc:
            log.debug("sweep stopped %s", kv(error=exc))
            return
        if found.channel_ids or found.bridge_ids:
            log.warning(
                "swept what a lost worker left %s",
                kv(
                    channels=",".join(found.channel_ids) or "-",
                    bridges=",".join(found.bridge_ids) or "-",
                ),
            )


class _NoRouting:
    """Every event of a connection goes to its call: there is nothing to route."""

    def claim_channel(self, channel_id: str, owner: ChannelOwner) -> None:
        """Nothing to do."""

    def release_channel(self, channel_id: str) -> None:
        """Nothing to do."""


class _Session:
    """One connection from Asterisk and the call it carries."""

    def __init__(self, pool: PoolController, connection: AriWebsocket) -> None:
        self.pool = pool
        self.connection = connection
        self.ari = WebsocketAriClient(connection)
        self.call: Call | None = None
        self.seed: Channel | None = None
        self._early: list[AriEvent] = []
        loop = asyncio.get_running_loop()
        self._start: asyncio.Future[StasisStart] = loop.create_future()
        self._last_timestamp = ""

    async def run(self) -> None:
        reader = asyncio.create_task(self._read(), name=f"ari-ws-{self.connection.peer}")
        try:
            start = await self._wait_start()
            if start is not None:
                await self._serve(start)
            # Asterisk closes the connection once Stasis() has returned.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT):
                    await self.connection.wait_closed()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    # --- events -----------------------------------------------------------------------

    async def _read(self) -> None:
        async for event in self.connection.events():
            try:
                self._dispatch(event)
            except Exception:
                log.exception("event handling failed %s", kv(type=event.type))
        # The connection closed: a call still running has lost its Asterisk.
        call = self.call
        if call is not None and not call.lifecycle.over:
            call.request_end(Outcome.FAILED, "the websocket from Asterisk closed")

    def _dispatch(self, event: AriEvent) -> None:
        if event.timestamp:
            self._last_timestamp = event.timestamp
        if isinstance(event, StasisStart) and not self._start.done():
            self._start.set_result(event)
            return
        channel = event_channel(event)
        seed = self.seed
        if seed is not None and channel is not None and channel.id == seed.id:
            if isinstance(event, ChannelHangupRequest | ChannelDestroyed | StasisEnd):
                call = self.call
                if call is not None:
                    call.request_end(Outcome.FAILED, "the outbound call's seed channel went away")
            return
        if self.call is not None:
            self.call.on_event(event)
        elif channel is not None:
            self._early.append(event)

    # --- StasisStart, or a takeover ---------------------------------------------------

    async def _wait_start(self) -> StasisStart | None:
        """The call's StasisStart; None when the connection is a takeover or went away."""
        closed = asyncio.ensure_future(self.connection.wait_closed())
        waiters: set[asyncio.Future[Any]] = {self._start, closed}
        try:
            await asyncio.wait(waiters, timeout=TAKEOVER_AFTER)
            if self._start.done():
                return self._start.result()
            if self.connection.closed:
                return None
            if await self._take_over():
                return None
            await asyncio.wait(waiters, timeout=START_TIMEOUT - TAKEOVER_AFTER)
            if self._start.done():
                return self._start.result()
            if not self.connection.closed:
                log.warning(
                    "a websocket from Asterisk brought no call %s",
                    kv(peer=self.connection.peer, application=self.connection.application),
                )
                await self._hand_back_unstarted()
            return None
        finally:
            closed.cancel()

    async def _hand_back_unstarted(self) -> None:
        """Whoever sits in this connection's Stasis() goes back to the dialplan, never silence."""
        name = per_call_channel_name(self.connection.application, self.pool.settings.ari_app)
        if name is None:
            return
        with contextlib.suppress(AriError):
            channel = next((c for c in await self.ari.list_channels() if c.name == name), None)
            if channel is not None:
                await self.ari.set_variable(channel.id, RESULT_VARIABLE, "controller_no_start")
                await self.ari.continue_in_dialplan(channel.id)

    async def _take_over(self) -> bool:
        """Clean up and hand back a call whose worker was lost; False when it is no such call.

        A caller whose dialplan sends it into ``Stasis()`` again after being
        handed back still carries the first call's ``ARI_REALTIME_SERVED``; if
        Asterisk were also more than :data:`TAKEOVER_AFTER` late with its
        StasisStart, that new call would be read as a lost one and handed back
        (its fallback, not silence).
        """
        pool, ari = self.pool, self.ari
        name = per_call_channel_name(self.connection.application, pool.settings.ari_app)
        if name is None:
            return False
        try:
            channel = next((c for c in await ari.list_channels() if c.name == name), None)
            if channel is None:
                log.info("a lost call's channel is already gone %s", kv(channel=name))
                return True
            try:
                served = parse_served(await ari.get_variable(channel.id, SERVED_VARIABLE))
            except AriNotFound:
                served = None
            if served is None:
                return False  # a new call whose StasisStart is late
            await self._release_lost(channel, served)
        except AriError as exc:
            log.warning("taking over a lost call failed %s", kv(channel=name, error=exc))
            return True
        return True

    async def _release_lost(self, channel: Channel, served: Served) -> None:
        pool, ari = self.pool, self.ari
        log.warning(
            "took over a call whose worker was lost %s",
            kv(call=served.call_id, channel=channel.name, direction=served.direction),
        )
        ids = call_resources(pool.id_prefix, served.call_id)
        doomed = [ids.external_channel_id]
        if served.direction == "outbound":
            doomed.append(ids.outbound_channel_id)
        for channel_id in doomed:
            with contextlib.suppress(AriError):
                await ari.hangup(channel_id)
        with contextlib.suppress(AriError):
            await ari.destroy_bridge(ids.bridge_id)
        with contextlib.suppress(AriError):
            if served.direction == "outbound":
                await ari.hangup(channel.id)  # the seed: nobody is waiting on it
            else:
                await ari.set_variable(channel.id, RESULT_VARIABLE, LOST_RESULT)
                await ari.continue_in_dialplan(channel.id)
        await pool.close_lost_record(served.call_id)

    # --- serving the call ---------------------------------------------------------------

    async def _serve(self, start: StasisStart) -> None:
        pool, channel = self.pool, start.channel
        if pool.draining or not pool.ready.is_set():
            log.info("draining: caller handed back %s", kv(channel=channel.id))
            with contextlib.suppress(AriError):
                await self.ari.set_variable(channel.id, RESULT_VARIABLE, "controller_draining")
                await self.ari.continue_in_dialplan(channel.id)
            return
        args = list(start.args)
        if args[:1] == ["outbound"]:
            await self._serve_outbound(start)
            return
        call_id = pool.new_call_id()
        try:
            await self.ari.set_variable(
                channel.id, SERVED_VARIABLE, served_value(call_id, "inbound")
            )
        except AriError as exc:
            log.info("caller gone before the call started %s", kv(channel=channel.id, error=exc))
            return
        context = CallContext(call_id=call_id, channel=channel, args=args)
        call = self._new_call(context, start.application)
        dialplan = channel.dialplan
        fields: dict[str, object] = {
            "call": call.call_id,
            "channel": channel.name,
            "caller": channel.caller.number,
            "dialled": dialled_number(args, dialplan.exten if dialplan else ""),
            "peer": self.connection.peer,
        }
        profile = parse_stasis_args(args).get("profile")
        if profile:
            fields["profile"] = profile
        log.info("StasisStart %s", kv(**fields))
        await self._run(call)

    async def _serve_outbound(self, start: StasisStart) -> None:
        pool, seed = self.pool, start.channel
        self.seed = seed
        args = list(start.args)
        call_id = args[1] if len(args) > 1 and args[1].isalnum() else pool.new_call_id()
        try:
            text = await self.ari.get_variable(seed.id, OUTBOUND_VARIABLE)
            request = OutboundRequest.model_validate_json(text)
            dial = pool.outbound.dial_string(request)
        except (AriError, ValidationError, OutboundError) as exc:
            log.warning("refused an outbound seed %s", kv(call=call_id, error=exc))
            with contextlib.suppress(AriError):
                await self.ari.hangup(seed.id)
            return
        with contextlib.suppress(AriError):
            await self.ari.set_variable(seed.id, SERVED_VARIABLE, served_value(call_id, "outbound"))
        ids = call_resources(pool.id_prefix, call_id)
        channel = Channel(id=ids.outbound_channel_id, name=dial)
        context = CallContext(call_id, channel, outbound=OutboundCall(request, dial))
        call = self._new_call(context, start.application)
        log.info("outbound call %s", kv(call=call_id, dial=dial, profile=request.profile or "-"))
        try:
            await self._run(call)
        finally:
            with contextlib.suppress(AriError):
                await self.ari.hangup(seed.id)

    def _new_call(self, context: CallContext, application: str) -> Call:
        services = replace(self.pool.services, ari=self.ari, stasis_app=application)
        call = self.pool._call_factory(context, services)
        self.call = call
        for event in self._early:
            call.on_event(event)
        self._early.clear()
        return call

    async def _run(self, call: Call) -> None:
        sweep = asyncio.ensure_future(self._sweep_later())
        try:
            await self.pool.run_call(call)
        finally:
            sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweep

    async def _sweep_later(self) -> None:
        """Once the call is up, look for what lost workers left in this Asterisk."""
        await asyncio.sleep(5.0)
        now = asterisk_time(self._last_timestamp)
        if now is None or self.connection.closed or not self.connection.asterisk_id:
            return
        await self.pool.sweep(self.ari, self.connection.asterisk_id, now)
