"""The detection step, free of I/O: a batch of events in, the decisions that changed out.

Workers, the benchmark and offline replay (`gatewatch replay` / `evaluate`) all run this same code.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from pathlib import Path
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from detectors import Detector, Fusion, Signal, SubjectContext, Verdict, default_detectors
from detectors.openapi import load_spec
from detectors.policy import Policy
from detectors.rate import recommended_limit
from detectors.routes import AuthRoutes
from detectors.state import WINDOW_S, SubjectState
from pipeline.config import Mode, Settings
from pipeline.decisions import Decision
from pipeline.events import GatewayEvent

if TYPE_CHECKING:
    from pipeline.worker.alerting import AlertCollector

__all__ = [
    "DECISION_TTL_S",
    "GC_THRESHOLDS",
    "EventTrace",
    "Processor",
    "StateStore",
    "build_processor",
    "range_subject",
]

# The detection step allocates several short-lived containers per event and builds no reference
# cycles, so CPython's default collector (a pass every 700 net allocations, now and then one over
# every subject's state) cost a quarter to a third of its CPU. Processes that run it (worker,
# replay, evaluation) collect far less often: young-generation allocations between collections,
# and the two older generations' ratios.
GC_THRESHOLDS = (100_000, 50, 100)
DECISION_TTL_S = {"tag": 120, "challenge": 300, "block": 600}
CLOSE_JUDGE_MIN = 5
_RANK = {"allow": 0, "tag": 1, "challenge": 2, "block": 3}
# The kinds of an event's subjects in `subjects_of` order, by (has a consumer, has a credential);
# the address range, when there is one, is an address too.
_KINDS_BY_SHAPE = {
    (True, True): ("consumer", "key", "ip", "ip"),
    (True, False): ("consumer", "ip", "ip"),
    (False, True): ("key", "ip", "ip"),
    (False, False): ("ip", "ip"),
}


_ALWAYS, _MEMO, _MEMO_OR_EVIDENCE = 0, 1, 2
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def _score_plan(detector: Detector) -> tuple[str, int, Callable[..., Signal | None]]:
    """(name, when it can say anything, its `score`), from the detector's `needs`."""
    needs = set(getattr(detector, "needs", ()))
    if not needs:
        when = _ALWAYS
    elif needs == {"memo"}:
        when = _MEMO
    elif needs == {"memo", "evidence"}:
        when = _MEMO_OR_EVIDENCE
    else:
        raise ValueError(f"{detector.name}: unknown needs {sorted(needs)}")
    return detector.name, when, detector.score


def range_subject(ip: str) -> str | None:
    """The `/24` (IPv4) or `/64` (IPv6) range an address belongs to, as a subject.

    >>> range_subject("203.0.113.77"), range_subject("2001:db8::1"), range_subject("nope")
    ('ip:203.0.113.0/24', 'ip:2001:db8::/64', None)
    """
    # Most addresses are plain dotted quads, which `ipaddress` takes ~5 µs to parse: match exactly
    # what it accepts as IPv4 (ASCII digits, no leading zero, <= 255) and cut at the last dot.
    if _DOTTED_QUAD.fullmatch(ip):
        return f"ip:{ip[: ip.rindex('.')]}.0/24"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if addr.version == 4 else 64
    return f"ip:{ipaddress.ip_network(f'{addr}/{prefix}', strict=False)}"


class StateStore:
    """Subject states of one partition, least recently seen evicted first beyond `max_subjects`."""

    def __init__(self, max_subjects: int) -> None:
        self.max_subjects = max_subjects
        self._states: OrderedDict[str, SubjectState] = OrderedDict()

    def get(self, subject: str) -> SubjectState:
        state = self._states.get(subject)
        if state is None:
            state = self._states[subject] = SubjectState()
            if len(self._states) > self.max_subjects:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(subject)
        return state

    def peek(self, subject: str) -> SubjectState | None:
        return self._states.get(subject)

    def __len__(self) -> int:
        return len(self._states)


@dataclass(frozen=True, slots=True)
class EventTrace:
    """What the detectors made of one event: its findings and its subjects' fused risk."""

    event: GatewayEvent
    subjects: list[str]
    signals: list[Signal]
    verdict: Verdict


