"""`gatewatch`: the operator's command line. Settings come from GATEWATCH_* variables; options
given here override them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import ssl
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated

import orjson
import typer
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from pipeline.config import Settings
from pipeline.evaluation.cli import evaluate_command, replay_command
from pipeline.evaluation.drift import drift_command
from pipeline.operator.cli import feedback_command, override_command, tuning_command
from pipeline.recommend.cli import recommend_command
from pipeline.incidents.cli import incident_command, incidents_command
from pipeline.report.cli import report_command
from pipeline.simulator.cli import simulate_command
from pipeline.logs import configure_logging
from sinks.command import sink_command

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
MetricsPort = Annotated[int | None, typer.Option(help="Serve /metrics on this port")]
MetricsHost = Annotated[str, typer.Option(help="Address of /metrics (loopback unless set)")]


@app.command()
def collector(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
) -> None:
    """Receive Kong http-log POSTs and put them on Kafka as envelopes."""
    from pipeline.ingest.collector import serve_collector

    configure_logging()
    _run(serve_collector(Settings(), host, port))


@app.command()
def syslog(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    tcp_port: Annotated[
        int | None, typer.Option(help="Plain TCP port (5140 if none given)")
    ] = None,
    udp_port: Annotated[int | None, typer.Option(help="UDP port (lossy: prefer TCP)")] = None,
    tls_port: Annotated[
        int | None, typer.Option(help="TLS port (GATEWATCH_SYSLOG_TLS_CERT and _KEY)")
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(help="Allowed source network, repeatable (default GATEWATCH_SYSLOG_ALLOW)"),
    ] = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Receive Apigee MessageLogging over syslog (TCP, TLS, UDP); put it on Kafka as envelopes."""
    from pipeline.ingest.syslog import serve_syslog

    configure_logging()
    settings = Settings()
    if tcp_port is None and udp_port is None and tls_port is None:
        tcp_port = 5140
    tls = _tls_context(settings) if tls_port is not None else None
    _run(
        serve_syslog(
            settings,
            host=host,
            allow=allow or settings.syslog_allow,
            tcp_port=tcp_port,
            udp_port=udp_port,
            tls_port=tls_port,
            tls=tls,
            max_frame_bytes=settings.syslog_max_frame_bytes,
            max_connections=settings.syslog_max_connections,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )
    )


