"""Typed ARI events and resources (pure: JSON in, models out).

Field names are ARI's own (``rest-api/api-docs/events.json`` and
``channels.json`` in Asterisk 22). Only the events the controller acts on get
a class; anything else parses to :class:`UnknownEvent`, so a new Asterisk
version that adds events or fields never breaks a call.

Whatever arrives, :func:`parse_event` returns a typed event or raises
:class:`~controller.errors.AriProtocolError`, nothing else: JSON is decoded by
pydantic-core, which refuses nesting deeper than a few hundred levels (a
``UserEvent`` posted with thousands of nested objects stopped the whole
controller with a ``RecursionError`` when this used :func:`json.loads`),
invalid UTF-8 and lone surrogates.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, get_args

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from controller.errors import AriProtocolError

__all__ = [
    "AriEvent",
    "AriProtocolError",
    "Bridge",
    "CallerID",
    "Channel",
    "ChannelDestroyed",
    "ChannelDtmfReceived",
    "ChannelHangupRequest",
    "ChannelStateChange",
    "DialplanCEP",
    "KnownEvent",
    "StasisEnd",
    "StasisStart",
    "UnknownEvent",
    "decode_json",
    "event_channel",
    "parse_event",
    "parse_model",
    "parse_models",
]

_M = TypeVar("_M", bound=BaseModel)


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


def decode_json(data: str | bytes, what: str) -> Any:
    """Decode JSON text from Asterisk.

    Args:
        data: the text (bytes must be UTF-8).
        what: names the message in the error (``"ARI event"``).

    Raises:
        AriProtocolError: not JSON, not UTF-8, a lone surrogate, or nested
            too deeply (pydantic-core's limit).
    """
    try:
        return pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        raise AriProtocolError(f"{what} is not JSON: {exc}") from None


def _problem(exc: ValidationError, skip: object = None) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"] if p != skip)
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def parse_event(data: str | bytes | dict[str, Any]) -> AriEvent:
    """Parse one events-websocket message.

    Args:
        data: the message text, or an already decoded JSON object.

    Returns:
        The typed event, or :class:`UnknownEvent` for types we do not act on.

    Raises:
        AriProtocolError: the message is not JSON, has no ``type``, or a known
            event lacks a required field or has one of the wrong type. Nothing
            else: the fuzz tests feed it hostile structure of every kind.
    """
    obj = data if isinstance(data, dict) else decode_json(data, "ARI event")
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise AriProtocolError("ARI event has no 'type'")
    event_type: str = obj["type"]
    try:
        if event_type in _KNOWN_TYPES:
            return _known_adapter.validate_python(obj)
        return UnknownEvent.model_validate(obj)
    except ValidationError as exc:
        problem = _problem(exc, event_type)
        raise AriProtocolError(f"ARI {event_type[:64]} event: {problem}") from None


def parse_model(model: type[_M], data: Any, what: str) -> _M:
    """Validate one REST reply (or part of one) as ``model``.

    Raises:
        AriProtocolError: ``data`` does not have the model's shape.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise AriProtocolError(f"{what}: unexpected reply from Asterisk: {_problem(exc)}") from None


def parse_models(model: type[_M], data: Any, what: str) -> list[_M]:
    """Validate a REST reply that is a JSON array of ``model``.

    Raises:
        AriProtocolError: ``data`` is not a list of the model's shape.
    """
    if not isinstance(data, list):
        raise AriProtocolError(f"{what}: Asterisk did not answer with a list")
    return [parse_model(model, item, what) for item in data]


def event_channel(event: AriEvent) -> Channel | None:
    """The channel an event is about, if it is about one.

    An event we do not act on (:class:`UnknownEvent`) keeps its ``channel``
    as raw JSON; one that does not validate as a channel counts as no channel.
    """
    channel = getattr(event, "channel", None)
    if isinstance(channel, Channel):
        return channel
    if isinstance(channel, dict) and "id" in channel:
        try:
            return Channel.model_validate(channel)
        except ValidationError:
            return None
    return None
