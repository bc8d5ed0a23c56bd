"""A broker unavailable for a while (its process stopped with SIGSTOP, then resumed: Tansu keeps
everything in memory, so a restart would be a new cluster), with senders that behave as Kong's
http-log queue does (retry every non-2xx with backoff) sending unique request ids throughout.

What must hold: every POST is answered 200 during the outage (the spool takes the entries), and
after recovery every acknowledged id is on the events topic, in its sender's order per partition;
duplicates are counted and must stay few. A collector killed with a non-empty spool (and a torn
last write) replays it when it starts again. A tcp-log receiver keeps reading during the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from pipeline import envelopes
from pipeline.config import Settings
from pipeline.ingest.collector import collector_app
from pipeline.ingest.kong import KongParser
from pipeline.ingest.spool import HEADER
from pipeline.ingest.syslog import SyslogMetrics, syslog_receiver
from pipeline.kafka import ensure_topics
from pipeline.stack import free_port, stop_process, tansu_binary, wait_for_port

from .conftest import PYTHON, ROOT, gatewatch_env, serve

BATCH = 25  # entries per POST


class Broker:
    """A Tansu process of the test's own, which the test can pause and resume."""

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self._log = open(logdir / "tansu.log", "wb")  # the child writes to it
        self.proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.proc, 30)

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        stop_process(self.proc)
        self._log.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
async def outage_settings(settings: Settings, broker: Broker) -> Settings:
    settings.kafka = broker.kafka
    settings.kafka_timeout_s = 2.0
    settings.spool_after_s = 0.5
    # Live timestamps here: the production window applies.
    settings.event_max_future_s = 86_400
    settings.event_max_age_s = 30 * 86_400
    await ensure_topics(settings)
    return settings


def entry(request_id: str, ip: str) -> dict[str, object]:
    return {
        "request": {"id": request_id, "method": "GET", "uri": "/v1/items", "size": 120},
        "response": {"status": 200, "size": 300},
        "latencies": {"request": 9, "kong": 1, "proxy": 8},
        "client_ip": ip,
        "started_at": int(time.time() * 1000),
    }


@dataclass
class Senders:
    """Kong-like http-log senders: one batch at a time, the same batch again after a non-2xx
    (or no answer) with backoff, as Kong's queue does."""

    url: str
    token: str
    count: int = 4
    acked: list[str] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)
    posts: list[tuple[float, float, list[str]]] = field(default_factory=list)  # start, end, ids
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            await asyncio.gather(*(self._sender(http, k) for k in range(self.count)))

    async def _sender(self, http: aiohttp.ClientSession, k: int) -> None:
        seq = 0
        while not self.stop.is_set():
            ids = [f"s{k}-{seq:06d}-{i:02d}" for i in range(BATCH)]
            # Ten addresses per sender: its entries spread over every partition.
            body = orjson.dumps([entry(rid, f"198.51.{k}.{i % 10}") for i, rid in enumerate(ids)])
            backoff = 0.05
            started = time.monotonic()
            while True:
                try:
                    async with http.post(self.url, data=body, timeout=_TIMEOUT) as resp:
                        self.answers[resp.status] += 1
                        if resp.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    self.answers[0] += 1
                await asyncio.sleep(backoff)  # Kong's retry backoff
                backoff = min(backoff * 2, 1.0)
            self.acked.extend(ids)
            self.posts.append((started, time.monotonic(), ids))
            seq += 1
            await asyncio.sleep(0.01)


_TIMEOUT = aiohttp.ClientTimeout(total=10)  # Kong's http-log default


@dataclass
class Arrived:
    ids: list[str]  # in topic order per partition, partitions one after another
    by_partition: dict[int, list[str]]

    @property
    def duplicates(self) -> int:
        return len(self.ids) - len(set(self.ids))


