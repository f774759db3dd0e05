"""Prometheus metrics of the controller (a ``CallObserver``), served at ``GET /metrics``.

Every name starts with ``ari_realtime_``. The metrics live in a private
:class:`~prometheus_client.CollectorRegistry`, so two controllers (or two
tests) in one process never share counters, and nothing from the
``prometheus_client`` default registry (process, GC) is exported.

What a call contributes, and when:

* ``calls_active{direction}`` goes up at :meth:`Metrics.call_started` and
  down at :meth:`Metrics.call_ended`;
* everything read from the final record (calls by outcome, turn latencies,
  barge-ins, tool calls, RTP and playout counters, cost) is counted at
  :meth:`Metrics.call_ended`, from the complete record, so nothing is counted
  twice however often the call reports a turn while it grows;
* model errors are counted as they happen, by :meth:`Metrics.model_error`;
* the event-loop lag is measured every second by a task that
  :meth:`Metrics.start` starts and :meth:`Metrics.stop` stops;
* how late the media clock's ticks ran (every tick, 100 a second: the lag
  the calls' audio feels) is read from the clock given to
  :meth:`Metrics.watch_clock` when scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily

from controller.media.clock import MediaClock
from controller.records import OUTCOMES, CallRecord, LiveEventKind

log = logging.getLogger("controller.http.metrics")

#: The ``Content-Type`` of :meth:`Metrics.render`'s text: the classic text format, which
#: every Prometheus version reads (the library's own server answers with it too).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Distinct values a free-text label (tool name, error code) may take; the rest are ``other``.
MAX_LABEL_VALUES = 50

# Seconds the caller waits for the agent: good is under a second.
_TURN_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
# How fast the agent falls silent when talked over: one 20 ms frame is the goal.
_BARGE_IN_BUCKETS = (0.02, 0.04, 0.06, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
# Loop lag: a 20 ms media tick is late past a few milliseconds.
_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class MetricSpec:
    """One metric of :class:`Metrics`: its attribute there and its Prometheus declaration."""

    attribute: str
    kind: type[Counter | Gauge | Histogram]
    name: str
    documentation: str
    labels: tuple[str, ...] = ()
    #: Histograms only.
    buckets: tuple[float, ...] = ()

    def create(self, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
        """The metric, registered in ``registry``."""
        if self.kind is Histogram:
            return Histogram(
                self.name, self.documentation, self.labels, buckets=self.buckets, registry=registry
            )
        return self.kind(self.name, self.documentation, self.labels, registry=registry)


#: Every metric :class:`Metrics` declares, in the order ``/metrics`` shows them
#: (registration order; the media clock's lateness follows them).
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "calls_active", Gauge, "ari_realtime_calls_active", "Calls in progress.", ("direction",)
    ),
    MetricSpec(
        "calls",
        Counter,
        "ari_realtime_calls",
        "Calls ended, by outcome.",
        ("direction", "outcome"),
    ),
    MetricSpec(
        "turn_response_latency",
        Histogram,
        "ari_realtime_turn_response_latency_seconds",
        "Caller's end of speech to response.created.",
        buckets=_TURN_BUCKETS,
    ),
    MetricSpec(
        "turn_first_audio_latency",
        Histogram,
        "ari_realtime_turn_first_audio_latency_seconds",
        "Caller's end of speech to the first audio delta received from the model.",
        buckets=_TURN_BUCKETS,
    ),
    MetricSpec(
        "turn_first_frame_latency",
        Histogram,
        "ari_realtime_turn_first_frame_latency_seconds",
        "Caller's end of speech to the first audio frame sent to Asterisk.",
        buckets=_TURN_BUCKETS,
    ),
    MetricSpec(
        "barge_ins", Counter, "ari_realtime_barge_ins", "Agent turns the caller talked over."
    ),
    MetricSpec(
        "barge_in_stop_latency",
        Histogram,
        "ari_realtime_barge_in_stop_latency_seconds",
        "Caller's start of speech to the agent's last frame, on a barge-in.",
        buckets=_BARGE_IN_BUCKETS,
    ),
    MetricSpec(
        "tool_calls",
        Counter,
        "ari_realtime_tool_calls",
        "Function calls of the model, by tool and result (ok or refused).",
        ("name", "result"),
    ),
    MetricSpec(
        "rtp_lost",
        Counter,
        "ari_realtime_rtp_lost_packets",
        "Caller RTP packets lost (sequence gaps).",
    ),
    MetricSpec(
        "rtp_late",
        Counter,
        "ari_realtime_rtp_late_packets",
        "Caller RTP packets late or duplicate.",
    ),
    MetricSpec(
        "rtp_foreign",
        Counter,
        "ari_realtime_rtp_foreign_packets",
        "RTP packets from an address other than Asterisk's, dropped.",
    ),
    MetricSpec(
        "playout_underruns",
        Counter,
        "ari_realtime_playout_underruns",
        "Times the agent's audio ran dry mid-response.",
    ),
    MetricSpec(
        "model_errors",
        Counter,
        "ari_realtime_model_errors",
        "Error events from the model, by code.",
        ("code",),
    ),
    MetricSpec(
        "cost", Counter, "ari_realtime_cost_usd", "Estimated model cost of ended calls, USD."
    ),
    MetricSpec(
        "loop_lag",
        Gauge,
        "ari_realtime_event_loop_lag_seconds",
        "How late the event loop woke a 1 s sleep, last measurement.",
    ),
    MetricSpec(
        "loop_lag_histogram",
        Histogram,
        "ari_realtime_event_loop_lag_observed_seconds",
        "How late the event loop woke a 1 s sleep, every measurement.",
        buckets=_LAG_BUCKETS,
    ),
    MetricSpec(
        "webhook_deliveries",
        Counter,
        "ari_realtime_webhook_deliveries",
        "Call records POSTed to WEBHOOK_URL, by result (ok, failed, dropped).",
        ("result",),
    ),
)


class _ClockLateness:
    """A collector reading the media clock's own lateness histogram when scraped."""

    def __init__(self) -> None:
        self.clock: MediaClock | None = None

    def collect(self) -> list[HistogramMetricFamily]:
        clock = self.clock
        if clock is None:
            return []
        lateness = clock.lateness
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(lateness.bounds, lateness.counts, strict=False):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", lateness.total))
        return [
            HistogramMetricFamily(
                "ari_realtime_media_clock_lateness_seconds",
                "How late the media clock's ticks ran (every tick, 10 ms apart).",
                buckets=buckets,
                sum_value=lateness.sum,
            )
        ]


