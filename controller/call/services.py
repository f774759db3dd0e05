"""What a call is given: its birth facts and the services every call shares.

Nothing here does I/O. The controller builds one :class:`CallServices` for
the process and a :class:`CallContext` per call; a call never reaches back
into the controller (no service locator, no import of :mod:`controller.app`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from controller.agents import AgentsFile
from controller.ari.events import AriEvent, Channel
from controller.ari.rest import AriClient
from controller.call.http_tools import HttpToolClient
from controller.call.state import Outcome
from controller.config import Settings
from controller.media.clock import MediaClock
from controller.outbound import OutboundRequest
from controller.records import CallObserver, Observers, UsageTotals


class ChannelOwner(Protocol):
    """Whatever takes the ARI events of a channel (a call)."""

    def on_event(self, event: AriEvent) -> None:
        """An event about one of the owner's channels (must not block)."""

    def request_end(self, outcome: Outcome, reason: str) -> None:
        """End the call (e.g. it failed on one of its events); the first outcome wins."""


class ChannelRouter(Protocol):
    """Routes ARI events of a channel to the call that owns it."""

    def claim_channel(self, channel_id: str, owner: ChannelOwner) -> None:
        """Route events of ``channel_id`` to ``owner`` (before the channel exists)."""

    def release_channel(self, channel_id: str) -> None:
        """Stop routing events of ``channel_id``."""


def no_cost(model: str, usage: UsageTotals) -> float:
    """The price of a call when no price table is given."""
    return 0.0


def no_count(code: str) -> None:
    """Model errors go uncounted when no metrics are given."""


@dataclass(frozen=True)
class CallServices:
    """What every call of the process shares (given, never looked up)."""

    settings: Settings
    ari: AriClient
    clock: MediaClock
    router: ChannelRouter
    http_tools: HttpToolClient
    agents: AgentsFile | None = None
    #: Prefix of every bridge / channel id the app creates.
    id_prefix: str = "voicebot-"
    #: Who hears about the call as it goes (store, live view, metrics, webhook).
    observers: CallObserver = field(default_factory=Observers)
    #: Names this controller in records (what a restart closes as crashed).
    controller_id: str = ""
    #: The price of a call's model usage in USD.
    cost: Callable[[str, UsageTotals], float] = no_cost
    #: Counts an ``error`` event of the model by its code (metrics).
    model_errors: Callable[[str], None] = no_count
    #: The Stasis application the call's own channels (externalMedia, the
    #: dialled channel) join; empty: ``ARI_APP``. In outbound mode it is the
    #: per-call application (``app:<channel name>``), so they reach the same
    #: websocket, and thus the same worker, as the call.
    stasis_app: str = ""

    @property
    def app(self) -> str:
        """The Stasis application for the call's own channels."""
        return self.stasis_app or self.settings.ari_app


@dataclass
class CallContext:
    """What a call is born with."""

    call_id: str
    channel: Channel
    args: list[str] = field(default_factory=list)
    #: Set for a call the agent places: what the user asked for, and the
    #: allowed dial string (``channel`` is then our id for the channel to be).
    outbound: OutboundCall | None = None


@dataclass(frozen=True)
class OutboundCall:
    """An outbound call as it was allowed."""

    request: OutboundRequest
    dial: str
