"""End-to-end rig against the sandboxed Asterisk, shared by ``tests/`` and ``bench/``.

Needs a clone of the repository (it imports ``asterisk.sandbox``).

- :mod:`.sandbox`: start the sandbox on free ports (``start_sandbox``), the
  modules the project needs (``REQUIRED_MODULES``).
- :mod:`.ari`: a tiny async ARI client (``AriClient``) and event stream
  (``AriEvents``) on aiohttp.
- :mod:`.calls`: drive the rig's SIP phone (``call_pbx``, ``set_phone_script``,
  ``Script``, ``rig_result``, ``wait_rig_done``, ``wait_no_channels``).
- :mod:`.company`: the destinations the PBX dials for outbound calls
  (``company``, ``voicemail``, ``busy``, ``noanswer``, ``fail``): their
  prompts (``make_prompts``), settings (``set_company``, ``set_voicemail``)
  and results (``destination_result``, ``wait_stage``, ``wait_destination_done``).
- :mod:`.audio`: make WAV files (``make_tone``, ``make_speech``) and analyse
  recordings (``analyse``, ``dominant_frequency``, ``wait_recording``).
- :mod:`.wait`: ``wait_for`` / ``wait_for_sync``.
"""
