"""What a person reads about an incident: a title, what/who/where/how much/since when, what was
done in which mode, and the next step to take. A pure function of the incident's state (and the
clock, for open/resolved), so the same alerts always read the same.

>>> from pipeline.incidents.model import Incident
>>> from pipeline.incidents.testing import make_alert
>>> inc = Incident.start(make_alert(subject="ip:203.0.113.9", mode="shadow"))
>>> inc.add(make_alert(subject="ip:203.0.113.10", mode="shadow", t=1_700_000_030_000))
>>> s = summarize(inc, now_ms=1_700_000_060_000, quiet_s=900)
>>> s.title
'credential attack on /v1/login from 2 addresses in 203.0.113.0/24'
>>> s.done
'would have blocked 2 addresses in shadow'
>>> s.next_step
'move /v1/login from shadow to challenge (policy: [routes."/v1/login"] mode = "challenge")'
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.incidents.keys import ACTION_RANK, FAMILY_LABELS, range_of
from pipeline.incidents.model import Incident

__all__ = ["Summary", "status_of", "summarize"]

_NOUNS = {
    "ip": ("address", "addresses"),
    "range": ("range", "ranges"),
    "consumer": ("consumer", "consumers"),
    "key": ("key", "keys"),
    "user": ("user", "users"),
    "route": ("route", "routes"),
    "gateway": ("gateway", "gateways"),
}
_VERBS = {"block": "blocked", "challenge": "challenged", "tag": "tagged"}
# Features whose values are levels (a rate, a share, a campaign-wide count every alert of the
# campaign repeats): the incident reports the peak. The rest are one subject's counts (failures,
# distinct objects, probes): summed over subjects, each at its own peak.
_LEVEL_HINTS = ("per_s", "rate", "ratio", "share", "score", "_pct")
_LEVEL_FEATURES = frozenset({"failing_addresses", "campaign_logins", "networks_weighted"})
_FEATURE_LABELS = {
    "failed_logins": "failed logins",
    "failing_addresses": "addresses failing in the campaign (peak)",
    "campaign_logins": "campaign logins (peak)",
    "requests_per_s": "requests/s (peak)",
    "held_requests_per_s": "held requests/s (peak)",
    "distinct_objects": "distinct objects read",
    "denied_share": "share of reads denied (peak)",
    "scanner_requests": "scanner requests",
    "probes": "probe requests",
    "injection_findings": "injection payloads",
    "networks_weighted": "networks using the key (weighted, peak)",
    "anomaly_score": "anomaly score (peak)",
    "undocumented_endpoints": "undocumented endpoints",
}
# The mode a route moves to next, per family, when its decisions are only recorded: credential
# attacks and floods are challenged first (a person can still pass), exploit and file probing is
# blocked outright (no person sends it).
_NEXT_MODE = {"injection": "enforce", "probing": "enforce"}


@dataclass(slots=True)
class Summary:
    id: str
    status: str
    title: str
    what: str
    who: str
    where: str
    how_much: str
    since: str
    done: str
    operator: str
    next_step: str
    steps: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    attack: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    first_ms: int = 0
    last_ms: int = 0
    alerts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"{self.id} [{self.status}] {self.title}"]
        for label in ("what", "who", "where", "how_much", "since", "done", "operator"):
            value = getattr(self, label)
            if value:
                out.append(f"  {label.replace('_', ' ')}: {value}")
        out.extend(f"  next: {step}" for step in self.steps)
        return out


def status_of(incident: Incident, now_ms: int, quiet_s: float) -> str:
    return "resolved" if now_ms - incident.last_ms > quiet_s * 1000 else "open"


def summarize(incident: Incident, *, now_ms: int, quiet_s: float) -> Summary:
    counts = incident.counts
    families = _ranked(counts.get("family", {}))
    routes = _ranked(counts.get("route", {}))
    subjects = sorted(
        incident.subjects,
        key=lambda s: (-_rank(incident.subjects[s]), -incident.subjects[s]["score"], s),
    )
    acted = [s for s in subjects if incident.subjects[s]["strongest"][0] >= 0]
    steps = _steps(incident, families, routes, acted)
    return Summary(
        id=incident.id,
        status=status_of(incident, now_ms, quiet_s),
        title=_title(incident, families, routes, acted),
        what=_what(counts, families),
        who=_who(incident, acted),
        where=", ".join(f"{r} ({counts['route'][r]} alerts)" for r in routes[:5]),
        how_much=_how_much(incident, acted),
        since=_since(incident),
        done=_done(incident, acted),
        operator=_operator(incident),
        next_step=steps[0],
        steps=steps,
        families=families,
        attack=sorted(counts.get("attack", {})),
        subjects=subjects,
        routes=routes,
        first_ms=incident.first_ms,
        last_ms=incident.last_ms,
        alerts=incident.alerts,
    )


def _ranked(values: dict[str, int]) -> list[str]:
    return sorted(values, key=lambda k: (-values[k], k))


def _rank(agg: dict[str, Any]) -> int:
    return int(agg["strongest"][0])


def _count(n: int, scope: str) -> str:
    one, many = _NOUNS.get(scope, ("subject", "subjects"))
    return f"{n} {one if n == 1 else many}"


def _ranges(incident: Incident, subjects: list[str]) -> list[str]:
    return sorted({r for s in subjects if (r := range_of(s)) is not None})


def _title(incident: Incident, families: list[str], routes: list[str], acted: list[str]) -> str:
    what = " + ".join(FAMILY_LABELS.get(f, f) for f in families[:2]) or "operator action"
    where = f" on {routes[0]}" + (f" (+{len(routes) - 1} routes)" if len(routes) > 1 else "")
    where = where if routes else ""
    who_list = acted or sorted(incident.subjects)
    if len(who_list) == 1:
        return f"{what}{where} by {who_list[0]}"
    scopes = {incident.subjects[s]["scope"] for s in who_list}
    total = max(len(who_list), incident.subjects_total if len(scopes) == 1 else 0)
    who = _count(total, next(iter(scopes))) if len(scopes) == 1 else f"{len(who_list)} subjects"
    ranges = _ranges(incident, who_list)
    if len(ranges) == 1 and scopes <= {"ip", "range"}:
        who += f" in {ranges[0]}"
    return f"{what}{where} from {who}"


def _what(counts: dict[str, dict[str, int]], families: list[str]) -> str:
    if not families:
        return ""
    codes = counts.get("code", {})
    parts = [", ".join(FAMILY_LABELS.get(f, f) for f in families)]
    if codes:
        parts.append("codes " + ", ".join(f"{c} x{codes[c]}" for c in _ranked(codes)[:6]))
    if counts.get("attack"):
        parts.append("ATT&CK " + ", ".join(sorted(counts["attack"])))
    return "; ".join(parts)


def _who(incident: Incident, acted: list[str]) -> str:
    if not acted:
        return ", ".join(sorted(incident.subjects))
    by_scope: dict[str, list[str]] = {}
    for s in acted:
        by_scope.setdefault(incident.subjects[s]["scope"], []).append(s)
    parts = []
    for scope in sorted(by_scope):
        names = by_scope[scope]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        parts.append(f"{_count(len(names), scope)} ({shown})")
    if incident.subjects_total > len(incident.subjects):
        parts.append(f"{incident.subjects_total} subjects in all")
    ranges = _ranges(incident, acted)
    if ranges:
        parts.append("ranges " + ", ".join(ranges[:5]) + (" ..." if len(ranges) > 5 else ""))
    uas = incident.counts.get("ua", {})
    if uas:
        parts.append("user agents " + ", ".join(repr(u) for u in _ranked(uas)[:3]))
    return "; ".join(parts)


def _how_much(incident: Incident, acted: list[str]) -> str:
    totals: dict[str, float] = {}
    for s in acted:
        for feature, value in incident.subjects[s]["features"].items():
            if feature in _LEVEL_FEATURES or any(h in feature for h in _LEVEL_HINTS):
                totals[feature] = max(totals.get(feature, value), value)
            else:
                totals[feature] = totals.get(feature, 0.0) + value
    parts = [f"{incident.alerts} alerts"]
    for feature in sorted(totals):
        label = _FEATURE_LABELS.get(feature, feature.replace("_", " "))
        parts.append(f"{_number(totals[feature])} {label}")
    if incident.evidence:
        parts.append("evidence " + ", ".join(incident.evidence[:3]))
    return "; ".join(parts)


def _number(value: float) -> str:
    """Counts as integers, small levels (a share, a score) with two decimals."""
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2f}"


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _since(incident: Incident) -> str:
    span = (incident.last_ms - incident.first_ms) // 1000
    first, last = _when(incident.first_ms), _when(incident.last_ms)
    return f"{first}, last {last} ({span // 60} min {span % 60} s)"


def _done(incident: Incident, acted: list[str]) -> str:
    groups: dict[tuple[int, str, bool, str], int] = {}
    for s in acted:
        agg = incident.subjects[s]
        if agg["action"] == "allow":
            continue
        key = (ACTION_RANK[agg["action"]], agg["mode"], bool(agg["enforced"]), agg["scope"])
        groups[key] = groups.get(key, 0) + 1
    parts = []
    for (rank, mode, enforced, scope), n in sorted(
        groups.items(), key=lambda kv: (-kv[0][0], kv[0][1:])
    ):
        verb = _VERBS[next(a for a, r in ACTION_RANK.items() if r == rank)]
        if enforced:
            parts.append(f"{verb} {_count(n, scope)} ({mode})")
        else:
            parts.append(f"would have {verb} {_count(n, scope)} in {mode}")
    return "; ".join(parts) or "nothing enforced"


def _operator(incident: Incident) -> str:
    parts = []
    for s in sorted(incident.subjects):
        op = incident.subjects[s]["operator"]
        if op:
            why = f": {op['reason']!r}" if op["reason"] else ""
            parts.append(f"{op['action']} {s} by {op['actor']}{why}")
    return "; ".join(parts)


def _steps(
    incident: Incident, families: list[str], routes: list[str], acted: list[str]
) -> list[str]:
    subjects = incident.subjects
    steps: list[str] = []
    allowed = [
        s
        for s in sorted(subjects)
        if (op := subjects[s]["operator"])
        and op["action"] in ("override_allow", "feedback_false_positive")
    ]
    if allowed:
        where = routes[0] if routes else "its routes"
        steps.append(
            f"{', '.join(allowed)} allow-listed by an operator: a false positive; review the "
            f"{'/'.join(families[:2]) or 'detector'} thresholds on {where}"
        )
    family = families[0] if families else ""
    unenforced = [
        s for s in acted if not subjects[s]["enforced"] and subjects[s]["action"] != "allow"
    ]
    if unenforced and family:
        mode = subjects[unenforced[0]]["mode"]
        target = _NEXT_MODE.get(family, "challenge")
        if routes:
            steps.append(
                f"move {routes[0]} from {mode} to {target} "
                f'(policy: [routes."{routes[0]}"] mode = "{target}")'
            )
        else:
            steps.append(f"move these subjects' routes from {mode} to {target}")
    consumers = [s for s in acted if subjects[s]["scope"] in ("consumer", "key")]
    if family in ("flood", "scraping") and consumers and not allowed:
        rates = [v for f, v in subjects[consumers[0]]["limits"].items() if "per_s" in f]
        limit = f" or give it a limit near {max(rates):,.0f}/s" if rates else ""
        steps.append(
            f"allow-list partner {consumers[0]} if this is its batch job "
            f"(gatewatch feedback {consumers[0]} --false-positive --reason ...){limit}"
        )
    ranges = _ranges(incident, acted)
    if family == "credential" and len(acted) > 1 and len(ranges) == 1:
        steps.append(f"deny the range: gatewatch override deny ip:{ranges[0]}")
    elif family == "credential" and len(ranges) > 1:
        steps.append(
            "a campaign across ranges: require step-up (MFA/CAPTCHA) on "
            f"{routes[0] if routes else 'the login route'}"
        )
    if family == "credential" and acted:
        steps.append(
            f"look for a successful login on {routes[0] if routes else 'the login route'} from "
            f"{acted[0] if len(acted) == 1 else 'these addresses'} after the failures (a taken "
            "over account) and reset what it reached"
        )
    if family == "key_sharing":
        steps.append(f"rotate {consumers[0] if consumers else 'the shared key'} and tell its owner")
    if family == "spec_drift":
        steps.append(
            f"document {routes[0] if routes else 'the endpoint'} in the OpenAPI spec "
            "or stop routing it"
        )
    if family == "injection":
        steps.append(
            f"check input validation on {routes[0] if routes else 'the routes'} "
            f"against the evidence requests ({', '.join(incident.evidence[:3]) or 'none kept'})"
        )
    if family == "probing":
        steps.append("make sure the probed files are not served; keep the prober blocked")
    if not steps:
        first = acted[0] if acted else sorted(subjects)[0]
        steps.append(f"confirm or dismiss: gatewatch feedback {first} --confirmed|--false-positive")
    return steps
