"""Exceptions raised by ari-realtime.

Every exception the controller raises on purpose derives from
:class:`AriRealtimeError`. Errors from libraries (aiohttp, websockets, the OS)
are translated where they enter, with ``raise ... from exc``, so callers only
ever need to know this tree::

    AriRealtimeError
    ├── ConfigError                   bad setting; the message names it
    ├── AriError                      talking to Asterisk's REST interface
    │   ├── AriConnectionError        unreachable, refused, timed out   (transient)
    │   ├── AriProtocolError          an event or a reply we cannot parse
    │   └── AriHttpError              Asterisk answered with an error status
    │       ├── AriBadRequest         400: a parameter is missing or wrong
    │       ├── AriAuthError          401/403: ARI_USER / ARI_PASSWORD rejected
    │       ├── AriNotFound           404: channel/bridge gone (often benign)
    │       ├── AriConflict           409: e.g. channel not in Stasis
    │       ├── AriPreconditionFailed 412: e.g. channel in the wrong state
    │       ├── AriUnprocessable      422: e.g. channel not in this app
    │       └── AriServerError        5xx                               (transient)
    ├── MediaError                    RTP and audio
    │   ├── RtpParseError             datagram is not valid RTP (also a ValueError)
    │   └── NoFreePortError           every port in MEDIA_PORTS is taken
    ├── RealtimeError                 talking to the speech-to-speech model
    │   ├── RealtimeConnectionError   handshake failed, refused, closed  (transient)
    │   ├── RealtimeProtocolError     the server sent something we cannot parse
    │   └── RealtimeServerError       the server sent an ``error`` event
    ├── StoreError                    call records: DATABASE_URL unreachable or
    │                                 refused, a record rejected (transient: per error)
    ├── CallError                     one call's life
    │   └── CallStateError            an illegal call-state transition (a bug)
    ├── OutboundError                 an outbound call cannot be placed (nothing dialled)
    │   ├── OutboundRefused           not allowed by OUTBOUND_ALLOW, or calling is off
    │   ├── OutboundInvalid           a malformed request (e.g. number without a trunk)
    │   └── OutboundBusy              OUTBOUND_MAX_CONCURRENT calls are live  (transient)
    └── ToolError                     a model tool call was refused; the message
                                      goes back to the model, the call goes on

``transient`` marks errors where retrying later may succeed. Messages never
contain secrets (API keys, ARI passwords, the password in DATABASE_URL): build them from names and
statuses, not from request headers or URLs with credentials.
"""

from __future__ import annotations


class AriRealtimeError(Exception):
    """Base class of every error raised by ari-realtime."""

    transient: bool = False


class ConfigError(AriRealtimeError):
    """A setting is missing or invalid. The message names the setting."""


# --- ARI ---------------------------------------------------------------------


class AriError(AriRealtimeError):
    """Base class for errors talking to Asterisk's REST interface."""


class AriConnectionError(AriError):
    """Asterisk's HTTP server could not be reached (refused, reset, timeout).

    Attributes:
        reason: why, in plain words (``connection refused: nothing listens on
            127.0.0.1:8088``), for lines that name the URL themselves; empty
            when the message says it all.
    """

    transient = True

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class AriProtocolError(AriError):
    """Asterisk sent something that is not what ARI documents.

    An events-websocket message that is not an ARI event (not JSON, no
    ``type``, a known event without its required fields), or a REST reply
    of the wrong shape. The message names what was wrong, never the payload.
    """


class AriHttpError(AriError):
    """Asterisk answered a REST request with an error status.

    Attributes:
        status: the HTTP status code.
        method: the HTTP method of the request.
        path: the request path below ``/ari`` (never with credentials).
        reason: Asterisk's own explanation (its JSON ``message``), if any.
    """

    def __init__(self, status: int, method: str, path: str, reason: str = "") -> None:
        self.status = status
        self.method = method
        self.path = path
        self.reason = reason
        text = f"ARI {method} {path} -> HTTP {status}"
        super().__init__(f"{text}: {reason}" if reason else text)


class AriBadRequest(AriHttpError):
    """400: a parameter is missing or invalid."""


class AriAuthError(AriHttpError):
    """401/403: Asterisk rejected ARI_USER / ARI_PASSWORD."""


