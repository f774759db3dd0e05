"""Test rig: helpers for end-to-end tests against the sandboxed Asterisk.

- :mod:`tests.rig.sandbox`: start the sandbox for tests (``start_sandbox``),
  the modules the project needs (``REQUIRED_MODULES``).
- :mod:`tests.rig.ari`: a tiny async ARI client (``AriClient``) and event
  stream (``AriEvents``) on aiohttp.
- :mod:`tests.rig.calls`: drive the rig's SIP phone (``call_pbx``,
  ``set_phone_script``, ``Script``, ``rig_result``, ``wait_rig_done``,
  ``wait_no_channels``).
- :mod:`tests.rig.audio`: make WAV files (``make_tone``, ``make_speech``) and
  analyse recordings (``analyse``, ``dominant_frequency``, ``wait_recording``).
- :mod:`tests.rig.wait`: ``wait_for`` / ``wait_for_sync``.
"""
