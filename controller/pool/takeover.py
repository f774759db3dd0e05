"""What a pool worker decides about calls it did not start (pure: values in, ids out).

When a worker dies, Asterisk notices its per-call websockets close and
reconnects each of them to the same URI, so (through the load balancer, or
the kernel's ``SO_REUSEPORT`` group) to another worker. Asterisk then sends
only an ``ApplicationRegistered`` event: no StasisStart, which went to the
dead worker. A fresh call's connection gets its StasisStart within about
half a second (Asterisk polls for the connection every 500 ms); so a
connection with no StasisStart after :data:`TAKEOVER_AFTER` seconds, whose
channel carries :data:`SERVED_VARIABLE`, is a call some worker was serving.
The new worker does not try to resume it (the conversation lived in the dead
worker's memory): it deletes the dead worker's bridge and externalMedia
channel, whose ids follow from the call id (:func:`call_resources`), and
hands the caller back to the dialplan with ``ARI_REALTIME_RESULT`` set to
:data:`LOST_RESULT`: the dialplan's handed-back branch, never silence.

If no worker is left at all, Asterisk's reconnect fails, ``Stasis()``
returns with ``STASISSTATUS=FAILED`` and the dialplan's unavailable branch
runs. The dead worker's bridge and externalMedia channel then have no owner
until a worker sweeps (:func:`orphans`): any worker, now and then, over any
live call's connection to that Asterisk.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from controller.ari.events import Bridge, Channel

#: Set on a call's channel (the caller, or an outbound call's seed channel)
#: as soon as a worker takes it: ``"<call id> inbound|outbound"``.
SERVED_VARIABLE = "ARI_REALTIME_SERVED"
#: On an outbound call's seed channel: the :class:`~controller.outbound.OutboundRequest` as JSON.
OUTBOUND_VARIABLE = "ARI_REALTIME_OUTBOUND"
#: The dialplan context the seed channel's other half waits in (extensions.conf).
SEED_CONTEXT = "ari-realtime-seed"
#: ``ARI_REALTIME_RESULT`` of a caller whose worker was lost mid-call.
LOST_RESULT = "controller_lost"
#: Seconds without StasisStart after which a connection is checked for a takeover.
TAKEOVER_AFTER = 1.0
#: Bridges and externalMedia channels younger than this are never swept
#: (a call may be setting them up right now).
ORPHAN_SECONDS = 60.0

Direction = Literal["inbound", "outbound"]


@dataclass(frozen=True)
class Served:
    """What :data:`SERVED_VARIABLE` says: the call id and its direction."""

    call_id: str
    direction: Direction


def served_value(call_id: str, direction: Direction) -> str:
    """The value of :data:`SERVED_VARIABLE` for a call."""
    return f"{call_id} {direction}"


def parse_served(value: str) -> Served | None:
    """Read :data:`SERVED_VARIABLE`; None when unset or not ours."""
    call_id, _, direction = value.strip().partition(" ")
    if not call_id or not call_id.isalnum() or len(call_id) > 64:
        return None
    if direction == "outbound":
        return Served(call_id, "outbound")
    if direction == "inbound":
        return Served(call_id, "inbound")
    return None


@dataclass(frozen=True)
class CallResources:
    """The ids a call's Asterisk resources get (see :class:`~controller.call.call.Call`)."""

    bridge_id: str
    external_channel_id: str
    outbound_channel_id: str


def call_resources(id_prefix: str, call_id: str) -> CallResources:
    """The ids of call ``call_id``'s bridge, externalMedia channel and dialled channel."""
    return CallResources(
        bridge_id=f"{id_prefix}br-{call_id}",
        external_channel_id=f"{id_prefix}em-{call_id}",
        outbound_channel_id=f"{id_prefix}out-{call_id}",
    )


def seed_channel_id(id_prefix: str, call_id: str) -> str:
    """Our id for an outbound call's seed channel."""
    return f"{id_prefix}seed-{call_id}"


def asterisk_time(text: str) -> dt.datetime | None:
    """ARI's ``2026-11-29T17:24:20.328+0000`` (``creationtime``, ``timestamp``)."""
    for pattern in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return dt.datetime.strptime(text, pattern)
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class Orphans:
    """What a sweep deletes."""

    channel_ids: tuple[str, ...]
    bridge_ids: tuple[str, ...]


def orphans(
    channels: Iterable[Channel],
    bridges: Iterable[Bridge],
    id_prefix: str,
    now: dt.datetime,
    min_age: float = ORPHAN_SECONDS,
) -> Orphans:
    """The bridges and externalMedia channels no call can be using any more.

    A call's bridge always holds its caller (or its dialled channel) once
    set up; a bridge of ours holding nothing but externalMedia channels, and
    an externalMedia channel of ours in no bridge, older than ``min_age``,
    belong to no live call (the ages leave set-up alone). Channels of
    other applications and dialled channels (a human hangs those up) are
    never touched.

    Args:
        channels, bridges: ``GET /channels`` and ``GET /bridges``.
        id_prefix: ``ARI_APP-``.
        now: Asterisk's clock (an event's ``timestamp``).
        min_age: seconds.
    """
    external = f"{id_prefix}em-"
    bridge_prefix = f"{id_prefix}br-"

    def old(created: str) -> bool:
        when = asterisk_time(created)
        return when is not None and (now - when).total_seconds() >= min_age

    bridged: set[str] = set()
    dead_bridges: list[str] = []
    doomed: list[str] = []
    for bridge in bridges:
        bridged.update(bridge.channels)
        if not bridge.id.startswith(bridge_prefix):
            continue
        if all(c.startswith(external) for c in bridge.channels) and old(bridge.creationtime):
            dead_bridges.append(bridge.id)
            doomed.extend(bridge.channels)
    for channel in channels:
        if (
            channel.id.startswith(external)
            and channel.id not in bridged
            and old(channel.creationtime)
        ):
            doomed.append(channel.id)
    return Orphans(tuple(dict.fromkeys(doomed)), tuple(dead_bridges))
