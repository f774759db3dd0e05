"""Typed ARI events and resources (pure: JSON in, models out).

Field names are ARI's own (``rest-api/api-docs/events.json`` and
``channels.json`` in Asterisk 22). Only the events the controller acts on get
a class; anything else parses to :class:`UnknownEvent`, so a new Asterisk
version that adds events or fields never breaks a call.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from controller.errors import AriError


class AriProtocolError(AriError):
    """An events-websocket message is not valid ARI JSON."""


class _Model(BaseModel):
    # Asterisk adds fields across versions; ignoring them is the contract.
    model_config = ConfigDict(extra="ignore", frozen=True)


class CallerID(_Model):
    """``caller`` / ``connected`` of a channel."""

    name: str = ""
    number: str = ""


class DialplanCEP(_Model):
    """Where a channel is in the dialplan (context, extension, priority)."""

    context: str = ""
    exten: str = ""
    priority: int = 0
    app_name: str = ""
    app_data: str = ""


class Channel(_Model):
    """An ARI channel snapshot."""

    id: str
    name: str = ""
    state: str = ""
    protocol_id: str = ""
    caller: CallerID = CallerID()
    connected: CallerID = CallerID()
    accountcode: str = ""
    dialplan: DialplanCEP | None = None
    creationtime: str = ""
    language: str = ""
    channelvars: dict[str, str] | None = None

    @property
    def technology(self) -> str:
        """The channel driver, e.g. ``PJSIP``, ``UnicastRTP``, ``Local``."""
        return self.name.split("/", 1)[0]


class Bridge(_Model):
    """An ARI bridge snapshot."""

    id: str
    technology: str = ""
    bridge_type: str = ""
    bridge_class: str = ""
    creator: str = ""
    name: str = ""
    channels: list[str] = Field(default_factory=list)
    creationtime: str = ""


class _Event(_Model):
    application: str = ""
    timestamp: str = ""
    asterisk_id: str = ""


class StasisStart(_Event):
    """A channel entered the Stasis app; ``args`` are ``Stasis(app,args...)``."""

    type: Literal["StasisStart"]
    args: list[str] = Field(default_factory=list)
    channel: Channel
    replace_channel: Channel | None = None


class StasisEnd(_Event):
    """A channel left the Stasis app (hung up, continued, or moved)."""

    type: Literal["StasisEnd"]
    channel: Channel


class ChannelDtmfReceived(_Event):
    """The caller pressed a key (DTMF never arrives over UnicastRTP)."""

    type: Literal["ChannelDtmfReceived"]
    digit: str
    duration_ms: int = 0
    channel: Channel


class ChannelHangupRequest(_Event):
    """A hang-up was requested on a channel (e.g. the caller hung up)."""

    type: Literal["ChannelHangupRequest"]
    cause: int | None = None
    tech_cause: int | None = None
    soft: bool | None = None
    channel: Channel


class ChannelDestroyed(_Event):
    """A channel is gone; ``cause`` is the Q.850 cause code."""

    type: Literal["ChannelDestroyed"]
    cause: int = 0
    cause_txt: str = ""
    tech_cause: int | None = None
    channel: Channel


class ChannelStateChange(_Event):
    """A channel's ``state`` changed (e.g. ``Ringing`` -> ``Up``)."""

    type: Literal["ChannelStateChange"]
    channel: Channel


class UnknownEvent(_Event):
    """Any event the controller does not act on; kept whole for logging."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


_KnownEventUnion = (
    StasisStart
    | StasisEnd
    | ChannelDtmfReceived
    | ChannelHangupRequest
    | ChannelDestroyed
    | ChannelStateChange
)
KnownEvent = Annotated[_KnownEventUnion, Field(discriminator="type")]
AriEvent = _KnownEventUnion | UnknownEvent

#: The event types that get their own class.
_KNOWN_TYPES = frozenset(
    get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(_KnownEventUnion)
)
_known_adapter: TypeAdapter[KnownEvent] = TypeAdapter(KnownEvent)


def parse_event(data: str | bytes | dict[str, Any]) -> AriEvent:
    """Parse one events-websocket message.

    Args:
        data: the message text, or an already decoded JSON object.

    Returns:
        The typed event, or :class:`UnknownEvent` for types we do not act on.

    Raises:
        AriProtocolError: the message is not JSON, has no ``type``, or a known
            event lacks a required field.
    """
    if isinstance(data, dict):
        obj = data
    else:
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise AriProtocolError(f"ARI event is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise AriProtocolError("ARI event has no 'type'")
    try:
        if obj["type"] in _KNOWN_TYPES:
            return _known_adapter.validate_python(obj)
        return UnknownEvent.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"] if p != obj["type"])
        raise AriProtocolError(f"ARI {obj['type']} event: {where}: {first['msg']}") from exc


def event_channel(event: AriEvent) -> Channel | None:
    """The channel an event is about, if it is about one."""
    channel = getattr(event, "channel", None)
    if isinstance(channel, Channel):
        return channel
    if isinstance(channel, dict) and "id" in channel:
        return Channel.model_validate(channel)
    return None
