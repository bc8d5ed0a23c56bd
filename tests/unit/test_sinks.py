"""Sink parts that need no receiver: backoff bounds, the HEC event and bulk lines as encoded,
configuration errors as one clear line."""

from __future__ import annotations

import gzip
import importlib
import json
import random
import subprocess
import sys

import pytest

from pipeline.alerts import Alert
from pipeline.config import Settings
from sinks import http
from sinks.base import SinkConfigError
from sinks.elastic import ElasticBulkSink
from sinks.registry import SINKS, build_sink
from sinks.runner import Backoff
from sinks.splunk import SplunkHecSink
from tests.sinklib import make_alert


def test_backoff_grows_jittered_and_capped() -> None:
    backoff = Backoff(initial_s=0.2, max_s=5.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.2), (2, 0.4), (3, 0.8), (6, 5.0), (60, 5.0)]:
        waits = [backoff.delay(attempt, None, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 4  # jittered, not in step


def test_retry_after_is_a_floor_with_a_cap() -> None:
    backoff = Backoff(initial_s=0.2, max_s=5.0, max_retry_after_s=60.0)
    rng = random.Random(1)
    assert backoff.delay(1, 3.0, rng) == 3.0
    assert backoff.delay(1, 3600.0, rng) == 60.0
    assert 2.5 <= backoff.delay(8, 0.5, rng) <= 5.0  # a short Retry-After does not cut backoff


def test_hec_event_is_the_envelope_around_the_alert() -> None:
    sink = SplunkHecSink(url="https://splunk:8088/", token="t", index="sec", host="")
    alert = make_alert(7)
    event = json.loads(sink.encode(alert))
    assert event == {
        "time": alert.event_time / 1000,
        "host": "kong-1",
        "source": "gatewatch",
        "sourcetype": "gatewatch:alert",
        "index": "sec",
        "event": alert.model_dump(mode="json"),
    }
    assert Alert.model_validate(event["event"]) == alert


def test_bulk_lines_are_a_create_action_and_a_document() -> None:
    sink = ElasticBulkSink(url="https://es:9200", data_stream="logs-x-default", authorization="a")
    action, document, end = sink.encode(make_alert(2)).split(b"\n")
    assert json.loads(action) == {"create": {"_index": "logs-x-default", "_id": make_alert(2).id}}
    assert json.loads(document)["event"]["id"] == make_alert(2).id
    assert end == b""  # each pair ends with a newline, so the body does


def test_gzip_is_gzip() -> None:
    data = b"".join(make_alert(i).to_json() for i in range(50))
    packed = http.gzip(data)
    assert gzip.decompress(packed) == data
    assert len(packed) * 4 < len(data)


@pytest.mark.parametrize(
    ("name", "env", "message"),
    [
        ("splunk", {}, "set GATEWATCH_SINK_SPLUNK_URL"),
        ("splunk", {"sink_splunk_url": "https://s:8088"}, "set GATEWATCH_SINK_SPLUNK_TOKEN"),
        (
            "splunk",
            {"sink_splunk_url": "https://s", "sink_splunk_token": "t", "sink_splunk_channel": "x"},
            "GATEWATCH_SINK_SPLUNK_CHANNEL must be a GUID",
        ),
        ("elastic", {"sink_elastic_url": "https://es"}, "set GATEWATCH_SINK_ELASTIC_API_KEY"),
        ("kafka", {}, "set GATEWATCH_SINK_KAFKA_TOPIC"),
        ("kafka", {"sink_kafka_topic": "gatewatch.alerts"}, "alerts would loop"),
        ("nope", {}, "unknown sink 'nope'; one of: "),
    ],
)
async def test_missing_settings_name_their_variable(
    name: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SinkConfigError, match=message.replace(".", r"\.")):
        build_sink(name, Settings.model_validate(env))


def test_every_registered_sink_module_exposes_build() -> None:
    assert set(SINKS) >= {"elastic", "kafka", "splunk"}
    for module in SINKS.values():
        assert callable(importlib.import_module(module).build), module


def test_the_command_stops_with_one_line_on_bad_configuration() -> None:
    env = {"PATH": "/usr/bin:/bin", "GATEWATCH_SINK_ELASTIC_URL": "https://es:9200"}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "sink", "elastic"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "gatewatch sink: set GATEWATCH_SINK_ELASTIC_API_KEY, or GATEWATCH_SINK_ELASTIC_USERNAME "
        "and _PASSWORD"
    ]


class _Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset = offset
        self.value = value


class _Consumer:
    """Hands out the given records once, then nothing (the runner's fetch loop ends)."""

    def __init__(self, tp: object, records: list[_Record]) -> None:
        self.batches = [{tp: records}]

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        return self.batches.pop(0) if self.batches else {}


async def test_a_finding_window_sent_again_in_one_batch_keeps_its_final_count() -> None:
    from aiokafka import TopicPartition
    from prometheus_client import CollectorRegistry

    from sinks.metrics import SinkMetrics
    from sinks.runner import SinkRunner

    opened = make_alert(4, code="sqli")  # a finding window as first written
    closed = opened.model_copy(update={"count": 5000})
    other = make_alert(7)
    tp = TopicPartition("alerts", 0)
    records = [
        _Record(0, opened.to_json()),
        _Record(1, other.to_json()),
        _Record(2, closed.to_json()),
        _Record(3, opened.to_json()),  # a replay of the first write must not undo the count
    ]
    runner = SinkRunner(
        sink=SplunkHecSink(url="http://127.0.0.1:1", token="t"),  # named, never called
        consumer=_Consumer(tp, records),  # type: ignore[arg-type]
        dead_letters=None,  # type: ignore[arg-type]
        metrics=SinkMetrics(CollectorRegistry()),
    )
    batch = await runner._fetch(idle_s=0.01)
    assert [a.id for a in batch.alerts] == [opened.id, other.id]
    assert batch.alerts[0].count == 5000
    assert Alert.from_json(batch.raw[opened.id]).count == 5000
    assert batch.offsets[tp] == 4
