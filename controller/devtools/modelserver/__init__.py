"""A local server speaking the Realtime GA protocol: a test and demo peer, not a model.

It answers on ``ws://HOST:PORT/v1/realtime`` with the GA event sequence, an
energy VAD for turn detection and echo/tone/WAV replies, rejects what the real
API rejects, and records everything a client sent for tests to assert on.

From a test::

    from controller.devtools.modelserver import ModelServer, ServerConfig

    async with ModelServer(ServerConfig(reply="tone"), validator=hook) as server:
        session = await connect_realtime(server.url, "test-key", "gpt-realtime")
        ...
        record = server.session  # SessionRecord: received, sent, turns, ...

From the shell: ``ari-realtime model-server --reply echo`` (see :mod:`.command`).
"""

from controller.devtools.modelserver.command import configure_parser, main, run
from controller.devtools.modelserver.config import (
    ClientEventRejected,
    ResponseRecord,
    ScriptedCall,
    ScriptedMcpCall,
    ServerConfig,
    SessionRecord,
    TurnRecord,
    Validator,
)
from controller.devtools.modelserver.server import ModelServer

__all__ = [
    "ClientEventRejected",
    "ModelServer",
    "ResponseRecord",
    "ScriptedCall",
    "ScriptedMcpCall",
    "ServerConfig",
    "SessionRecord",
    "TurnRecord",
    "Validator",
    "configure_parser",
    "main",
    "run",
]
