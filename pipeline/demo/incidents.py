"""The demo's incident builder: the `incidents` sink, run in-process by the sink runner over the
alerts the worker writes, exactly as `gatewatch sink incidents` runs it, keeping the alerts it saw
for the demo's report."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from rich.console import Console
from rich.markup import escape

from pipeline.alerts import Alert
from pipeline.config import Settings
from pipeline.incidents import RedisIncidentStore, summarize
from pipeline.kafka import DeadLetters, ensure_topics
from pipeline.report.data import collect
from pipeline.report.deliver import write_file
from pipeline.report.render import render
from pipeline.report.sources import unique
from sinks.base import Delivery
from sinks.command import make_runner
from sinks.incidents import IncidentSink
from sinks.metrics import SinkMetrics
from sinks.runner import SinkRunner

__all__ = ["DemoIncidents", "incidents_ok", "print_incidents"]

SETTLE_S = 1.5  # the alerts topic is drained when nothing new arrived for this long


class _RecordingSink(IncidentSink):
    """The incident sink, also keeping every alert it folded (the report reads them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alerts: list[Alert] = []
        self.last_batch = time.monotonic()

    async def send(self, alerts: list[Alert]) -> Delivery:
        delivery = await super().send(alerts)
        if delivery.ok:
            self.alerts.extend(alerts)
        self.last_batch = time.monotonic()
        return delivery


class DemoIncidents:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.store = RedisIncidentStore(redis, settings.redis_prefix)
        self.sink = _RecordingSink(self.store, quiet_s=settings.incident_quiet_s)
        self.started_ms = int(time.time() * 1000)
        self._producer: AIOKafkaProducer | None = None
        self._runner: SinkRunner | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # The topic exists before the runner subscribes, so it is assigned from the first alert.
        await ensure_topics(self.settings)
        self._producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka)
        await self._producer.start()
        dead = DeadLetters(self._producer, self.settings.topics.dlq)
        self._runner = make_runner(self.settings, self.sink, dead, SinkMetrics(CollectorRegistry()))
        await self._runner.consumer.start()
        self._task = asyncio.create_task(self._runner.run())

    async def drain(self, timeout_s: float = 20.0) -> None:
        """Wait until the runner has had nothing new for `SETTLE_S` (the worker has already
        processed every event, and it writes alerts before committing)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and time.monotonic() - self.sink.last_batch < SETTLE_S:
            if self._task is not None and self._task.done():
                self._task.result()  # the runner died: say why
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runner is not None:
            await self._runner.consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    @property
    def alert_count(self) -> int:
        return len({a.id for a in self.sink.alerts})

    async def summaries(self, attackers: set[str]) -> list[dict[str, Any]]:
        """The incidents raised, each with the subjects in it that belong to an attacker."""
        now_ms = int(time.time() * 1000)
        out = []
        for incident in await self.store.recent(self.started_ms):
            s = summarize(incident, now_ms=now_ms, quiet_s=self.settings.incident_quiet_s)
            out.append(s.as_dict() | {
                "attack_subjects": sorted(set(incident.subjects) & attackers),
                "benign_subjects": sorted(set(incident.subjects) - attackers),
            })  # fmt: skip
        return out

    async def write_report(self, path: Path) -> dict[str, Any]:
        now_ms = int(time.time() * 1000)
        alerts = unique(self.sink.alerts, self.started_ms - 3_600_000, now_ms)
        data = collect(
            alerts, await self.store.recent(self.started_ms), since_ms=self.started_ms,
            until_ms=now_ms, quiet_s=self.settings.incident_quiet_s,
            sources={"alerts": f"alerts topic {self.settings.topics.alerts} (the demo's worker)",
                     "incidents": "incident sink, run in-process by the sink runner"},
        )  # fmt: skip
        body = await asyncio.to_thread(render, data, "html")  # matplotlib: a second of CPU
        await asyncio.to_thread(write_file, body, path)
        return data


def incidents_ok(result: Any) -> bool:
    """At least one incident per attack, none made of benign subjects alone."""
    raised = [set(i["subjects"]) for i in result.incidents]
    per_attack = all(any(s in subjects for subjects in raised) for s in result.attack_subjects)
    return per_attack and all(i["attack_subjects"] for i in result.incidents)


def print_incidents(console: Console, result: Any) -> None:
    console.print(
        f"\n[bold]incidents raised[/] ({len(result.incidents)}, from {result.alerts} alerts):"
    )
    for incident in result.incidents:
        benign = incident["benign_subjects"]
        tag = f" [yellow](benign subjects in it: {', '.join(benign)})[/]" if benign else ""
        console.print(escape("\n".join(_lines(incident))) + tag)
    console.print(f"\nreport: {result.report}")


def _lines(incident: dict[str, Any]) -> list[str]:
    out = [f"{incident['id']} [{incident['status']}] {incident['title']}"]
    for label in ("what", "who", "where", "how_much", "done"):
        if incident[label]:
            out.append(f"  {label.replace('_', ' ')}: {incident[label]}")
    out.extend(f"  next: {step}" for step in incident["steps"])
    return out