@app.command("tcp-log")
def tcp_log(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port Kong's tcp-log sends to")] = 5170,
    tls: Annotated[bool, typer.Option(help="TLS (GATEWATCH_SYSLOG_TLS_CERT and _KEY)")] = False,
    allow: Annotated[
        list[str] | None,
        typer.Option(help="Allowed source network, repeatable (default GATEWATCH_SYSLOG_ALLOW)"),
    ] = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Receive Kong tcp-log (one serializer JSON per line, TCP or TLS); put it on Kafka."""
    from pipeline.ingest.kong import KongParser
    from pipeline.ingest.syslog import serve_syslog

    configure_logging()
    settings = Settings()
    context = _tls_context(settings) if tls else None
    _run(
        serve_syslog(
            settings,
            host=host,
            allow=allow or settings.syslog_allow,
            tcp_port=None if tls else port,
            tls_port=port if tls else None,
            tls=context,
            max_frame_bytes=settings.syslog_max_frame_bytes,
            max_connections=settings.syslog_max_connections,
            parser_factory=KongParser,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            name="tcp-log",
        )
    )


@app.command()
def bridge(
    group: Annotated[
        str, typer.Option(help="Consumer group on the raw topic")
    ] = "gatewatch-bridge",
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Bridge Kong kafka-log's raw topic (GATEWATCH_TOPIC_RAW_KONG) into envelopes."""
    from pipeline.ingest.bridge import serve_bridge

    configure_logging()
    _run(
        serve_bridge(
            Settings(), group_id=group, metrics_port=metrics_port, metrics_host=metrics_host
        )
    )


@app.command()
def parse(
    path: Annotated[str, typer.Argument(help="A file, or - for standard input")],
    source: Annotated[str, typer.Option(help="Input format")] = "kong",
) -> None:
    """Print the normalized events of a log file as JSON lines; rejects go to stderr with reasons.

    Kong input is one http-log body (object or array) or JSON lines (file-log, kafka-log dumps).
    """
    from pipeline.ingest.parse import PARSERS, parse_stream

    if source not in PARSERS:
        raise typer.BadParameter(f"unknown source {source!r}; one of {sorted(PARSERS)}")
    settings = Settings()
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    accepted, rejected = parse_stream(
        source, data, settings.redaction_key.get_secret_value().encode(), sys.stdout, sys.stderr
    )
    Console(stderr=True).print(f"{accepted} events, {rejected} rejected")
    raise typer.Exit(1 if rejected and not accepted else 0)


@app.command()
def worker(
    web_port: Annotated[int | None, typer.Option(help="Faust web port (one per worker)")] = None,
) -> None:
    """Consume envelopes, run the detectors, write decisions to Redis and Kafka."""
    from faust.worker import Worker

    from pipeline.kafka import ensure_topics
    from pipeline.worker.app import create_worker_app
    from pipeline.worker.processor import GC_THRESHOLDS

    configure_logging()
    settings = Settings()
    if web_port is not None:
        settings.web_port = web_port
    asyncio.run(ensure_topics(settings))
    faust_app = create_worker_app(settings)
    # Collect far less often (see GC_THRESHOLDS), and never again look at what start-up built
    # (modules, Faust, the detectors' tables): it lives as long as the process.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    faust_worker = Worker(faust_app, loglevel="warning", quiet=True)
    if not sys.stdout.isatty():
        faust_worker.spinner = None  # its cursor escape codes would end up in log files
    faust_worker.execute_from_commandline()


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8081,
) -> None:
    """Serve GET /v1/decisions/{subject} (bearer token: GATEWATCH_DECISION_API_TOKEN) and
    POST /v1/feedback (GATEWATCH_OPERATOR_TOKENS)."""
    from aiohttp import web

    from pipeline.api import create_decision_app
    from pipeline.decisions import RedisDecisions
    from pipeline.operator.api import operator_api
    from pipeline.operator.cli import operator_actions

    configure_logging()
    settings = Settings()

    async def serve() -> None:
        redis = Redis.from_url(settings.redis_url.get_secret_value())
        decisions = RedisDecisions(redis, settings.redis_prefix)
        runner = web.AppRunner(
            create_decision_app(
                decisions,
                token=settings.decision_api_token.get_secret_value(),
                operator=operator_api(operator_actions(redis, settings), settings),
            )
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await redis.aclose()

    _run(serve())


@app.command()
def decision(
    subject: Annotated[str, typer.Argument(help="consumer:<id>, key:<hash> or ip:<addr>")],
    as_json: JsonOpt = False,
) -> None:
    """Show the current decision for a subject, read from Redis."""
    from pipeline.decisions import RedisDecisions

    settings = Settings()

    async def lookup() -> dict[str, object] | None:
        redis = Redis.from_url(settings.redis_url.get_secret_value())
        try:
            found = await RedisDecisions(redis, settings.redis_prefix).get(subject)
        finally:
            await redis.aclose()
        return found.model_dump() if found else None

    found = asyncio.run(lookup())
    if as_json:
        sys.stdout.write(orjson.dumps({"subject": subject, "decision": found}).decode() + "\n")
        return
    console = Console()
    if found is None:
        console.print(f"{subject}: [green]allow[/] (no decision)")
        return
    table = Table(title=subject, show_header=False)
    for key, value in found.items():
        table.add_row(key, "\n".join(value) if isinstance(value, list) else str(value))
    console.print(table)


@app.command("push-apigee")
def push_apigee() -> None:
    """Push decision changes and operator overrides from Redis to the Apigee decision-ingest
    proxy (PopulateCache)."""
    import aiohttp

    from pipeline.decisions import RedisDecisions
    from pipeline.operator.overrides import Overrides
    from sinks.apigee import ApigeeDecisionPusher
    from sinks.apigee_overrides import ApigeeOverridePusher

    configure_logging()
    settings = Settings()
    if not settings.apigee_ingest_url:
        raise typer.BadParameter("set GATEWATCH_APIGEE_INGEST_URL")

    async def push() -> None:
        redis = Redis.from_url(settings.redis_url.get_secret_value())
        decisions = RedisDecisions(redis, settings.redis_prefix)
        overrides = Overrides(redis, settings.redis_prefix)
        url, token = settings.apigee_ingest_url, settings.apigee_ingest_token.get_secret_value()
        try:
            async with aiohttp.ClientSession() as http:
                await asyncio.gather(
                    ApigeeDecisionPusher(
                        redis,
                        http,
                        url=url,
                        token=token,
                        stream=decisions.stream,
                        cursor_key=f"{settings.redis_prefix}sink:apigee",
                        overrides=overrides,
                    ).run(),
                    ApigeeOverridePusher(
                        redis,
                        http,
                        url=url,
                        token=token,
                        overrides=overrides,
                        decisions=decisions,
                        cursor_key=f"{settings.redis_prefix}sink:apigee:overrides",
                    ).run(),
                )
        finally:
            await redis.aclose()

    _run(push())


@app.command()
def topics() -> None:
    """Create gatewatch's Kafka topics if they are missing."""
    from pipeline.kafka import ensure_topics

    configure_logging()
    asyncio.run(ensure_topics(Settings()))


@app.command()
def demo(
    kafka: Annotated[
        str | None, typer.Option(help="Use this Kafka instead of the embedded one")
    ] = None,
    redis: Annotated[
        str | None, typer.Option(help="Use this Redis URL instead of the embedded one")
    ] = None,
    seed: Annotated[int, typer.Option(help="Traffic seed")] = 7,
    baseline_s: Annotated[float, typer.Option(help="Seconds of normal traffic first")] = 20.0,
    attack_s: Annotated[float, typer.Option(help="Seconds the attacks last")] = 15.0,
    report: Annotated[
        Path | None, typer.Option(help="Write the HTML report here (default: with the logs)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the whole pipeline on this machine and watch two attacks get blocked."""
    from pipeline.demo.incidents import incidents_ok, print_incidents
    from pipeline.demo.run import DemoOptions, run_demo

    configure_logging("warning")
    # With --json, stdout carries only the result line; progress goes to stderr.
    console = Console(stderr=as_json)
    options = DemoOptions(
        kafka=kafka, redis_url=redis, seed=seed, baseline_s=baseline_s, attack_s=attack_s,
        report=report,
    )
    result = asyncio.run(run_demo(options, console))
    if as_json:
        sys.stdout.write(orjson.dumps(result.as_dict()).decode() + "\n")
    else:
        _print_summary(console, result)
        print_incidents(console, result)
    ok = set(result.attack_subjects) <= set(result.blocked_subjects) and result.false_blocks == 0
    ok = ok and incidents_ok(result)
    raise typer.Exit(0 if ok else 1)


app.command("simulate")(simulate_command)
app.command("replay")(replay_command)
app.command("drift")(drift_command)
app.command("evaluate")(evaluate_command)
app.command("override")(override_command)
app.command("feedback")(feedback_command)
app.command("tuning")(tuning_command)
app.command("recommend")(recommend_command)
app.command("incidents")(incidents_command)
app.command("incident")(incident_command)
app.command("report")(report_command)
app.command("sink")(sink_command)


def _print_summary(console: Console, result: object) -> None:
    data = vars(result)
    table = Table(title="demo summary", show_header=False)
    for key in ("events_sent", "events_processed", "throughput_eps", "duration_s", "ingest_errors"):
        table.add_row(key, f"{data[key]:,}" if isinstance(data[key], int) else str(data[key]))
    for subject in data["attack_subjects"]:
        ttb = data["time_to_block_s"].get(subject)
        verdict = (
            f"[red]blocked[/] after {ttb:.2f} s" if ttb is not None else "[yellow]NOT blocked[/]"
        )
        table.add_row(f"attack {subject}", verdict)
    table.add_row("benign subjects tagged/challenged", str(len(data["benign_flagged"])))
    table.add_row(
        "false blocks",
        str(data["false_blocks"])
        + (f" {data['false_blocked_subjects']}" if data["false_blocks"] else ""),
    )
    console.print(table)


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """The TLS server context of the line receivers (syslog, tcp-log), from settings."""
    from pipeline.ingest.syslog import tls_server_context

    if not (settings.syslog_tls_cert and settings.syslog_tls_key):
        raise typer.BadParameter("TLS needs GATEWATCH_SYSLOG_TLS_CERT and GATEWATCH_SYSLOG_TLS_KEY")
    return tls_server_context(
        settings.syslog_tls_cert,
        settings.syslog_tls_key,
        cafile=settings.syslog_tls_client_ca,
        require_client_cert=settings.syslog_tls_require_client_cert,
    )


def _run(coro: Coroutine[object, object, object]) -> None:
    """Run a service until Ctrl-C or SIGTERM (both end it cleanly: in-flight work finishes, a
    spool is closed); a spool that cannot be used stops it with one line."""
    from pipeline.ingest.spool import SpoolError

    async def main() -> None:
        task = asyncio.ensure_future(coro)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except SpoolError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc} (GATEWATCH_SPOOL_DIR, or 'off')")
        raise typer.Exit(2) from None


if __name__ == "__main__":
    app()
