"""`gatewatch drift`: recorded traffic against the API's OpenAPI documents — shadow endpoints,
probes of undocumented paths, undocumented methods, deprecated operations still called, unknown
query parameters, documented operations nobody calls, and subjects that went looking for endpoints.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from detectors.openapi import SpecError, load_spec
from detectors.spec_drift import drift_report
from pipeline.config import Settings
from pipeline.evaluation.replay import SOURCES, ReplayResult, parse_lines
from pipeline.events import GatewayEvent
from pipeline.ingest.redaction import Redactor

__all__ = ["drift_command", "read_events"]

EVENT_SOURCES = (*SOURCES, "events")


def read_events(
    lines: Iterable[bytes], source: str, result: ReplayResult, redaction_key: bytes
) -> Iterator[GatewayEvent]:
    """Events from gateway logs (as `gatewatch replay` reads them) or from normalized events, one
    JSON object a line (what `gatewatch parse` prints); bad lines are counted, never raised."""
    if source != "events":
        yield from parse_lines(lines, source, Redactor(redaction_key), result)
        return
    for line in lines:
        if not line.strip():
            continue
        try:
            yield GatewayEvent.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            result.rejects[f"{where}: {first['msg']}"] += 1


def drift_command(
    traffic: Annotated[Path, typer.Argument(help="Traffic: a log file, or - for standard input")],
    spec: Annotated[
        list[Path], typer.Option("--spec", help="OpenAPI 3.x document, JSON or YAML; repeatable")
    ],
    source: Annotated[
        str, typer.Option(help=f"Traffic format, one of: {', '.join(EVENT_SOURCES)}")
    ] = "kong",
    base_path: Annotated[
        list[str] | None,
        typer.Option(help="Public base path, instead of the documents' servers; repeatable"),
    ] = None,
    ignore_param: Annotated[
        list[str] | None, typer.Option(help="Query parameter documented everywhere; repeatable")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as one JSON object")] = False,
) -> None:
    """Compare recorded traffic with OpenAPI documents and report the drift."""
    if source not in EVENT_SOURCES:
        raise typer.BadParameter(f"unknown source {source!r}; one of {', '.join(EVENT_SOURCES)}")
    try:
        specs = [load_spec(path) for path in spec]
    except SpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--spec") from None
    result = ReplayResult()
    key = Settings().redaction_key.get_secret_value().encode()
    try:
        stream = sys.stdin.buffer if str(traffic) == "-" else traffic.open("rb")
    except OSError as exc:
        raise typer.BadParameter(f"{traffic}: {exc.strerror}", param_hint="TRAFFIC") from None
    with stream:
        try:
            report = drift_report(
                read_events(stream, source, result, key),
                specs,
                base_paths=base_path,
                ignored_params=ignore_param or (),
            )
        except SpecError as exc:
            raise typer.BadParameter(str(exc), param_hint="--spec") from None
    report["input"] = {
        "rejects": sum(result.rejects.values()),
        "reject_reasons": dict(result.rejects.most_common(10)),
    }
    if as_json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        print_report(Console(), report)
    raise typer.Exit(1 if report["events"] == 0 and result.rejects else 0)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_report(console: Console, report: dict[str, Any]) -> None:
    """The report as tables. Routes, parameters and subjects come from requests: escaped, so that
    a path like `/[red]x` is shown as sent, not as markup."""
    summary = Table(title="API-spec drift", show_header=False)
    summary.add_row("documents", escape(", ".join(report["specs"])))
    summary.add_row("events", f"{report['events']:,}")
    summary.add_row("lines rejected", f"{report['input']['rejects']:,}")
    summary.add_row("calls to documented operations", f"{report['documented_calls']:,}")
    summary.add_row(
        "documented operations called",
        f"{report['operations_called']} of {report['documented_operations']}",
    )
    for kind, hits in report["finding_totals"].items():
        dropped = report["findings_not_kept"].get(kind, 0)
        note = f" ({dropped:,} rare routes not kept)" if dropped else ""
        summary.add_row(kind.replace("_", " "), f"{hits:,} requests{note}")
    console.print(summary)

    if report["findings"]:
        table = Table(title="findings")
        for column in ("kind", "request", "count", "answers", "first / last seen", "details"):
            table.add_column(column)
        for f in report["findings"][:100]:
            details = ", ".join(
                part
                for part in (
                    f["operation_id"],
                    "params " + ", ".join(f["params"]) if f["params"] else "",
                    "documented " + " ".join(f["documented_methods"])
                    if f["documented_methods"]
                    else "",
                    "e.g. " + ", ".join(f["subjects"][:2]) if f["subjects"] else "",
                )
                if part
            )
            table.add_row(
                f["kind"],
                escape(f"{f['method']} {f['route']}"),
                f"{f['count']:,}",
                ", ".join(f"{code} ({n:,})" for code, n in f["statuses"].items()),
                f"{_when(f['first_seen_ms'])} / {_when(f['last_seen_ms'])}",
                escape(details),
            )
        console.print(table)

    if report["discovery_subjects"]:
        table = Table(title="subjects discovering endpoints")
        for column in ("subject", "action", "score", "challenged at", "reason"):
            table.add_column(column)
        for s in report["discovery_subjects"][:50]:
            challenged = s["first_challenged_ms"]
            table.add_row(
                escape(s["subject"]),
                s["action"],
                f"{s['score']:.2f}",
                _when(challenged) if challenged is not None else "-",
                escape(s["reason"]),
            )
        console.print(table)

    if report["uncalled_operations"]:
        listed = ", ".join(f"{op['method']} {op['route']}" for op in report["uncalled_operations"])
        console.print(f"[bold]documented, never called:[/] {escape(listed)}")
