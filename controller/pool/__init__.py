"""Outbound mode and worker pools: many controllers serving one Stasis app.

* :mod:`controller.pool.worker`: :class:`~controller.pool.worker.PoolController`,
  the controller of ``ARI_MODE=outbound``: Asterisk opens one websocket per
  call to ``ARI_LISTEN``; each connection is one call, served entirely over it.
* :mod:`controller.pool.takeover`: what a worker does with a connection that
  is a reconnect of a call whose worker was lost (pure decisions).
* :mod:`controller.pool.supervisor`: ``ari-realtime run --workers N``: N
  worker processes sharing ``ARI_LISTEN`` (``SO_REUSEPORT``), restarted when
  they die.
"""
