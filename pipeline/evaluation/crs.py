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

The corpus is split in two halves by a hash of the rule id (`held_out`). The "held-out" half is no
longer independent: the detector was improved while reading its misses (0.607 at first, then 0.806,
then 0.900). The independent figure is `--moved`: the body-only tests, which nobody developed the
detector on, with their form body moved into the query string (`extract_moved_cases`), reported
apart and never to be tuned on.

A negative test only says that its rule must not fire: when the same request is another rule's
attack test it counts in neither figure (`reconcile`).

>>> sqli = [c for c in load_cases() if c.family == 942 and c.observable]
>>> report = crs_report(sqli)
>>> report["categories"]["942 sqli"]["attacks"], report["negatives"]
(118, 34)
"""

from __future__ import annotations

import csv
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
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
    "extract_moved_cases",
    "held_out",
    "kong_entry",
    "kong_querystring",
    "load_cases",
    "main",
    "print_report",
    "reconcile",
    "request_key",
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
    polarity: str  # attack | negative | both (see `reconcile`) | other
    observable: bool
    method: str = "GET"
    uri: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    moved: bool = False  # a form body moved into the query string (`extract_moved_cases`)

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


# A form body means the same arguments in a query string; these do not (or not as one string).
_FORM_TYPES = ("", "application/x-www-form-urlencoded")
# In a request target these must be escaped; everything else of a form body keeps its meaning.
_NOT_IN_TARGET = re.compile(r"[^\x21-\x7e]|#")


def extract_moved_cases(root: Path) -> list[CrsCase]:
    """The body-only tests of a CRS data folder with their form body moved into the query string
    (`moved`), for a figure on payloads the detector was never developed on. A body that is not a
    form (JSON, XML, multipart, text) is not moved: such tests stay not observable.

    Moving is the probe's choice, not CRS's: a rule that only reads the body would not fire on the
    moved request, and some payloads lean on a body's room (long or multi-line values)."""
    import yaml

    moved: list[CrsCase] = []
    docs: dict[str, dict[int, dict[str, Any]]] = {}
    with (root / "tests_index.csv").open(newline="", encoding="utf-8") as f:
        rows = {(int(r["rule_id"]), int(r["test_id"])): r for r in csv.DictReader(f)}
    for case in extract_cases(root):
        if case.observable:
            continue
        row = rows[case.rule_id, case.test_id]
        tests = docs.get(row["file"])
        if tests is None:
            doc = yaml.safe_load((root / "regression-tests" / row["file"]).read_text("utf-8"))
            tests = docs[row["file"]] = {int(t["test_id"]): t for t in doc["tests"]}
        stages = tests[case.test_id]["stages"]
        inputs = [s["input"] for s in stages if isinstance(s.get("input"), dict)]
        stage = next((i for i in inputs if isinstance(i.get("data"), str)), None)
        if stage is None:
            moved.append(case)
            continue
        headers = {str(k).lower(): str(v) for k, v in (stage.get("headers") or {}).items()}
        kind = headers.pop("content-type", "").split(";")[0].strip().lower()
        headers.pop("content-length", None)
        if kind not in _FORM_TYPES:
            moved.append(case)
            continue
        path = str(stage.get("uri") or "/post").partition("?")[0] or "/post"
        query = _NOT_IN_TARGET.sub(
            lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode("utf-8")), stage["data"]
        )
        moved.append(
            replace(
                case,
                observable=True,
                method=str(stage.get("method") or "POST").upper(),
                uri=f"{path}?{query}",
                headers=headers,
                moved=True,
            )
        )
    return moved


def _query_stage(test: dict[str, Any]) -> dict[str, Any]:
    inputs = [s["input"] for s in test["stages"] if isinstance(s.get("input"), dict)]
    return next((i for i in inputs if "?" in str(i.get("uri", ""))), inputs[0])


def load_cases(root: Path | None = None) -> list[CrsCase]:
    """The cases pinned in the package (`root=None`, what CI has) or extracted from a CRS data
    folder such as `shared/data/crs`, reconciled (`reconcile`)."""
    if root is not None:
        return reconcile(extract_cases(root))
    cases = []
    with PINNED.open("rb") as f:
        for line in f:
            if line.strip():
                cases.append(CrsCase(**orjson.loads(line)))
    return reconcile(cases)


# CRS names a test's parameter after the test ("932260-1"): the same payload under another test's
# name is the same request.
_TEST_PARAM = re.compile(r"\d{6,7}-\d+")


def request_key(case: CrsCase) -> tuple[Any, ...]:
    """What identifies a query-string test's request: method, path, decoded query (parameters
    named after a test made anonymous) and headers."""
    path, _, raw_query = case.uri.partition("?")
    items = []
    for name, value in kong_querystring(raw_query.partition("#")[0]).items():
        key = "" if _TEST_PARAM.fullmatch(name) else name
        for v in value if isinstance(value, list) else [value]:
            items.append((key, v if isinstance(v, str) else ""))
    return (case.method, path, tuple(sorted(items)), tuple(sorted(case.headers.items())))


