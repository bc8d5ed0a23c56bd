"""One incident's state: commutative aggregates of its alerts, so any order gives the same state.

Every field is built with operations that do not care about order (sums, min, max, a per-subject
"strongest" picked by a total order, sorted lists trimmed by rank), and two incidents merge with
the same operations. Bounds keep a state small whatever the campaign's size: at most
`MAX_SUBJECTS` subjects (the strongest), `MAX_COUNTED` entries per counter, `MAX_EVIDENCE`
request ids and a timeline of the first `TIMELINE_HEAD` and last `TIMELINE_TAIL` alerts. Within
those bounds the state is exactly order-independent; beyond them it is an approximation (the
exact number of distinct subjects is counted apart, by the store).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.alerts import Alert
from pipeline.incidents.keys import ACTION_RANK, families_of, opens, user_agents_of

__all__ = ["Incident", "alert_count", "incident_id"]

MAX_SUBJECTS = 500
MAX_COUNTED = 50
MAX_EVIDENCE = 10
TIMELINE_HEAD = 20
TIMELINE_TAIL = 80
_COUNTERS = ("kind", "action", "family", "code", "route", "ua", "attack", "mode")


def incident_id(root_alert: str) -> str:
    """An incident is named after its earliest alert (by event time, then id)."""
    return "inc-" + root_alert.removeprefix("gw-")[:16]


@dataclass(slots=True)
class Incident:
    id: str
    root: tuple[int, str]  # (event_time, alert id) of the earliest alert
    first_ms: int
    last_ms: int
    opened_ms: int | None = None  # the first alert strong enough to open it; None = dormant
    alerts: int = 0
    requests: int = 0  # the alerts' request counts (a finding window counts many)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    subjects: dict[str, dict[str, Any]] = field(default_factory=dict)
    subjects_total: int = 0  # exact distinct subjects, kept by the store
    evidence: list[str] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, alert: Alert) -> Incident:
        root = (alert.event_time, alert.id)
        incident = cls(
            id=incident_id(alert.id), root=root, first_ms=alert.event_time, last_ms=alert.event_time
        )
        incident.add(alert)
        return incident

    @property
    def opened(self) -> bool:
        return self.opened_ms is not None

    def add(self, alert: Alert) -> None:
        """Fold one alert in (the caller makes sure the same alert id comes only once)."""
        t = alert.event_time
        self._take_root((t, alert.id))
        self.first_ms, self.last_ms = min(self.first_ms, t), max(self.last_ms, _last(alert))
        self.requests += alert_count(alert)
        if opens(alert):
            self.opened_ms = t if self.opened_ms is None else min(self.opened_ms, t)
        self.alerts += 1
        families = families_of(alert)
        bump = self._bump
        bump("kind", alert.kind)
        bump("action", alert.action)
        bump("mode", alert.mode)
        for name in families:
            bump("family", name)
        for reason in alert.reasons if alert.kind != "operator" else ():
            bump("code", reason.code)  # an operator's "reason code" is its action, shown apart
        if alert.route:
            bump("route", alert.route)
        for ua in user_agents_of(alert):
            bump("ua", ua)
        for technique in alert.attack:
            bump("attack", technique)
        self._merge_subject(alert.subject, _subject_of(alert))
        if alert.evidence:
            self.evidence = sorted(set(self.evidence) | set(alert.evidence))[:MAX_EVIDENCE]
        self.timeline.append(_entry(alert, families))
        if len(self.timeline) > 2 * (TIMELINE_HEAD + TIMELINE_TAIL):
            self._merge_timeline([])

    def recount(self, alert: Alert, known: int) -> None:
        """The same alert again with a higher request count (a finding window closing): only
        its count, last request and evidence change."""
        extra = alert_count(alert) - known
        self.requests += extra
        self.last_ms = max(self.last_ms, _last(alert))
        agg = self.subjects.get(alert.subject)
        if agg is not None:
            agg["requests"] += extra
            agg["last"] = max(agg["last"], _last(alert))
        self.evidence = sorted(set(self.evidence) | set(alert.evidence))[:MAX_EVIDENCE]

    def merge(self, other: Incident) -> None:
        """Absorb `other` (same result as having added its alerts here)."""
        self._take_root(other.root)
        self.first_ms, self.last_ms = (
            min(self.first_ms, other.first_ms),
            max(self.last_ms, other.last_ms),
        )
        if other.opened_ms is not None:
            self.opened_ms = (
                other.opened_ms if self.opened_ms is None else min(self.opened_ms, other.opened_ms)
            )
        self.alerts += other.alerts
        self.requests += other.requests
        for counter, values in other.counts.items():
            for name, n in values.items():
                self._bump(counter, name, n)
        for subject, agg in other.subjects.items():
            self._merge_subject(subject, agg)
        self.evidence = sorted(set(self.evidence) | set(other.evidence))[:MAX_EVIDENCE]
        self._merge_timeline(other.timeline)

    def _take_root(self, root: tuple[int, str]) -> None:
        if root < self.root:
            self.root = root
            self.id = incident_id(root[1])

    def _bump(self, counter: str, name: str, n: int = 1) -> None:
        values = self.counts.setdefault(counter, {})
        values[name] = values.get(name, 0) + n
        if len(values) > 2 * MAX_COUNTED:  # pruned in bulk: a bound, not a per-alert cost
            self._prune_counter(counter)

    def _prune_counter(self, counter: str) -> None:
        values = self.counts[counter]
        kept = sorted(values, key=lambda k: (-values[k], k))[:MAX_COUNTED]
        self.counts[counter] = {k: values[k] for k in kept}

    def _prune_subjects(self) -> None:
        """Keep the strongest `MAX_SUBJECTS` (the store counts all of them apart)."""
        subjects = self.subjects
        kept = sorted(subjects, key=lambda s: (_strength(subjects[s]), s), reverse=True)
        self.subjects = {s: subjects[s] for s in kept[:MAX_SUBJECTS]}

    def compact(self) -> None:
        """Apply every bound and put the timeline in order (done before it is stored)."""
        for counter, values in list(self.counts.items()):
            if len(values) > MAX_COUNTED:
                self._prune_counter(counter)
        if len(self.subjects) > MAX_SUBJECTS:
            self._prune_subjects()
        self._merge_timeline([])

    def _merge_subject(self, subject: str, new: dict[str, Any]) -> None:
        old = self.subjects.get(subject)
        if old is None:
            self.subjects[subject] = new
            if len(self.subjects) > 2 * MAX_SUBJECTS:
                self._prune_subjects()
            return
        old["alerts"] += new["alerts"]
        old["requests"] += new["requests"]
        old["score"] = max(old["score"], new["score"])
        old["first"], old["last"] = min(old["first"], new["first"]), max(old["last"], new["last"])
        if new["strongest"] > old["strongest"]:
            for name in ("strongest", "action", "mode", "enforced"):
                old[name] = new[name]
        for name in ("features", "limits"):
            for feature, value in new[name].items():
                old[name][feature] = max(old[name].get(feature, value), value)
        if new["operator"] is not None and (
            old["operator"] is None or new["operator"]["at"] > old["operator"]["at"]
        ):
            old["operator"] = new["operator"]

    def _merge_timeline(self, entries: list[dict[str, Any]]) -> None:
        merged = {e["id"]: e for e in self.timeline}
        merged.update((e["id"], e) for e in entries)
        ordered = sorted(merged.values(), key=lambda e: (e["t"], e["id"]))
        if len(ordered) > TIMELINE_HEAD + TIMELINE_TAIL:
            ordered = ordered[:TIMELINE_HEAD] + ordered[-TIMELINE_TAIL:]
        self.timeline = ordered

    def to_json(self) -> bytes:
        self.compact()
        return orjson.dumps(self)  # orjson writes dataclasses (and tuples as lists) itself

    @classmethod
    def from_json(cls, data: bytes | str) -> Incident:
        raw = orjson.loads(data)
        raw["root"] = tuple(raw["root"])
        for agg in raw["subjects"].values():
            agg["strongest"] = list(agg["strongest"])
        return cls(**raw)


def alert_count(alert: Alert) -> int:
    """Requests behind the alert: schema 1.1's `count` (a finding window's), else one."""
    return int(getattr(alert, "count", 1) or 1)


def _last(alert: Alert) -> int:
    """The alert's latest request: schema 1.1's `last_seen`, else its event time."""
    return max(alert.event_time, int(getattr(alert, "last_seen", None) or 0))


def _strength(agg: dict[str, Any]) -> tuple[Any, ...]:
    return (ACTION_RANK[agg["action"]], agg["score"], agg["alerts"])


def _subject_of(alert: Alert) -> dict[str, Any]:
    features: dict[str, float] = {}
    limits: dict[str, float] = {}
    for reason in alert.reasons:
        if reason.feature and reason.value is not None:
            features[reason.feature] = max(features.get(reason.feature, reason.value), reason.value)
        if reason.feature and reason.limit is not None:
            limits[reason.feature] = max(limits.get(reason.feature, reason.limit), reason.limit)
    operator = None
    if alert.operator is not None:
        operator = {
            "at": [alert.event_time, alert.id],
            "action": alert.operator.action,
            "actor": alert.operator.actor,
            "reason": alert.operator.reason,
            "expires_at": alert.operator.expires_at,
        }
    # The strongest alert is the one whose action the summary reports ("would have blocked");
    # an operator action is not the subject's decision, so it ranks below every decision.
    rank = -1 if alert.kind == "operator" else ACTION_RANK[alert.action]
    return {
        "scope": alert.scope,
        "alerts": 1,
        "requests": alert_count(alert),
        "score": alert.score,
        "first": alert.event_time,
        "last": _last(alert),
        "strongest": [rank, int(alert.enforced), alert.event_time, alert.id],
        "action": "allow" if alert.kind == "operator" else alert.action,
        "mode": alert.mode,
        "enforced": alert.enforced and alert.kind != "operator",
        "features": features,
        "limits": limits,
        "operator": operator,
    }


def _entry(alert: Alert, families: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "t": alert.event_time,
        "id": alert.id,
        "kind": alert.kind,
        "subject": alert.subject,
        "action": alert.action,
        "mode": alert.mode,
        "enforced": alert.enforced,
        "severity": alert.severity,
        "route": alert.route,
        "families": families,
        "title": alert.title,
    }
    if alert.operator is not None:
        entry["operator"] = alert.operator.model_dump()
    return entry
