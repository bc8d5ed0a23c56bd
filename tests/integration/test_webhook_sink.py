"""The webhook sink over real HTTP against a receiver that verifies the HMAC signature and answers
like Slack's incoming webhooks (tests/receivers/webhook.py; Slack and Teams cannot run here):
messages within Block Kit's limits for hostile values, 429 with Retry-After and 5xx retried, a
refused message split so only the alert at fault is dead-lettered, stale or forged signatures
refused, Teams cards, templated bodies, and the runner honouring Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.alerts import Alert, AlertReason
from pipeline.config import Settings
from sinks.webhook import WebhookSink, build
from tests.alert_samples import HOSTILE, alert
from tests.receivers.webhook import WebhookServer
from tests.sinklib import produce, runner_for, with_settings

from .conftest import serve

SECRET = "webhook-test-secret"


@contextlib.asynccontextmanager
async def running(
    server: WebhookServer, settings: Settings, **more: Any
) -> AsyncIterator[WebhookSink]:
    runner, base = await serve(server.app())
    sink = build(
        with_settings(settings, sink_webhook_url=f"{base}/hook", sink_webhook_secret=SECRET, **more)
    )
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()
        await runner.cleanup()


def hostile(n: int, text: str) -> Alert:
    reasons = [AlertReason(detector="injection", code="sqli", text=text * 200, score=0.9)]
    return alert(n, title=text * 50, route=text, subject=f"consumer:{text}", scope="consumer",
                 reasons=reasons, evidence=[text])  # fmt: skip


def slack_texts(message: dict[str, Any]) -> str:
    return json.dumps(message["blocks"], ensure_ascii=False) + message["text"]


async def test_slack_messages_carry_every_alert_within_block_kit_limits(
    settings: Settings,
) -> None:
    alerts = [hostile(n, text) for n, text in enumerate(HOSTILE)]
    alerts += [alert(100 + n) for n in range(13)]
    server = WebhookServer(secret=SECRET, expect=3)
    async with running(server, settings) as sink:
        delivery = await sink.send(alerts)
    assert delivery.ok, delivery
    assert [status for _, status in server.requests] == [200, 200, 200]  # 25 alerts, 10 a message
    texts = [slack_texts(m) for m in server.messages]
    for a in alerts:
        assert sum(a.id in t for t in texts) == 1
    everything = "".join(texts)
    assert "<!channel>" not in everything and "&lt;!channel&gt;" in everything
    assert "<@U123>" not in everything


async def test_a_429_retries_the_rest_of_the_batch_after_retry_after(settings: Settings) -> None:
    alerts = [alert(n) for n in range(25)]
    server = WebhookServer(secret=SECRET, script=[(200, "ok", {}), (429, "rate_limited", {})])
    server.script[1][2]["Retry-After"] = "7"
    async with running(server, settings) as sink:
        delivery = await sink.send(alerts)
    assert delivery.retry == [a.id for a in alerts[10:]]
    assert delivery.retry_after == 7.0 and "429" in delivery.retry_reason
    assert not delivery.rejected and len(server.requests) == 2


async def test_server_errors_and_timeouts_are_retried_501_is_not(settings: Settings) -> None:
    for status, retried in ((500, True), (503, True), (408, True), (501, False), (410, False)):
        server = WebhookServer(secret=SECRET, script=[(status, "rollup_error", {})])
        async with running(server, settings) as sink:
            delivery = await sink.send([alert(1), alert(2)])
        if retried:
            assert delivery.retry == [alert(1).id, alert(2).id], status
            assert delivery.retry_after is None
        else:
            # The message of two was refused: each alone, the receiver took them.
            assert delivery.ok, status
            assert [s for _, s in server.requests] == [status, 200, 200]


async def test_a_refused_message_is_split_and_only_the_bad_alert_dead_lettered(
    settings: Settings,
) -> None:
    alerts = [alert(n) for n in range(10)]
    alerts[4] = alert(4, title="POISON in the title")
    server = WebhookServer(secret=SECRET, poison="POISON", expect=9)
    async with running(server, settings) as sink:
        delivery = await sink.send(alerts)
    assert delivery.rejected == {alerts[4].id: "HTTP 400: invalid_payload"}
    assert not delivery.retry
    delivered = "".join(slack_texts(m) for m in server.messages)  # accepted ones only
    assert len(server.messages) == 9 and server.requests[0][1] == 400
    assert all(a.id in delivered for a in alerts if a is not alerts[4])


async def test_channel_not_found_dead_letters_with_slacks_reason(settings: Settings) -> None:
    server = WebhookServer(secret=SECRET, script=[(404, "channel_not_found", {})] * 3)
    async with running(server, settings) as sink:
        delivery = await sink.send([alert(1), alert(2)])
    assert delivery.rejected == {
        alert(1).id: "HTTP 404: channel_not_found",
        alert(2).id: "HTTP 404: channel_not_found",
    }


async def test_an_unreachable_receiver_retries_everything(settings: Settings) -> None:
    from pipeline.stack import free_port

    url = f"http://127.0.0.1:{free_port()}/services/T0SECRET/B0SECRET"  # Slack's URL shape
    sink = build(with_settings(settings, sink_webhook_url=url))
    await sink.start()
    try:
        delivery = await sink.send([alert(1), alert(2)])
    finally:
        await sink.close()
    assert delivery.retry == [alert(1).id, alert(2).id]
    assert "127.0.0.1" in delivery.retry_reason and "SECRET" not in delivery.retry_reason


async def test_forged_and_replayed_requests_are_refused(settings: Settings) -> None:
    """The receiver's check: a wrong secret fails the HMAC; a request replayed later fails the
    timestamp window (and re-stamping it would break the HMAC)."""
    server = WebhookServer(secret="another-secret")
    async with running(server, settings) as sink:
        delivery = await sink.send([alert(1)])
    assert delivery.rejected == {alert(1).id: "HTTP 401: bad signature"}

    now = [1_000_000.0]
    server = WebhookServer(secret=SECRET, clock=lambda: now[0])
    async with running(server, settings) as sink:
        sink.clock = lambda: 1_000_000.0
        assert (await sink.send([alert(2)])).ok
        now[0] += 301  # the same request, five minutes later
        delivery = await sink.send([alert(2)])
    assert delivery.rejected == {alert(2).id: "HTTP 401: stale timestamp"}


async def test_teams_adaptive_cards(settings: Settings) -> None:
    alerts = [hostile(n, text) for n, text in enumerate(HOSTILE[:5])]
    server = WebhookServer(flavor="teams", secret=SECRET)
    async with running(server, settings, sink_webhook_format="teams") as sink:
        delivery = await sink.send(alerts)
    assert delivery.ok and [s for _, s in server.requests] == [202]
    [card] = [m["attachments"][0]["content"] for m in server.messages]
    facts = [f for block in card["body"] if block["type"] == "FactSet" for f in block["facts"]]
    assert {f["value"] for f in facts if f["title"] == "Alert id"} == {a.id for a in alerts}
    assert len(json.dumps(server.messages[0]).encode()) < 28 * 1024


async def test_a_template_renders_hostile_values_as_exact_json(
    settings: Settings, tmp_path: Path
) -> None:
    template = tmp_path / "hook.json"
    template.write_text(
        '{"summary": "[$severity] $title", "subject": "$subject", "route": "$route",'
        ' "score": $score, "enforced": $enforced, "at": $event_time, "alert": $alert_json}'
    )
    alerts = [hostile(n, text) for n, text in enumerate(HOSTILE)]
    server = WebhookServer(flavor="json", secret=SECRET, expect=len(alerts))
    more = {"sink_webhook_format": "template", "sink_webhook_template": str(template)}
    async with running(server, settings, **more) as sink:
        delivery = await sink.send(alerts)
    assert delivery.ok
    for a, message in zip(alerts, server.messages, strict=True):
        assert message["summary"] == f"[{a.severity}] {a.title}"
        assert (message["subject"], message["route"]) == (a.subject, a.route)
        assert (message["score"], message["enforced"], message["at"]) == (
            a.score, a.enforced, a.event_time,
        )  # fmt: skip
        assert Alert.model_validate(message["alert"]) == a


async def test_the_runner_waits_for_retry_after(settings: Settings) -> None:
    settings = with_settings(settings, sink_batch_linger_ms=20, sink_backoff_initial_s=0.01)
    alerts = [alert(200 + n) for n in range(12)]
    await produce(settings, [a.to_json() for a in alerts])
    server = WebhookServer(secret=SECRET, script=[(429, "rate_limited", {"Retry-After": "1"})])
    server.expect = 2
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    async with running(server, settings) as sink:
        runner = runner_for(settings, sink, producer)
        await runner.consumer.start()
        try:
            async with asyncio.timeout(30):
                handled = 0
                while handled < len(alerts):
                    handled += await runner.step(idle_s=0.2)
                await server.arrived.wait()
        finally:
            await runner.consumer.stop()
            await producer.stop()
    (refused_at, status), (retried_at, _) = server.requests[:2]
    assert status == 429 and retried_at - refused_at >= 1.0
    delivered = "".join(slack_texts(m) for m in server.messages)
    assert all(a.id in delivered for a in alerts)
    assert runner.totals.delivered == len(alerts)
