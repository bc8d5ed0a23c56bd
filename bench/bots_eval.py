"""The bots and probing detectors on simulated traffic: recall on their scenarios, benign subjects
they challenge or block.

Simulated Kong entries (`pipeline.simulator`) go through the real `KongParser` and the workers'
`Processor` on the event clock with only `ScannerAgent`, `BrowserMimicry`, `CrawlerPace` and
`SensitiveProbing` (so every false positive is theirs), scored by the evaluator against the
simulator's labels.
`--all` adds the default detector families, to see the same figures as a worker would.

    .venv/bin/python bench/bots_eval.py [--seed 7] [--minutes 30] [--all] [--json]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors import Fusion, default_detectors  # noqa: E402
from detectors.bots import BrowserMimicry, CrawlerPace, ScannerAgent  # noqa: E402
from detectors.probing import SensitiveProbing  # noqa: E402
from detectors.routes import AuthRoutes  # noqa: E402
from detectors.useragents import UserAgentClassifier  # noqa: E402
from pipeline.evaluation.replay import replay  # noqa: E402
from pipeline.evaluation.score import Scorer  # noqa: E402
from pipeline.events import GatewayEvent  # noqa: E402
from pipeline.ingest.kong import KongParser  # noqa: E402
from pipeline.ingest.redaction import Redactor  # noqa: E402
from pipeline.simulator import Simulation  # noqa: E402
from pipeline.worker.processor import Processor  # noqa: E402

SCENARIOS = ("bad_ua_bot", "stealth_bot", "sensitive_file_probing")
OURS = ("bot_ua", "bot_behaviour", "crawler_pace", "probing")


def events_of(sim: Simulation, rejects: list[str]) -> Iterator[GatewayEvent]:
    parser = KongParser(Redactor(b"bots-eval"))
    for entry in sim.kong_entries():
        parsed = parser.parse_body(orjson.dumps(entry))
        rejects.extend(r.reason for r in parsed.rejects)
        yield from parsed.events


def evaluate(seed: int, minutes: float, consumers: int, everything: bool) -> dict[str, Any]:
    auth = AuthRoutes()
    if everything:
        detectors = default_detectors(auth)  # they include this family, sharing one classifier
    else:
        classifier = UserAgentClassifier()
        detectors = [
            ScannerAgent(classifier=classifier),
            BrowserMimicry(classifier=classifier),
            CrawlerPace(classifier=classifier),
            SensitiveProbing(),
        ]
    processor = Processor(
        detectors=detectors, fusion=Fusion(), mode="enforce", auth_routes=auth, event_clock=True
    )
    sim = Simulation(seed=seed, minutes=minutes, consumers=consumers)
    rejects: list[str] = []
    # The labels are complete once the entries are exhausted; the scorer needs them up front, so
    # the run is materialised first (a 30-minute run is about a million events).
    events = list(events_of(sim, rejects))
    scorer = Scorer(sim.labels(), auth)
    result = replay(events, processor, observe=scorer.observe)
    report = scorer.report(result.decisions)
    by_detector = report["benign"]["false_positives_by_detector"]
    return {
        "seed": seed,
        "minutes": minutes,
        "events": result.events,
        "rejects": len(rejects),
        "detectors": [d.name for d in detectors],
        "scenarios": {k: v for k, v in report["scenarios"].items() if everything or k in SCENARIOS},
        "benign": report["benign"],
        # Benign subjects challenged or blocked with one of this family as the leading reason.
        "false_positives_by_ours": {k: n for k, n in by_detector.items() if k in OURS},
        "missed": [m for m in report["missed"] if everything or m["scenario"] in SCENARIOS],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--consumers", type=int, default=2000)
    ap.add_argument("--all", action="store_true", help="with every default detector family")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    if args.minutes <= 0 or args.consumers < 1:
        ap.error("--minutes must be positive and --consumers at least 1")
    out = evaluate(args.seed, args.minutes, args.consumers, args.all)
    if args.json:
        print(orjson.dumps(out).decode())
        return
    console = Console()
    table = Table(title=f"seed {out['seed']}, {out['minutes']:g} min, {out['events']:,} events")
    for col in ("scenario", "episodes", "detected", "recall", "median s to detect"):
        table.add_column(col)
    for name, row in out["scenarios"].items():
        table.add_row(
            name,
            str(row["episodes"]),
            str(row["detected"]),
            f"{row['recall']:.3f}",
            str(row["median_time_to_detect_s"]),
        )
    console.print(table)
    benign = out["benign"]
    console.print(
        f"benign: {benign['subjects']:,} subjects, {benign['subject_hours']:,} subject-hours, "
        f"{benign['false_positive_subjects']} challenged/blocked "
        f"({benign['fp_per_1000_subject_hours']} per 1,000 subject-hours), "
        f"{benign['tagged_subjects']} tagged; {out['rejects']} parser rejects; led by this "
        f"family: {out['false_positives_by_ours'] or 'none'}"
    )
    for fp in benign["false_positive_examples"]:
        console.print(f"  FP {fp['subject']} {fp['action']}: {'; '.join(fp['reasons'])}")
    for miss in out["missed"]:
        console.print(f"  missed {miss['id']} {miss['scenario']} {miss['subjects']}")


if __name__ == "__main__":
    main()
