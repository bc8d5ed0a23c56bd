"""Pin the CRS regression tests the injection evaluation needs into the package.

Reads a CRS data folder (`tests_index.csv`, `regression-tests/`, `LICENSE`) and writes
`pipeline/evaluation/data/crs_query_cases.jsonl`: every test whose payload travels in the query
string (method, raw uri, headers), and a payload-free stub for every test whose payload is only in
a POST body (so the report can count them as not observable). Copies the CRS licence beside it.

    .venv/bin/python bench/extract_crs_cases.py [--root ../shared/data/crs] [--out PATH]

Re-run it when the CRS data folder changes, and update the commit in the data README.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.evaluation.crs import PINNED, extract_cases, write_cases  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "crs")
    parser.add_argument("--out", type=Path, default=PINNED)
    args = parser.parse_args()
    console = Console()
    if not (args.root / "tests_index.csv").is_file():
        console.print(f"[red]{args.root}: no tests_index.csv; pass --root <CRS data folder>")
        raise SystemExit(2)
    cases = extract_cases(args.root)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    written = write_cases(cases, args.out)
    shutil.copyfile(args.root / "LICENSE", args.out.parent / "LICENSE")
    where = Counter("query" if c.observable else "body only" for c in cases)
    console.print(
        f"{written} cases -> {args.out} ({where['query']} in the query string, "
        f"{where['body only']} body only, not observable)"
    )


if __name__ == "__main__":
    main()
