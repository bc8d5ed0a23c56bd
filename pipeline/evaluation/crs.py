"""The OWASP CRS regression corpus as access-log traffic: how much of it the injection detector
sees.

Each go-ftw test whose payload travels in the query string becomes the Kong http-log entry Kong
would write for that request (the raw `uri`, the query string decoded the way nginx's
`ngx.req.get_uri_args` does, lower-cased headers), goes through the real `KongParser` (redaction,
PII masking) into a `GatewayEvent`, and is handed to `InjectionDetector.inspect`. An attack test is
*detected* when `inspect` returns a finding; a negative test is *flagged* when it does.

Tests whose payload is only in a POST body are not observable in access logs: they are counted as
such, never as misses. The detector is fresh for every report (no learned parameter shapes), which
is the honest cold-start figure; `warmup` replays benign traffic first for the warm figure.

The corpus is split in two halves by a hash of the rule id (`held_out`), so that a figure on rules
nobody looked at while writing the detector can be reported next to the whole.

>>> sqli = [c for c in load_cases() if c.family == 942 and c.observable]
>>> report = crs_report(sqli)
>>> report["categories"]["942 sqli"]["attacks"], report["negatives"]
(118, 36)
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from pipeline.events import GatewayEvent
from pipeline.ingest.kong import KongParser
from pipeline.ingest.redaction import Redactor

__all__ = [
    "CATEGORIES",
    "CORE",
    "PINNED",
    "CrsCase",
    "corpus_figures",
    "crs_report",
    "extract_cases",
    "held_out",
    "kong_entry",
    "kong_querystring",
    "load_cases",
    "main",
    "print_report",
    "write_cases",
]

PINNED = Path(__file__).resolve().parent / "data" / "crs_query_cases.jsonl"
# CRS rule families (the hundreds of the rule id) and the detector class each one exercises.
CATEGORIES = {
    942: "sqli",
    941: "xss",
    930: "lfi",
    932: "rce",
    931: "rfi",
    933: "php",
    934: "generic",
    943: "session_fixation",
    920: "protocol",
    921: "protocol_attack",
}
# The families the bars are about.
CORE = (942, 941, 930, 932)
CLIENT_IP = "198.51.100.23"
T0_MS = 1_700_000_000_000


@dataclass(frozen=True, slots=True)
class CrsCase:
    """One go-ftw test: where its payload travels and whether it must (attack) or must not
    (negative) trigger its rule. `observable` is False for a payload only in a request body."""

    rule_id: int
    test_id: int
    polarity: str  # attack | negative | other
    observable: bool
    method: str = "GET"
    uri: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def family(self) -> int:
        return int(str(self.rule_id)[:3])  # 942100 -> 942 (and the odd 9331200 -> 933)

    @property
    def category(self) -> str:
        return CATEGORIES.get(self.family, str(self.family))


def held_out(case: CrsCase) -> bool:
    """Whether the case belongs to the held-out half: a stable hash of its rule id, so that all
    tests of one rule land in the same half.

    >>> held_out(CrsCase(942100, 1, "attack", True)) == held_out(CrsCase(942100, 7, "attack", True))
    True
    """
    return zlib.crc32(str(case.rule_id).encode()) % 2 == 1


# --- reading the corpus --------------------------------------------------------------------------


def extract_cases(root: Path) -> list[CrsCase]:
    """Query-string and body-only cases from a CRS data folder (`tests_index.csv` and
    `regression-tests/**/<rule_id>.yaml`). Needs PyYAML (a test dependency)."""
    import yaml  # only the extraction reads YAML; the pinned cases are JSON lines

    index = root / "tests_index.csv"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: not a CRS data folder (no tests_index.csv)")
    docs: dict[str, dict[int, dict[str, Any]]] = {}
    cases: list[CrsCase] = []
    with index.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            in_query = "?" in row["uri"]
            in_body_only = row["has_body"] == "1" and not in_query
            if not (in_query or in_body_only):
                continue  # payload in a header, the path or a raw request: not this corpus
            rule_id, test_id = int(row["rule_id"]), int(row["test_id"])
            if in_body_only:
                cases.append(CrsCase(rule_id, test_id, row["polarity"], observable=False))
                continue
            tests = docs.get(row["file"])
            if tests is None:
                doc = yaml.safe_load((root / "regression-tests" / row["file"]).read_text("utf-8"))
                tests = docs[row["file"]] = {int(t["test_id"]): t for t in doc["tests"]}
            stage = _query_stage(tests[test_id])
            headers = {str(k).lower(): str(v) for k, v in (stage.get("headers") or {}).items()}
            cases.append(
                CrsCase(
                    rule_id,
                    test_id,
                    row["polarity"],
                    observable=True,
                    method=str(stage.get("method") or "GET").upper(),
                    uri=str(stage["uri"]),
                    headers=headers,
                )
            )
    return cases


def _query_stage(test: dict[str, Any]) -> dict[str, Any]:
    inputs = [s["input"] for s in test["stages"] if isinstance(s.get("input"), dict)]
    return next((i for i in inputs if "?" in str(i.get("uri", ""))), inputs[0])


def load_cases(root: Path | None = None) -> list[CrsCase]:
    """The cases pinned in the package (`root=None`, what CI has) or extracted from a CRS data
    folder such as `shared/data/crs`."""
    if root is not None:
        return extract_cases(root)
    cases = []
    with PINNED.open("rb") as f:
        for line in f:
            if line.strip():
                cases.append(CrsCase(**orjson.loads(line)))
    return cases


def write_cases(cases: Iterable[CrsCase], path: Path) -> int:
    """Write cases as JSON lines (body-only ones without any payload); returns how many."""
    n = 0
    with path.open("wb") as f:
        for case in cases:
            record = asdict(case)
            if not case.observable:
                for key in ("method", "uri", "headers"):
                    record.pop(key)
            f.write(orjson.dumps(record) + b"\n")
            n += 1
    return n


# --- the Kong entry -------------------------------------------------------------------------------


def kong_querystring(raw: str) -> dict[str, Any]:
    """The query string as Kong's serializer logs it (`kong.request.get_query()`, i.e. nginx's
    `ngx.req.get_uri_args`): split on `&` and the first `=`, `+` and `%XX` decoded in names and
    values, an invalid escape kept as is, a bare name as `true`, an empty name dropped, repeated
    names as a list.

    Bytes that are not UTF-8 become U+FFFD here; Kong would send them raw.

    >>> kong_querystring("a=1+2&b=%27x%27&flag&a=3&=z&c=%zz")
    {'a': ['1 2', '3'], 'b': "'x'", 'flag': True, 'c': '%zz'}
    """
    out: dict[str, Any] = {}
    for part in raw.split("&"):
        name, eq, value = part.partition("=")
        key = _unescape(name)
        if not key:
            continue
        decoded: Any = _unescape(value) if eq else True
        if key in out:
            known = out[key]
            out[key] = [*known, decoded] if isinstance(known, list) else [known, decoded]
        else:
            out[key] = decoded
    return out


def _unescape(text: str) -> str:
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8", "replace")


def kong_entry(case: CrsCase, ts_ms: int = T0_MS) -> dict[str, Any]:
    """The http-log entry Kong 3.x writes for the request of `case` (answered 200 upstream)."""
    uri = case.uri if case.uri.startswith("/") else "/" + case.uri
    raw_query = uri.partition("?")[2]
    host = case.headers.get("host", "localhost")
    return {
        "request": {
            "method": case.method,
            "uri": uri,
            "url": f"http://{host}{uri}",
            "querystring": kong_querystring(raw_query),
            "headers": dict(case.headers),
            "size": 200 + len(uri),
        },
        "response": {"status": 200, "size": 512, "headers": {"content-type": "text/html"}},
        "latencies": {"kong": 1, "proxy": 3, "request": 4, "receive": 0},
        "client_ip": CLIENT_IP,
        "started_at": ts_ms,
        "upstream_uri": uri,
        "upstream_status": "200",
        "source": "upstream",
        "service": {"id": "00000000-0000-4000-8000-000000000001", "name": "crs"},
        "route": {"id": "00000000-0000-4000-8000-000000000002", "name": "crs", "paths": ["/"]},
    }


# --- the report -----------------------------------------------------------------------------------

Inspector = Callable[[GatewayEvent], Any]


def crs_report(
    cases: Iterable[CrsCase] | None = None,
    *,
    inspect: Inspector | None = None,
    warmup: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Recall per CRS family and over SQLi/XSS/LFI/RCE together, the share of negative tests
    flagged (and which, with the detector's reason), and the same figures for each half of the
    split (`dev`, `held_out`).

    `inspect` defaults to a fresh `InjectionDetector`, whose learning is frozen before the corpus
    (after `warmup`, benign Kong entries fed through the same parser, for a warm figure).
    `payload_redacted` counts attack tests whose every query value the ingest replaced by a
    fingerprint (a parameter named like a secret, e.g. `code`): counted as misses, since the
    pipeline never sees those payloads.
    """
    parser = KongParser(Redactor(b"crs-corpus-evaluation"))
    if inspect is None:
        from detectors.injection import InjectionDetector

        detector = InjectionDetector()
        for entry in warmup:
            detector.inspect(parser.parse_entry(entry))
        # Every test is judged on the same state: the corpus must not teach the detector what its
        # own endpoints hold (hundreds of tests share /get?foo), or the figure would depend on the
        # order of the tests.
        detector.learning = False
        inspect = detector.inspect
    else:
        for entry in warmup:
            inspect(parser.parse_entry(entry))
    all_cases = load_cases() if cases is None else list(cases)
    findings: dict[tuple[int, int], Any] = {}
    rejected = redacted = 0
    for i, case in enumerate(all_cases):
        if not case.observable or case.polarity not in ("attack", "negative"):
            continue
        key = (case.rule_id, case.test_id)
        result = parser.parse_body(orjson.dumps(kong_entry(case, T0_MS + i * 10)))
        if not result.events:
            rejected += 1  # the parser refused it: the detector never sees it
            findings[key] = None
            continue
        event = result.events[0]
        values = [v for v in event.query.values() if v]
        if case.polarity == "attack" and values and all(v.startswith("hmac:") for v in values):
            redacted += 1
        findings[key] = inspect(event)
    flagged = {key: finding is not None for key, finding in findings.items()}
    report = corpus_figures(all_cases, flagged)
    report["flagged_negatives"] = [
        {
            "rule_id": case.rule_id,
            "test_id": case.test_id,
            "kind": getattr(findings[(case.rule_id, case.test_id)], "kind", ""),
            "reason": getattr(findings[(case.rule_id, case.test_id)], "reason", ""),
        }
        for case in all_cases
        if case.polarity == "negative" and flagged.get((case.rule_id, case.test_id))
    ]
    report["payload_redacted"] = redacted
    report["rejected_by_parser"] = rejected
    report["halves"] = {
        "dev": corpus_figures([c for c in all_cases if not held_out(c)], flagged),
        "held_out": corpus_figures([c for c in all_cases if held_out(c)], flagged),
    }
    return report


