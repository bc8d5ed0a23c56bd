"""Alerts: the versioned record every finding, decision change and operator action becomes.

An alert goes to `gatewatch.alerts` (not compacted) and from there to every sink (`sinks/`). It is
what a SOC reads, so it carries everything needed to act on it without going back to gatewatch:
who (subject and its scope), where (gateway, node, service, route, tenant), what was done in which
mode ("would block" in shadow), why (structured reasons: detector, code, text, the feature against
the subject's baseline and the limit it crossed), MITRE ATT&CK technique ids, detector versions and
a few request ids as evidence.

`id` is stable: the same decision change or finding redelivered (a worker restart replays
envelopes after its last commit) has the same id, so downstream indexes deduplicate on it.
Findings are aggregated per subject and reason code over a short window (`count` requests, the
first few as `evidence`): the window's alert is written when it opens and again, same id, with
the final count when it closes. Keep the record with the highest `count` per id (an upsert).

Versions: 1.1 added `count`, `last_seen` and `client_ip` (all optional: a 1.0 record is valid).
The JSON Schema of the record is `pipeline/schemas/alert.schema.json`, generated from this model
(`python -m pipeline.alerts > pipeline/schemas/alert.schema.json`; a test keeps it in sync).
"""

from __future__ import annotations

import hashlib
import sys
from typing import Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import Mode

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "Alert",
    "AlertKind",
    "AlertReason",
    "OperatorAction",
    "Scope",
    "alert_id",
    "scope_of",
]

ALERT_SCHEMA_VERSION: Final = "1.1"
AlertKind = Literal["decision", "finding", "operator"]
Scope = Literal["consumer", "key", "ip", "range", "user", "route", "gateway"]
Action = Literal["allow", "tag", "challenge", "block"]
Severity = Literal["info", "low", "medium", "high", "critical"]


class AlertReason(BaseModel):
    """One detector's reason, structured: a SIEM can filter on `code` and chart `value`."""

    model_config = ConfigDict(extra="forbid")

    detector: str
    code: str = Field(description="Stable reason code, e.g. brute_force, sqli, flood")
    text: str = Field(description="What a person reads")
    score: float = Field(ge=0.0, le=1.0)
    feature: str | None = Field(None, description="The measured feature, e.g. auth_failures")
    value: float | None = Field(None, description="The feature's value now")
    baseline: float | None = Field(None, description="The subject's learned baseline for it")
    limit: float | None = Field(None, description="The limit it crossed")


class OperatorAction(BaseModel):
    """Who did what to which subject and why (overrides and feedback are audited as alerts)."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(description="override_allow | override_deny | override_clear | "
                        "feedback_false_positive | feedback_confirmed")
    actor: str
    reason: str = ""
    expires_at: int | None = Field(None, description="epoch ms; None = until cleared")


class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1.0", "1.1"] = ALERT_SCHEMA_VERSION
    id: str = Field(description="Stable id: the same change or finding always has the same id")
    kind: AlertKind
    event_time: int = Field(description="epoch ms of the request (or action) behind the alert")
    emit_time: int = Field(description="epoch ms the alert was written")
    subject: str = Field(description="consumer:<id>, key:<hash>, ip:<addr>, ip:<range>, ...")
    scope: Scope
    tenant: str | None = None
    gateway: str | None = None
    node: str | None = None
    service: str | None = None
    route: str | None = None
    action: Action
    mode: Mode
    enforced: bool = Field(description="False in shadow/log mode: the gateway only 'would' act")
    title: str = Field(description="One line: 'would block ip:1.2.3.4: credential stuffing'")
    severity: Severity
    score: float = Field(ge=0.0, le=1.0)
    detector: str = Field(description="The detector behind the strongest reason")
    reasons: list[AlertReason] = Field(default_factory=list)
    attack: list[str] = Field(default_factory=list, description="MITRE ATT&CK technique ids")
    detector_versions: dict[str, str] = Field(default_factory=dict)
    model_version: str = ""
    evidence: list[str] = Field(default_factory=list, description="A few request ids")
    count: int = Field(
        1, ge=1, description="Requests behind the alert (a finding's, aggregated over its window)"
    )
    last_seen: int | None = Field(None, description="epoch ms of the latest request counted")
    client_ip: str | None = Field(None, description="Client address of the latest request")
    expires_at: int | None = Field(None, description="epoch ms the decision expires")
    operator: OperatorAction | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, data: bytes | str) -> Alert:
        return cls.model_validate_json(data)


def alert_id(*parts: object) -> str:
    """A stable id from what makes an alert unique (kind, subject, action, decision time...).

    >>> alert_id("decision", "ip:203.0.113.9", "block", 1700000000000)
    'gw-048c7d7e1786a06340126515'
    """
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return f"gw-{digest[:24]}"


def scope_of(subject: str) -> Scope:
    """The scope type of a subject.

    >>> scope_of("ip:203.0.113.0/24"), scope_of("consumer:c1"), scope_of("key:ab")
    ('range', 'consumer', 'key')
    """
    kind, _, rest = subject.partition(":")
    if kind == "ip":
        return "range" if "/" in rest else "ip"
    if kind in ("consumer", "key", "user", "route", "gateway"):
        return kind  # type: ignore[return-value]
    raise ValueError(f"not a subject: {subject!r}")


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(Alert.model_json_schema(), option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")