async def read_events(settings: Settings, wanted: set[str], timeout_s: float = 60) -> Arrived:
    """Every event on the events topic until all `wanted` ids are there (or time out)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    by_partition: dict[int, list[str]] = defaultdict(list)
    seen: set[str] = set()
    try:
        partitions = consumer.partitions_for_topic(settings.topics.events) or set()
        while not partitions:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(settings.topics.events) or set()
        consumer.assign([TopicPartition(settings.topics.events, p) for p in partitions])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not wanted <= seen:
                    batch = await consumer.getmany(timeout_ms=300)
                    for tp, records in batch.items():
                        for record in records:
                            for event in envelopes.decode(record.value):
                                assert event.request_id is not None
                                by_partition[tp.partition].append(event.request_id)
                                seen.add(event.request_id)
        # Whatever else is already there (late duplicates).
        for _ in range(3):
            batch = await consumer.getmany(timeout_ms=300)
            for tp, records in batch.items():
                for record in records:
                    by_partition[tp.partition].extend(
                        e.request_id or "" for e in envelopes.decode(record.value)
                    )
    finally:
        await consumer.stop()
    ids = [i for p in sorted(by_partition) for i in by_partition[p]]
    return Arrived(ids, dict(by_partition))


def out_of_order(arrived: Arrived) -> list[tuple[int, str, str]]:
    """(partition, earlier, later) where a sender's entry arrived behind one it sent later,
    counting each id's first arrival only."""
    wrong = []
    for p, ids in arrived.by_partition.items():
        last: dict[str, str] = {}
        seen: set[str] = set()
        for rid in ids:
            if rid in seen:
                continue
            seen.add(rid)
            sender = rid.split("-", 1)[0]
            if sender in last and rid < last[sender]:
                wrong.append((p, last[sender], rid))
            last[sender] = max(rid, last.get(sender, ""))
    return wrong


def tear(segment: Path) -> None:
    """What a crash in the middle of an append leaves: a header and part of its payload."""
    with open(segment, "ab") as torn:
        torn.write(HEADER.pack(4096, 9, 0) + b"partial")


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_a_broker_outage_is_absorbed_by_the_spool(
    outage_settings: Settings, broker: Broker
) -> None:
    settings = outage_settings
    async with collector_app(settings, spool="outage") as app:
        runner, base = await serve(app)
        try:
            senders = Senders(f"{base}/kong", settings.ingest_token.get_secret_value())
            sending = asyncio.create_task(senders.run())
            await asyncio.sleep(1.5)  # a timeline: healthy traffic first
            before = len(senders.acked)
            broker.pause()
            paused_at = time.monotonic()
            await asyncio.sleep(6)  # the outage
            during = len(senders.acked) - before
            broker.resume()
            await asyncio.sleep(2)  # recovery, still sending
            senders.stop.set()
            await sending
            arrived = await read_events(settings, set(senders.acked))
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/metrics") as resp:
                    metrics = await resp.text()
        finally:
            await runner.cleanup()

    acked = set(senders.acked)
    lost = acked - set(arrived.ids)
    print(
        f"acked={len(acked)} during_outage={during} lost={len(lost)} "
        f"duplicates={arrived.duplicates} answers={dict(senders.answers)} "
        f"spooled={metric(metrics, 'gatewatch_spool_spooled_total')} "
        f"replayed={metric(metrics, 'gatewatch_spool_replayed_total')} "
        f"settled={metric(metrics, 'gatewatch_spool_settled_total')}"
    )
    assert set(senders.answers) == {200}, "every POST answered 200, none retried"
    assert during >= 20 * BATCH, "the senders kept being acknowledged during the outage"
    assert not lost
    assert metric(metrics, "gatewatch_spool_spooled_total") >= during
    assert metric(metrics, "gatewatch_spool_replayed_total") > 0
    assert metric(metrics, "gatewatch_spool_records") == 0
    # Duplicates can only come from writes sent to Kafka before delivery switched to the spool
    # (POSTs in flight at the pause, or started in the spool_after_s after it): the paused
    # broker stores them on resuming although they had timed out and were replayed. Each may
    # be there up to three times (aiokafka retrying the timed-out request once, and the replay).
    exposed = {
        rid
        for start, end, ids in senders.posts
        if start <= paused_at + settings.spool_after_s and end >= paused_at
        for rid in ids
    }
    copies = Counter(arrived.ids)
    assert {rid for rid, n in copies.items() if n > 1} <= exposed
    assert max(copies.values()) <= 3
    assert out_of_order(arrived) == []