class _BoundedLabel:
    """Passes through the first ``limit`` distinct values, then says ``other``.

    Tool names and error codes come from the model and the network; a
    misbehaving peer must not create unbounded time series.
    """

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return "other"
        self._seen.add(value)
        return value


class Metrics:
    """The controller's metrics; a ``CallObserver`` (never blocks or raises).

    Args:
        loop_lag_interval: seconds between event-loop lag measurements.
    """

    # Created from :data:`METRICS` (one attribute per entry, of its kind).
    calls_active: Gauge
    calls: Counter
    turn_response_latency: Histogram
    turn_first_audio_latency: Histogram
    turn_first_frame_latency: Histogram
    barge_ins: Counter
    barge_in_stop_latency: Histogram
    tool_calls: Counter
    rtp_lost: Counter
    rtp_late: Counter
    rtp_foreign: Counter
    playout_underruns: Counter
    model_errors: Counter
    cost: Counter
    loop_lag: Gauge
    loop_lag_histogram: Histogram
    webhook_deliveries: Counter

    def __init__(self, *, loop_lag_interval: float = 1.0) -> None:
        #: The private registry :meth:`render` exports.
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        for spec in METRICS:
            setattr(self, spec.attribute, spec.create(r))
        self._clock = _ClockLateness()
        r.register(self._clock)
        self._tool_name = _BoundedLabel()
        self._error_code = _BoundedLabel()
        self._started: dict[str, str] = {}  # call id -> direction, while active
        self._interval = loop_lag_interval
        self._lag_task: asyncio.Task[None] | None = None

    # --- CallObserver ---------------------------------------------------------------------

    def call_started(self, record: CallRecord) -> None:
        """Count the call as active."""
        if record.id not in self._started:
            self._started[record.id] = record.direction
            self.calls_active.labels(record.direction).inc()

    def call_event(self, call_id: str, kind: LiveEventKind, data: dict[str, Any]) -> None:
        """Nothing: per-call numbers are read from the final record."""

    def call_ended(self, record: CallRecord) -> None:
        """Count everything in the final record."""
        try:
            self._count(record)
        except Exception:  # a bad record must not break the observers after this one
            log.exception("metrics: record not counted call=%s", record.id)

    # --- the call's own reports ------------------------------------------------------------

    def model_error(self, code: str) -> None:
        """Count an ``error`` event from the model (``code`` may be empty)."""
        self.model_errors.labels(self._error_code(code or "unknown")).inc()

    def webhook_result(self, result: str) -> None:
        """Count a webhook delivery: ``ok``, ``failed`` or ``dropped`` (queue full)."""
        self.webhook_deliveries.labels(result).inc()

    def watch_clock(self, clock: MediaClock) -> None:
        """Export how late ``clock``'s ticks run (``ari_realtime_media_clock_lateness_seconds``)."""
        self._clock.clock = clock

    # --- event-loop lag --------------------------------------------------------------------

    async def start(self) -> None:
        """Start measuring the event loop's lag (idempotent)."""
        if self._lag_task is None or self._lag_task.done():
            self._lag_task = asyncio.create_task(self._measure_loop_lag(), name="loop-lag")

    async def stop(self) -> None:
        """Stop measuring the event loop's lag."""
        task, self._lag_task = self._lag_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- export ----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The metrics in the Prometheus text format (:data:`METRICS_CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    # --- inside ----------------------------------------------------------------------------

    def _count(self, record: CallRecord) -> None:
        direction = self._started.pop(record.id, None)
        if direction is not None:
            self.calls_active.labels(direction).dec()
        outcome = record.outcome or "unknown"
        self.calls.labels(record.direction, outcome if outcome in OUTCOMES else "other").inc()
        for turn in record.turns:
            for histogram, ms in (
                (self.turn_response_latency, turn.response_latency_ms),
                (self.turn_first_audio_latency, turn.first_audio_latency_ms),
                (self.turn_first_frame_latency, turn.first_frame_latency_ms),
            ):
                if ms is not None and ms >= 0:
                    histogram.observe(ms / 1000)
            if turn.barge_in:
                self.barge_ins.inc()
                if turn.barge_in_stop_latency_ms is not None:
                    self.barge_in_stop_latency.observe(turn.barge_in_stop_latency_ms / 1000)
        for tool in record.tool_calls:
            result = "refused" if tool.refused else "ok"
            self.tool_calls.labels(self._tool_name(tool.name), result).inc()
        media = record.media
        for counter, value in (
            (self.rtp_lost, media.rtp_lost),
            (self.rtp_late, media.rtp_late),
            (self.rtp_foreign, media.rtp_foreign),
            (self.playout_underruns, media.playout_underruns),
        ):
            if value > 0:
                counter.inc(value)
        if record.cost_usd > 0:
            self.cost.inc(record.cost_usd)

    async def _measure_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - start - self._interval)
            self.loop_lag.set(lag)
            self.loop_lag_histogram.observe(lag)
