"""The CEF sink against a real rsyslogd (tests/integration/rsyslog.py) over TCP, TLS and UDP:
rsyslog's own CEF parser (mmnormalize + liblognorm `%cef%`) must read back every field exactly,
hostile values included; oversized alerts arrive cut but whole; a restarted receiver is
reconnected and what it did not take is retried; a receiver whose certificate the CA did not sign
gets nothing; and alerts on the topic reach rsyslog through the sink runner."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.alerts import Alert, AlertReason
from pipeline.config import Settings
from sinks.cef import ELLIPSIS, CefSink, build
from tests.alert_samples import HOSTILE, alert, operator_alert, random_text
from tests.liblognorm_cef import CONTROL, carried, cef_part, lognorm_cef
from tests.sinklib import produce, runner_for, with_settings

from .rsyslog import Pki, Rsyslog, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("cef-pki"))


@pytest.fixture(scope="module")
async def rsyslog(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> AsyncIterator[Rsyslog]:
    receiver = Rsyslog(tmp_path_factory.mktemp("rsyslog"), pki)
    await receiver.start()
    yield receiver
    receiver.stop()


def cef_settings(settings: Settings, receiver: Rsyslog, transport: str, **more: Any) -> Settings:
    pki = receiver.pki
    ports = {"tcp": receiver.tcp, "tls": receiver.tls, "tls-anon": receiver.tls_anon}
    ports["udp"] = receiver.udp
    tls: dict[str, Any] = {}
    if transport.startswith("tls"):
        tls = {"sink_cef_tls_ca": str(pki.ca)}
    if transport == "tls":
        tls |= {"sink_cef_tls_cert": str(pki.client_cert), "sink_cef_tls_key": str(pki.client_key)}
    return with_settings(
        settings,
        sink_cef_host="127.0.0.1",
        sink_cef_port=ports[transport],
        sink_cef_transport=transport.removesuffix("-anon"),
        sink_cef_hostname="gw-test-host",
        **(tls | more),
    )


async def deliver(settings: Settings, alerts: list[Alert]) -> CefSink:
    sink = build(settings)
    await sink.start()
    try:
        delivery = await sink.send(alerts)
        assert delivery.ok, delivery
    finally:
        await sink.close()
    return sink


def header_text(text: str) -> str:
    return CONTROL.sub("\ufffd", text).replace("\r", " ").replace("\n", " ") or "-"


def assert_parsed_exactly(record: dict[str, Any], a: Alert, sink: CefSink) -> None:
    """rsyslog's parse equals what the alert says, and equals our model of liblognorm."""
    cef = record["parsed"]["cef"]
    ext = cef["Extensions"]
    assert cef["DeviceVendor"] == cef["DeviceProduct"] == "gatewatch"
    assert cef["Name"] == header_text(a.title)
    top = max(a.reasons, key=lambda r: r.score, default=None)
    assert cef["SignatureID"] == (a.operator.action if a.operator else top.code if top else "-")
    assert cef["Severity"] == str({"info": 1, "low": 3, "medium": 5, "high": 8}[a.severity])
    assert ext["externalId"] == a.id
    assert (ext["rt"], ext["start"]) == (str(a.emit_time), str(a.event_time))
    assert ext["cs1"] == carried(a.subject) and ext["cs1Label"] == "subject"
    assert ext["cs2"] == a.mode and ext["cat"] == a.kind
    if a.route:
        assert ext["request"] == carried(a.route)
    if a.reasons:
        assert ext["msg"] == carried("; ".join(f"{r.detector}: {r.text}" for r in a.reasons))
        assert ext["cs3"] == carried(",".join(r.code for r in a.reasons))
    if a.scope == "consumer" and not a.operator:
        assert ext.get("suser", "") == carried(a.subject.partition(":")[2])  # empty: absent
    # The syslog header rsyslog read.
    assert record["hostname"] == "gw-test-host" and record["app"] == "gatewatch"
    assert record["msgid"] == a.kind and record["procid"] == "-"
    stamp = datetime.fromisoformat(record["time"])
    assert stamp == datetime.fromtimestamp(a.emit_time / 1000, UTC)
    # And liblognorm agrees with the Python model the unit tests use.
    assert record["parsed"]["cef"] == lognorm_cef(cef_part(sink.formatter.record(a)))


def hostile_alerts() -> list[Alert]:
    out = [alert(0), operator_alert(1)]
    for n, text in enumerate(HOSTILE, start=2):
        reasons = [AlertReason(detector="injection", code=f"c|{n}=x", text=text, score=0.9)]
        out.append(
            alert(
                n,
                title=text,
                route=text,
                subject=f"consumer:{text}",
                scope="consumer",
                tenant=text,
                reasons=reasons,
                evidence=[text, "req-2"],
            )
        )
    return out


