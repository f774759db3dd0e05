"""Development tools: never imported by the product.

Nothing under ``controller/`` outside this package imports it, except
``controller.cli``, lazily, inside the ``model-server`` and ``demo`` command
branches. ``ari-realtime run`` and ``ari-realtime check`` never load it.

- :mod:`controller.devtools.modelserver`: a local server speaking the Realtime
  GA protocol, a test and demo peer, not a model (``ari-realtime model-server``,
  ``python -m controller.devtools.modelserver``).
- :mod:`controller.devtools.demo`: ``ari-realtime demo`` (``make demo``), one
  real call through the whole product against the sandboxed Asterisk.
- :mod:`controller.devtools.rig`: the end-to-end rig shared by ``tests/`` and
  ``bench/``: start the sandboxed Asterisk on free ports, a small independent
  ARI client, call placement through the rig's SIP phone, audio helpers, waits.

The demo and the rig drive the sandboxed Asterisk of ``asterisk/sandbox.py``,
which lives in the repository, not in the installed package: they work from
a clone of the repository (with its root on ``sys.path``, as ``make demo``,
``pytest`` and the bench scripts arrange), not from an installed copy.
"""
