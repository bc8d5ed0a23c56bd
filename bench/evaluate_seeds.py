"""`gatewatch evaluate` over several seeds, pooled: per-scenario recall and median time to detect
over every episode of every run, and benign false positives per 1,000 subject-hours overall.

One seed gives one or two episodes per scenario; the acceptance bars are about the pool.

    .venv/bin/python bench/evaluate_seeds.py --seeds 201-204 --minutes 15 [--json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import Settings  # noqa: E402
from pipeline.evaluation.cli import run_evaluation  # noqa: E402


def seeds(spec: str) -> list[int]:
    if "-" in spec:
        low, high = spec.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in spec.split(",")]


def pool(runs: list[dict[str, Any]]) -> dict[str, Any]:
    scenarios: dict[str, dict[str, Any]] = {}
    for run in runs:
        for name, row in run["scenarios"].items():
            pooled = scenarios.setdefault(
                name, {"episodes": 0, "detected": 0, "delays": [], "attempts": []}
            )
            pooled["episodes"] += row["episodes"]
            pooled["detected"] += row["detected"]
            pooled["delays"] += row.get("delays_s", [])
            pooled["attempts"] += row.get("attempts_to_detect", [])
    out: dict[str, Any] = {}
    for name, row in sorted(scenarios.items()):
        delays, attempts = row.pop("delays"), row.pop("attempts")
        row["recall"] = round(row["detected"] / row["episodes"], 3)
        row["median_time_to_detect_s"] = round(statistics.median(delays), 2) if delays else None
        if attempts:  # credential attacks: login attempts made until the first challenge/block
            row["median_attempts_to_detect"] = statistics.median(attempts)
        out[name] = row
    hours = sum(r["benign"]["subject_hours"] for r in runs)
    fps = sum(r["benign"]["false_positive_subjects"] for r in runs)
    return {
        "seeds": [r["seed"] for r in runs],
        "minutes": runs[0]["minutes"] if runs else None,
        "scenarios": out,
        "benign": {
            "subject_hours": round(hours, 1),
            "false_positive_subjects": fps,
            "fp_per_1000_subject_hours": round(1000 * fps / hours, 3) if hours else None,
            "false_positives_by_detector": _sum_counts(
                r["benign"]["false_positives_by_detector"] for r in runs
            ),
        },
        "replay_events_per_s": [r["replay"]["events_per_s"] for r in runs],
    }


def _sum_counts(counts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="201-204")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    console = Console(stderr=True)
    runs = []
    for seed in seeds(args.seeds):
        run = run_evaluation(seed, args.minutes, None, Settings(), console)
        run.pop("crs", None)
        runs.append(run)
        console.print(f"seed {seed}: {len(run['missed'])} missed, "
                      f"{run['benign']['false_positive_subjects']} false positives")
    result = pool(runs)
    if args.json:
        print(orjson.dumps(result).decode())
        return
    table = Table(title=f"Pooled over seeds {result['seeds']}")
    for col in ("scenario", "episodes", "detected", "recall", "median s", "median attempts"):
        table.add_column(col)
    for name, row in result["scenarios"].items():
        table.add_row(name, str(row["episodes"]), str(row["detected"]), str(row["recall"]),
                      str(row["median_time_to_detect_s"]),
                      str(row.get("median_attempts_to_detect", "")))
    Console().print(table)
    Console().print(result["benign"])


if __name__ == "__main__":
    main()
