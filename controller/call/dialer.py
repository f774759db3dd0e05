"""Placing an outbound call: originate, ring, answer or not, answering machines (I/O).

:meth:`Dialer.dial` originates the channel straight into the Stasis app
(``POST /channels`` with ``app``: the app is subscribed to the channel from
its creation, so a call that never answers still reports its
``ChannelDestroyed`` and Q.850 cause) and waits for its StasisStart (the far
end answered) or its end, at most the ring timeout (plus a margin for
Asterisk's own timer).

:meth:`Dialer.detect_machine` sends the answered channel through the
dialplan context ``OUTBOUND_AMD_CONTEXT`` (``ari-realtime-amd`` in
``asterisk/extensions.conf``): Asterisk's ``AMD()`` listens to the greeting,
then ``Stasis()`` hands the channel back with the verdict in its arguments
(``amd,CALL_ID,AMDSTATUS,AMDCAUSE``). The StasisEnd in between is expected
and does not end the call.

:meth:`Dialer.connect` is the whole dialling phase of a
:class:`~controller.call.call.Call`: ring, then screen for a machine as the
request asks; it says whether the agent gets to talk, and if not, how the
call ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.ari.events import AriEvent, ChannelDestroyed, StasisEnd, StasisStart
from controller.ari.rest import AriClient
from controller.call.conversation import CallResult
from controller.call.services import CallServices, OutboundCall
from controller.call.state import Outcome
from controller.errors import AriHttpError
from controller.logs import kv
from controller.outbound import OutboundRequest, RingResult, ring_result
from controller.records import CallRecord

#: Asterisk's own ring timer fires at ``ring_timeout``; ours a little later.
RING_MARGIN_SECONDS = 5.0
#: AMD() decides within its total analysis time (5 s by default), the beep
#: wait within its own timeout; past this the verdict is "unknown".
AMD_TIMEOUT_SECONDS = 40.0


@dataclass(frozen=True)
class Ringing:
    """How the ringing ended."""

    result: RingResult
    cause: int = 0
    cause_txt: str = ""


@dataclass(frozen=True)
class NotConnected:
    """Why an outbound call ends before the agent talks (see :meth:`Dialer.connect`)."""

    outcome: Outcome
    reason: str
    #: The far end's channel is already gone (hung up, refused): nothing to hang up.
    channel_gone: bool = False
    #: The call's result, when the dialling decided it (an answering machine).
    result: CallResult | None = None


class Dialer:
    """One outbound call's dialling, fed the channel's ARI events.

    Args:
        ari: the REST client.
        app: the Stasis app (``ARI_APP``).
        call_id: the call's id (in the app arguments).
        channel_id: our id for the outbound channel.
        dial: the allowed dial string.
        request: the user's request (ring timeout, caller id, on_machine).
        caller_id: the default caller id (``OUTBOUND_CALLER_ID``).
        amd_context: the dialplan context that runs AMD().
        log: the call's logger.
    """

    def __init__(
        self,
        ari: AriClient,
        *,
        app: str,
        call_id: str,
        channel_id: str,
        dial: str,
        request: OutboundRequest,
        caller_id: str,
        amd_context: str,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._ari = ari
        self._app = app
        self._call_id = call_id
        self.channel_id = channel_id
        self.dial_string = dial
        self.request = request
        self._caller_id = request.caller_id or caller_id
        self._amd_context = amd_context
        self._log = log
        loop = asyncio.get_running_loop()
        self._answered: asyncio.Future[None] = loop.create_future()
        self._verdict: asyncio.Future[str] | None = None
        self._destroyed: ChannelDestroyed | None = None
        self._gone = asyncio.Event()
        #: How the ringing ended (None while it rings).
        self.ringing: Ringing | None = None
        #: The AMD() verdict: HUMAN, MACHINE, NOTSURE, HANGUP (or "" when not run).
        self.machine = ""

    @classmethod
    def for_call(
        cls,
        services: CallServices,
        outbound: OutboundCall,
        *,
        call_id: str,
        channel_id: str,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> Dialer:
        """The dialler of the call ``call_id``, whose outbound channel is ``channel_id``."""
        settings = services.settings
        return cls(
            services.ari,
            app=services.app,
            call_id=call_id,
            channel_id=channel_id,
            dial=outbound.dial,
            request=outbound.request,
            caller_id=settings.outbound_caller_id,
            amd_context=settings.outbound_amd_context,
            log=log,
        )

    @property
    def answered(self) -> bool:
        """True once the far end answered."""
        return self._answered.done()

    def on_event(self, event: AriEvent) -> bool:
        """An event of the outbound channel; True when the dialler consumed it."""
        if isinstance(event, StasisStart):
            args = list(event.args)
            if args[:1] == ["amd"] and self._verdict is not None and not self._verdict.done():
                self._verdict.set_result(args[2] if len(args) > 2 else "NOTSURE")
                return True
            if not self._answered.done():
                self._answered.set_result(None)
                return True
            return False
        if isinstance(event, StasisEnd) and self._verdict is not None and not self._verdict.done():
            return True  # off to AMD() in the dialplan; it comes back
        if not self._answered.done():
            # Before the answer every event is the dialler's: a hang-up
            # request or the end of the channel is a ring result, not a caller
            # who hung up.
            if isinstance(event, ChannelDestroyed):
                self._destroyed = event
                self._gone.set()
            return True
        return False

    async def dial(self) -> Ringing:
        """Originate and wait until the call is answered or over.

        Raises:
            AriError: Asterisk refused the originate (a bad endpoint, for one).
        """
        request = self.request
        self._log.info("dialling %s", kv(dial=self.dial_string, ring_timeout=request.ring_timeout))
        try:
            await self._ari.originate(
                endpoint=self.dial_string,
                app=self._app,
                app_args=f"outbound,{self._call_id}",
                caller_id=self._caller_id or None,
                timeout=request.ring_timeout,
                channel_id=self.channel_id,
            )
        except AriHttpError as exc:
            # Asterisk refused to dial at all (no such endpoint, for one).
            self.ringing = Ringing("failed", 0, exc.reason or f"HTTP {exc.status}")
            self._log.warning("dial refused %s", kv(dial=self.dial_string, error=exc))
            return self.ringing
        gone = asyncio.ensure_future(self._gone.wait())
        waiters: list[asyncio.Future[Any]] = [self._answered, gone]
        try:
            await asyncio.wait(
                waiters,
                timeout=request.ring_timeout + RING_MARGIN_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            gone.cancel()
        if self._answered.done():
            self.ringing = Ringing("answered")
        elif self._destroyed is not None:
            cause = self._destroyed.cause
            self.ringing = Ringing(ring_result(cause), cause, self._destroyed.cause_txt)
        else:
            self.ringing = Ringing(ring_result(0, timed_out=True))
        self._log.info(
            "ringing over %s",
            kv(result=self.ringing.result, cause=self.ringing.cause or "-"),
        )
        return self.ringing

    async def detect_machine(self) -> str:
        """Run AMD() on the answered call; return its verdict (NOTSURE when it took too long).

        Raises:
            AriError: the channel could not be sent to the dialplan.
        """
        self._verdict = asyncio.get_running_loop().create_future()
        variables = {
            "ARI_REALTIME_APP": self._app,
            "ARI_REALTIME_CALL": self._call_id,
        }
        for name, value in variables.items():
            await self._ari.set_variable(self.channel_id, name, value)
        await self._ari.continue_in_dialplan(
            self.channel_id, context=self._amd_context, extension="s", priority=1
        )
        try:
            async with asyncio.timeout(AMD_TIMEOUT_SECONDS):
                self.machine = await self._verdict
        except TimeoutError:
            self.machine = "NOTSURE"
        self._log.info("answering machine detection %s", kv(verdict=self.machine))
        return self.machine

    async def connect(self, on_answer: Callable[[], None]) -> NotConnected | None:
        """Ring, then screen for an answering machine as the request asks.

        Args:
            on_answer: called the moment the far end answers (before AMD() runs).

        Returns:
            None when the agent is to talk; otherwise how the call ends here.

        Raises:
            AriError: the answered channel could not be sent to AMD().
        """
        ringing = await self.dial()
        if ringing.result != "answered":
            detail = " ".join(str(x) for x in (ringing.cause or "", ringing.cause_txt) if x)
            cause = f" ({detail})" if detail else ""
            return NotConnected(
                Outcome.NOT_ANSWERED,
                f"{ringing.result}{cause}".strip(),
                # Only our own ring timer (no_answer, no cause) leaves the channel up.
                channel_gone=ringing.cause != 0 or ringing.result != "no_answer",
            )
        on_answer()
        self._log.info("answered %s", kv(dial=self.dial_string))
        on_machine = self.request.on_machine
        machine = on_machine != "continue" and await self.detect_machine() == "MACHINE"
        if machine and on_machine == "hangup":
            return NotConnected(
                Outcome.AGENT_HUNG_UP,
                "answering machine: hung up",
                result=CallResult("voicemail", "an answering machine answered"),
            )
        return None

    @property
    def machine_message(self) -> str | None:
        """What the agent leaves on the answering machine that answered (None: a person did)."""
        if self.machine != "MACHINE":
            return None
        return self.request.machine_message or ""

    def fill_record(self, record: CallRecord) -> None:
        """Add how the ringing ended, once it has, to the call's ``record``."""
        if self.ringing is not None:
            record.ring_result = self.ringing.result
            record.hangup_cause = self.ringing.cause or None
            record.machine = self.machine
