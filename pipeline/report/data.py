"""The posture report's content, as plain data: one function of the window's alerts, incidents and
recommended limits. The JSON format is exactly this; HTML and Markdown render it.

Sections: totals; top incidents; top subjects and routes; detections by family and by action over
time; what shadow mode would have blocked, per route (the evidence to move a route to enforce);
false-positive candidates (subjects an operator allow-listed or called a false positive);
recommended limits (from flood reasons and the decisions' `rate_limit`); API-surface findings
(spec drift, PII in URLs).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from pipeline.alerts import Alert
from pipeline.incidents.keys import ACTION_RANK, FAMILY_LABELS, families_of
from pipeline.incidents.model import Incident, alert_count
from pipeline.incidents.summary import summarize

__all__ = ["FALSE_POSITIVE_ACTIONS", "bucket_ms", "collect"]

FALSE_POSITIVE_ACTIONS = frozenset({"override_allow", "feedback_false_positive"})
_API_SURFACE = frozenset({"spec_drift", "pii"})
_BUCKETS_S = (1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400)
TOP = 10


def bucket_ms(span_ms: int, target: int = 40) -> int:
    """A round bucket width giving at most about `target` buckets over `span_ms`.

    >>> bucket_ms(60_000), bucket_ms(86_400_000), bucket_ms(0)
    (5000, 3600000, 1000)
    """
    for width in _BUCKETS_S:
        if span_ms / (width * 1000) <= target:
            return width * 1000
    return _BUCKETS_S[-1] * 1000


def _action_label(alert: Alert) -> str:
    return alert.action if alert.enforced else f"would {alert.action}"


def collect(
    alerts: list[Alert],
    incidents: list[Incident],
    *,
    since_ms: int,
    until_ms: int,
    quiet_s: float,
    rate_limits: dict[str, int] | None = None,
    sources: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Everything the report shows. `alerts` are the window's (one record per id: the highest
    count), `incidents` those active in it, `rate_limits` the current decisions' recommended
    requests/s per subject."""
    alerts = sorted(alerts, key=lambda a: (a.event_time, a.id))
    detections = [a for a in alerts if a.kind != "operator"]
    kinds = Counter(a.kind for a in alerts)
    return {
        "since_ms": since_ms,
        "until_ms": until_ms,
        "sources": sources or {},
        "totals": {
            "alerts": len(alerts),
            "decisions": kinds["decision"],
            "findings": kinds["finding"],
            "operator": kinds["operator"],
            "requests": sum(alert_count(a) for a in detections),
            "subjects": len({a.subject for a in detections}),
            "incidents": len(incidents),
        },
        "families": {
            f: FAMILY_LABELS.get(f, f)
            for f in sorted({f for a in detections for f in families_of(a)})
        },
        "incidents": _incidents(incidents, until_ms, quiet_s),
        "top_subjects": _top_subjects(detections),
        "top_routes": _top_routes(detections),
        "timeseries": _timeseries(detections),
        "would_block": _would_block(detections),
        "false_positive_candidates": _false_positives(alerts),
        "recommended_limits": _limits(detections, rate_limits or {}),
        "api_surface": _api_surface(detections),
    }


def _incidents(incidents: list[Incident], now_ms: int, quiet_s: float) -> list[dict[str, Any]]:
    def weight(i: Incident) -> tuple[Any, ...]:
        strongest = max((agg["strongest"][0] for agg in i.subjects.values()), default=-1)
        return (-strongest, -max(i.subjects_total, len(i.subjects)), -i.alerts, i.id)

    return [
        summarize(i, now_ms=now_ms, quiet_s=quiet_s).as_dict()
        for i in sorted(incidents, key=weight)[:TOP]
    ]


def _top_subjects(alerts: list[Alert]) -> list[dict[str, Any]]:
    by: dict[str, dict[str, Any]] = {}
    for a in alerts:
        row = by.setdefault(
            a.subject,
            {
                "subject": a.subject,
                "alerts": 0,
                "requests": 0,
                "action": "allow",
                "mode": a.mode,
                "score": 0.0,
                "families": set(),
                "routes": set(),
            },
        )
        row["alerts"] += 1
        row["requests"] += alert_count(a)
        row["score"] = max(row["score"], a.score)
        if ACTION_RANK[a.action] >= ACTION_RANK[row["action"]]:
            row["action"], row["mode"] = a.action, a.mode
        row["families"].update(families_of(a))
        if a.route:
            row["routes"].add(a.route)
    rows = sorted(
        by.values(),
        key=lambda r: (-ACTION_RANK[r["action"]], -r["score"], -r["alerts"], r["subject"]),
    )[:TOP]
    return [
        r | {"families": sorted(r["families"]), "routes": sorted(r["routes"])[:5]} for r in rows
    ]


def _top_routes(alerts: list[Alert]) -> list[dict[str, Any]]:
    by: dict[str, dict[str, Any]] = {}
    for a in alerts:
        if not a.route:
            continue
        row = by.setdefault(
            a.route, {"route": a.route, "alerts": 0, "subjects": set(), "families": Counter()}
        )
        row["alerts"] += 1
        row["subjects"].add(a.subject)
        row["families"].update(families_of(a))
    rows = sorted(by.values(), key=lambda r: (-r["alerts"], r["route"]))[:TOP]
    return [
        r | {"subjects": len(r["subjects"]), "families": dict(sorted(r["families"].items()))}
        for r in rows
    ]


