"""Do two versions of the detection step decide exactly alike? Digests of their output, compared.

A speed-up of the processor, the state or a detector must not change a single decision. This runs
the same traffic through this checkout and through another commit (exported with `git archive`,
run in a subprocess with that tree first on the path) and compares, part by part:

- `per_event`: every event's subjects, signals (detector, kind, score, reason), risk and action,
  as `gatewatch replay --per-event` prints them, plus the decisions, for simulator traffic with
  attacks (the simulator's OpenAPI document loaded, so spec drift runs too);
- `batched`: the decisions of envelope-sized batches (what a worker writes), also with a store
  small enough to evict;
- `demo`: the throughput bench's demo traffic with its attacks, per partition, on a wall clock;
- `one_shot`: a distributed login campaign, one or two failures per address.

    .venv/bin/python bench/equivalence.py --ref main [--seeds 5 7] [--minutes 3] [--json]

Without `--ref` it prints this checkout's digests. Exit status 1 when any part differs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _digests(seeds: list[int], minutes: float) -> dict[str, dict[str, Any]]:
    import orjson

    from pipeline import envelopes
    from pipeline.config import Settings
    from pipeline.demo.traffic import TrafficModel
    from pipeline.evaluation.replay import ReplayResult, parse_lines, replay
    from pipeline.events import GatewayEvent
    from pipeline.ingest.kong import KongParser
    from pipeline.ingest.redaction import Redactor
    from pipeline.simulator import Simulation
    from pipeline.worker.processor import StateStore, build_processor

    class Digest:
        def __init__(self) -> None:
            self.hash = hashlib.sha256()
            self.items = 0

        def add(self, item: Any) -> None:
            self.hash.update(orjson.dumps(item, option=orjson.OPT_SORT_KEYS) + b"\n")
            self.items += 1

        def add_decisions(self, decisions: list[Any]) -> None:
            # `model_version` is a label of the detectors' versions, not a decision: a version
            # bump must not hide that the decisions themselves are the same.
            for d in decisions:
                self.add(d.model_dump(exclude={"model_version"}))

        def result(self) -> dict[str, Any]:
            return {"items": self.items, "sha256": self.hash.hexdigest()[:16]}

    settings = Settings()
    out: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        sim = Simulation(seed=seed, minutes=minutes)
        spec = sim.openapi()
        events = list(
            parse_lines(
                (orjson.dumps(e) for e in sim.kong_entries()),
                "kong",
                Redactor(b"equivalence"),
                ReplayResult(),
            )
        )
        traces = Digest()

        def emit(trace: Any, traces: Digest = traces) -> None:
            traces.add(
                {
                    "request_id": trace.event.request_id,
                    "subjects": trace.subjects,
                    "signals": [[s.detector, s.kind, s.score, s.reason] for s in trace.signals],
                    "risk": trace.verdict.score,
                    "action": trace.verdict.action,
                    "reasons": trace.verdict.reasons,
                    "detector": trace.verdict.detector,
                }
            )

        processor = build_processor(settings, event_clock=True, specs=[spec])
        result = replay(events, processor, on_event=emit)
        traces.add_decisions(result.decisions)
        traces.add(result.subjects)
        out[f"per_event/seed{seed}"] = traces.result()

        for max_subjects in (500_000, 1_500):
            batched = Digest()
            processor = build_processor(settings, event_clock=True, specs=[spec])
            result = replay(events, processor, max_subjects=max_subjects, batch_size=256)
            batched.add_decisions(result.decisions)
            batched.add(result.subjects)
            out[f"batched/seed{seed}/max{max_subjects}"] = batched.result()

    model = TrafficModel(seed=11, consumers=600, browsers=1000, nats=6)
    parser = KongParser(Redactor(b"equivalence"))
    demo: list[GatewayEvent] = []
    now_ms = 1_700_000_000_000
    n = 60_000
    while len(demo) < n:
        if n // 3 <= len(demo) < 2 * n // 3:
            model.start_attack()
        else:
            model.stop_attack()
        now_ms += 100
        demo.extend(parser.parse_body(orjson.dumps(model.tick(now_ms, 0.1))).events)
    processor = build_processor(settings)
    digest = Digest()
    stores: dict[int, StateStore] = {}
    for i in range(0, len(demo), 500):
        chunk = demo[i : i + 500]
        by_partition: dict[int, list[GatewayEvent]] = {}
        for e in chunk:
            by_partition.setdefault(envelopes.partition_for(e.partition_subject(), 4), []).append(e)
        for p, evs in sorted(by_partition.items()):
            store = stores.setdefault(p, StateStore(500_000))
            digest.add_decisions(processor.process(evs, store, wall_ms=evs[-1].ts_ms))
    digest.add(sorted(len(s) for s in stores.values()))
    out["demo"] = digest.result()

    processor = build_processor(settings, event_clock=True)
    digest = Digest()
    store = StateStore(20_000)
    attack = [
        GatewayEvent(
            ts_ms=1_700_000_000_000 + i * 3,
            gateway="kong",
            method="POST",
            path="/login",
            route="/login",
            status=401 if i % 7 else 200,
            client_ip=f"10.{(i >> 12) & 255}.{(i >> 4) & 255}.{(i * 37) & 255}",
            user_agent="python-httpx/0.27" if i % 3 else "Mozilla/5.0 X",
            header_fingerprint="abc",
        )
        for i in range(40_000)
    ]
    for i in range(0, len(attack), 256):
        digest.add_decisions(processor.process(attack[i : i + 256], store))
    digest.add(len(store))
    out["one_shot"] = digest.result()
    return out


def _ref_digests(ref: str, seeds: list[int], minutes: float) -> dict[str, dict[str, Any]]:
    import orjson

    with tempfile.TemporaryDirectory(prefix="gw-equivalence-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "detectors", "pipeline"],
            check=True,
            capture_output=True,
        ).stdout
        archive_path = Path(tmp) / "ref.tar"
        archive_path.write_bytes(archive)
        with tarfile.open(archive_path) as tar:
            tar.extractall(tmp, filter="data")
        args = [sys.executable, __file__, "--root", tmp, "--json", "--minutes", str(minutes)]
        args += ["--seeds", *map(str, seeds)]
        env = os.environ | {"PYTHONPATH": tmp}
        done = subprocess.run(args, check=True, capture_output=True, cwd=tmp, env=env)
        return orjson.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", help="git commit or branch to compare this checkout with")
    ap.add_argument("--seeds", type=int, nargs="+", default=[5, 7])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(args.root))
    import orjson

    mine = _digests(args.seeds, args.minutes)
    if args.ref is None:
        if args.json:
            print(orjson.dumps(mine).decode())
        else:
            for part, figures in mine.items():
                print(f"{part:28} {figures['items']:>8} {figures['sha256']}")
        return
    theirs = _ref_digests(args.ref, args.seeds, args.minutes)
    differs = [part for part in mine if mine[part] != theirs.get(part)]
    if args.json:
        print(orjson.dumps({"ref": args.ref, "identical": not differs, "differs": differs,
                            "parts": mine}).decode())
    else:
        for part, figures in mine.items():
            verdict = "same" if part not in differs else f"DIFFERS (ref {theirs.get(part)})"
            print(f"{part:28} {figures['items']:>8} {figures['sha256']}  {verdict}")
    sys.exit(1 if differs else 0)


if __name__ == "__main__":
    main()
