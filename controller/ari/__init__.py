"""Asterisk REST Interface: typed events (pure), REST client and event stream (aiohttp)."""