@pytest.mark.parametrize("transport", ["tcp", "tls", "tls-anon", "udp"])
async def test_rsyslog_parses_every_field_back_exactly(
    settings: Settings, rsyslog: Rsyslog, transport: str
) -> None:
    alerts = [a.model_copy(update={"id": f"{a.id}-{transport}"}) for a in hostile_alerts()]
    sink = await deliver(cef_settings(settings, rsyslog, transport), alerts)
    got = await rsyslog.wait_for({a.id for a in alerts})
    for a in alerts:
        assert got[a.id]["input"] == transport
        assert_parsed_exactly(got[a.id], a, sink)


async def test_random_values_over_tcp(settings: Settings, rsyslog: Rsyslog) -> None:
    rng = random.Random(20240501)
    alerts = []
    for n in range(150):
        text = [random_text(rng) for _ in range(4)]
        alerts.append(
            alert(
                1000 + n,
                title=text[0],
                route=text[1],
                subject=f"consumer:{text[2]}",
                scope="consumer",
                reasons=[AlertReason(detector="d", code="c", text=text[3], score=0.5)],
            )
        )
    sink = await deliver(cef_settings(settings, rsyslog, "tcp"), alerts)
    got = await rsyslog.wait_for({a.id for a in alerts})
    for a in alerts:
        assert_parsed_exactly(got[a.id], a, sink)


@pytest.mark.parametrize(("transport", "limit"), [("tcp", 8096), ("udp", 2048)])
async def test_oversized_alerts_arrive_cut_but_whole(
    settings: Settings, rsyslog: Rsyslog, transport: str, limit: int
) -> None:
    """rsyslog's own limit (8,096 by default) and UDP's are never crossed: the long free text is
    cut with an ellipsis and the record still parses; no fragment becomes a message of its own."""
    before = len(rsyslog.records())
    long = "x=y|z\\ " * 4000
    a = alert(2000 if transport == "tcp" else 2001, title=long, route="/v1/" + long)
    a.reasons[0].text = long
    sink = await deliver(cef_settings(settings, rsyslog, transport), [a])
    assert len(sink.formatter.record(a)) <= limit
    got = (await rsyslog.wait_for({a.id}))[a.id]
    ext = got["parsed"]["cef"]["Extensions"]
    assert got["parsed"]["cef"]["Name"].endswith(ELLIPSIS)
    assert ext["request"].endswith(ELLIPSIS) and ("/v1/" + long).startswith(ext["request"][:-1])
    assert ext["rt"] == str(a.emit_time) and ext["cs1"] == a.subject
    assert all("cef" in r["parsed"] for r in rsyslog.records()[before:])


async def test_a_restarted_receiver_is_reconnected_and_nothing_is_lost(
    settings: Settings, tmp_path: Path, pki: Pki
) -> None:
    receiver = Rsyslog(tmp_path, pki)
    await receiver.start()
    sink = build(cef_settings(settings, receiver, "tcp"))
    await sink.start()
    try:
        first = [alert(3000 + n) for n in range(5)]
        assert (await sink.send(first)).ok
        await receiver.wait_for({a.id for a in first})
        receiver.stop()  # closes its end: the sink notices before writing again
        down = [alert(3100 + n) for n in range(5)]
        delivery = await sink.send(down)
        assert sorted(delivery.retry) == sorted(a.id for a in down)
        assert "tcp://127.0.0.1" in delivery.retry_reason
        await receiver.start()  # same ports
        second = [alert(3200 + n) for n in range(5)]
        assert (await sink.send(down + second)).ok
        got = await receiver.wait_for({a.id for a in first + down + second})
        assert len(got) == 15
        assert sink.transport.connects == 2  # type: ignore[attr-defined]
    finally:
        await sink.close()
        receiver.stop()


async def test_a_receiver_certificate_from_another_ca_gets_nothing(
    settings: Settings, rsyslog: Rsyslog
) -> None:
    settings = cef_settings(settings, rsyslog, "tls", sink_cef_tls_ca=str(rsyslog.pki.other_ca))
    sink = build(settings)
    await sink.start()
    try:
        delivery = await sink.send([alert(4000)])
    finally:
        await sink.close()
    assert delivery.retry == [alert(4000).id]
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.retry_reason


async def test_alerts_on_the_topic_reach_rsyslog_through_the_runner(
    settings: Settings, rsyslog: Rsyslog
) -> None:
    settings = cef_settings(settings, rsyslog, "tls", sink_batch_linger_ms=20)
    alerts = [alert(5000 + n) for n in range(40)]
    await produce(settings, [a.to_json() for a in alerts])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    sink = build(settings)
    runner = runner_for(settings, sink, producer)
    await sink.start()
    await runner.consumer.start()
    try:
        handled = 0
        async with asyncio.timeout(30):
            while handled < len(alerts):
                handled += await runner.step(idle_s=0.2)
        got = await rsyslog.wait_for({a.id for a in alerts})
    finally:
        await runner.consumer.stop()
        await sink.close()
        await producer.stop()
    assert runner.totals.delivered == len(alerts) and runner.totals.rejected == 0
    for a in alerts:
        assert_parsed_exactly(got[a.id], a, sink)
