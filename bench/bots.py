"""CPU cost per event of the bots and probing detectors, on benign traffic and under rotation.

Benign events come from the demo traffic model (consumers with SDK user agents, browsers, carrier
NATs), parsed by the real `KongParser`. Measured with `time.process_time` (CPU, not wall clock: the
machine is shared), best of `--repeat` runs:

- `ScannerAgent.inspect` and `SensitiveProbing.inspect` per event (warm caches, as in a worker);
- `BrowserMimicry.update` + `CrawlerPace.update` per event (for the event's subjects of the kinds
  they judge, as the processor calls them), less the shared counters' own cost;
- the cold paths an attacker can force: a new user agent on every request (classification), and a
  new probe path on every request (path classification).

    .venv/bin/python bench/bots.py [--events 50000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import cpu_us, demo_events  # noqa: E402

from detectors.base import SubjectContext  # noqa: E402
from detectors.bots import BrowserMimicry, CrawlerPace, ScannerAgent  # noqa: E402
from detectors.probing import SensitiveProbing  # noqa: E402
from detectors.state import SubjectState  # noqa: E402
from detectors.useragents import UserAgentClassifier  # noqa: E402
from pipeline.events import GatewayEvent  # noqa: E402


def measure(events: Sequence[GatewayEvent], repeat: int) -> dict[str, float]:
    classifier = UserAgentClassifier()
    scanner = ScannerAgent(classifier=classifier)
    probing = SensitiveProbing()
    mimicry = BrowserMimicry(classifier=classifier)
    pace = CrawlerPace(classifier=classifier)
    for e in events:  # warm the caches, as a running worker has them
        scanner.inspect(e)
        probing.inspect(e)

    def inspect_scanner() -> int:
        for e in events:
            scanner.inspect(e)
        return len(events)

    def inspect_probing() -> int:
        for e in events:
            probing.inspect(e)
        return len(events)

    states: dict[str, SubjectState] = {}
    pairs = [
        (e, s, SubjectContext(s, s.partition(":")[0], e.ts_ms / 1000))
        for e in events
        for s in e.subjects()
    ]

    def update_mimicry() -> int:
        # As the processor runs them: the detectors' update, then the shared counters.
        for e, s, ctx in pairs:
            state = states.get(s)
            if state is None:
                state = states[s] = SubjectState()
            if ctx.kind in mimicry.kinds:  # the processor calls each only for its kinds
                mimicry.update(state, e, ctx)
            if ctx.kind in pace.kinds:
                pace.update(state, e, ctx)
            state.observe(e, auth_route=False, baseline_after=5, fading_factor=0.05)
        return len(events)

    plain: dict[str, SubjectState] = {}

    def observe_only() -> int:
        for e, s, _ in pairs:
            state = plain.get(s)
            if state is None:
                state = plain[s] = SubjectState()
            state.observe(e, auth_route=False, baseline_after=5, fading_factor=0.05)
        return len(events)

    def cold_user_agents() -> int:
        cold = UserAgentClassifier(max_cache=1_000)
        base = events[0].user_agent or "Mozilla/5.0"
        uas = [
            f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{100 + i % 30}.0.{i}.0 Safari/537.36 {base[:8]}"
            for i in range(5_000)
        ]
        for ua in uas:
            cold.classify(ua)
        return len(uas)

    def cold_paths() -> int:
        fresh = SensitiveProbing(max_cache=1_000)
        paths = [f"/v1/catalogue/item-{i}/details/page.html" for i in range(5_000)]
        for p in paths:
            fresh.classify(p)
        return len(paths)

    return {
        "scanner_inspect_us": cpu_us(inspect_scanner, repeat),
        "probing_inspect_us": cpu_us(inspect_probing, repeat),
        "bot_update_us_per_event": cpu_us(update_mimicry, repeat) - cpu_us(observe_only, repeat),
        "cold_user_agent_us": cpu_us(cold_user_agents, repeat),
        "cold_path_us": cpu_us(cold_paths, repeat),
        "distinct_user_agents": len({e.user_agent for e in events}),
        "distinct_routes": len({e.route for e in events}),
        "subjects_with_memo": sum(1 for s in states.values() if s.memo),
        "subjects": len(states),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    if args.events < 1 or args.repeat < 1:
        ap.error("--events and --repeat must be at least 1")
    events = demo_events(args.events, args.seed)
    result = {"events": len(events), **measure(events, args.repeat)}
    if args.json:
        print(orjson.dumps(result).decode())
        return
    table = Table(title=f"bots + probing detectors, {len(events):,} benign events (CPU time)")
    table.add_column("what")
    table.add_column("µs", justify="right")
    for key, label in (
        ("scanner_inspect_us", "ScannerAgent.inspect per event"),
        ("probing_inspect_us", "SensitiveProbing.inspect per event"),
        ("bot_update_us_per_event", "BrowserMimicry + CrawlerPace .update per event"),
        ("cold_user_agent_us", "a never-seen user agent (cache miss)"),
        ("cold_path_us", "a never-seen route (cache miss)"),
    ):
        table.add_row(label, f"{result[key]:.2f}")
    console = Console()
    console.print(table)
    console.print(
        f"{result['distinct_user_agents']} distinct user agents, "
        f"{result['distinct_routes']} routes; "
        f"{result['subjects_with_memo']} of {result['subjects']} subjects hold a bot memo"
    )


if __name__ == "__main__":
    main()
