"""A local server speaking the Realtime GA protocol: a test and demo peer, not a model."""