@dataclass
class Processor:
    """Feeds events to subject states and detectors, fuses the signals, decides.

    `event_clock=True` stamps decisions with event time instead of the wall clock: replaying an
    hour of logs in seconds must still see decisions expire and refresh as they would have.
    """

    detectors: Sequence[Detector]
    fusion: Fusion
    mode: Mode = "shadow"
    auth_routes: AuthRoutes = field(default_factory=AuthRoutes)
    baseline_after: int = 5
    fading_factor: float = 0.05
    policy: Policy = field(default_factory=Policy)
    event_clock: bool = False
    # Operator allow-overrides: these subjects are never decided against (deny needs no worker).
    allowed: Collection[str] = frozenset()

    def __post_init__(self) -> None:
        self._inspectors = [d for d in self.detectors if hasattr(d, "inspect")]
        self._updaters = [d for d in self.detectors if hasattr(d, "update")]
        # An address range is many clients: only detectors built for that judge it.
        self._range_detectors = [d for d in self.detectors if getattr(d, "judges_ranges", False)]
        self._range_updaters = [d for d in self._updaters if d in self._range_detectors]
        self._range_names = {d.name for d in self._range_detectors}
        # Scoring runs twice per event on average, so skip what cannot say anything: a detector
        # that only reads per-request evidence, for subjects without any; one limited to some
        # subject kinds (`kinds`), for the others.
        self._evidence_only = [
            d
            for d in self.detectors
            if hasattr(d, "inspect") and not hasattr(d, "update") and d not in self._range_detectors
        ]
        self._scorers = {
            kind: [
                d
                for d in self.detectors
                if d not in self._evidence_only and kind in getattr(d, "kinds", (kind,))
            ]
            for kind in ("consumer", "key", "ip")
        }
        self._kind_updaters = {
            kind: [d for d in self._updaters if kind in getattr(d, "kinds", (kind,))]
            for kind in ("consumer", "key", "ip")
        }
        # What `process` and `_evaluate` call, looked up once: bound methods per subject kind and
        # range or not, in detector order (signal order decides ties in fusion).
        self._inspect_calls = [d.inspect for d in self._inspectors]  # type: ignore[attr-defined]
        self._wants_range_calls = [
            d.wants_range for d in self._range_detectors  # type: ignore[attr-defined]
        ]
        self._kind_update_calls = {
            kind: [
                d.update  # type: ignore[attr-defined]
                for d in updaters
                if kind in getattr(d, "update_kinds", (kind,))
            ]
            for kind, updaters in self._kind_updaters.items()
        }
        self._range_update_calls = [
            d.update  # type: ignore[attr-defined]
            for d in self._range_updaters
            if "range" in getattr(d, "update_kinds", ("range",))
        ]
        self._kind_score_plans = {
            kind: [_score_plan(d) for d in scorers] for kind, scorers in self._scorers.items()
        }
        self._range_score_plan = [_score_plan(d) for d in self._range_detectors]
        self._kind_plain_calls = {
            kind: [score for _, needs, score in plan if needs == _ALWAYS]
            for kind, plan in self._kind_score_plans.items()
        }
        self._range_plain_calls = [
            score for _, needs, score in self._range_score_plan if needs == _ALWAYS
        ]
        self._evidence_calls = [(d.name, d.score) for d in self._evidence_only]
        # A real version per detector (alerts carry them); decisions carry one model version that
        # changes whenever any detector's or fusion's does.
        self.detector_versions = {d.name: d.version for d in self.detectors}
        self.model_version = model_version(self.detector_versions, self.fusion.version)

    def subjects_of(self, event: GatewayEvent, auth: bool) -> list[str]:
        subjects = event.subjects()
        # Some traffic is also judged per address range: a distributed login campaign spends one
        # or two attempts per address but dozens per range it rents; a scraper splits its walk
        # over the hosts of one subnet. The detectors that judge ranges say which.
        wants_range = auth
        if not wants_range:
            for wants in self._wants_range_calls:
                if wants(event):
                    wants_range = True
                    break
        if wants_range:
            ranged = range_subject(event.client_ip)
            if ranged is not None:
                subjects.append(ranged)
        return subjects

    def process(
        self,
        events: Sequence[GatewayEvent],
        store: StateStore,
        *,
        wall_ms: int | None = None,
        on_event: Callable[[EventTrace], None] | None = None,
        report: AlertCollector | None = None,
    ) -> list[Decision]:
        """Feed `events` to their subjects' states and return the decisions worth writing:
        escalations, and refreshes of standing ones past half-life (the latest per subject).

        With `on_event`, every event's subjects are judged right after it (slower: for replays
        that explain each event). `report` hears of per-request findings (and PII masked at
        ingest) and of decision changes, to turn them into alerts."""
        if wall_ms is None and not self.event_clock:
            wall_ms = int(time.time() * 1000)
        # subject -> [state, its kind, its latest event in this batch]
        touched: dict[str, list[Any]] = {}
        decisions: dict[str, Decision] = {}
        now = 0.0
        inspect_calls = self._inspect_calls
        subjects_of = self.subjects_of
        kind_update_calls = self._kind_update_calls
        range_update_calls = self._range_update_calls
        range_names = self._range_names
        auth_routes = self.auth_routes
        baseline_after = self.baseline_after
        fading_factor = self.fading_factor
        states = store._states
        max_subjects = store.max_subjects
        for event in events:
            t = event.ts_ms / 1000.0
            route = event.route
            auth = auth_routes(route)
            subjects = subjects_of(event, auth)
            # `subjects_of` lists them in this order: consumer, key, address, address range.
            kinds = _KINDS_BY_SHAPE[(bool(event.consumer), bool(event.credential))]
            findings = [s for inspect in inspect_calls if (s := inspect(event)) is not None]
            for subject, kind in zip(subjects, kinds):
                known = touched.get(subject)
                if known is None:
                    # `store.get`, inline: it runs for every subject of every event.
                    state = states.get(subject)
                    if state is None:
                        state = states[subject] = SubjectState()
                        if len(states) > max_subjects:
                            states.popitem(last=False)
                    else:
                        states.move_to_end(subject)
                    touched[subject] = [state, kind, event]
                else:
                    # Already fetched in this batch: use it as is, without refreshing its place in
                    # the store's eviction order.
                    state = known[0]
                    known[2] = event
                ranged = "/" in subject
                updates = range_update_calls if ranged else kind_update_calls[kind]
                if updates:
                    # Before `observe`: a window this event closes is whole and not yet learned.
                    ctx = SubjectContext(subject, kind, t)
                    for update in updates:
                        update(state, event, ctx)
                if state.w_requests >= CLOSE_JUDGE_MIN and t >= state.w_start + WINDOW_S:
                    # Judge a busy window before it is learned: a flood inside one envelope must
                    # not become the baseline before any detector has seen it. (A quiet one is
                    # judged with the rest of the batch.)
                    clock_ms = event.ts_ms if wall_ms is None else wall_ms
                    self._evaluate(subject, kind, state, event, t, clock_ms, decisions, report)
                state.observe_at(t, event, auth, baseline_after, fading_factor)
                if findings:
                    for finding in findings:
                        if not ranged or finding.detector in range_names:
                            state.note(
                                finding.detector, finding.score, t, finding.kind, finding.reason
                            )
            if report is not None and (findings or event.pii):
                report.event(event, subjects, findings)
            if t > now:
                now = t
            if on_event is not None:
                clock_ms = event.ts_ms if wall_ms is None else wall_ms
                on_event(
                    self._trace(event, subjects, findings, store, t, clock_ms, decisions, report)
                )
        end_ms = int(now * 1000) if wall_ms is None else wall_ms
        for subject, (state, kind, last) in touched.items():
            self._evaluate(subject, kind, state, last, now, end_ms, decisions, report)
        return list(decisions.values())

    def _trace(
        self,
        event: GatewayEvent,
        subjects: list[str],
        findings: list[Signal],
        store: StateStore,
        t: float,
        clock_ms: int,
        decisions: dict[str, Decision],
        report: AlertCollector | None,
    ) -> EventTrace:
        signals = list(findings)
        verdict = Verdict(0.0, "allow", [], "")
        for subject in subjects:
            state = store.peek(subject)
            if state is None:
                continue
            kind = subject.partition(":")[0]
            subject_verdict = self._evaluate(
                subject, kind, state, event, t, clock_ms, decisions, report
            )
            if subject_verdict is None:
                continue
            signals.extend(subject_verdict[1])
            if subject_verdict[0].score > verdict.score:
                verdict = subject_verdict[0]
        return EventTrace(event, subjects, signals, verdict)

    def _evaluate(
        self,
        subject: str,
        kind: str,
        state: SubjectState,
        event: GatewayEvent,
        now: float,
        wall_ms: int,
        out: dict[str, Decision],
        report: AlertCollector | None = None,
    ) -> tuple[Verdict, list[Signal]] | None:
        """Judge `subject` now; `event` is its latest request (its route picks the policy)."""
        ctx = SubjectContext(subject, kind, now)
        signals: list[Signal] = []
        ranged = "/" in subject
        memo = state.memo
        evidence = state.evidence
        if memo is None and evidence is None:
            # Only detectors reading the shared counters can say anything (and in the same order).
            for score in self._range_plain_calls if ranged else self._kind_plain_calls[kind]:
                signal = score(state, ctx)
                if signal is not None:
                    signals.append(signal)
        else:
            plan = self._range_score_plan if ranged else self._kind_score_plans[kind]
            for name, needs, score in plan:
                if needs and not (
                    (memo is not None and name in memo)
                    or (needs == _MEMO_OR_EVIDENCE and evidence is not None and name in evidence)
                ):
                    continue  # nothing of its own on this subject: its score would be None
                signal = score(state, ctx)
                if signal is not None:
                    signals.append(signal)
        if evidence is not None and not ranged:
            for name, score in self._evidence_calls:
                if name in evidence:
                    signal = score(state, ctx)
                    if signal is not None:
                        signals.append(signal)
        if state.action != "allow" and wall_ms >= state.expires_at:
            state.action = "allow"  # the standing decision has expired in Redis too
        if not signals:
            return None
        rules = self.policy.for_route(event.route)
        verdict = self.fusion.fuse(signals, rules.thresholds(self.fusion.thresholds))
        state.flagged = state.flagged or verdict.action != "allow"
        if subject not in self.allowed:
            standing = state.action
            decision = self._decide(subject, state, verdict, rules.mode_for(subject, self.mode), wall_ms)
            if decision is not None:
                out[subject] = decision
                if report is not None and decision.action != standing:
                    report.decision(subject, event, signals, decision)
        return verdict, signals

    def _decide(
        self, subject: str, state: SubjectState, verdict: Verdict, mode: Mode, wall_ms: int
    ) -> Decision | None:
        action = verdict.action
        escalates = _RANK[action] > _RANK[state.action]
        standing = action != "allow" and action == state.action
        half_life_passed = standing and wall_ms >= (state.decided_at + state.expires_at) / 2
        if not (escalates or half_life_passed):
            return None
        ttl_ms = DECISION_TTL_S[action] * 1000
        state.action = action
        state.decided_at, state.expires_at = wall_ms, wall_ms + ttl_ms
        return Decision(
            subject=subject,
            score=verdict.score,
            action=action,
            reasons=verdict.reasons,
            detector=verdict.detector,
            model_version=self.model_version,
            mode=mode,
            updated_at=wall_ms,
            expires_at=wall_ms + ttl_ms,
            rate_limit=recommended_limit(state.baseline),
        )