def reconcile(cases: list[CrsCase]) -> list[CrsCase]:
    """Negative tests whose request is, byte for byte, an attack test of another rule become
    `both`.

    A CRS negative only says "this rule must not fire": the same request is often the attack test
    of a neighbouring rule or a higher paranoia level (`time curl coreruleset.org` must not fire
    932260 and must fire 932236). A detector that is not split along CRS's rule lines cannot pass
    both, so such a test is neither a negative nor a second attack (the attack test already counts).

    >>> get = "/get?foo=time+curl+coreruleset.org"
    >>> cases = reconcile([CrsCase(932260, 14, "negative", True, uri=get),
    ...                    CrsCase(932236, 41, "attack", True, uri=get),
    ...                    CrsCase(932260, 13, "negative", True, uri="/get?foo=time+warner+")])
    >>> [c.polarity for c in cases]
    ['both', 'attack', 'negative']
    """
    attacks = {request_key(c) for c in cases if c.observable and c.polarity == "attack"}
    return [
        replace(c, polarity="both")
        if c.observable and c.polarity == "negative" and request_key(c) in attacks
        else c
        for c in cases
    ]


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
        if not case.observable or case.polarity not in ("attack", "negative", "both"):
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
    report["flagged_also_attacks"] = [
        {"rule_id": case.rule_id, "test_id": case.test_id}
        for case in all_cases
        if case.polarity == "both" and flagged.get((case.rule_id, case.test_id))
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
    negatives = negatives_flagged = not_observable = also_attacks = 0
    core_attacks = core_detected = 0
    for case in cases:
        if not case.observable:
            not_observable += 1
            continue
        hit = flagged.get((case.rule_id, case.test_id))
        if hit is None:
            continue  # neither attack nor negative
        if case.polarity == "both":
            also_attacks += 1
            continue
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
        # Negative tests whose request is another rule's attack test: in neither figure.
        "negatives_also_attacks": also_attacks,
    }


def print_report(report: dict[str, Any], console: Any, *, moved: bool = False) -> None:
    """The report as rich tables: recall per family, then the negatives flagged and why."""
    from rich.table import Table

    title = (
        "CRS body-only tests, form body MOVED into the query string → InjectionDetector "
        "(cold start)"
        if moved
        else "CRS query-string tests through Kong → InjectionDetector (cold start)"
    )
    table = Table(title=title)
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
        f", 'held-out' half {halves['held_out']['combined_recall']:.1%}, tuned on since: not "
        "independent)"
    )
    if "outside_simulator_sample" in report:
        outside = report["outside_simulator_sample"]
        console.print(
            f"outside the simulator's sample of moved payloads: {outside['core_detected']}/"
            f"{outside['core_attacks']} = {outside['combined_recall']:.1%}, negatives flagged "
            f"{outside['negatives_flagged']}/{outside['negatives']}"
        )
    console.print(
        f"negative tests flagged: {report['negatives_flagged']}/{report['negatives']} = "
        f"{report['negative_rate']:.1%}; not observable (body only): {report['not_observable']}; "
        f"payload hidden by redaction: {report['payload_redacted']}"
    )
    console.print(
        f"negative tests whose request is another rule's attack test (in neither figure): "
        f"{report['negatives_also_attacks']}, flagged {len(report['flagged_also_attacks'])}"
    )
    for n in report["flagged_negatives"]:
        console.print(f"  {n['rule_id']}/{n['test_id']} {n['kind']}: {n['reason']}", markup=False)


def _simulator_sample() -> set[tuple[int, int]]:
    """(rule id, test id) of the moved payloads the simulator's probes send."""
    path = Path(__file__).resolve().parents[1] / "simulator" / "data" / "crs-payloads.jsonl"
    if not path.is_file():
        return set()
    with path.open("rb") as f:
        rows = [orjson.loads(line) for line in f if line.strip()]
    return {(r["rule_id"], r["test_id"]) for r in rows if r.get("moved_from_body")}


def main(argv: list[str] | None = None) -> None:
    """`python -m pipeline.evaluation.crs [--root CRS_DATA_DIR [--moved]] [--json]`"""
    import argparse

    from rich.console import Console

    parser = argparse.ArgumentParser(description="The injection detector on the CRS corpus.")
    parser.add_argument("--root", type=Path, default=None, help="CRS data folder (default: pinned)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--moved",
        action="store_true",
        help="instead: the body-only tests with their form body moved into the query string "
        "(needs --root)",
    )
    args = parser.parse_args(argv)
    if args.moved:
        if args.root is None:
            parser.error("--moved reads the body-only tests from a CRS data folder: give --root")
        moved = reconcile(extract_moved_cases(args.root))
        report = crs_report(moved)
        # The simulator's injection probes replay a sample of these moved payloads.
        sampled = _simulator_sample()
        outside = crs_report([c for c in moved if (c.rule_id, c.test_id) not in sampled])
        report["outside_simulator_sample"] = {
            k: v for k, v in outside.items() if k not in ("halves", "flagged_negatives")
        }
    else:
        report = crs_report(load_cases(args.root))
    if args.json:
        print(orjson.dumps(report).decode())
    else:
        print_report(report, Console(), moved=args.moved)


if __name__ == "__main__":
    main()