def _timeseries(alerts: list[Alert]) -> dict[str, Any]:
    if not alerts:
        return {"bucket_ms": 0, "buckets": [], "by_family": {}, "by_action": {}}
    first, last = alerts[0].event_time, alerts[-1].event_time
    width = bucket_ms(last - first)
    start = first - first % width
    n = (last - start) // width + 1
    by_family: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    by_action: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    for a in alerts:
        i = (a.event_time - start) // width
        for f in families_of(a):
            by_family[f][i] += 1
        if a.kind == "decision":
            by_action[_action_label(a)][i] += 1
    return {
        "bucket_ms": width,
        "buckets": [start + i * width for i in range(n)],
        "by_family": dict(sorted(by_family.items())),
        "by_action": dict(sorted(by_action.items())),
    }


def _would_block(alerts: list[Alert]) -> list[dict[str, Any]]:
    """Per route: the subjects shadow (or log, or canary-excluded) mode would have challenged or
    blocked, and whether the same route already enforces for others."""
    by: dict[str, dict[str, Any]] = {}
    for a in alerts:
        if a.kind != "decision" or not a.route or ACTION_RANK[a.action] < 2:
            continue
        row = by.setdefault(
            a.route,
            {
                "route": a.route,
                "would_block": set(),
                "would_challenge": set(),
                "enforced": set(),
                "modes": set(),
                "families": set(),
            },
        )
        if a.enforced:
            row["enforced"].add(a.subject)
            continue
        row["would_block" if a.action == "block" else "would_challenge"].add(a.subject)
        row["modes"].add(a.mode)
        row["families"].update(families_of(a))
    rows = [r for r in by.values() if r["would_block"] or r["would_challenge"]]
    rows.sort(key=lambda r: (-len(r["would_block"]), -len(r["would_challenge"]), r["route"]))
    return [
        {
            "route": r["route"],
            "would_block": len(r["would_block"]),
            "would_challenge": len(r["would_challenge"] - r["would_block"]),
            "enforced_elsewhere": len(r["enforced"]),
            "modes": sorted(r["modes"]),
            "families": sorted(r["families"]),
            "examples": sorted(r["would_block"] or r["would_challenge"])[:5],
        }
        for r in rows
    ]


def _false_positives(alerts: list[Alert]) -> list[dict[str, Any]]:
    flagged: dict[str, dict[str, Any]] = {}
    for a in alerts:
        if a.kind != "operator":
            row = flagged.setdefault(a.subject, {"alerts": 0, "families": set(), "action": "allow"})
            row["alerts"] += 1
            row["families"].update(families_of(a))
            if ACTION_RANK[a.action] > ACTION_RANK[row["action"]]:
                row["action"] = a.action
    out: dict[str, dict[str, Any]] = {}
    for a in alerts:
        op = a.operator
        if a.kind != "operator" or op is None or op.action not in FALSE_POSITIVE_ACTIONS:
            continue
        before = flagged.get(a.subject, {"alerts": 0, "families": set(), "action": "allow"})
        out[a.subject] = {
            "subject": a.subject,
            "operator_action": op.action,
            "actor": op.actor,
            "reason": op.reason,
            "at_ms": a.event_time,
            "alerts_before": before["alerts"],
            "strongest_action": before["action"],
            "families": sorted(before["families"]),
        }
    return sorted(out.values(), key=lambda r: (-r["alerts_before"], r["subject"]))


def _limits(alerts: list[Alert], rate_limits: dict[str, int]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for a in alerts:
        for r in a.reasons:
            if r.feature is None or "per_s" not in r.feature or r.value is None:
                continue
            row = rows.setdefault(
                a.subject,
                {
                    "subject": a.subject,
                    "routes": set(),
                    "peak_per_s": 0.0,
                    "baseline_per_s": None,
                    "crossed_limit_per_s": None,
                },
            )
            row["peak_per_s"] = max(row["peak_per_s"], r.value)
            if r.baseline is not None:
                row["baseline_per_s"] = r.baseline
            if r.limit is not None:
                row["crossed_limit_per_s"] = r.limit
            if a.route:
                row["routes"].add(a.route)
    for subject in rate_limits:
        rows.setdefault(
            subject,
            {
                "subject": subject,
                "routes": set(),
                "peak_per_s": None,
                "baseline_per_s": None,
                "crossed_limit_per_s": None,
            },
        )
    out = [
        r | {"routes": sorted(r["routes"])[:5], "recommended_per_s": rate_limits.get(s)}
        for s, r in rows.items()
    ]
    return sorted(out, key=lambda r: (-(r["peak_per_s"] or 0), r["subject"]))[: TOP * 2]


def _api_surface(alerts: list[Alert]) -> list[dict[str, Any]]:
    by: dict[tuple[str, str], dict[str, Any]] = {}
    for a in alerts:
        if not _API_SURFACE.intersection(families_of(a)):
            continue
        for r in a.reasons:
            key = (a.route or a.subject, r.code)
            row = by.setdefault(
                key,
                {
                    "route": key[0],
                    "code": r.code,
                    "alerts": 0,
                    "requests": 0,
                    "first_ms": a.event_time,
                    "text": r.text,
                },
            )
            row["alerts"] += 1
            row["requests"] += alert_count(a)
            row["first_ms"] = min(row["first_ms"], a.event_time)
    return sorted(by.values(), key=lambda r: (r["route"], r["code"]))
