"""OpenAI Realtime protocol (GA): typed events (pure) and the websocket session."""
