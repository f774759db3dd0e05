"""``GET /metrics``: what calls fed through the observers leave in the Prometheus text."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

from controller.devtools.rig.wait import wait_for
from controller.http import Metrics
from controller.http.metrics import METRICS
from controller.media.clock import MediaClock
from controller.records import MediaCounters, ToolCallEntry, TurnEntry
from tests.http.conftest import Stack, make_record


async def _scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with stack.http.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _turn(index: int, **fields: object) -> TurnEntry:
    return TurnEntry.model_validate({"index": index, "response_id": f"r{index}", **fields})


async def test_calls_turns_tools_media_and_cost_are_exported(stack: Stack) -> None:
    first = stack.start(make_record("c1"))
    second = stack.start(make_record("c2", 1, direction="outbound"))
    values = await _scrape(stack)
    assert values[("ari_realtime_calls_active", (("direction", "inbound"),))] == 1
    assert values[("ari_realtime_calls_active", (("direction", "outbound"),))] == 1

    stack.end(
        first,
        outcome="agent_hung_up",
        turns=[
            _turn(
                0, response_latency_ms=150, first_audio_latency_ms=420, first_frame_latency_ms=610
            ),
            _turn(1, response_latency_ms=2500, barge_in=True, barge_in_stop_latency_ms=30),
            _turn(2),  # nothing measured: nothing observed
        ],
        tool_calls=[
            ToolCallEntry(call_id="a", name="lookup_order", started_ms=1),
            ToolCallEntry(call_id="b", name="transfer", started_ms=2, refused=True),
            ToolCallEntry(call_id="c", name="lookup_order", started_ms=3),
        ],
        media=MediaCounters(rtp_lost=3, rtp_late=2, rtp_foreign=7, playout_underruns=1),
        cost_usd=0.25,
    )
    stack.end(second, outcome="caller_hung_up", media=MediaCounters(rtp_lost=1), cost_usd=0.5)
    stack.metrics.model_error("rate_limit_exceeded")
    stack.metrics.model_error("")

    values = await _scrape(stack)
    expected = {
        ("ari_realtime_calls_active", (("direction", "inbound"),)): 0,
        ("ari_realtime_calls_active", (("direction", "outbound"),)): 0,
        ("ari_realtime_calls_total", (("direction", "inbound"), ("outcome", "agent_hung_up"))): 1,
        ("ari_realtime_calls_total", (("direction", "outbound"), ("outcome", "caller_hung_up"))): 1,
        ("ari_realtime_turn_response_latency_seconds_count", ()): 2,
        ("ari_realtime_turn_response_latency_seconds_sum", ()): 2.65,
        ("ari_realtime_turn_response_latency_seconds_bucket", (("le", "0.2"),)): 1,
        ("ari_realtime_turn_first_audio_latency_seconds_count", ()): 1,
        ("ari_realtime_turn_first_audio_latency_seconds_sum", ()): 0.42,
        ("ari_realtime_turn_first_frame_latency_seconds_count", ()): 1,
        ("ari_realtime_turn_first_frame_latency_seconds_bucket", (("le", "0.6"),)): 0,
        ("ari_realtime_turn_first_frame_latency_seconds_bucket", (("le", "0.7"),)): 1,
        ("ari_realtime_barge_ins_total", ()): 1,
        ("ari_realtime_barge_in_stop_latency_seconds_count", ()): 1,
        ("ari_realtime_tool_calls_total", (("name", "lookup_order"), ("result", "ok"))): 2,
        ("ari_realtime_tool_calls_total", (("name", "transfer"), ("result", "refused"))): 1,
        ("ari_realtime_rtp_lost_packets_total", ()): 4,
        ("ari_realtime_rtp_late_packets_total", ()): 2,
        ("ari_realtime_rtp_foreign_packets_total", ()): 7,
        ("ari_realtime_playout_underruns_total", ()): 1,
        ("ari_realtime_model_errors_total", (("code", "rate_limit_exceeded"),)): 1,
        ("ari_realtime_model_errors_total", (("code", "unknown"),)): 1,
        ("ari_realtime_cost_usd_total", ()): 0.75,
    }
    for key, value in expected.items():
        assert abs(values[key] - value) < 1e-9, (key, values[key], value)
    # Every exported name carries the prefix; nothing from the global registry leaks in.
    assert all(name.startswith("ari_realtime_") for name, _ in values)


async def test_a_call_that_ends_without_starting_is_counted_but_not_active(stack: Stack) -> None:
    stack.end(make_record("c1"), outcome="failed")
    stack.end(make_record("c2"), outcome="something new")
    values = await _scrape(stack)
    assert ("ari_realtime_calls_active", (("direction", "inbound"),)) not in values
    labels = (("direction", "inbound"), ("outcome", "failed"))
    assert values[("ari_realtime_calls_total", labels)] == 1
    labels = (("direction", "inbound"), ("outcome", "other"))
    assert values[("ari_realtime_calls_total", labels)] == 1


def test_free_text_labels_are_bounded() -> None:
    metrics = Metrics()
    tools = [ToolCallEntry(call_id=str(i), name=f"tool{i}", started_ms=0) for i in range(80)]
    metrics.call_ended(make_record("c1", status="ended", tool_calls=tools))
    for i in range(80):
        metrics.model_error(f"code{i}")
    text = metrics.render().decode()
    names = {
        s.labels["name"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "ari_realtime_tool_calls_total"
    }
    assert len(names) == 51 and "other" in names
    assert 'ari_realtime_model_errors_total{code="other"} 30.0' in text


def test_each_metrics_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.model_error("x")
    assert "code=" not in two.render().decode()


async def test_event_loop_lag_is_measured_while_started() -> None:
    metrics = Metrics(loop_lag_interval=0.02)

    def sample(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    await metrics.start()
    await metrics.start()  # idempotent
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.15)  # noqa: ASYNC251 (on purpose: a blocked loop wakes ~150 ms late)
        # The first wake-up after the block measures it; the gauge shows the last one.
        name = "ari_realtime_event_loop_lag_observed_seconds"
        await wait_for(
            lambda: sample(f"{name}_count") - sample(f"{name}_bucket", le="0.1") >= 1,
            2,
            what="a measurement over 100 ms",
        )
    finally:
        await metrics.stop()
    count = sample("ari_realtime_event_loop_lag_observed_seconds_count")
    assert count >= 2
    assert sample("ari_realtime_event_loop_lag_seconds") < 0.1  # later wake-ups were on time
    await asyncio.sleep(0.06)
    assert sample("ari_realtime_event_loop_lag_observed_seconds_count") == count  # stopped


#: What ``/metrics`` exports: (family, type, labels), in order. Dashboards and
#: alerts name these; a change here is a change for every operator.
EXPORTED = [
    ("ari_realtime_calls_active", "gauge", ("direction",)),
    ("ari_realtime_calls", "counter", ("direction", "outcome")),
    ("ari_realtime_turn_response_latency_seconds", "histogram", ()),
    ("ari_realtime_turn_first_audio_latency_seconds", "histogram", ()),
    ("ari_realtime_turn_first_frame_latency_seconds", "histogram", ()),
    ("ari_realtime_barge_ins", "counter", ()),
    ("ari_realtime_barge_in_stop_latency_seconds", "histogram", ()),
    ("ari_realtime_tool_calls", "counter", ("name", "result")),
    ("ari_realtime_rtp_lost_packets", "counter", ()),
    ("ari_realtime_rtp_late_packets", "counter", ()),
    ("ari_realtime_rtp_foreign_packets", "counter", ()),
    ("ari_realtime_playout_underruns", "counter", ()),
    ("ari_realtime_model_errors", "counter", ("code",)),
    ("ari_realtime_cost_usd", "counter", ()),
    ("ari_realtime_event_loop_lag_seconds", "gauge", ()),
    ("ari_realtime_event_loop_lag_observed_seconds", "histogram", ()),
    ("ari_realtime_webhook_deliveries", "counter", ("result",)),
    ("ari_realtime_media_clock_lateness_seconds", "histogram", ()),
]


def test_the_exported_metrics_are_pinned() -> None:
    metrics = Metrics()
    metrics.watch_clock(MediaClock())
    # Every labelled metric gets a child, so each family shows its label names.
    metrics.calls_active.labels("inbound")
    metrics.calls.labels("inbound", "failed")
    metrics.tool_calls.labels("t", "ok")
    metrics.model_error("x")
    metrics.webhook_result("ok")
    found = []
    for family in metrics.registry.collect():
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        found.append((family.name, family.type, tuple(sorted(labels))))
    assert found == EXPORTED


def test_each_metric_is_the_attribute_its_table_entry_names() -> None:
    metrics = Metrics()
    hints = Metrics.__annotations__
    for spec in METRICS:
        metric = getattr(metrics, spec.attribute)
        assert isinstance(metric, spec.kind), spec
        assert hints[spec.attribute] == spec.kind.__name__, spec
