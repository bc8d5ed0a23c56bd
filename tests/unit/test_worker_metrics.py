"""The worker's Prometheus metrics: names from the brief, a lag histogram observed an envelope at a
time, consumer lag per partition from highwater and processing position."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from pipeline.alerts import Alert
from pipeline.decisions import Decision
from pipeline.worker.metrics import LAG_BUCKETS_S, WorkerMetrics
from tests.unit.conftest import T0_MS, make_event


def samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def decision(action: str, detector: str) -> Decision:
    return Decision(
        subject="ip:192.0.2.1",
        score=0.9,
        action=action,
        reasons=[],
        detector=detector,
        model_version="m",
        mode="shadow",
        updated_at=1,
        expires_at=2,
    )


def alert(kind: str) -> Alert:
    return Alert(
        id="gw-1",
        kind=kind,
        event_time=1,
        emit_time=2,
        subject="ip:192.0.2.1",  # type: ignore[arg-type]
        scope="ip",
        action="allow",
        mode="shadow",
        enforced=False,
        title="t",
        severity="info",
        score=0.0,
        detector="injection",
    )


def test_envelope_counts_events_decisions_alerts_and_lag() -> None:
    held = {"n": 7}
    metrics = WorkerMetrics(subjects=lambda: held["n"])
    now_ms = T0_MS + 10_000
    # Lags of 0.04 s, 0.4 s, 3 s and 20 minutes.
    events = [make_event(ts_ms=now_ms - lag) for lag in (40, 400, 3_000, 1_200_000)]
    metrics.envelope(
        events,
        [decision("block", "bruteforce"), decision("tag", "rate")],
        [alert("decision"), alert("finding"), alert("finding")],
        now_ms=now_ms,
    )
    metrics.dead_letter("bad_envelope")
    got = samples(metrics)
    assert got[("gatewatch_worker_events_total", ())] == 4
    assert got[("gatewatch_worker_envelopes_total", ())] == 2  # the dead-lettered one too
    assert (
        got[
            (
                "gatewatch_decisions_total",
                (("action", "block"), ("detector", "bruteforce"), ("mode", "shadow")),
            )
        ]
        == 1
    )
    assert got[("gatewatch_alerts_emitted_total", (("kind", "finding"),))] == 2
    assert got[("gatewatch_alerts_emitted_total", (("kind", "decision"),))] == 1
    assert got[("gatewatch_worker_dead_letters_total", (("reason", "bad_envelope"),))] == 1
    assert got[("gatewatch_subjects_held", ())] == 7
    bucket = {
        float(dict(labels)["le"]): value
        for (name, labels), value in got.items()
        if name == "gatewatch_processing_lag_seconds_bucket"
    }
    assert bucket[0.05] == 1 and bucket[0.5] == 2 and bucket[2.5] == 2 and bucket[5.0] == 3
    assert bucket[300.0] == 3 and bucket[1800.0] == 4 and bucket[float("inf")] == 4
    assert sorted(bucket)[:-1] == list(LAG_BUCKETS_S)
    assert got[("gatewatch_processing_lag_seconds_count", ())] == 4
    assert abs(got[("gatewatch_processing_lag_seconds_sum", ())] - 1203.44) < 1e-6


def test_consumer_lag_per_partition_from_highwater_and_position() -> None:
    metrics = WorkerMetrics()
    metrics.positions.update({0: 90, 1: 500})
    metrics.set_consumer_lag("events", {0: 100, 1: 500, 2: 40})  # 2: nothing processed yet
    got = samples(metrics)
    assert got[("gatewatch_consumer_lag", (("partition", "0"), ("topic", "events")))] == 10
    assert got[("gatewatch_consumer_lag", (("partition", "1"), ("topic", "events")))] == 0
    assert ("gatewatch_consumer_lag", (("partition", "2"), ("topic", "events"))) not in got
    # Partition 0 went to another worker: its series goes too.
    metrics.set_consumer_lag("events", {1: 520})
    got = samples(metrics)
    assert ("gatewatch_consumer_lag", (("partition", "0"), ("topic", "events"))) not in got
    assert got[("gatewatch_consumer_lag", (("partition", "1"), ("topic", "events")))] == 20


class _TP:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition


class _Consumer:
    def assignment(self) -> set[_TP]:
        return {_TP("events", 3), _TP("other", 0)}

    def highwater(self, tp: _TP) -> int:
        return 1_000


def test_consumer_lag_read_from_a_faust_consumer() -> None:
    metrics = WorkerMetrics()
    metrics.positions[3] = 998
    metrics.refresh_consumer_lag(_Consumer(), "events")
    got = samples(metrics)
    assert got[("gatewatch_consumer_lag", (("partition", "3"), ("topic", "events")))] == 2
    assert not any(labels == (("partition", "0"), ("topic", "other")) for _, labels in got)


def test_an_unstarted_consumer_is_not_an_error() -> None:
    class NotStarted:
        def assignment(self) -> set[_TP]:
            raise RuntimeError("consumer not started")

    metrics = WorkerMetrics()
    metrics.refresh_consumer_lag(NotStarted(), "events")
    assert not any(name == "gatewatch_consumer_lag" for name, _ in samples(metrics))
