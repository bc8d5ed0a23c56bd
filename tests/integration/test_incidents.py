"""The incident sink against a real Redis, and the `incidents` / `incident` commands reading it."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import orjson
from redis.asyncio import Redis

from pipeline.alerts import OperatorAction
from pipeline.config import Settings, to_environment
from pipeline.incidents import RedisIncidentStore
from pipeline.incidents.testing import make_alert
from pipeline.stack import free_port
from sinks.incidents import IncidentSink, build

NOW = int(time.time() * 1000)


def campaign(t0: int) -> list:
    stuffing = [
        make_alert(subject=f"ip:203.0.113.{i}", mode="shadow", t=t0 + i * 1000,
                   feature="failed_logins", value=30, evidence=[f"req-{i}"])
        for i in range(1, 6)
    ]  # fmt: skip
    flood = [
        make_alert(subject="consumer:partner-7", detector="rate", code="flood", t=t0 + 500,
                   route="/v1/orders", feature="requests_per_s", value=400, limit=50),
        make_alert(subject="consumer:partner-7", kind="operator", action="allow", t=t0 + 60_000,
                   detector="operator", route=None,
                   operator=OperatorAction(action="override_allow", actor="alice",
                                           reason="nightly sync")),
    ]  # fmt: skip
    return stuffing + flood


async def gatewatch(settings: Settings, *args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", *args,
        env=os.environ | to_environment(settings) | {"COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err


async def test_sink_builds_bounded_expiring_incidents_and_the_cli_lists_them(
    settings: Settings, redis: Redis
) -> None:
    sink = build(settings)
    await sink.start()
    try:
        alerts = campaign(NOW - 120_000)
        assert (await sink.send(alerts[:4])).ok
        assert (await sink.send(alerts[2:])).ok  # overlaps: redelivered alerts change nothing
        assert (await sink.send(alerts)).ok
    finally:
        await sink.close()

    store = RedisIncidentStore(redis, settings.redis_prefix)
    incidents = await store.recent()
    assert sorted(i.alerts for i in incidents) == [2, 5]
    stuffing = next(i for i in incidents if i.alerts == 5)
    assert stuffing.subjects_total == 5
    # Every key is under the configured prefix and expires.
    keys = [k async for k in redis.scan_iter(f"{settings.redis_prefix}inc:*")]
    assert keys and all(k.decode().startswith(f"{settings.redis_prefix}inc:") for k in keys)
    # The indexes (consumed alert ids, opened incidents) are trimmed instead: by age and count.
    ttls = [await redis.pttl(k) for k in keys if not k.endswith((b":seen", b":count", b":open"))]
    assert ttls and all(0 < ttl <= settings.incident_retention_s * 1000 for ttl in ttls)

    code, out, err = await gatewatch(settings, "incidents", "--since", "1h", "--json")
    assert code == 0, err
    listed = orjson.loads(out)["incidents"]
    by_id = {i["id"]: i for i in listed}
    assert set(by_id) == {i.id for i in incidents}
    s = by_id[stuffing.id]
    assert s["status"] == "open"
    assert s["done"] == "would have blocked 5 addresses in shadow"
    assert s["next_step"].startswith("move /v1/login from shadow to challenge")
    assert s["action_mode"] == "would block/shadow"

    flood_id = next(i.id for i in incidents if i.alerts == 2)
    code, out, err = await gatewatch(settings, "incident", flood_id, "--json")
    assert code == 0, err
    shown = orjson.loads(out)
    assert shown["incident"]["operator"] == (
        "override_allow consumer:partner-7 by alice: 'nightly sync'"
    )
    assert [e["event"] for e in shown["timeline"]] == ["opened", "operator"]

    code, out, _ = await gatewatch(settings, "incidents", "--since", "1h")
    assert code == 0 and stuffing.id.encode() in out and b"would block/shadow" in out
    code, _, err = await gatewatch(settings, "incident", "inc-nothere")
    assert code == 1 and b"no incident" in err


async def test_redis_down_asks_the_runner_to_retry_the_batch_and_loses_nothing(
    settings: Settings, redis: Redis
) -> None:
    down = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    sink = IncidentSink(RedisIncidentStore(down, settings.redis_prefix), redis=down)
    alerts = campaign(NOW)
    delivery = await sink.send(alerts)
    assert sorted(delivery.retry) == sorted(a.id for a in alerts) and delivery.retry_reason
    await sink.close()
    # The retried batch against the Redis that is up makes the same incidents as a first send.
    up = build(settings)
    assert (await up.send(alerts)).ok
    await up.close()
    assert len(await RedisIncidentStore(redis, settings.redis_prefix).recent()) == 2


async def test_gatewatch_sink_incidents_runs_it_and_a_restart_neither_loses_nor_doubles(
    settings: Settings, redis: Redis
) -> None:
    """The real command on the real broker: alerts (each written twice, as a worker replay
    would) become incidents; killed and restarted, the sink goes on from its cursor."""
    from tests.sinklib import produce, wait_until

    store = RedisIncidentStore(redis, settings.redis_prefix)
    env = os.environ | to_environment(settings) | {"GATEWATCH_SINK_BATCH_LINGER_MS": "20"}

    async def total_alerts() -> int:
        return sum(i.alerts for i in await store.recent())

    first, second = campaign(NOW - 600_000), campaign(NOW - 300_000)[:5]
    await produce(settings, [a.to_json() for a in first + first])
    for batch in (first, second):
        if batch is second:
            await produce(settings, [a.to_json() for a in second + first[:2]])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "sink", "incidents", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            expected = len(first) + (len(second) if batch is second else 0)
            await wait_until(lambda n=expected: _equals(total_alerts(), n), timeout_s=60)
        finally:
            proc.terminate()
            _, err = await proc.communicate()
        assert proc.returncode == 0, err
    incidents = await store.recent()
    # The second stuffing wave came 5 minutes after the first, inside the quiet window: one
    # incident with both waves' 10 alerts, plus the partner's flood with its override.
    assert sorted(i.alerts for i in incidents) == [2, 10]


async def _equals(value, expected: int) -> bool:
    return await value == expected
