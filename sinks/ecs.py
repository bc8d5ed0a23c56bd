"""An alert as an Elastic Common Schema (ECS 9.x) document.

Only ECS fields, each with its ECS type (a test checks every emitted field against ECS 9.4.0's
`ecs_flat.yml`), so the document indexes under Elastic's own templates and its security app reads
it: `event.kind: alert`, categorised as `intrusion_detection` + `api` (plus `authentication` for
credential attacks, `configuration` for operator actions); `event.type` `denied` when the gateway
enforced a challenge or block, `allowed` for an allow, `info` for what shadow/log mode only
recorded. MITRE ATT&CK ids fill `threat.*`. What ECS has no field for (every reason, detector
versions) stays readable in `event.original`, the alert's own JSON.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from typing import Any

from pipeline.alerts import Alert
from sinks.mitre import FRAMEWORK, TACTICS, technique

__all__ = ["ECS_VERSION", "SEVERITY", "ecs_document"]

ECS_VERSION = "9.4.0"
# event.severity is a number; Elastic's detection rules use 21/47/73/99 for low..critical.
SEVERITY = {"info": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}


def _time(ms: int) -> str:
    """ISO 8601 in UTC with milliseconds, as ECS dates are written.

    >>> _time(1700000000040)
    '2023-11-14T22:13:20.040Z'
    """
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=65_536)
def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _event_type(alert: Alert) -> str:
    if alert.kind == "operator":
        return "change"
    if alert.action == "allow":
        return "allowed"
    if alert.enforced and alert.action in ("challenge", "block"):
        return "denied"
    return "info"


@functools.lru_cache(maxsize=1024)
def _threat(attack: tuple[str, ...]) -> dict[str, Any]:
    """threat.* for a set of ids; cached (a few combinations recur), so shared: never mutated."""
    techniques = [technique(a) for a in dict.fromkeys(attack)]
    parents = list({t.id: t for t in techniques}.values())
    threat: dict[str, Any] = {
        "framework": FRAMEWORK,
        "technique": {
            "id": [t.id for t in parents],
            "name": [t.name or t.id for t in parents],
            "reference": [t.reference for t in parents],
        },
    }
    subs = [t for t in techniques if t.subtechnique_id]
    if subs:
        threat["technique"]["subtechnique"] = {
            "id": [t.subtechnique_id for t in subs],
            "name": [t.subtechnique_name or t.subtechnique_id for t in subs],
            "reference": [t.subtechnique_reference for t in subs],
        }
    tactics = list(dict.fromkeys(x for t in parents for x in t.tactics))
    if tactics:
        threat["tactic"] = {
            "id": tactics,
            "name": [TACTICS[x] for x in tactics],
            "reference": [f"https://attack.mitre.org/tactics/{x}/" for x in tactics],
        }
    return threat


def _subject(alert: Alert) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """source/user fields and related.* for the alert's subject."""
    value = alert.subject.partition(":")[2]
    if alert.scope == "ip":
        if not _is_address(value):
            return {"source": {"address": value}}, {}
        return {"source": {"address": value, "ip": value}}, {"ip": [value]}
    if alert.scope == "range":
        return {"source": {"address": value}}, {}
    if alert.scope in ("consumer", "user"):
        return {"user": {"id": value}}, {"user": [value]}
    if alert.scope == "key":
        return {}, {"hash": [value]}  # a keyed fingerprint of the credential, never the key
    return {}, {}


def ecs_document(alert: Alert, *, data_stream: str | None = None) -> dict[str, Any]:
    """The ECS document for `alert` (nested objects); `data_stream` (`type-dataset-namespace`)
    adds the matching `data_stream.*` fields."""
    categories = ["configuration"] if alert.kind == "operator" else ["intrusion_detection", "api"]
    if any(a.startswith("T1110") for a in alert.attack):
        categories.append("authentication")
    strongest = alert.reasons[0] if alert.reasons else None
    doc: dict[str, Any] = {
        "@timestamp": _time(alert.event_time),
        "ecs": {"version": ECS_VERSION},
        "message": alert.title,
        "event": {
            "kind": "alert",
            "category": categories,
            "type": [_event_type(alert)],
            "outcome": "unknown",
            "id": alert.id,
            "created": _time(alert.emit_time),
            "action": alert.action if alert.enforced else f"would-{alert.action}",
            "severity": SEVERITY[alert.severity],
            "risk_score": round(alert.score * 100, 2),
            "risk_score_norm": round(alert.score * 100, 2),
            "module": "gatewatch",
            "dataset": "gatewatch.alerts",
            "provider": alert.detector,
            "reason": strongest.text if strongest else alert.title,
            "original": alert.model_dump_json(),
        },
        "rule": {
            "id": strongest.code if strongest else alert.detector,
            "name": strongest.code if strongest else alert.detector,
            "category": alert.detector,
            "ruleset": "gatewatch",
            "version": alert.detector_versions.get(alert.detector, alert.model_version) or None,
            "description": strongest.text if strongest else alert.title,
        },
        "tags": ["gatewatch", f"mode:{alert.mode}", f"kind:{alert.kind}"],
    }
    if alert.attack:
        doc["threat"] = _threat(tuple(alert.attack))
    subject, related = _subject(alert)
    doc.update(subject)
    if related:
        doc["related"] = related
    if alert.service:
        doc["service"] = {"name": alert.service}
    if alert.route:
        doc["url"] = {"path": alert.route}
    if alert.tenant:
        doc["organization"] = {"id": alert.tenant}
    if alert.gateway or alert.node:
        doc["observer"] = {"type": "api-gateway"}
        if alert.gateway:
            doc["observer"]["product"] = alert.gateway
        if alert.node:
            doc["observer"]["hostname"] = alert.node
    if alert.evidence:
        # The requests behind the alert: a search by request id finds it (one id each).
        doc["http"] = {"request": {"id": alert.evidence}}
    if data_stream:
        parts = data_stream.split("-", 2)
        if len(parts) == 3:
            doc["data_stream"] = dict(zip(("type", "dataset", "namespace"), parts, strict=True))
    if doc["rule"]["version"] is None:
        del doc["rule"]["version"]
    return doc