def corpus_figures(
    cases: list[CrsCase], flagged: dict[tuple[int, int], bool]
) -> dict[str, Any]:
    """Recall per category and over SQLi/XSS/LFI/RCE, and the negatives flagged, for any
    detector's verdicts (`flagged` by (rule id, test id)): ModSecurity's bench counts the same way."""
    categories: dict[str, dict[str, Any]] = {}
    negatives = negatives_flagged = not_observable = 0
    core_attacks = core_detected = 0
    for case in cases:
        if not case.observable:
            not_observable += 1
            continue
        hit = flagged.get((case.rule_id, case.test_id))
        if hit is None:
            continue  # neither attack nor negative
        if case.polarity == "negative":
            negatives += 1
            negatives_flagged += hit
            continue
        row = categories.setdefault(
            f"{case.family} {case.category}", {"attacks": 0, "detected": 0, "recall": 0.0}
        )
        row["attacks"] += 1
        row["detected"] += hit
        if case.family in CORE:
            core_attacks += 1
            core_detected += hit
    for row in categories.values():
        row["recall"] = round(row["detected"] / row["attacks"], 4)
    return {
        "categories": dict(sorted(categories.items())),
        "core_attacks": core_attacks,
        "core_detected": core_detected,
        "combined_recall": round(core_detected / core_attacks, 4) if core_attacks else 0.0,
        "negatives": negatives,
        "negatives_flagged": negatives_flagged,
        "negative_rate": round(negatives_flagged / negatives, 4) if negatives else 0.0,
        "not_observable": not_observable,
    }


