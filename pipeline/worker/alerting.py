"""From one partition's detection step to versioned `Alert`s: decision changes and findings.

The processor tells an `AlertCollector` (its `report`) about every event carrying a per-request
finding or PII masked at ingest, and about every decision that changed a subject's action. After
the batch, `take` builds the alerts the worker writes to `gatewatch.alerts` before it lets the
envelope's offset be committed:

- one per decision change, shadow mode included (titled "would block ip:..." when the rollout
  mode does not let the gateway act), with the signals behind it as structured reasons;
- one per reportable finding window (`FindingWindows`): a subject's findings of one reason code
  over `window_s` of event time, with a count, reported when the window opens and when it closes.

Evidence is a few request ids: for a finding, its window's first requests; for a decision, the
subject's latest requests in the batch and, kept in a small bounded ring, those of its earlier
findings and decisions (only subjects that have some pay for one).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import cast

from detectors.base import Signal
from pipeline.alerts import Action, Alert, AlertReason, Severity, alert_id, scope_of
from pipeline.decisions import Decision
from pipeline.events import GatewayEvent
from pipeline.mitre import attack_ids
from pipeline.worker.findings import FindingWindow, FindingWindows
from pipeline.worker.processor import Processor, StateStore, range_subject

__all__ = ["REPORTED", "AlertCollector"]

# Per-request finding codes that become alerts, and whom they are about: the client (the event's
# partition subject: its consumer, else its address) or the API itself (`route:<template>`).
# Other findings (a login in a distributed campaign, a 404 on an undocumented path) only feed the
# detectors' scores; the decisions they lead to are alerts of their own.
REPORTED = {
    "sqli": "client",
    "xss": "client",
    "lfi": "client",
    "rce": "client",
    "ssrf": "client",
    "secret_file": "client",
    "admin_probe": "client",
    "scanner": "client",
    "shadow_endpoint": "route",  # an undocumented path answering 2xx
    "undocumented_method": "route",
    "pii_in_url": "route",  # the API puts personal data in its URLs
}
_NAMES = {
    "sqli": "SQL injection attempt",
    "xss": "XSS attempt",
    "lfi": "path traversal attempt",
    "rce": "command injection attempt",
    "ssrf": "SSRF attempt",
    "secret_file": "secret-file probe",
    "admin_probe": "admin probe",
    "scanner": "scanner user agent",
    "shadow_endpoint": "undocumented endpoint answering",
    "undocumented_method": "undocumented method",
    "pii_in_url": "PII in URL",
}
# How a reason code reads in a title, where its name is not plain enough.
_WORDS = {
    "sqli": "SQL injection",
    "xss": "XSS",
    "lfi": "path traversal",
    "rce": "command injection",
    "ssrf": "SSRF",
}
PII_DETECTOR = "redaction"  # the collector masks it (pipeline/ingest/redaction.py)
_SEVERITY_BY_ACTION: dict[str, Severity] = {
    "block": "high",
    "challenge": "medium",
    "tag": "low",
    "allow": "info",
}
MAX_RING_SUBJECTS = 10_000


def _severity(score: float) -> Severity:
    if score >= 0.85:
        return "high"
    return "medium" if score >= 0.6 else "low" if score >= 0.3 else "info"


def _title_head(action: str, mode: str, subject: str) -> str:
    """What the gateway does about `subject`: "block ip:x", or "would block ip:x" in shadow."""
    if mode == "enforce" or (mode == "challenge" and action != "block"):
        return f"{action} {subject}"
    if mode == "challenge":
        return f"challenge {subject} (would block)"  # challenge mode never goes further
    return f"would {action} {subject}"


def _tenant(event: GatewayEvent) -> str | None:
    attrs = event.attributes
    if not attrs:
        return None
    tenant = attrs.get("tenant") or attrs.get("workspace_name")
    if tenant is None and "organization.name" in attrs:  # Apigee: organisation/environment
        tenant = "/".join(
            str(attrs[k]) for k in ("organization.name", "environment.name") if attrs.get(k)
        )
    return str(tenant) if tenant else None


def _owns(subject: str) -> Callable[[GatewayEvent], bool]:
    """A test for whether an event is evidence about `subject`."""
    kind, _, name = subject.partition(":")
    if kind == "consumer":
        return lambda e: e.consumer == name
    if kind == "key":
        return lambda e: e.credential == name
    if "/" not in name:
        return lambda e: e.client_ip == name
    return lambda e: range_subject(e.client_ip) == subject


class AlertCollector:
    """Alerts of one partition. Pass it as `report` to `Processor.process`, then `take`."""

    def __init__(
        self,
        processor: Processor,
        store: StateStore,
        *,
        partition: int = 0,
        window_s: float = 60.0,
        evidence: int = 5,
        max_ring_subjects: int = MAX_RING_SUBJECTS,
    ) -> None:
        self.processor = processor
        self.store = store
        self.partition = partition
        self.evidence = evidence
        self.max_ring_subjects = max_ring_subjects
        self.windows = FindingWindows(int(window_s * 1000), evidence=evidence)
        self._batch: Sequence[GatewayEvent] = ()
        self._changes: dict[str, tuple[GatewayEvent, list[Signal], Decision]] = {}
        self._ring: OrderedDict[str, list[str]] = OrderedDict()
        # The partition's event clock, and the wall time it was last moved (for `sweep`).
        self.event_ms = 0
        self._moved_at_ms = 0

    # -- the processor's hooks --------------------------------------------------------------
    def begin(self, events: Sequence[GatewayEvent]) -> None:
        """The batch about to be processed: a decision's evidence is looked up in it."""
        self._batch = events

    def event(self, event: GatewayEvent, subjects: list[str], findings: list[Signal]) -> None:
        """An event with per-request findings, or with PII masked at ingest."""
        rid = event.request_id
        if findings and rid is not None:
            for subject in subjects:
                if "/" not in subject:
                    self._remember(subject, [rid])
        for finding in findings:
            about = REPORTED.get(finding.kind)
            if about is not None:
                subject = event.partition_subject() if about == "client" else f"route:{event.route}"
                self.windows.add(
                    subject, finding.kind, finding.detector, finding.score, finding.reason, event
                )
        if event.pii:
            reason = f"{', '.join(event.pii)} masked in the URL of {event.method} {event.route}"
            self.windows.add(f"route:{event.route}", "pii_in_url", PII_DETECTOR, 0.0, reason, event)

    def decision(
        self, subject: str, event: GatewayEvent, signals: list[Signal], decision: Decision
    ) -> None:
        """A decision that changed `subject`'s action (the latest of a batch wins)."""
        self._changes[subject] = (event, signals, decision)

    # -- alerts -----------------------------------------------------------------------------
    def take(self, wall_ms: int | None = None) -> list[Alert]:
        """The alerts of the batch just processed, in order: decision changes, then findings."""
        wall_ms = int(time.time() * 1000) if wall_ms is None else wall_ms
        latest = max((e.ts_ms for e in self._batch[-1:]), default=0)
        for event, _, _ in self._changes.values():
            latest = max(latest, event.ts_ms)
        if latest > self.event_ms:
            self.event_ms = latest
        self._moved_at_ms = wall_ms
        alerts = [self._decision_alert(s, *change, wall_ms) for s, change in self._changes.items()]
        self._changes.clear()
        alerts.extend(self._finding_alert(w, wall_ms) for w in self.windows.due(self.event_ms))
        self._batch = ()
        return alerts

    def sweep(self, wall_ms: int) -> list[Alert]:
        """Windows an idle partition closes: its event clock moved on by the wall time since its
        last batch (a quiet minute after an attack still reports the attack's final count)."""
        now = self.event_ms + max(0, wall_ms - self._moved_at_ms)
        return [self._finding_alert(w, wall_ms) for w in self.windows.due(now)]

    def _remember(self, subject: str, ids: list[str]) -> list[str]:
        ring = self._ring.get(subject)
        if ring is None:
            ring = self._ring[subject] = []
            if len(self._ring) > self.max_ring_subjects:
                self._ring.popitem(last=False)
        else:
            self._ring.move_to_end(subject)
        for rid in ids:
            if rid not in ring:
                ring.append(rid)
        if len(ring) > self.evidence:
            del ring[: len(ring) - self.evidence]
        return ring

    def _decision_alert(
        self,
        subject: str,
        event: GatewayEvent,
        signals: list[Signal],
        decision: Decision,
        wall_ms: int,
    ) -> Alert:
        owns = _owns(subject)
        recent: list[str] = []
        for e in reversed(self._batch):
            if e.request_id is not None and owns(e):
                recent.append(e.request_id)
                if len(recent) >= self.evidence:
                    break
        evidence = list(self._remember(subject, recent[::-1]))
        ranked = sorted(signals, key=lambda s: s.score, reverse=True)
        versions = self.processor.detector_versions
        top = ranked[0].kind if ranked else decision.detector
        mode, action = decision.mode, cast(Action, decision.action)
        return Alert(
            id=alert_id("decision", subject, action, mode, event.ts_ms, event.request_id or ""),
            kind="decision",
            event_time=event.ts_ms,
            emit_time=wall_ms,
            subject=subject,
            scope=scope_of(subject),
            tenant=_tenant(event),
            gateway=event.gateway,
            node=event.node,
            service=event.service,
            route=event.route,
            action=action,
            mode=mode,
            enforced=mode in ("challenge", "enforce"),
            title=f"{_title_head(action, mode, subject)}: {_WORDS.get(top, top.replace('_', ' '))}",
            severity=_SEVERITY_BY_ACTION[action],
            score=decision.score,
            detector=decision.detector,
            reasons=[_reason(s) for s in ranked],
            attack=attack_ids(s.kind for s in ranked),
            detector_versions={s.detector: versions.get(s.detector, "") for s in ranked}
            | {"fusion": self.processor.fusion.version},
            model_version=decision.model_version,
            evidence=evidence,
            expires_at=decision.expires_at,
            last_seen=event.ts_ms,
            client_ip=event.client_ip,
        )

    def _finding_alert(self, w: FindingWindow, wall_ms: int) -> Alert:
        first = w.first
        subject = w.subject
        client = REPORTED.get(w.code) == "client"
        state = self.store.peek(subject) if client else None
        action = cast(Action, state.action) if state is not None else "allow"
        processor = self.processor
        mode = processor.policy.for_route(first.route).mode_for(subject, processor.mode)
        name = _NAMES.get(w.code, w.code.replace("_", " "))
        where = f" from {subject} on {first.route}" if client else f" on {first.route}"
        many = f": {w.count} requests" if w.count > 1 else ""
        text = w.reason if w.count == 1 else f"{w.reason} (first of {w.count} in the window)"
        version = processor.detector_versions.get(w.detector)
        return Alert(
            id=alert_id("finding", self.partition, subject, w.code, w.start_ms),
            kind="finding",
            event_time=first.ts_ms,
            emit_time=wall_ms,
            subject=subject,
            scope=scope_of(subject),
            tenant=_tenant(first),
            gateway=first.gateway,
            node=first.node,
            service=first.service,
            route=first.route,
            action=action,
            mode=mode,
            enforced=action != "allow" and mode in ("challenge", "enforce"),
            title=f"{name}{where}{many}",
            severity="low" if w.code == "pii_in_url" else _severity(w.score),
            score=round(w.score, 3),
            detector=w.detector,
            reasons=[
                AlertReason(
                    detector=w.detector,
                    code=w.code,
                    text=text,
                    score=round(w.score, 3),
                    feature="requests",
                    value=float(w.count),
                )
            ],
            attack=attack_ids([w.code]),
            detector_versions={w.detector: version} if version is not None else {},
            model_version=processor.model_version,
            evidence=list(w.evidence),
            count=w.count,
            last_seen=w.last_ms,
            client_ip=w.client_ip if client else None,
        )


def _reason(s: Signal) -> AlertReason:
    return AlertReason(
        detector=s.detector,
        code=s.kind,
        text=s.reason,
        score=min(1.0, max(0.0, s.score)),
        feature=s.feature,
        value=s.value,
        baseline=s.baseline,
        limit=s.limit,
    )
