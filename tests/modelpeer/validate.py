"""Validate Realtime GA events against the ``openai`` package's pydantic types.

:func:`validate_client_event` is the model server's ``validator`` hook: it
raises :class:`~controller.devtools.modelserver.ClientEventRejected` with the code the
real API would use (``unknown_parameter`` for a field the GA API does not
have, e.g. the beta ``session.voice``; ``missing_required_parameter``;
``invalid_value``; ``invalid_type``). :func:`validate_server_event` checks the
model server's own output (its ``server_event_validator`` hook), so the
fidelity of the test peer is itself tested.

The openai models allow extra fields, so unknown fields are found by walking
the validated model for ``model_extra``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any, get_args

from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter, ValidationError

from controller.devtools.modelserver import ClientEventRejected

__all__ = [
    "client_event_classes",
    "server_event_classes",
    "validate_client_event",
    "validate_server_event",
]

#: Fields the real server sends that the SDK types do not declare: the
#: ``obfuscation`` padding of deltas, and the session's id, object and expiry
#: (the SDK types ``session`` with the request model).
SERVER_EXTRA_FIELDS = frozenset({"obfuscation"})
SERVER_EXTRA_PATHS = frozenset({"session.id", "session.object", "session.expires_at"})


def _by_type(union: Any) -> dict[str, type[BaseModel]]:
    args = get_args(union)
    members = get_args(args[0]) if args and get_args(args[0]) else args
    table: dict[str, type[BaseModel]] = {}
    for cls in members:
        literal = cls.model_fields["type"].annotation
        for value in get_args(literal):
            table[value] = cls
    return table


@cache
def client_event_classes() -> dict[str, type[BaseModel]]:
    """``type`` -> openai class for every client event of the GA API."""
    return _by_type(RealtimeClientEvent)


@cache
def server_event_classes() -> dict[str, type[BaseModel]]:
    """``type`` -> openai class for every server event of the GA API."""
    return _by_type(RealtimeServerEvent)


@cache
def _adapter(cls: type[BaseModel]) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


def _extras(value: Any, path: str) -> Iterator[str]:
    """Dotted paths of fields the openai types do not declare."""
    if isinstance(value, BaseModel):
        for key in value.model_extra or {}:
            yield f"{path}.{key}" if path else key
        for name in type(value).model_fields:
            child = getattr(value, name)
            yield from _extras(child, f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _extras(child, f"{path}[{index}]")


def _param(loc: tuple[Any, ...]) -> str:
    # Drop the union-member labels pydantic puts in the location (class names,
    # ``literal['a','b']``, ``function-after[...]``...).
    parts = [str(p) for p in loc if not (isinstance(p, str) and (p[:1].isupper() or "[" in p))]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _relevant(errors: list[Any]) -> list[Any]:
    """Drop errors from union members whose own ``type`` did not match (wrong branch)."""
    wrong = [
        tuple(e["loc"][:-1])
        for e in errors
        if e["type"] == "literal_error"
        and e["loc"]
        and e["loc"][-1] == "type"
        and len(e["loc"]) > 1
    ]
    kept = [e for e in errors if not any(tuple(e["loc"][: len(w)]) == w for w in wrong)]
    return kept or errors


def _rejection(exc: ValidationError) -> ClientEventRejected:
    errors = _relevant(exc.errors(include_url=False))
    # Prefer a 'missing' error (clearest), then the first one.
    first = next((e for e in errors if e["type"] == "missing"), errors[0])
    param = _param(tuple(first["loc"]))
    if first["type"] == "missing":
        return ClientEventRejected(
            "missing_required_parameter", f"Missing required parameter: '{param}'.", param=param
        )
    # A number where only strings are allowed is a type error, not a bad value.
    expects_text = "'" in str(first.get("ctx", {}).get("expected", ""))
    wrong_kind = (
        first["type"] == "literal_error"
        and expects_text
        and not isinstance(first.get("input"), str)
    )
    if first["type"] in ("literal_error", "enum", "union_tag_invalid") and not wrong_kind:
        return ClientEventRejected(
            "invalid_value", f"Invalid value for '{param}': {first['msg']}.", param=param
        )
    return ClientEventRejected(
        "invalid_type", f"Invalid type for '{param}': {first['msg']}.", param=param
    )


def validate_client_event(event: Mapping[str, Any]) -> None:
    """Check one client event against the GA API's types.

    Raises:
        ClientEventRejected: with ``unknown_parameter``, ``missing_required_parameter``,
            ``invalid_value`` or ``invalid_type``, as the real API answers.
    """
    event_type = event.get("type")
    cls = client_event_classes().get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise ClientEventRejected(
            "invalid_event", f"Unknown client event type {event_type!r}.", param="type"
        )
    try:
        model = _adapter(cls).validate_python(dict(event))
    except ValidationError as exc:
        raise _rejection(exc) from exc
    unknown = next(_extras(model, ""), None)
    if unknown is not None:
        raise ClientEventRejected(
            "unknown_parameter", f"Unknown parameter: '{unknown}'.", param=unknown
        )


def validate_server_event(event: Mapping[str, Any]) -> None:
    """Check one server event against the GA API's types.

    Raises:
        ValueError: unknown type, a field missing or mistyped, or a field the
            SDK types do not declare (other than :data:`SERVER_EXTRA_FIELDS`).
    """
    event_type = event.get("type")
    cls = server_event_classes().get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise ValueError(f"server event type {event_type!r} is not in the GA API")
    try:
        model = _adapter(cls).validate_python(dict(event))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ValueError(f"{event_type}: {_param(tuple(first['loc']))}: {first['msg']}") from None
    extras = [
        p
        for p in _extras(model, "")
        if p not in SERVER_EXTRA_PATHS and p.rsplit(".", 1)[-1] not in SERVER_EXTRA_FIELDS
    ]
    if extras:
        raise ValueError(f"{event_type}: fields not in the GA API: {', '.join(extras)}")
