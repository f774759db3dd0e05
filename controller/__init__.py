"""ari-realtime: a speech-to-speech AI agent on an Asterisk PBX, through ARI."""

__version__ = "0.1.0"
