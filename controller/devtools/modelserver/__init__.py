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

A session can follow a script instead, one step per response (see
:mod:`.script`)::

    server.config.script = (
        CallStep("send_dtmf", {"digits": "2"}),
        SilentStep(ms=6000),  # quiet on hold
        SpeakStep(transcript="Hi, I am calling about order 1234."),
        CallStep("report_outcome", {"status": "achieved", "summary": "..."}),
    )

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
from controller.devtools.modelserver.script import (
    CallStep,
    ScriptStep,
    SilentStep,
    SpeakStep,
    load_script,
    parse_script,
)
from controller.devtools.modelserver.server import ModelServer

__all__ = [
    "CallStep",
    "ClientEventRejected",
    "ModelServer",
    "ResponseRecord",
    "ScriptStep",
    "ScriptedCall",
    "ScriptedMcpCall",
    "ServerConfig",
    "SessionRecord",
    "SilentStep",
    "SpeakStep",
    "TurnRecord",
    "Validator",
    "configure_parser",
    "load_script",
    "main",
    "parse_script",
    "run",
]
