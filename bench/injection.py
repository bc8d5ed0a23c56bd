"""CPU time of `InjectionDetector.inspect` per event, on benign simulator traffic and on attacks,
with each way of finding the literals that select rules (google-re2, plain Python, hyperscan).

    .venv/bin/python bench/injection.py [--minutes 5] [--consumers 400] [--json]

Figures are CPU time of this process (`time.process_time`), best of `--repeats` passes, so a run on
a busy machine stays comparable. Three figures per engine:

- `steady`: benign events once the detector has seen the traffic (shapes learned, repeated values
  cached), what a worker does all day;
- `first_pass`: the same events on a fresh detector (cold caches, learning every value);
- `unique_text`: free-text values never seen before (no cache can help): the worst benign case;
- `attacks`: the CRS query-string corpus, every event a payload.

Also the cost of the alternative the engine replaced: one Python `re` alternation per rule class
tried on every non-plain value (`naive_alternation`, per value).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors import injection_patterns, injection_rules  # noqa: E402
from detectors.injection import InjectionDetector  # noqa: E402
from detectors.injection_decode import decode  # noqa: E402
from detectors.injection_engine import LiteralSet  # noqa: E402
from pipeline.evaluation.crs import kong_entry, load_cases  # noqa: E402
from pipeline.events import GatewayEvent  # noqa: E402
from pipeline.ingest.kong import KongParser  # noqa: E402
from pipeline.ingest.redaction import Redactor  # noqa: E402
from pipeline.simulator import Simulation  # noqa: E402

WORDS = (
    "red dress shoes garden chair usb cable coffee table lamp desk office women's kids' bike "
    "helmet o'brien café größe 42 black white & salt pepper 50% off 4k tv c++ primer select "
    "union drop leaf script font sleep mask where's waldo exec chair -- 1'' pad"
).split()


class HyperscanLiterals:
    """The same contract as `LiteralSet`, on hyperscan (for comparison only)."""

    def __init__(self, literals: Sequence[str]) -> None:
        import hyperscan

        self.literals = tuple(sorted(set(literals)))
        self._db = hyperscan.Database()
        self._db.compile(
            expressions=[re.escape(lit).encode() for lit in self.literals],
            ids=list(range(len(self.literals))),
            elements=len(self.literals),
            flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(self.literals),
        )

    def find(self, text: str) -> set[str]:
        found: list[int] = []

        def on_match(i: int, start: int, end: int, flags: int, context: object) -> None:
            found.append(i)

        self._db.scan(text.encode("utf-8", "replace"), match_event_handler=on_match)
        return {self.literals[i] for i in found}


def engines() -> dict[str, Callable[[], InjectionDetector]]:
    out: dict[str, Callable[[], InjectionDetector]] = {
        "python": lambda: InjectionDetector(engine="python"),
    }
    try:
        import re2  # noqa: F401

        out["re2"] = lambda: InjectionDetector(engine="re2")
    except ImportError:
        pass
    try:
        import hyperscan  # noqa: F401

        def with_hyperscan() -> InjectionDetector:
            detector = InjectionDetector(engine="python")
            rules = injection_rules.RuleSet(detector.data_dir, "python")
            rules.literal_set = HyperscanLiterals(rules.literal_set.literals)  # type: ignore[assignment]
            detector.rules = rules
            return detector

        out["hyperscan"] = with_hyperscan
    except ImportError:
        pass
    return out


def per_event_us(
    detector: InjectionDetector, events: Sequence[GatewayEvent], repeats: int
) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for event in events:
            detector.inspect(event)
        best = min(best, time.process_time() - start)
    return best / len(events) * 1e6


def first_pass_us(make: Callable[[], InjectionDetector], events: Sequence[GatewayEvent]) -> float:
    detector = make()
    start = time.process_time()
    for event in events:
        detector.inspect(event)
    return (time.process_time() - start) / len(events) * 1e6


def unique_text_events(n: int, seed: int) -> list[GatewayEvent]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) + f" {i}"
        events.append(
            GatewayEvent(
                ts_ms=i,
                gateway="kong",
                client_ip="192.0.2.1",
                method="GET",
                path="/v1/search",
                route="/v1/search",
                status=200,
                query={"q": text, "page": str(rng.randint(1, 9))},
            )
        )
    return events


def naive_alternation_us(values: Sequence[str], repeats: int) -> float:
    classes = [
        re.compile("|".join(f"(?:{r[2]})" for r in rules))
        for rules in (
            injection_patterns.SQLI,
            injection_patterns.XSS,
            injection_patterns.LFI,
            injection_patterns.CODE,
            injection_patterns.SHELL,
        )
    ]
    decoded = [decode(v).text for v in values]
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for text in decoded:
            for rx in classes:
                rx.search(text)
        best = min(best, time.process_time() - start)
    return best / len(values) * 1e6


def literal_find_us(make: Callable[[], object], values: Sequence[str], repeats: int) -> float:
    finder = make()
    texts = [decode(v).text for v in values]
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for text in texts:
            finder.find(text)  # type: ignore[attr-defined]
        best = min(best, time.process_time() - start)
    return best / len(values) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--consumers", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    kong = KongParser(Redactor(b"bench-injection"))
    sim = Simulation(seed=args.seed, minutes=args.minutes, consumers=args.consumers, attacks=False)
    benign = [kong.parse_entry(e) for e in sim.kong_entries()]
    attacks = [
        kong.parse_body(orjson.dumps(kong_entry(c))).events[0]
        for c in load_cases()
        if c.observable and c.polarity == "attack"
    ]
    unique = unique_text_events(20_000, args.seed)
    texts = [e.query["q"] for e in unique[:5_000]]

    results: dict[str, dict[str, float]] = {}
    for name, make in engines().items():
        detector = make()
        for event in benign:
            detector.inspect(event)  # learn the traffic once
        results[name] = {
            "steady": round(per_event_us(detector, benign, args.repeats), 2),
            "first_pass": round(first_pass_us(make, benign), 2),
            "unique_text": round(first_pass_us(make, unique), 2),
            "attacks": round(first_pass_us(make, attacks), 2),
        }
    literal_makers: dict[str, Callable[[], object]] = {}
    for name in results:
        if name == "hyperscan":
            literals = InjectionDetector().rules.literal_set.literals
            literal_makers[name] = lambda lits=literals: HyperscanLiterals(lits)
        else:
            literal_makers[name] = lambda n=name: LiteralSet(
                InjectionDetector().rules.literal_set.literals, engine=n
            )
    for name, make_literals in literal_makers.items():
        results[name]["literal_lookup_per_value"] = round(
            literal_find_us(make_literals, texts, args.repeats), 2
        )
    summary = {
        "benign_events": len(benign),
        "benign_with_query": sum(bool(e.query) for e in benign),
        "attack_events": len(attacks),
        "unit": "CPU microseconds per event (per value for the lookups)",
        "engines": results,
        "naive_alternation_per_value": round(naive_alternation_us(texts[:1000], args.repeats), 2),
    }
    if args.json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    table = Table(title=f"InjectionDetector.inspect, CPU µs ({len(benign):,} benign events)")
    for column in ("engine", "steady", "first pass", "unique text", "attacks", "literal lookup"):
        table.add_column(column, justify="right")
    for name, r in results.items():
        keys = ("steady", "first_pass", "unique_text", "attacks", "literal_lookup_per_value")
        table.add_row(name, *(f"{r[k]:.2f}" for k in keys))
    console.print(table)
    console.print(
        f"one Python alternation per class, per free-text value: "
        f"{summary['naive_alternation_per_value']:.1f} µs"
    )


if __name__ == "__main__":
    main()