def model_version(detector_versions: Mapping[str, str], fusion_version: str) -> str:
    """One label for the whole detection step: a digest of every detector's version and fusion's.

    >>> model_version({"rate": "1", "bruteforce": "1"}, "1")
    'gatewatch-643c53f1'
    """
    parts = [*sorted(detector_versions.items()), ("fusion", fusion_version)]
    digest = hashlib.sha256(";".join(f"{n}={v}" for n, v in parts).encode()).hexdigest()
    return f"gatewatch-{digest[:8]}"


def build_processor(
    settings: Settings,
    *,
    event_clock: bool = False,
    specs: Sequence[Mapping[str, Any]] | None = None,
) -> Processor:
    """The processor a worker runs, configured from settings (replay builds the same one).
    `specs` replace the OpenAPI documents named in the settings."""
    auth_routes = AuthRoutes(settings.auth_route_patterns)
    policy = Policy.from_file(Path(settings.policy_file)) if settings.policy_file else Policy()
    if specs is None:
        specs = [load_spec(Path(p)) for p in settings.openapi_specs]
    return Processor(
        detectors=default_detectors(auth_routes, specs),
        fusion=Fusion(),
        mode=settings.mode,
        auth_routes=auth_routes,
        policy=policy,
        event_clock=event_clock,
    )
