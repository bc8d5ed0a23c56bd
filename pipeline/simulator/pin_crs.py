"""Regenerate the pinned OWASP CRS sample in `pipeline/simulator/data/` from a CRS checkout.

The simulator's injection probes and scanner/probe scenarios draw on CRS data at run time, and CI
has no copy of CRS: this maintainer tool copies a small, deterministic sample into the package.

    python -m pipeline.simulator.pin_crs /work/shared/data/crs

Writes `crs-payloads.jsonl` (attack payloads of the CRS regression tests, as query-string
arguments), `scanners-user-agents.data` and `restricted-files.data` (verbatim) and `LICENSE`.
Payloads that CRS sends in a form-encoded POST body are moved into the query string (marked
`"moved_from_body": true`): an access log never shows a body, and a probe that puts the same bytes
in the query string is what a log-driven detector can see.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote_to_bytes

import orjson

__all__ = ["main", "pin"]

DATA = Path(__file__).resolve().parent / "data"
# Families of attack a probe puts in a query argument (protocol and response rules left out).
CATEGORIES = {
    "930": "lfi",
    "931": "rfi",
    "932": "rce",
    "933": "php",
    "934": "generic",
    "941": "xss",
    "942": "sqli",
    "943": "session_fixation",
    "944": "java",
}
PER_RULE = 6
MAX_VALUE_BYTES = 600
# Characters a client must percent-encode in a request target (RFC 3986 leaves these out).
_UNSAFE = set(b' "#<>\\^`{|}') | set(range(0x00, 0x21)) | set(range(0x7F, 0x100))
VERBATIM = ("scanners-user-agents.data", "restricted-files.data")


def _encode(raw: str) -> str:
    """Percent-encode what may not appear raw in a URI; existing %XX escapes are kept."""
    out = []
    for byte in raw.encode("utf-8"):
        out.append(f"%{byte:02X}" if byte in _UNSAFE else chr(byte))
    return "".join(out)


def _decodes(value: str) -> bool:
    """Kong logs the decoded argument: keep values that decode to text without NULs."""
    try:
        text = unquote_to_bytes(value.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return "\x00" not in text and text.strip() != ""


def _payload_pair(query: str) -> tuple[str, str] | None:
    """The argument carrying the payload: the longest one (the others are decoys like `no=2`)."""
    pairs = [p.partition("=") for p in query.split("&") if p]
    if not pairs:
        return None
    name, _, value = max(pairs, key=lambda p: len(p[0]) + len(p[2]))
    return name, value


def _stage_input(test: dict) -> dict:
    stages = test.get("stages") or []
    return (stages[0].get("input") or {}) if stages else {}


def pin(crs: Path, out: Path = DATA) -> int:
    """Write the sample; returns the number of payloads pinned."""
    import yaml  # a maintainer tool: yaml is a test dependency, not a runtime one

    rows = list(csv.DictReader((crs / "tests_index.csv").open(encoding="utf-8")))
    picked: list[dict] = []
    per_rule: dict[str, int] = {}
    cache: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r["file"], int(r["test_id"]))):
        family = CATEGORIES.get(row["category"].split("-")[1])
        if family is None or row["polarity"] != "attack" or row["encoded_request"] == "1":
            continue
        if per_rule.get(row["rule_id"], 0) >= PER_RULE:
            continue
        doc = cache.get(row["file"])
        if doc is None:
            doc = cache[row["file"]] = yaml.safe_load(
                (crs / "regression-tests" / row["file"]).read_text()
            )
        test = next(t for t in doc["tests"] if str(t["test_id"]) == row["test_id"])
        stage = _stage_input(test)
        uri = str(stage.get("uri") or "")
        moved = False
        if "?" in uri:
            pair = _payload_pair(uri.partition("?")[2])
        else:
            data = stage.get("data")
            headers = {str(k).lower(): str(v) for k, v in (stage.get("headers") or {}).items()}
            ctype = headers.get("content-type", "application/x-www-form-urlencoded")
            if not isinstance(data, str) or "\n" in data.strip() or "form-urlencoded" not in ctype:
                continue
            pair = _payload_pair(data.strip())
            moved = True
        if pair is None:
            continue
        name, value = _encode(pair[0]), _encode(pair[1])
        if len(value) > MAX_VALUE_BYTES or not (_decodes(value) if value else _decodes(name)):
            continue
        per_rule[row["rule_id"]] = per_rule.get(row["rule_id"], 0) + 1
        picked.append(
            {
                "family": family,
                "rule_id": int(row["rule_id"]),
                "test_id": int(row["test_id"]),
                "paranoia": int(row["paranoia_level"] or 1),
                "moved_from_body": moved,
                "name": name,
                "value": value,
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    with (out / "crs-payloads.jsonl").open("wb") as fh:
        for item in picked:
            fh.write(orjson.dumps(item) + b"\n")
    for name in VERBATIM:
        shutil.copyfile(crs / "rules-data" / name, out / name)
    shutil.copyfile(crs / "LICENSE", out / "LICENSE")
    return len(picked)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / "tests_index.csv").is_file():
        print("usage: python -m pipeline.simulator.pin_crs <crs dir with tests_index.csv>")
        return 2
    print(f"pinned {pin(Path(args[0]))} payloads into {DATA}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
