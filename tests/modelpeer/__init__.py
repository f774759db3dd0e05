"""Test-only helpers around the local model server (``controller.devtools.modelserver``).

``validate`` checks events against the ``openai`` package's Realtime types
(a test-only dependency), so the server can reject exactly what a client
would get wrong against the real API. :func:`validated_server` builds a
:class:`~controller.devtools.modelserver.ModelServer` with both checks installed::

    server = validated_server(ServerConfig(reply="echo"))
    port = await server.start()
    ...
    assert server.session.validation_failures == []
"""

from __future__ import annotations

from controller.devtools.modelserver import ModelServer, ServerConfig
from tests.modelpeer.validate import validate_client_event, validate_server_event

__all__ = ["validate_client_event", "validate_server_event", "validated_server"]


def validated_server(config: ServerConfig | None = None) -> ModelServer:
    """A model server that checks every client and server event against openai's types."""
    return ModelServer(
        config,
        validator=validate_client_event,
        server_event_validator=validate_server_event,
    )
