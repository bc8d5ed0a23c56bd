"""`gatewatch report --since 24h --out report.html [--format html|md|json] [--webhook|--email]`."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console

from pipeline.config import Settings
from pipeline.incidents.cli import parse_since
from pipeline.logs import configure_logging
from pipeline.report.data import collect
from pipeline.report.deliver import DeliveryError, send_email, send_webhook, write_file
from pipeline.report.render import FORMATS, render
from pipeline.report.sources import (
    alerts_from_file,
    alerts_from_kafka,
    incidents_for,
    rate_limits,
    unique,
)

__all__ = ["build_report", "report_command", "text_digest"]


async def build_report(
    settings: Settings, *, since_s: float, alerts_file: Path | None = None,
    now_ms: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The report's data for the last `since_s` seconds (see `sources.py` for where from)."""
    until_ms = now_ms or int(time.time() * 1000)
    since_ms = until_ms - int(since_s * 1000)
    if alerts_file is not None:
        raw, bad = alerts_from_file(alerts_file)
        origin = f"alerts file {alerts_file}"
    else:
        raw, bad = await alerts_from_kafka(settings, since_ms)
        origin = f"alerts topic {settings.topics.alerts} (read by time)"
    alerts = unique(raw, since_ms, until_ms)
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    try:
        try:
            await redis.ping()
        except (RedisError, OSError):
            if alerts_file is None:
                raise
            redis_up = None  # an exported file reports without Redis: no store, no limits
        else:
            redis_up = redis
        incidents, incident_origin = await incidents_for(
            alerts, since_ms, settings=settings, redis=redis_up
        )
        limits = await rate_limits(alerts, settings, redis_up) if redis_up else {}
    finally:
        await redis.aclose()
    sources = {"alerts": origin, "incidents": incident_origin}
    if bad:
        sources["skipped"] = f"{bad} records that were not alerts"
    return collect(
        alerts,
        incidents,
        since_ms=since_ms,
        until_ms=until_ms,
        quiet_s=settings.incident_quiet_s,
        rate_limits=limits,
        sources=sources,
    )


def text_digest(data: dict[str, Any]) -> str:
    """The e-mail body: headline figures and the top incidents with their next step."""
    t = data["totals"]
    lines = [
        f"{t['incidents']} incidents, {t['alerts']} alerts ({t['decisions']} decisions, "
        f"{t['findings']} findings, {t['operator']} operator actions) on {t['subjects']} subjects.",
        "",
    ]
    for i in data["incidents"][:5]:
        lines += [f"- {i['title']} [{i['status']}]", f"  {i['done']}", f"  next: {i['next_step']}"]
    shadow = data["would_block"][:3]
    if shadow:
        lines += ["", "Shadow mode would have blocked:"]
        lines += [f"- {r['route']}: {r['would_block']} subjects" for r in shadow]
    return "\n".join(lines) + "\n\nThe full report is attached.\n"


def report_command(
    since: Annotated[str, typer.Option("--since", help="How far back: 30m, 24h, 7d")] = "24h",
    out: Annotated[Path | None, typer.Option(help="Write the report here")] = None,
    fmt: Annotated[str, typer.Option("--format", help="html | md | json")] = "html",
    alerts: Annotated[
        Path | None, typer.Option(help="Report on alerts in this JSON-lines file, not Kafka")
    ] = None,
    webhook: Annotated[bool, typer.Option(help="POST it to GATEWATCH_REPORT_WEBHOOK_URL")] = False,
    email: Annotated[
        bool, typer.Option(help="Mail it to GATEWATCH_REPORT_EMAIL_TO (GATEWATCH_SMTP_*)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Summary as one JSON line")] = False,
) -> None:
    """The posture report: top incidents, subjects and routes, detections over time (charts),
    what shadow mode would have blocked, false-positive candidates, recommended limits and
    API-surface findings. Written to a file (default gatewatch-report.<format>), a webhook or
    e-mail."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    since_s = parse_since(since)
    configure_logging("warning")
    settings = Settings()
    console = Console(stderr=True)
    target = out or (None if (webhook or email) else Path(f"gatewatch-report.{fmt}"))

    async def run() -> dict[str, Any]:
        data = await build_report(settings, since_s=since_s, alerts_file=alerts)
        body = render(data, fmt)
        filename = target.name if target else f"gatewatch-report.{fmt}"
        done: dict[str, Any] = {
            "bytes": len(body),
            "format": fmt,
            "incidents": data["totals"]["incidents"],
            "alerts": data["totals"]["alerts"],
        }
        if target is not None:
            write_file(body, target)
            done["file"] = str(target)
        if webhook:
            done["webhook_status"] = await send_webhook(body, fmt, filename, settings)
        if email:
            subject = f"gatewatch posture report: {data['totals']['incidents']} incidents ({since})"
            await send_email(
                body, fmt, filename, subject=subject, text=text_digest(data), settings=settings
            )
            done["emailed"] = settings.report_email_to
        return done

    try:
        done = asyncio.run(run())
    except DeliveryError as exc:
        console.print(f"[red]report not delivered:[/] {exc}")
        raise typer.Exit(1) from None
    except (KafkaError, RedisError, OSError) as exc:
        console.print(f"[red]report failed:[/] cannot read its data: {exc or type(exc).__name__}")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(orjson.dumps(done).decode() + "\n")
    else:
        where = ", ".join(str(done[k]) for k in ("file", "webhook_status", "emailed") if k in done)
        console.print(
            f"report: {done['incidents']} incidents, {done['alerts']} alerts, "
            f"{done['bytes']:,} bytes -> {where}"
        )
