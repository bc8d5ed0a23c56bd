"""`gatewatch replay` and `gatewatch evaluate`: the detectors on recorded or simulated traffic."""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from detectors.openapi import load_spec
from pipeline.config import Settings
from pipeline.evaluation.replay import SOURCES, ReplayResult, parse_lines, replay
from pipeline.evaluation.score import Scorer
from pipeline.ingest.redaction import Redactor
from pipeline.worker.processor import GC_THRESHOLDS, EventTrace, build_processor

__all__ = ["evaluate_command", "replay_command", "run_evaluation"]


def _trace_line(trace: EventTrace) -> bytes:
    return orjson.dumps(
        {
            "request_id": trace.event.request_id,
            "subjects": trace.subjects,
            "signals": [
                {"detector": s.detector, "kind": s.kind, "score": s.score, "reason": s.reason}
                for s in trace.signals
            ],
            "risk": trace.verdict.score,
            "action": trace.verdict.action,
        }
    )


def replay_command(
    file: Annotated[Path, typer.Argument(help="Kong NDJSON or Apigee syslog lines; - for stdin")],
    source: Annotated[str, typer.Option(help=f"One of: {', '.join(SOURCES)}")] = "kong",
    labels: Annotated[
        Path | None, typer.Option(help="Simulator labels.json: also score the run")
    ] = None,
    spec: Annotated[
        list[Path] | None, typer.Option(help="OpenAPI document(s) for the spec-drift detector")
    ] = None,
    per_event: Annotated[
        bool, typer.Option("--per-event", help="One JSON line per event on stdout")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Summary as one JSON object")] = False,
) -> None:
    """Replay gateway logs through the workers' detectors, in-process, on the event clock."""
    gc.set_threshold(*GC_THRESHOLDS)
    settings = Settings()
    specs = [load_spec(p) for p in spec] if spec else None
    processor = build_processor(settings, event_clock=True, specs=specs)
    stream = sys.stdin.buffer if str(file) == "-" else file.open("rb")
    scorer = Scorer(orjson.loads(labels.read_bytes()), processor.auth_routes) if labels else None
    out = sys.stdout.buffer

    def emit(trace: EventTrace) -> None:
        out.write(_trace_line(trace) + b"\n")

    result = ReplayResult()
    with stream:
        events = parse_lines(stream, source, Redactor(settings.redaction_key.get_secret_value().encode()), result)
        replay(
            events,
            processor,
            max_subjects=settings.max_subjects,
            on_event=emit if per_event else None,
            observe=scorer.observe if scorer else None,
            result=result,
        )
    summary: dict[str, Any] = {"replay": result.summary()}
    if scorer is not None:
        summary.update(scorer.report(result.decisions))
    # With --per-event stdout is the event stream; the summary goes to stderr.
    console = Console(stderr=per_event)
    if as_json or per_event:
        target = sys.stderr if per_event else sys.stdout
        target.write(orjson.dumps(summary).decode() + "\n")
    else:
        _print(console, summary)


def run_evaluation(
    seed: int, minutes: float, consumers: int | None, settings: Settings, console: Console | None
) -> dict[str, Any]:
    """Simulate, replay through the detectors, score against the labels; plus the CRS corpus."""
    from pipeline.evaluation.crs import crs_report
    from pipeline.simulator import Simulation

    options: dict[str, Any] = {"seed": seed, "minutes": minutes}
    if consumers is not None:
        options["consumers"] = consumers
    sim = Simulation(**options)
    processor = build_processor(settings, event_clock=True, specs=[sim.openapi()])
    labels = sim.labels()
    scorer = Scorer(labels, processor.auth_routes)
    result = ReplayResult()
    redactor = Redactor(settings.redaction_key.get_secret_value().encode())
    lines = (orjson.dumps(entry) for entry in sim.kong_entries())
    started = time.perf_counter()
    status = (
        console.status(f"simulating and replaying {minutes:g} min (seed {seed})")
        if console is not None
        else contextlib.nullcontext()
    )
    with status:
        events = parse_lines(lines, "kong", redactor, result)
        replay(events, processor, observe=scorer.observe, result=result)
    wall = time.perf_counter() - started
    report = scorer.report(result.decisions)
    report["replay"] = result.summary() | {"wall_s": round(wall, 1)}
    report["crs"] = crs_report()
    report["seed"], report["minutes"] = seed, minutes
    return report


def evaluate_command(
    seed: Annotated[int, typer.Option(help="Simulation seed")] = 1,
    minutes: Annotated[float, typer.Option(help="Simulated minutes")] = 30,
    consumers: Annotated[int | None, typer.Option(help="Simulated API consumers")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Last line: one JSON object")] = False,
) -> None:
    """Simulate labelled traffic, replay it through the detectors and report recall, time to
    detect and benign false positives per 1,000 subject-hours, and the CRS corpus result."""
    console = Console(stderr=True)
    gc.set_threshold(*GC_THRESHOLDS)
    report = run_evaluation(seed, minutes, consumers, Settings(), console)
    if as_json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        _print(Console(), report)


def _print(console: Console, report: dict[str, Any]) -> None:
    scenarios = report.get("scenarios")
    if scenarios:
        table = Table(title="Detection by scenario")
        for col in ("scenario", "episodes", "detected", "recall", "median s", "p90 s", "attempts"):
            table.add_column(col, justify="left" if col == "scenario" else "right")
        for name, row in scenarios.items():
            table.add_row(
                name,
                str(row["episodes"]),
                str(row["detected"]),
                f"{row['recall']:.2f}",
                str(row["median_time_to_detect_s"]),
                str(row["p90_time_to_detect_s"]),
                str(row.get("median_attempts_to_detect", "")),
            )
        console.print(table)
    benign = report.get("benign")
    if benign:
        console.print(
            f"benign: {benign['subjects']} subjects, {benign['subject_hours']} subject-hours, "
            f"{benign['false_positive_subjects']} challenged/blocked "
            f"({benign['fp_per_1000_subject_hours']} per 1,000 subject-hours), "
            f"{benign['tagged_subjects']} tagged"
        )
        for fp in benign["false_positive_examples"]:
            console.print(f"  false positive {fp['subject']} {fp['action']}: {fp['reasons'][0]}")
    crs = report.get("crs")
    if crs:
        console.print(
            f"CRS query-string corpus: combined recall {crs['combined_recall']} "
            f"(SQLi/XSS/LFI/RCE), negatives flagged {crs['negative_rate']}"
        )
    replayed = report.get("replay", {})
    console.print(
        f"replayed {replayed.get('events')} events, {replayed.get('decisions')} decisions, "
        f"{replayed.get('events_per_s')} events/s (parse + detect), "
        f"{replayed.get('detect_events_per_s')} events/s detection alone"
    )
