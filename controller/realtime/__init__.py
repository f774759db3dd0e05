"""OpenAI Realtime protocol (GA): typed events (pure) and the websocket session.

* :mod:`controller.realtime.events` — client and server event models,
  :func:`~controller.realtime.events.parse_server_event` and
  :func:`~controller.realtime.events.build_session_update` (no I/O).
* :mod:`controller.realtime.session` — :func:`~controller.realtime.session.connect_realtime`
  and :class:`~controller.realtime.session.RealtimeSession` (websockets).
"""

from controller.realtime.events import (
    ClientEvent,
    ServerEvent,
    UnknownEvent,
    build_session_update,
    parse_server_event,
)
from controller.realtime.session import RealtimeSession, connect_realtime

__all__ = [
    "ClientEvent",
    "RealtimeSession",
    "ServerEvent",
    "UnknownEvent",
    "build_session_update",
    "connect_realtime",
    "parse_server_event",
]