async def test_a_collector_killed_and_restarted_during_an_outage_loses_nothing(
    outage_settings: Settings, broker: Broker, tmp_path: Path
) -> None:
    settings = outage_settings
    port = free_port()
    env = gatewatch_env(settings)
    logs = tmp_path / "collector.log"

    def start() -> subprocess.Popen[bytes]:
        with open(logs, "ab") as out:
            proc = subprocess.Popen(
                [PYTHON, "-m", "pipeline", "collector", "--port", str(port)],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(port, proc, 60)
        return proc

    url = f"http://127.0.0.1:{port}/kong"
    headers = {"Authorization": f"Bearer {settings.ingest_token.get_secret_value()}"}
    ids = [f"k-{n:04d}" for n in range(250)]

    async def post(batch: list[str]) -> None:
        async with aiohttp.ClientSession(headers=headers) as http:
            for start_at in range(0, len(batch), 50):
                body = orjson.dumps([entry(rid, "203.0.113.5") for rid in batch[start_at:][:50]])
                async with http.post(url, data=body) as resp:
                    assert resp.status == 200  # spooled: the broker is stopped

    collector = start()
    try:
        broker.pause()
        await post(ids[:200])
        collector.kill()  # kill -9: no clean shutdown
        collector.wait()
        spool = Path(settings.spool_dir) / f"collector-{port}"
        segments = sorted(spool.glob("*.seg"))
        assert segments, "the acknowledged entries are on disk"
        tear(segments[-1])  # and a write cut short by the crash
        # Started again while the broker is still stopped: it comes up, and spools.
        collector = start()
        await post(ids[200:])
        broker.resume()
        arrived = await read_events(settings, set(ids))
    finally:
        stop_process(collector)
    text = logs.read_text()
    assert "spool.truncated" in text and "delivery.replaying" in text
    assert "ingest.kafka_unreachable" in text and "ingest.kafka_connected" in text
    assert set(ids) <= set(arrived.ids)
    assert out_of_order(arrived) == []
    print(f"replayed after restart: {len(ids)} ids, duplicates={arrived.duplicates}")


async def test_tcp_log_keeps_reading_through_an_outage(
    outage_settings: Settings, broker: Broker
) -> None:
    settings = outage_settings
    registry = CollectorRegistry()
    ids = [f"t-{n:04d}" for n in range(300)]
    async with syslog_receiver(
        settings,
        allow=["127.0.0.0/8"],
        metrics=SyslogMetrics(registry),
        parser_factory=KongParser,
        spool="tcp-log",
    ) as receiver:
        port = await receiver.start_tcp("127.0.0.1", 0)
        broker.pause()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for rid in ids:
            writer.write(orjson.dumps(entry(rid, "192.0.2.77")) + b"\r\n")
            await writer.drain()

        def accepted() -> float:
            labels = {"transport": "tcp", "outcome": "accepted"}
            return registry.get_sample_value("gatewatch_syslog_messages_total", labels) or 0.0

        # Acknowledged (spooled) while the broker is still stopped: not held by push-back.
        await receiver.wait_until(lambda: accepted() == len(ids), timeout_s=30)
        assert registry.get_sample_value("gatewatch_spool_records") == len(ids)
        broker.resume()
        arrived = await read_events(settings, set(ids))
        writer.close()
        await writer.wait_closed()
    assert set(ids) <= set(arrived.ids)
    assert out_of_order(arrived) == []
