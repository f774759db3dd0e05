"""ARI's REST over websocket, as messages (pure: values in, JSON text or models out).

On a websocket Asterisk opened (ARI outbound websockets, Asterisk 22.5+), a
REST request is a message ``{"type": "RESTRequest", "request_id", "method",
"uri", "query_strings", "content_type", "message_body"}`` and its answer a
``RESTResponse`` with the same ``request_id`` (and ``transaction_id``), a
``status_code``, a ``reason_phrase`` and, when there is one, the JSON body
as a *string* in ``message_body``. (Checked against
``res/ari/ari_websocket_requests.c`` of Asterisk 22.10.) The ``uri`` is the
path below ``/ari`` without its leading slash, e.g. ``channels/ID/answer``.

Responses share the connection with the call's events: :func:`parse_message`
tells them apart and leaves events to :func:`~controller.ari.events.parse_event`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from controller.ari.events import AriEvent, AriProtocolError, parse_event

QueryValue = str | int | float | bool | None


class RestResponse(BaseModel):
    """One ``RESTResponse`` message."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["RESTResponse"]
    request_id: str = ""
    transaction_id: str = ""
    status_code: int
    reason_phrase: str = ""
    uri: str = ""
    content_type: str | None = None
    message_body: str | None = None

    def body(self) -> Any:
        """The decoded body: JSON when it is JSON, the text otherwise, None when empty."""
        if not self.message_body:
            return None
        try:
            return json.loads(self.message_body)
        except ValueError:
            return self.message_body

    def reason(self) -> str:
        """Asterisk's ``{"message": ...}`` when the body has one, else the reason phrase."""
        body = self.body()
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return str(body["message"])
        return self.reason_phrase


def query_strings(params: Mapping[str, QueryValue]) -> list[dict[str, str]]:
    """``[{"name", "value"}, ...]`` as ARI reads them; None values are left out."""
    out = []
    for name, value in params.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out.append({"name": name, "value": text})
    return out


def rest_request(
    request_id: str,
    method: str,
    path: str,
    params: Mapping[str, QueryValue] | None = None,
    body: Mapping[str, Any] | None = None,
) -> str:
    """The ``RESTRequest`` message (JSON text) for ``method path``.

    Args:
        request_id: unique on the connection; the response carries it back.
        method: ``GET``, ``POST``, ``PUT`` or ``DELETE``.
        path: below ``/ari``, with or without the leading slash.
        params: the query parameters.
        body: a JSON body (e.g. ``{"variables": {...}}``).
    """
    message: dict[str, Any] = {
        "type": "RESTRequest",
        "request_id": request_id,
        "transaction_id": request_id,
        "method": method.upper(),
        "uri": path.lstrip("/"),
    }
    query = query_strings(params or {})
    if query:
        message["query_strings"] = query
    if body is not None:
        message["content_type"] = "application/json"
        message["message_body"] = json.dumps(body, separators=(",", ":"))
    return json.dumps(message, separators=(",", ":"))


def parse_message(text: str | bytes) -> RestResponse | AriEvent:
    """One message from the websocket: a :class:`RestResponse` or an ARI event.

    Raises:
        AriProtocolError: the message is not JSON, has no ``type``, or is a
            malformed response or known event.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AriProtocolError(f"ARI message is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AriProtocolError("ARI message is not a JSON object")
    if data.get("type") == "RESTResponse":
        try:
            return RestResponse.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise AriProtocolError(f"ARI RESTResponse: {where}: {first['msg']}") from exc
    return parse_event(data)


def per_call_channel_name(application: str, app: str) -> str | None:
    """The channel a per-call application is named after, or None when it is not one.

    Asterisk names the application of a per-call websocket
    ``<app>:<channel name>`` (``voicebot:PJSIP/tester-00000001``).
    """
    prefix = f"{app}:"
    if application.startswith(prefix) and len(application) > len(prefix):
        return application[len(prefix) :]
    return None
