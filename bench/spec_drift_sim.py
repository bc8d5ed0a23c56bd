"""The spec-drift detector on a labelled simulator run: shadow-endpoint discovery recall and time
to detect, benign subjects it challenges, what its findings say about the labelled shadow endpoints.

Replays through the workers' `Processor` on the event clock, scored by the evaluator's `Scorer`:

1. `spec_drift` alone: what this detector decides by itself (every scenario it catches, and every
   benign subject it challenges or blocks);
2. every default detector, without and then with `spec_drift`: what adding it changes.

    .venv/bin/python bench/spec_drift_sim.py [--run DIR | --seed 7 --minutes 30 --consumers 2000
                                              --episodes-per-hour 3] [--alone-only] [--json]

`--run` reads a folder written by `gatewatch simulate` (traffic.ndjson, labels.json, openapi.json);
without it the run is simulated into a temporary folder first.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors import Fusion  # noqa: E402
from detectors.spec_drift import SpecDrift  # noqa: E402
from detectors.spec_index import SpecIndex  # noqa: E402
from pipeline.config import Settings  # noqa: E402
from pipeline.evaluation.replay import ReplayResult, parse_lines, replay  # noqa: E402
from pipeline.evaluation.score import Scorer  # noqa: E402
from pipeline.ingest.normalize import route_template  # noqa: E402
from pipeline.ingest.redaction import Redactor  # noqa: E402
from pipeline.simulator import simulate  # noqa: E402
from pipeline.worker.processor import Processor, build_processor  # noqa: E402

SCENARIO = "shadow_endpoint_discovery"
_PARAM = re.compile(r"\{[^}]+\}")


def run_pass(run: Path, processor: Processor, labels: dict[str, Any]) -> dict[str, Any]:
    scorer = Scorer(labels, processor.auth_routes)
    result = ReplayResult()
    started = time.process_time()
    with (run / "traffic.ndjson").open("rb") as lines:
        events = parse_lines(lines, "kong", Redactor(b"bench-spec-drift-sim"), result)
        replay(events, processor, observe=scorer.observe, result=result)
    report = scorer.report(result.decisions)
    report["events"] = result.events
    report["cpu_s"] = round(time.process_time() - started, 1)
    return report


def shadow_recall(drift: SpecDrift, labels: dict[str, Any]) -> dict[str, Any]:
    """Labelled shadow endpoints against the `shadow_endpoint` findings (by method and route)."""
    shadow = labels["shadow_endpoints"]
    labelled = {(s["method"], route_template(_PARAM.sub("1", s["path"]))) for s in shadow}
    found = {(f.method, f.route) for f in drift.findings() if f.kind == "shadow_endpoint"}
    return {
        "labelled": len(labelled),
        "found": len(labelled & found),
        "missed": sorted(" ".join(k) for k in labelled - found),
        "unlabelled_findings": sorted(" ".join(k) for k in found - labelled),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a folder written by `gatewatch simulate`")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--consumers", type=int, default=2000)
    ap.add_argument("--episodes-per-hour", type=float, default=3.0, help="of every scenario")
    ap.add_argument("--alone-only", action="store_true", help="skip the all-detector replays")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp)
            simulate(
                run,
                seed=args.seed,
                minutes=args.minutes,
                format="kong",
                consumers=args.consumers,
                episodes_per_hour=args.episodes_per_hour,
            )
        labels = orjson.loads((run / "labels.json").read_bytes())
        spec = orjson.loads((run / "openapi.json").read_bytes())

        drift = SpecDrift(SpecIndex([spec]))
        alone = Processor(detectors=[drift], fusion=Fusion(), event_clock=True)
        result: dict[str, Any] = {"alone": run_pass(run, alone, labels)}
        result["findings"] = {
            "totals": dict(drift.log.totals),
            "shadow_endpoints": shadow_recall(drift, labels),
            "deprecated": [
                {"route": f"{f.method} {f.route}", "count": f.count, "subjects": f.subjects}
                for f in drift.findings()
                if f.kind == "deprecated_operation"
            ],
            "unknown_parameters": [
                {"route": f"{f.method} {f.route}", "count": f.count, "params": list(f.params)[:5]}
                for f in drift.findings()
                if f.kind == "unknown_parameter"
            ][:10],
        }
        if not args.alone_only:
            settings = Settings()
            result["without"] = run_pass(run, build_processor(settings, event_clock=True), labels)
            full = build_processor(settings, event_clock=True)
            with_drift = Processor(
                detectors=[*full.detectors, SpecDrift(SpecIndex([spec]))],
                fusion=full.fusion,
                mode=full.mode,
                auth_routes=full.auth_routes,
                policy=full.policy,
                event_clock=True,
            )
            result["with"] = run_pass(run, with_drift, labels)
    if args.json:
        print(orjson.dumps(result).decode())
        return
    show(Console(), result)


def show(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="spec drift on a simulator run")
    for column in ("replay", "scenario", "recall", "median / p90 s", "benign FP", "tagged"):
        table.add_column(column)
    for name in ("alone", "without", "with"):
        report = result.get(name)
        if report is None:
            continue
        benign = report["benign"]
        for scenario, row in report["scenarios"].items():
            if name != "alone" and scenario != SCENARIO:
                continue
            if name == "alone" and row["detected"] == 0 and scenario != SCENARIO:
                continue
            table.add_row(
                name,
                scenario,
                f"{row['detected']}/{row['episodes']}",
                f"{row['median_time_to_detect_s']} / {row['p90_time_to_detect_s']}",
                f"{benign['false_positive_subjects']} of {benign['subjects']:,}",
                str(benign["tagged_subjects"]),
            )
    console.print(table)
    shadow = result["findings"]["shadow_endpoints"]
    others = shadow["unlabelled_findings"]
    listed = ", ".join(escape(o[:60]) for o in others[:8]) + (" ..." if len(others) > 8 else "")
    console.print(
        f"shadow endpoints found: {shadow['found']} of {shadow['labelled']}"
        f" (missed: {', '.join(shadow['missed']) or '-'});"
        f" {len(others)} other routes answered 2xx/3xx undocumented: {listed or '-'}"
    )
    console.print(f"finding totals: {result['findings']['totals']}")
    alone = result["alone"]
    console.print(f"spec_drift alone: {alone['events']:,} events, {alone['cpu_s']} s CPU")
    for fp in alone["benign"]["false_positive_examples"]:
        console.print(escape(f"  FP {fp['subject']} {fp['action']}: {fp['reasons'][0]}"))
    if "with" in result:
        fps = {n: result[n]["benign"]["false_positive_subjects"] for n in ("without", "with")}
        cpu = {n: result[n]["cpu_s"] for n in ("without", "with")}
        console.print(
            f"all detectors: benign FP subjects {fps['without']} without spec_drift, "
            f"{fps['with']} with; replay CPU {cpu['without']} s / {cpu['with']} s"
        )


if __name__ == "__main__":
    main()
