"""The operator's view of the controller: HTTP API, live view, metrics, webhook.

Modules:

* :mod:`controller.http.server`: the aiohttp app (:func:`create_app`), its
  runner (:class:`HttpServer`, or :func:`http_server` from the settings) and
  the :class:`LiveController` protocol the controller implements;
* :mod:`controller.http.live`: :class:`LiveHub`, the live calls and their
  server-sent event subscribers;
* :mod:`controller.http.metrics`: :class:`Metrics`, Prometheus metrics;
* :mod:`controller.http.webhook`: :class:`WebhookNotifier`, each ended call
  POSTed to ``WEBHOOK_URL``;
* ``static/``: the live view (plain HTML, CSS and JavaScript).

:class:`LiveHub`, :class:`Metrics` and :class:`WebhookNotifier` are call
observers. The controller wires them like this::

    hub, metrics = LiveHub(), Metrics()
    observers = Observers([store, hub, metrics])
    webhook = None
    if settings.webhook_url:
        webhook = WebhookNotifier(settings.webhook_url, metrics=metrics)
        observers.add(webhook)
        await webhook.start()
    await metrics.start()              # event-loop lag, every second
    server = http_server(settings, records=store, live=hub, metrics=metrics, controller=self)
    if server is not None:
        await server.start()           # ConfigError if HTTP_LISTEN cannot be bound
    ...                                # calls report to `observers`; model errors
    ...                                # to metrics.model_error(code)
    if server is not None:
        await server.stop()
    if webhook is not None:
        await webhook.stop()           # delivers what is queued, up to 5 s
    await metrics.stop()

``self`` (the controller) provides ``hangup(call_id) -> bool`` and
``health() -> dict[str, bool]`` (:class:`LiveController`).
"""

from controller.http.live import LiveEvent, LiveHub, Subscription
from controller.http.metrics import Metrics
from controller.http.server import HttpServer, LiveController, create_app, http_server
from controller.http.webhook import WebhookNotifier

__all__ = [
    "HttpServer",
    "LiveController",
    "LiveEvent",
    "LiveHub",
    "Metrics",
    "Subscription",
    "WebhookNotifier",
    "create_app",
    "http_server",
]