class AriNotFound(AriHttpError):
    """404: the channel, bridge or resource does not exist (any more)."""


class AriConflict(AriHttpError):
    """409: the request conflicts with the resource's state (e.g. not in Stasis)."""


class AriPreconditionFailed(AriHttpError):
    """412: the channel is in a state that does not allow the operation."""


class AriUnprocessable(AriHttpError):
    """422: the request is well formed but cannot be applied (e.g. wrong app)."""


class AriServerError(AriHttpError):
    """5xx: Asterisk failed internally."""

    transient = True


_STATUS_ERRORS: dict[int, type[AriHttpError]] = {
    400: AriBadRequest,
    401: AriAuthError,
    403: AriAuthError,
    404: AriNotFound,
    409: AriConflict,
    412: AriPreconditionFailed,
    422: AriUnprocessable,
}


def ari_error_for_status(status: int, method: str, path: str, reason: str = "") -> AriHttpError:
    """Return the most specific :class:`AriHttpError` for an HTTP status."""
    cls = _STATUS_ERRORS.get(status)
    if cls is None:
        cls = AriServerError if status >= 500 else AriHttpError
    return cls(status, method, path, reason)


# --- Media -------------------------------------------------------------------


class MediaError(AriRealtimeError):
    """Base class for RTP and audio errors."""


class RtpParseError(MediaError, ValueError):
    """A datagram is not a valid RTP packet; the message says which part."""


class NoFreePortError(MediaError):
    """No UDP port in MEDIA_PORTS could be bound on MEDIA_ADDRESS."""

    transient = True


# --- Realtime ----------------------------------------------------------------


class RealtimeError(AriRealtimeError):
    """Base class for errors talking to the speech-to-speech model."""


class RealtimeConnectionError(RealtimeError):
    """The model's websocket could not be opened, or it closed unexpectedly."""

    transient = True


class RealtimeProtocolError(RealtimeError):
    """The model server sent a message that is not a valid Realtime event."""


class RealtimeServerError(RealtimeError):
    """The model server sent an ``error`` event.

    Attributes:
        code: the error's ``code`` (e.g. ``invalid_value``), may be empty.
        error_type: the error's ``type`` (e.g. ``invalid_request_error``).
        event_id: the client event the error refers to, if the server said.
    """

    #: Codes after which the session cannot go on.
    FATAL_CODES = frozenset(
        {
            "invalid_api_key",
            "insufficient_quota",
            "account_deactivated",
            "billing_hard_limit_reached",
            "session_expired",
            "beta_api_shape_disabled",
        }
    )

    def __init__(
        self, message: str, *, code: str = "", error_type: str = "", event_id: str = ""
    ) -> None:
        self.code = code
        self.error_type = error_type
        self.event_id = event_id
        super().__init__(f"{code or error_type or 'error'}: {message}")

    @property
    def fatal(self) -> bool:
        """True when the session cannot continue after this error."""
        return self.code in self.FATAL_CODES


# --- Call records ----------------------------------------------------------------


class StoreError(AriRealtimeError):
    """The call-record store failed: unreachable, refused, or rejected a record.

    The message never contains the password of ``DATABASE_URL``.

    Attributes:
        transient: True when trying again later may succeed (the server is
            down, the database is locked, the disk is full); False when the
            record itself was rejected or the store is unusable as set up.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# --- Calls and tools -----------------------------------------------------------


class CallError(AriRealtimeError):
    """Base class for errors in the life of one call."""


class CallStateError(CallError):
    """An illegal call-state transition was attempted. This is a bug."""


class ToolError(AriRealtimeError):
    """A tool call from the model was refused.

    The message is sent back to the model as the tool's result, so it must
    say plainly what was wrong and what is allowed.
    """


class OutboundError(AriRealtimeError):
    """An outbound call cannot be placed; nothing was dialled. The message says why."""


class OutboundRefused(OutboundError):
    """The destination is not allowed by ``OUTBOUND_ALLOW`` (or outbound calling is off)."""


class OutboundInvalid(OutboundError):
    """The request cannot be dialled as given (e.g. ``number`` without ``OUTBOUND_TRUNK``)."""


class OutboundBusy(OutboundError):
    """``OUTBOUND_MAX_CONCURRENT`` outbound calls are live already; try again later."""

    transient = True
