"""`gatewatch incidents [--since 24h] [--json]` and `gatewatch incident ID [--json]`: read the
incident store the `incidents` sink keeps in Redis."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from typing import Annotated, Any

import orjson
import typer
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from pipeline.config import Settings
from pipeline.incidents.keys import ACTION_RANK
from pipeline.incidents.model import Incident
from pipeline.incidents.store import RedisIncidentStore
from pipeline.incidents.summary import Summary, summarize
from pipeline.logs import configure_logging

__all__ = ["action_mode", "incident_command", "incidents_command", "parse_since", "timeline"]

_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SinceOpt = Annotated[str, typer.Option("--since", help="How far back: 30m, 24h, 7d")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def parse_since(text: str) -> float:
    """Seconds in a duration like `24h`.

    >>> parse_since("24h"), parse_since("30m"), parse_since("1.5d")
    (86400.0, 1800.0, 129600.0)
    """
    m = _SINCE.match(text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration like 30m, 24h or 7d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def action_mode(incident: Incident) -> str:
    """The strongest action taken and its mode, e.g. `block/enforce` or `would block/shadow`."""
    strongest = max(
        (agg for agg in incident.subjects.values() if agg["strongest"][0] >= 0),
        key=lambda agg: (agg["strongest"][0], agg["enforced"]),
        default=None,
    )
    if strongest is None:
        return "-"
    verb = strongest["action"] if strongest["enforced"] else f"would {strongest['action']}"
    return f"{verb}/{strongest['mode']}"


def timeline(incident: Incident, now_ms: int, quiet_s: float) -> list[dict[str, Any]]:
    """The kept alerts in time order, each marked `opened`, `escalated` or `update`, and a final
    `resolved` entry once the incident has been quiet for `quiet_s`."""
    out: list[dict[str, Any]] = []
    strongest = -1
    for entry in incident.timeline:
        rank = -1 if entry["kind"] == "operator" else ACTION_RANK[entry["action"]]
        if entry["kind"] == "operator":
            event = "operator"
        elif (
            incident.opened_ms is not None
            and entry["t"] == incident.opened_ms
            and not any(e["event"] == "opened" for e in out)
        ):
            event = "opened"
        elif (
            incident.opened_ms is not None and entry["t"] > incident.opened_ms and rank > strongest
        ):
            event = "escalated"
        else:
            event = "update"
        strongest = max(strongest, rank)
        out.append({"event": event, **entry})
    resolved_at = incident.last_ms + int(quiet_s * 1000)
    if now_ms > resolved_at:
        out.append({"event": "resolved", "t": resolved_at, "title": f"quiet for {quiet_s:.0f} s"})
    return out


def _when(ms: int) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.gmtime(ms / 1000))


async def _with_store(settings: Settings, work: Any) -> Any:
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    try:
        store = RedisIncidentStore(
            redis, settings.redis_prefix, retention_s=settings.incident_retention_s
        )
        return await work(store)
    except (RedisError, OSError) as exc:
        Console(stderr=True).print(f"[red]cannot read incidents from Redis:[/] {exc}")
        raise typer.Exit(2) from None
    finally:
        await redis.aclose()


def incidents_command(since: SinceOpt = "24h", as_json: JsonOpt = False) -> None:
    """List incidents active in the last --since (newest first)."""
    configure_logging("warning")
    settings = Settings()
    now_ms = int(time.time() * 1000)
    since_ms = now_ms - int(parse_since(since) * 1000)
    found: list[Incident] = asyncio.run(_with_store(settings, lambda store: store.recent(since_ms)))
    quiet = settings.incident_quiet_s
    rows = [(i, summarize(i, now_ms=now_ms, quiet_s=quiet)) for i in found]
    if as_json:
        payload = [s.as_dict() | {"action_mode": action_mode(i)} for i, s in rows]
        sys.stdout.write(orjson.dumps({"since": since, "incidents": payload}).decode() + "\n")
        return
    table = Table(title=f"incidents since {since} ({len(rows)})")
    for column in ("id", "status", "title", "subjects", "routes", "since", "last", "action/mode"):
        table.add_column(column, overflow="fold")
    for incident, s in rows:
        subjects = ", ".join(s.subjects[:3]) + (" ..." if len(s.subjects) > 3 else "")
        table.add_row(
            s.id,
            f"[red]{s.status}[/]" if s.status == "open" else s.status,
            s.title,
            f"{max(incident.subjects_total, len(s.subjects))}: {subjects}",
            ", ".join(s.routes[:3]),
            _when(s.first_ms),
            _when(s.last_ms),
            action_mode(incident),
        )
    Console().print(table)


def incident_command(
    incident_id: Annotated[str, typer.Argument(help="An id from `gatewatch incidents`")],
    as_json: JsonOpt = False,
) -> None:
    """One incident: its summary, next steps and timeline."""
    configure_logging("warning")
    settings = Settings()
    now_ms = int(time.time() * 1000)
    found: Incident | None = asyncio.run(
        _with_store(settings, lambda store: store.get(incident_id))
    )
    if found is None:
        Console(stderr=True).print(f"no incident {incident_id!r} (expired, or never opened)")
        raise typer.Exit(1)
    quiet = settings.incident_quiet_s
    s: Summary = summarize(found, now_ms=now_ms, quiet_s=quiet)
    events = timeline(found, now_ms, quiet)
    if as_json:
        payload = {
            "incident": s.as_dict() | {"action_mode": action_mode(found)},
            "timeline": events,
        }
        sys.stdout.write(orjson.dumps(payload).decode() + "\n")
        return
    console = Console()
    console.print("\n".join(s.lines()))
    table = Table(title="timeline")
    for column in ("time (UTC)", "event", "subject", "action", "mode", "title"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(
            _when(e["t"]),
            e["event"],
            e.get("subject", ""),
            e.get("action", ""),
            e.get("mode", ""),
            e.get("title", ""),
        )
    console.print(table)
