"""A terse Alert factory for doctests and tests: only what a case varies is named."""

from __future__ import annotations

from typing import Any

from pipeline.alerts import Alert, AlertReason, OperatorAction, alert_id, scope_of

__all__ = ["make_alert"]


def make_alert(
    *,
    subject: str = "ip:203.0.113.9",
    kind: str = "decision",
    action: str = "block",
    mode: str = "enforce",
    t: int = 1_700_000_000_000,
    route: str | None = "/v1/login",
    detector: str = "bruteforce",
    code: str = "credential_stuffing",
    text: str = "",
    score: float = 0.9,
    severity: str = "high",
    feature: str | None = None,
    value: float | None = None,
    limit: float | None = None,
    baseline: float | None = None,
    attack: list[str] | None = None,
    evidence: list[str] | None = None,
    operator: OperatorAction | None = None,
    tenant: str | None = None,
    reasons: list[AlertReason] | None = None,
    **extra: Any,
) -> Alert:
    if reasons is None and operator is not None:  # as the operator audit writes them
        text = f"{operator.action} by {operator.actor}"
        reasons = [
            AlertReason(
                detector="operator",
                code=operator.action,
                text=text,
                score=score,
                feature=None,
                value=None,
                baseline=None,
                limit=None,
            )
        ]
    if reasons is None:
        reasons = [
            AlertReason(
                detector=detector,
                code=code,
                text=text or code.replace("_", " "),
                score=score,
                feature=feature,
                value=value,
                baseline=baseline,
                limit=limit,
            )
        ]
    return Alert(
        id=extra.pop("id", None) or alert_id(kind, subject, action, t, code, detector),
        kind=kind,  # type: ignore[arg-type]
        event_time=t,
        emit_time=t + 50,
        subject=subject,
        scope=scope_of(subject),
        tenant=tenant,
        route=route,
        action=action,  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        enforced=mode in ("enforce", "challenge"),
        title=f"{action} {subject}",
        severity=severity,  # type: ignore[arg-type]
        score=score,
        detector=detector,
        reasons=reasons,
        attack=attack if attack is not None else ["T1110.004"] if detector == "bruteforce" else [],
        evidence=evidence or [],
        operator=operator,
        **extra,
    )
