"""`gatewatch sink NAME [NAME...]`: deliver `gatewatch.alerts` to sinks until stopped.

Each sink gets its own consumer group (`gatewatch-sink-<name>`, its durable cursor) and its own
runner; several sinks in one process share the dead-letter producer and `/metrics`. SIGTERM and
Ctrl-C stop it between sends: an unfinished batch is not committed and is sent again on restart.

Why not inside the worker: a worker is one process on one core whose event loop runs detection;
a sink in it would encode, compress and send (and retry) on that same core and loop, so a slow or
busy SIEM would cost detection time. Alerts are already durable on Kafka when the worker commits,
so a separate process adds no delay worth the risk: run `gatewatch sink` next to the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import asdict
from typing import Annotated, NoReturn

import orjson
import structlog
import typer
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from pipeline.config import Settings
from pipeline.kafka import DeadLetters, ensure_topics, make_producer
from pipeline.logs import configure_logging
from sinks.base import Sink, SinkConfigError
from sinks.metrics import SinkMetrics, serve_metrics
from sinks.registry import SINKS, build_sink
from sinks.runner import Backoff, BatchLimits, SinkRunner

log = structlog.get_logger(__name__)

__all__ = ["make_runner", "serve_sinks", "sink_command"]


def sink_command(
    names: Annotated[list[str], typer.Argument(help=f"Sink(s): {', '.join(sorted(SINKS))}")],
    metrics_port: Annotated[int | None, typer.Option(help="Serve /metrics on this port")] = None,
    host: Annotated[str, typer.Option(help="Address /metrics listens on")] = "127.0.0.1",
    as_json: Annotated[bool, typer.Option("--json", help="Summary as one JSON line")] = False,
) -> None:
    """Deliver alerts (GATEWATCH_TOPIC_ALERTS) to SIEM sinks with retries and a durable cursor."""
    configure_logging()
    runners: list[SinkRunner] = []
    settings: Settings | None = None

    async def main() -> None:
        nonlocal settings
        settings = Settings()
        # Built inside the loop: Kafka and HTTP clients bind to the running loop.
        sinks = [build_sink(name, settings) for name in dict.fromkeys(names)]
        await serve_sinks(settings, sinks, metrics_port=metrics_port, host=host, out=runners)

    try:
        asyncio.run(main())
    except ValidationError as exc:
        _fail(f"gatewatch sink: {_settings_error(exc)}", 2)
    except SinkConfigError as exc:
        _fail(f"gatewatch sink: {exc}", 2)
    except KafkaError as exc:
        where = settings.kafka if settings is not None else "?"
        _fail(f"gatewatch sink: Kafka at {where}: {exc!r}")
    except OSError as exc:  # a metrics port in use, a CA file missing
        _fail(f"gatewatch sink: {exc}")
    except KeyboardInterrupt:
        pass
    summary = [{"sink": r.sink.name, **asdict(r.totals)} for r in runners]
    if as_json:
        sys.stdout.write(orjson.dumps({"sinks": summary}).decode() + "\n")
        return
    table = Table(title="gatewatch sink")
    for column in ("sink", "delivered", "retried", "rejected", "malformed", "batches"):
        table.add_column(column)
    for row in summary:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    Console().print(table)


def _fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, not a traceback, and the exit code."""
    sys.stderr.write(message + "\n")
    raise typer.Exit(code)


def _settings_error(exc: ValidationError) -> str:
    return "; ".join(
        f"GATEWATCH_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
    )


def make_runner(
    settings: Settings,
    sink: Sink,
    dead_letters: DeadLetters,
    metrics: SinkMetrics,
) -> SinkRunner:
    """A runner for `sink` on its own consumer group, not started."""
    consumer = AIOKafkaConsumer(
        settings.topics.alerts,
        bootstrap_servers=settings.kafka,
        group_id=f"gatewatch-sink-{sink.name}",
        enable_auto_commit=False,
        auto_offset_reset=settings.sink_start,
        max_partition_fetch_bytes=max(1024 * 1024, settings.sink_batch_max_bytes),
        # A runner holds its batch while the receiver is down, and does not poll then: without
        # this the group would evict it after 5 minutes only to hand the same stuck batch on.
        max_poll_interval_ms=24 * 3600 * 1000,
    )
    return SinkRunner(
        sink,
        consumer,
        dead_letters,
        metrics,
        limits=BatchLimits(
            max_alerts=settings.sink_batch_max_alerts,
            max_bytes=settings.sink_batch_max_bytes,
            linger_s=settings.sink_batch_linger_ms / 1000,
        ),
        backoff=Backoff(
            initial_s=settings.sink_backoff_initial_s, max_s=settings.sink_backoff_max_s
        ),
        max_in_flight=settings.sink_max_in_flight,
    )


async def serve_sinks(
    settings: Settings,
    sinks: list[Sink],
    *,
    metrics_port: int | None = None,
    host: str = "127.0.0.1",
    out: list[SinkRunner] | None = None,
) -> None:
    """Run one runner per sink until cancelled or SIGTERM; `out` receives the runners (totals)."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    registry = CollectorRegistry()
    metrics = SinkMetrics(registry)
    producer = make_producer(settings)
    dead_letters = DeadLetters(producer, settings.topics.dlq, settings.kafka_timeout_s)
    runners = [make_runner(settings, sink, dead_letters, metrics) for sink in sinks]
    if out is not None:
        out.extend(runners)
    web = None
    try:
        await ensure_topics(settings)
        await producer.start()
        if metrics_port is not None:
            web = await serve_metrics(registry, host, metrics_port)
        for runner in runners:
            await runner.sink.start()
            await runner.consumer.start()
            log.info("sink.started", sink=runner.sink.name, topic=settings.topics.alerts)
        await asyncio.gather(*(r.run() for r in runners))
    except asyncio.CancelledError:
        pass
    finally:
        # Stopping: close everything and report what we have, whatever failed on the way.
        for runner in runners:
            with contextlib.suppress(Exception):
                await runner.consumer.stop()
            with contextlib.suppress(Exception):
                await runner.sink.close()
            log.info("sink.stopped", sink=runner.sink.name, **asdict(runner.totals))
        with contextlib.suppress(Exception):
            await producer.stop()
        if web is not None:
            await web.cleanup()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
