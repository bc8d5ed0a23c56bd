"""Implausible values are rejected with a reason on every parser path: the Kong reference parser
and fast path (http-log, kafka-log, tcp-log), and Apigee (HTTP and syslog): statuses outside
100-599, timestamps far from now, negative sizes and latencies."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from pipeline.ingest.apigee import ApigeeParser
from pipeline.ingest.kong import KongParser
from pipeline.ingest.normalize import TimeWindow
from pipeline.ingest.redaction import Redactor
from pipeline.ingest.syslog import SyslogMetrics, SyslogReceiver
from tests.unit.agreement import FIXED_CLOCK, same_answer
from tests.unit.conftest import REDACTION_KEY, body, kong_entry

NOW_MS = int(FIXED_CLOCK * 1000)
DAY_MS = 86_400_000
WINDOW = TimeWindow(max_future_s=86_400, max_age_s=30 * 86_400, clock=lambda: FIXED_CLOCK)
KONG = KongParser(Redactor(REDACTION_KEY), clock=lambda: FIXED_CLOCK, window=WINDOW)
APIGEE = ApigeeParser(Redactor(REDACTION_KEY), window=WINDOW)


def kong(**changes: Any) -> dict[str, Any]:
    """The 3.8 fixture, timestamped now, with `changes` at dotted paths."""
    entry = kong_entry("3.8")
    entry["started_at"] = NOW_MS - 5_000
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = entry
        for key in parents:
            node = node[key]
        node[leaf] = value
    return entry


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"response__status": 99999}, "response.status: 99999 is not an HTTP status (100-599)"),
        ({"response__status": 42}, "response.status: 42 is not an HTTP status (100-599)"),
        ({"response__status": "600"}, "response.status: 600 is not an HTTP status (100-599)"),
        ({"started_at": -5}, "started_at: -5 is not an epoch-millisecond timestamp"),
        ({"started_at": 0}, "started_at: 0 is not an epoch-millisecond timestamp"),
        ({"started_at": NOW_MS + 2 * DAY_MS}, "started_at: 2 days in the future (limit 1 day)"),
        ({"started_at": NOW_MS - 45 * DAY_MS}, "started_at: 45 days in the past (limit 30 days)"),
        ({"request__size": -1}, "request.size: -1 is negative"),
        ({"response__size": "-20"}, "response.size: -20 is negative"),
        ({"latencies__request": -3}, "latencies.request: -3 is negative"),
        ({"latencies__kong": -1}, "latencies.kong: -1 is negative"),
        ({"latencies__proxy": -2}, "latencies.proxy: -2 is negative"),
    ],
)
def test_kong_rejects_implausible_values_on_both_paths(
    changes: dict[str, Any], reason: str
) -> None:
    good = kong()
    result = same_answer(KONG, body(good, kong(**changes), good))
    assert not result.fast  # the fast path leaves the reject to the reference
    assert len(result.records) == 2
    assert [r.reason for r in result.rejects] == [reason]


def test_kong_plausible_edges_take_the_fast_path() -> None:
    entries = [
        kong(latencies__proxy=-1),  # Kong answered itself: no upstream latency
        kong(response__status=100),
        kong(response__status=599),
        kong(started_at=NOW_MS + DAY_MS - 1000),
        kong(started_at=NOW_MS - 30 * DAY_MS + 1000),
        kong(request__size=0, latencies__request=0),
    ]
    result = same_answer(KONG, body(*entries))
    assert result.fast and len(result.records) == len(entries)
    assert result.records[0]["upstream_latency_ms"] is None


def test_without_a_window_old_logs_pass_but_not_negative_timestamps() -> None:
    offline = KongParser(Redactor(REDACTION_KEY), clock=lambda: FIXED_CLOCK)
    old = kong(started_at=1_400_000_000_000)
    assert same_answer(offline, body(old)).records[0]["ts_ms"] == 1_400_000_000_000
    rejects = same_answer(offline, body(kong(started_at=-1))).rejects
    assert [r.reason for r in rejects] == ["started_at: -1 is not an epoch-millisecond timestamp"]


def test_a_zero_bound_is_no_bound() -> None:
    low, high = TimeWindow(max_future_s=0, max_age_s=0, clock=lambda: FIXED_CLOCK).bounds()
    assert low == 1 and high == 2**63 - 1


def apigee(**changes: str) -> bytes:
    record = {
        "client.ip": "198.51.100.7",
        "request.verb": "GET",
        "request.path": "/v1/orders/42",
        "message.status.code": "200",
        "messageid": "m-1",
        "client.received.start.timestamp": str(NOW_MS - 300),
        "client.sent.end.timestamp": str(NOW_MS - 100),
    }
    record.update({k.replace("__", "."): v for k, v in changes.items()})
    return orjson.dumps({k: v for k, v in record.items() if v is not None})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"message__status__code": "600"}, "message.status.code: 600 is not an HTTP status"),
        ({"message__status__code": "99999"}, "message.status.code: 99999 is not an HTTP status"),
        (
            {
                "client__received__start__timestamp": str(NOW_MS + 3 * DAY_MS),
                "client__sent__end__timestamp": str(NOW_MS + 3 * DAY_MS + 10),
            },
            "client.received.start.timestamp: 3 days in the future",
        ),
        (
            {
                "client__received__start__timestamp": str(NOW_MS - 40 * DAY_MS),
                "client__sent__end__timestamp": str(NOW_MS - 40 * DAY_MS + 10),
            },
            "client.received.start.timestamp: 40 days in the past",
        ),
        (
            {"client__sent__end__timestamp": str(NOW_MS - 1000)},
            "client.sent.end.timestamp: before client.received.start.timestamp",
        ),
        (
            {
                "target__sent__start__timestamp": str(NOW_MS - 200),
                "target__received__end__timestamp": str(NOW_MS - 250),
            },
            "target.received.end.timestamp: before target.sent.start.timestamp",
        ),
    ],
)
def test_apigee_rejects_implausible_values(changes: dict[str, str], reason: str) -> None:
    result = APIGEE.parse_payload(apigee(**changes))
    assert not result.events
    [reject] = result.rejects
    assert reject.reason.startswith(reason)


def test_apigee_falls_back_to_the_syslog_timestamp_and_checks_it_too() -> None:
    payload = apigee(client__received__start__timestamp=None, client__sent__end__timestamp=None)
    assert APIGEE.parse_payload(payload, ts_ms=NOW_MS - 1000).events[0].ts_ms == NOW_MS - 1000
    result = APIGEE.parse_payload(payload, ts_ms=NOW_MS - 60 * DAY_MS)
    assert result.rejects[0].reason == "syslog.timestamp: 60 days in the past (limit 30 days)"


def test_tcp_log_lines_get_the_same_rejects() -> None:
    """Kong tcp-log through the line receiver's parsing (what `gatewatch tcp-log` runs)."""
    receiver = SyslogReceiver(
        KongParser(Redactor(REDACTION_KEY), window=WINDOW),
        delivery=None,  # type: ignore[arg-type]  # parsing only
        allow=["127.0.0.1/32"],
        metrics=SyslogMetrics(CollectorRegistry()),
    )
    lines = [
        orjson.dumps(kong(response__status=99999)),
        orjson.dumps(kong(started_at=-7)),
        orjson.dumps(kong()),
    ]
    events, rejects = receiver._parse((line, "127.0.0.1") for line in lines)
    assert len(events) == 1
    assert [r.reason for _, r in rejects] == [
        "response.status: 99999 is not an HTTP status (100-599)",
        "started_at: -7 is not an epoch-millisecond timestamp",
    ]