def print_report(report: dict[str, Any], console: Any) -> None:
    """The report as rich tables: recall per family, then the negatives flagged and why."""
    from rich.table import Table

    table = Table(title="CRS query-string tests through Kong → InjectionDetector (cold start)")
    for column in ("family", "attacks", "detected", "recall"):
        table.add_column(column, justify="right" if column != "family" else "left")
    for family, row in report["categories"].items():
        core = int(family.split()[0]) in CORE
        table.add_row(
            f"[bold]{family}[/]" if core else family,
            str(row["attacks"]),
            str(row["detected"]),
            f"{row['recall']:.1%}",
        )
    console.print(table)
    halves = report["halves"]
    console.print(
        f"SQLi+XSS+LFI+RCE: {report['core_detected']}/{report['core_attacks']} = "
        f"[bold]{report['combined_recall']:.1%}[/] (dev half {halves['dev']['combined_recall']:.1%}"
        f", held-out half {halves['held_out']['combined_recall']:.1%})"
    )
    console.print(
        f"negative tests flagged: {report['negatives_flagged']}/{report['negatives']} = "
        f"{report['negative_rate']:.1%}; not observable (body only): {report['not_observable']}; "
        f"payload hidden by redaction: {report['payload_redacted']}"
    )
    for n in report["flagged_negatives"]:
        console.print(f"  {n['rule_id']}/{n['test_id']} {n['kind']}: {n['reason']}", markup=False)


def main(argv: list[str] | None = None) -> None:
    """`python -m pipeline.evaluation.crs [--root CRS_DATA_DIR] [--json]`"""
    import argparse

    from rich.console import Console

    parser = argparse.ArgumentParser(description="The injection detector on the CRS corpus.")
    parser.add_argument("--root", type=Path, default=None, help="CRS data folder (default: pinned)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    report = crs_report(load_cases(args.root))
    if args.json:
        print(orjson.dumps(report).decode())
    else:
        print_report(report, Console())


if __name__ == "__main__":
    main()
