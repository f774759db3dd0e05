"""The openai SDK's own Realtime client can talk to the local model server.

The SDK declares ``websockets<16`` for its realtime extra, yet its client
works with the websockets 17 installed here; if a future SDK refuses, this
test fails loudly rather than being skipped.
"""

from __future__ import annotations

from openai import AsyncOpenAI

from controller.devtools.modelserver import ModelServer, ServerConfig
from tests.modelpeer.validate import validate_client_event, validate_server_event


async def test_official_client_connects_and_configures() -> None:
    server = ModelServer(
        ServerConfig(speed=0, tone_ms=300),
        validator=validate_client_event,
        server_event_validator=validate_server_event,
    )
    await server.start()
    try:
        client = AsyncOpenAI(api_key="sk-sdk-test", websocket_base_url=server.base_url)
        async with client.realtime.connect(model="gpt-realtime") as connection:
            created = await connection.recv()
            assert created.type == "session.created"
            assert created.session.type == "realtime"
            assert created.session.model == "gpt-realtime"
            await connection.session.update(
                session={
                    "type": "realtime",
                    "audio": {
                        "input": {"format": {"type": "audio/pcmu"}},
                        "output": {"format": {"type": "audio/pcmu"}, "voice": "cedar"},
                    },
                }
            )
            await connection.response.create()
            seen = []
            async for event in connection:
                seen.append(event.type)
                if event.type == "response.done":
                    assert event.response.status == "completed"
                    break
            assert "session.updated" in seen
            assert seen.count("response.output_audio.delta") == 3
        record = server.session
        assert record.auth == "bearer"
        assert record.received_types() == ["session.update", "response.create"]
        assert record.session["audio"]["output"]["voice"] == "cedar"
        assert record.validation_failures == []
    finally:
        await server.stop()
