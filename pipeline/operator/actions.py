"""What an operator can do, from the CLI or the HTTP API alike: override a subject, clear an
override, report a false positive or confirm a detection. Each action is one Redis transaction
holding the change and its audit alert(s) (`audit.py`), then the alerts are published.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import WatchError

import detectors
from detectors.policy import Policy
from detectors.tuning import Tuning, TuningKey, learn
from pipeline.alerts import Alert, AlertReason
from pipeline.config import Mode
from pipeline.decisions import Decision, RedisDecisions
from pipeline.operator.audit import AuditTrail, operator_alert
from pipeline.operator.overrides import Override, OverrideKind, Overrides
from pipeline.operator.subjects import canonical_subject
from pipeline.operator.tuning import TuningStore

__all__ = ["DETECTORS", "ROUTE_PATTERN", "FeedbackResult", "OperatorActions", "OperatorError"]

Verdict = Literal["false_positive", "confirmed"]
DETECTORS = frozenset(
    cls.name
    for cls in (
        detectors.BehaviourAnomaly, detectors.BrowserMimicry, detectors.BruteForce,
        detectors.CrawlerPace, detectors.DistributedStuffing, detectors.InjectionDetector,
        detectors.KeySharing, detectors.ObjectWalk, detectors.RateAnomaly,
        detectors.ScannerAgent, detectors.SensitiveProbing, detectors.SpecDrift,
    )
)  # fmt: skip
MAX_REASON = 1000
ROUTE_PATTERN = r"^/[^\x00-\x1f\x7f]{0,511}$"
MAX_ACTOR = 128
_ACTOR = re.compile(r"[^\x00-\x1f\x7f]{1,128}")


class OperatorError(ValueError):
    """An action refused for its input; the message is one line for the operator."""


@dataclass
class FeedbackResult:
    subject: str
    verdict: Verdict
    actor: str
    decision: Decision | None = None
    override: Override | None = None
    tuning_key: TuningKey | None = None
    adjustment_before: float | None = None
    adjustment_after: float | None = None
    reports: int = 0
    note: str = ""
    alerts: list[Alert] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "verdict": self.verdict,
            "actor": self.actor,
            "decision": self.decision.model_dump() if self.decision else None,
            "override": self.override.model_dump() if self.override else None,
            "tuning": None
            if self.tuning_key is None
            else {
                "route": self.tuning_key[0],
                "detector": self.tuning_key[1],
                "before": self.adjustment_before,
                "after": self.adjustment_after,
            },
            "note": self.note,
            "alerts": [a.id for a in self.alerts],
        }


class OperatorActions:
    def __init__(
        self,
        redis: Redis,
        *,
        overrides: Overrides,
        audit: AuditTrail,
        tuning: TuningStore,
        decisions: RedisDecisions,
        policy: Policy | None = None,
        base_thresholds: tuple[float, float, float] = (0.3, 0.6, 0.85),
        tuning_step: float = 0.05,
        tuning_cap: float = 0.3,
        mode: Mode = "shadow",
    ) -> None:
        self.redis = redis
        self.overrides = overrides
        self.audit = audit
        self.tuning = tuning
        self.decisions = decisions
        self.policy = policy or Policy()
        self.base_thresholds = base_thresholds
        self.tuning_step = tuning_step
        self.tuning_cap = tuning_cap
        self.mode = mode

    async def override(
        self, kind: OverrideKind, subject: str, *, actor: str, reason: str, ttl_s: float | None
    ) -> Override:
        subject, actor, reason = _clean(subject, actor, reason)
        now = _now_ms()
        found = Override(
            subject=subject, kind=kind, actor=actor, reason=reason, created_at=now,
            expires_at=None if ttl_s is None else now + int(ttl_s * 1000),
        )  # fmt: skip
        alert = operator_alert(
            f"override_{kind}", subject, actor=actor, reason=reason, at_ms=now,
            expires_at=found.expires_at, score=1.0 if kind == "deny" else 0.0,
        )  # fmt: skip
        pipe = self.redis.pipeline(transaction=True)
        self.overrides.stage_put(pipe, found)
        self.audit.stage(pipe, [alert])
        await pipe.execute()
        return found

    async def clear(self, subject: str, *, actor: str, reason: str) -> Override | None:
        """Remove the subject's override; returns the one it had (None: nothing to clear, and
        nothing is audited)."""
        subject, actor, reason = _clean(subject, actor, reason)
        previous = await self.overrides.get(subject)
        if previous is None:
            return None
        now = _now_ms()
        alert = operator_alert(
            "override_clear", subject, actor=actor,
            reason=reason or f"was {previous.kind} by {previous.actor}: {previous.reason}",
            at_ms=now,
        )  # fmt: skip
        pipe = self.redis.pipeline(transaction=True)
        self.overrides.stage_clear(pipe, subject)
        self.audit.stage(pipe, [alert])
        await pipe.execute()
        return previous

    async def feedback(
        self,
        subject: str,
        verdict: Verdict,
        *,
        actor: str,
        reason: str,
        ttl_s: float | None,
        detector: str | None = None,
        route: str | None = None,
    ) -> FeedbackResult:
        subject, actor, reason = _clean(subject, actor, reason)
        if not reason:
            raise OperatorError("feedback needs a reason (--reason TEXT)")
        if detector is not None and detector not in DETECTORS:
            raise OperatorError(
                f"unknown detector {detector!r} (one of {', '.join(sorted(DETECTORS))})"
            )
        if route is not None and not re.match(ROUTE_PATTERN, route):
            raise OperatorError(f"route {route!r} must be a route template or prefix: /v1/...")
        decision = await self.decisions.get(subject)
        result = FeedbackResult(subject, verdict, actor, decision=decision)
        now = _now_ms()
        mode = decision.mode if decision else self.mode
        score = decision.score if decision else 0.0
        about = detector or (decision.detector if decision else "operator")
        if verdict == "confirmed":
            result.note = "recorded; confirming a detection changes no threshold"
            result.alerts = [
                operator_alert(
                    "feedback_confirmed", subject, actor=actor, reason=reason, at_ms=now,
                    decided=decision.action if decision else None, mode=mode, score=score,
                    detector=about, route=route,
                )
            ]  # fmt: skip
            pipe = self.redis.pipeline(transaction=True)
            self.audit.stage(pipe, result.alerts)
            await pipe.execute()
            return result
        expires_at = None if ttl_s is None else now + int(ttl_s * 1000)
        result.override = Override(
            subject=subject, kind="allow", actor=actor, reason=f"false positive: {reason}",
            created_at=now, expires_at=expires_at,
        )  # fmt: skip
        key: TuningKey | None = None
        if route is not None or detector is not None:
            key = (route, detector)
        elif decision is not None and decision.detector in DETECTORS:
            key = (None, decision.detector)
        else:
            result.note = (
                "no threshold moved: no decision in force names a detector; "
                "give --detector or --route"
            )
        result.tuning_key = key
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    extra = []
                    if key is not None:
                        await pipe.watch(self.tuning.key)
                        extra = await self._learn(pipe, result, key, score if decision else None)
                        pipe.multi()
                        assert result.adjustment_after is not None
                        self.tuning.stage_set(
                            pipe, key, result.adjustment_after, at_ms=now,
                            reports=result.reports, actor=actor,
                        )  # fmt: skip
                    result.alerts = [
                        operator_alert(
                            "feedback_false_positive", subject, actor=actor, reason=reason,
                            at_ms=now, expires_at=expires_at, mode=mode, score=score,
                            detector=about, route=route, extra=extra,
                        ),
                        operator_alert(
                            "override_allow", subject, actor=actor,
                            reason=result.override.reason, at_ms=now, expires_at=expires_at,
                        ),
                    ]  # fmt: skip
                    self.overrides.stage_put(pipe, result.override)
                    self.audit.stage(pipe, result.alerts)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue  # another report moved the same thresholds meanwhile: learn again

    async def _learn(
        self, pipe: Any, result: FeedbackResult, key: TuningKey, score: float | None
    ) -> list[AlertReason]:
        entries = await self.tuning.entries(redis=pipe)
        current = entries.get(key, {})
        before = float(current.get("value", 0.0))
        route, detector = key
        others = Tuning({k: r["value"] for k, r in entries.items() if k != key}).adjustment(
            route or "", detector or (result.decision.detector if result.decision else "")
        )
        challenge = self.policy.for_route(route or "").thresholds(self.base_thresholds)[1]
        after = learn(
            before, score=score, challenge=challenge, others=others,
            step=self.tuning_step, cap=self.tuning_cap,
        )  # fmt: skip
        result.adjustment_before, result.adjustment_after = before, after
        result.reports = int(current.get("reports", 0)) + 1
        scope = " ".join(
            part for part in (f"route {route}" if route else "",
                              f"detector {detector}" if detector else "") if part
        )  # fmt: skip
        return [
            AlertReason(
                detector=detector or "operator",
                code="threshold_adjusted",
                text=f"thresholds for {scope} raised by feedback: adjustment {before:.3f} -> "
                f"{after:.3f} (cap {self.tuning_cap}, decays by half every "
                f"{self.tuning.half_life_s / 86400:g} days)",
                score=score or 0.0,
                feature="threshold_adjustment",
                value=after,
                baseline=before,
                limit=self.tuning_cap,
            )
        ]


def _clean(subject: str, actor: str, reason: str) -> tuple[str, str, str]:
    try:
        subject = canonical_subject(subject)
    except ValueError as exc:
        raise OperatorError(str(exc)) from None
    actor = actor.strip()
    if not _ACTOR.fullmatch(actor):
        raise OperatorError(f"actor must be 1-{MAX_ACTOR} printable characters")
    reason = reason.strip()
    if len(reason) > MAX_REASON or any(ord(c) < 32 and c not in "\t" for c in reason):
        raise OperatorError(f"reason must be at most {MAX_REASON} characters on one line")
    return subject, actor, reason


def _now_ms() -> int:
    return int(time.time() * 1000)
