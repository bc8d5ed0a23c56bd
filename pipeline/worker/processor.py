"""The detection step, free of I/O: a batch of events in, the decisions that changed out.

Workers, the benchmark and (later) offline replay all run this same code.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from detectors import Detector, Fusion, Signal, SubjectContext, Verdict
from detectors.state import SubjectState
from pipeline.config import Mode
from pipeline.decisions import Decision
from pipeline.events import GatewayEvent

__all__ = ["DECISION_TTL_S", "Processor", "StateStore"]

MODEL_VERSION = "gatewatch-0.1"
DECISION_TTL_S = {"tag": 120, "challenge": 300, "block": 600}
_RANK = {"allow": 0, "tag": 1, "challenge": 2, "block": 3}


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

    def __len__(self) -> int:
        return len(self._states)


@dataclass
class Processor:
    detectors: Sequence[Detector]
    fusion: Fusion
    mode: Mode = "shadow"
    auth_route_patterns: Sequence[str] = ("login", "signin", "auth", "token", "session")
    baseline_after: int = 5
    fading_factor: float = 0.05
    _auth_routes: dict[str, bool] = field(default_factory=dict, init=False, repr=False)

    def is_auth_route(self, route: str) -> bool:
        known = self._auth_routes.get(route)
        if known is None:
            lowered = route.lower()
            known = any(p in lowered for p in self.auth_route_patterns)
            if len(self._auth_routes) < 100_000:
                self._auth_routes[route] = known
        return known

    def process(
        self, events: Sequence[GatewayEvent], store: StateStore, *, wall_ms: int | None = None
    ) -> list[Decision]:
        """Feed `events` to their subjects' states and return the decisions worth writing:
        escalations, and refreshes of standing ones past half-life (the latest per subject)."""
        wall_ms = int(time.time() * 1000) if wall_ms is None else wall_ms
        touched: dict[str, SubjectState] = {}
        decisions: dict[str, Decision] = {}
        now = 0.0
        for event in events:
            t = event.ts_ms / 1000.0
            auth = self.is_auth_route(event.route)
            for subject in event.subjects():
                state = touched.get(subject)
                if state is None:
                    state = touched[subject] = store.get(subject)
                if state.closes_window(t):
                    # Judge a window before it is learned: a flood inside one envelope must not
                    # become the baseline before any detector has seen it.
                    self._evaluate(subject, state, t, wall_ms, decisions)
                state.observe(
                    event,
                    auth_route=auth,
                    baseline_after=self.baseline_after,
                    fading_factor=self.fading_factor,
                )
            now = max(now, t)
        for subject, state in touched.items():
            self._evaluate(subject, state, now, wall_ms, decisions)
        return list(decisions.values())

    def _evaluate(
        self,
        subject: str,
        state: SubjectState,
        now: float,
        wall_ms: int,
        out: dict[str, Decision],
    ) -> None:
        ctx = SubjectContext(subject, subject.partition(":")[0], now)
        signals: list[Signal] = []
        for detector in self.detectors:
            signal = detector.score(state, ctx)
            if signal is not None:
                signals.append(signal)
        if state.action != "allow" and wall_ms >= state.expires_at:
            state.action = "allow"  # the standing decision has expired in Redis too
        if not signals:
            return
        verdict = self.fusion.fuse(signals)
        state.flagged = state.flagged or verdict.action != "allow"
        decision = self._decide(subject, state, verdict, wall_ms)
        if decision is not None:
            out[subject] = decision

    def _decide(
        self, subject: str, state: SubjectState, verdict: Verdict, wall_ms: int
    ) -> Decision | None:
        action = verdict.action
        escalates = _RANK[action] > _RANK[state.action]
        standing = action != "allow" and action == state.action
        half_life_passed = standing and wall_ms >= (state.decided_at + state.expires_at) / 2
        if not (escalates or half_life_passed):
            return None
        ttl_ms = DECISION_TTL_S[action] * 1000
        state.action, state.score = action, verdict.score
        state.decided_at, state.expires_at = wall_ms, wall_ms + ttl_ms
        return Decision(
            subject=subject,
            score=verdict.score,
            action=action,
            reasons=verdict.reasons,
            detector=verdict.detector,
            model_version=MODEL_VERSION,
            mode=self.mode,
            updated_at=wall_ms,
            expires_at=wall_ms + ttl_ms,
        )
