"""Alerts as OCSF 1.8.0 Detection Findings (class 2004), JSON lines to a file or an HTTP endpoint.

Mapping (one finding per alert; every object validates against the OCSF 1.8.0 schema in the
tests):
- class_uid 2004, category_uid 2 (Findings), activity Create for decisions and findings, Update for
  operator actions (an override or feedback changes what is known about a subject), type_uid =
  200400 + activity_id; time = emit time, start_time = the request's time.
- severity_id from the alert severity (info 1 ... critical 5); risk_score = score x 100;
  risk_level_id from the severity; status New, or Suppressed for a false-positive verdict and
  In Progress for a confirmed one.
- security_control profile (declared in metadata.profiles): action_id/disposition_id say what the
  gateway did: block Denied/Blocked, challenge Denied/Challenge, tag Modified/Tagged, allow
  Allowed/Allowed; in shadow or log mode, and for feedback, nothing was done: Observed/Detected;
  a false-positive verdict is Allowed/Exonerated. is_alert for a challenge or block and for
  findings.
- finding_info: uid = the alert id (stable: a consumer deduplicates on it), title, desc (the
  reasons), types (reason codes), analytic (the detector, its version and kind), attacks (MITRE
  ATT&CK technique, sub-technique, tactics), created/first/last seen times.
- evidences: one per request id given as evidence (http_request.uid, the route as url.path), each
  with the subject: src_endpoint.ip for an address, src_endpoint name and subnet_uid for a range,
  user for
  a consumer or user, data.subject otherwise. observables: the address or user name.
- resources: the route; metadata: product gatewatch (version), OCSF version 1.8.0, uid = alert id,
  tenant_uid; unmapped.gatewatch: what OCSF has no place for (mode, scope, the structured reasons
  with their baselines and limits, detector versions, expiry, operator).

Delivery: to a file (GATEWATCH_SINK_OCSF_PATH), appended and fsync'd once per batch and rotated by
size (sinks/jsonl_file.py), which is what log shippers and data-lake loaders tail; or POSTed as
NDJSON (GATEWATCH_SINK_OCSF_URL, gzip, Bearer token) to a collector (Vector, Cribl, a Lambda
in front of Security Lake). HTTP answers follow sinks/http.py: 429/408/5xx retried (Retry-After
honoured), another 4xx refuses the request: it is halved until the refused alert is alone, and only
that one is dead-lettered.
"""

from __future__ import annotations

import ipaddress
from importlib.metadata import version
from typing import Any

import aiohttp
import orjson
import structlog

from pipeline.alerts import Alert
from pipeline.config import Settings
from sinks import http, mitre
from sinks.base import Delivery, SinkConfigError
from sinks.jsonl_file import JsonLinesFile

__all__ = ["OCSF_VERSION", "OcsfSink", "build", "detection_finding"]

log = structlog.get_logger(__name__)
OCSF_VERSION = "1.8.0"
ATTACK_VERSION = "v16"
SEVERITY = {"info": (1, "Informational"), "low": (2, "Low"), "medium": (3, "Medium"),
            "high": (4, "High"), "critical": (5, "Critical")}  # fmt: skip
RISK = {"info": (0, "Info"), "low": (1, "Low"), "medium": (2, "Medium"), "high": (3, "High"),
        "critical": (4, "Critical")}  # fmt: skip
# (action_id, action, disposition_id, disposition) when the gateway acted.
ENFORCED = {
    "block": (2, "Denied", 2, "Blocked"),
    "challenge": (2, "Denied", 23, "Challenge"),
    "tag": (4, "Modified", 18, "Tagged"),
    "allow": (1, "Allowed", 1, "Allowed"),
}
OBSERVED = (3, "Observed", 15, "Detected")
EXONERATED = (1, "Allowed", 10, "Exonerated")  # an analyst's false-positive verdict
STATUS = {"feedback_false_positive": (3, "Suppressed"), "feedback_confirmed": (2, "In Progress")}
# The kind of analysis behind each detector (OCSF analytic type_id, caption).
ANALYTIC = {
    "anomaly": (4, "Learning (ML/DL)"),
    "bot_ua": (5, "Fingerprinting"),
    "injection": (8, "Regular Expressions"),
    "probing": (1, "Rule"),
    "spec_drift": (1, "Rule"),
    "bruteforce": (3, "Statistical"),
    "distributed_stuffing": (3, "Statistical"),
    "rate": (3, "Statistical"),
}


def _attack(attack_id: str) -> dict[str, Any]:
    t = mitre.technique(attack_id)
    out: dict[str, Any] = {
        "technique": {"uid": t.id, "src_url": t.reference} | ({"name": t.name} if t.name else {}),
        "version": ATTACK_VERSION,
    }
    if t.subtechnique_id:
        out["sub_technique"] = {"uid": t.subtechnique_id, "src_url": t.subtechnique_reference}
        if t.subtechnique_name:
            out["sub_technique"]["name"] = t.subtechnique_name
    if t.tactics:
        out["tactics"] = [{"uid": x, "name": mitre.TACTICS[x]} for x in t.tactics]
        out["tactic"] = out["tactics"][0]
    return out


def _subject(alert: Alert) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The evidence fields naming the subject, and its observables."""
    kind, _, rest = alert.subject.partition(":")
    if alert.scope == "ip":
        ip = str(ipaddress.ip_address(rest))
        observable = {"name": "evidences[].src_endpoint.ip", "type_id": 2, "type": "IP Address"}
        return {"src_endpoint": {"ip": ip}}, [observable | {"value": ip}]
    if alert.scope == "range":
        network = str(ipaddress.ip_network(rest))
        return {"src_endpoint": {"name": alert.subject, "subnet_uid": network}}, []
    if kind in ("consumer", "user") and rest:
        observable = {"name": "evidences[].user.name", "type_id": 4, "type": "User Name"}
        return {"user": {"uid": rest, "name": rest}}, [observable | {"value": rest}]
    return {"data": {"subject": alert.subject}}, []


def detection_finding(alert: Alert, product_version: str) -> dict[str, Any]:
    """The OCSF Detection Finding for `alert` (`ValueError` if its subject is malformed)."""
    activity_id, activity = (2, "Update") if alert.operator else (1, "Create")
    severity_id, severity = SEVERITY[alert.severity]
    risk_id, risk = RISK[alert.severity]
    verdict = alert.operator.action if alert.operator else ""
    action_id, action, disposition_id, disposition = (
        EXONERATED if verdict == "feedback_false_positive"
        else ENFORCED[alert.action] if alert.enforced
        else OBSERVED
    )  # fmt: skip
    status_id, status = STATUS.get(alert.operator.action if alert.operator else "", (1, "New"))
    who, observables = _subject(alert)
    request: dict[str, Any] = {"url": {"path": alert.route}} if alert.route else {}
    evidences = [who | {"http_request": request | {"uid": rid}} for rid in alert.evidence]
    if not evidences:
        evidences = [who | ({"http_request": request} if request else {})]
    analytic_type, analytic_caption = ANALYTIC.get(alert.detector, (2, "Behavioral"))
    analytic: dict[str, Any] = {
        "name": alert.detector,
        "uid": alert.detector,
        "type_id": analytic_type,
        "type": analytic_caption,
    }
    if alert.detector in alert.detector_versions:
        analytic["version"] = alert.detector_versions[alert.detector]
    reasons = [f"{r.detector}: {r.text}" for r in alert.reasons]
    operator = alert.operator
    if operator and operator.reason and all(r.text != operator.reason for r in alert.reasons):
        reasons.append(f"{operator.actor}: {operator.reason}")
    info: dict[str, Any] = {
        "uid": alert.id,
        "title": alert.title,
        "analytic": analytic,
        "created_time": alert.emit_time,
        "first_seen_time": alert.event_time,
        "last_seen_time": alert.event_time,
    }
    if reasons:
        info["desc"] = "\n".join(reasons)
    if alert.reasons:
        info["types"] = list(dict.fromkeys(r.code for r in alert.reasons))
    if alert.attack:
        info["attacks"] = [_attack(a) for a in alert.attack]
    finding: dict[str, Any] = {
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": 200400 + activity_id,
        "type_name": f"Detection Finding: {activity}",
        "time": alert.emit_time,
        "start_time": alert.event_time,
        "timezone_offset": 0,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "message": alert.title,
        "risk_score": round(alert.score * 100),
        "risk_level_id": risk_id,
        "risk_level": risk,
        "action_id": action_id,
        "action": action,
        "disposition_id": disposition_id,
        "disposition": disposition,
        "is_alert": alert.kind == "finding" or alert.action in ("challenge", "block"),
        "finding_info": info,
        "evidences": evidences,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": "gatewatch",
                "vendor_name": "gatewatch",
                "version": product_version,
            },
            "uid": alert.id,
            "log_name": "gatewatch.alerts",
            "logged_time": alert.emit_time,
            "profiles": ["security_control"],
            "labels": [alert.kind, alert.mode],
        }
        | ({"tenant_uid": alert.tenant} if alert.tenant else {}),
        "unmapped": {"gatewatch": _unmapped(alert)},
    }
    if observables:
        finding["observables"] = observables
    if alert.route:
        labels = [
            f"{k}:{v}" for k, v in (("service", alert.service), ("gateway", alert.gateway)) if v
        ]
        finding["resources"] = [{"name": alert.route, "type": "API route"} | (
            {"labels": labels} if labels else {}
        )]  # fmt: skip
    return finding


def _unmapped(alert: Alert) -> dict[str, Any]:
    data = alert.model_dump(
        mode="json",
        include={"subject", "scope", "mode", "enforced", "action", "score", "reasons", "node",
                 "detector_versions", "model_version", "expires_at", "operator", "schema_version"},
    )  # fmt: skip
    return {k: v for k, v in data.items() if v not in (None, {}, [], "")}


class OcsfSink:
    name = "ocsf"

    def __init__(
        self,
        *,
        file: JsonLinesFile | None = None,
        url: str = "",
        token: str = "",
        ca_file: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if (file is None) == (not url):
            raise SinkConfigError("the OCSF sink writes to a file or a URL: give exactly one")
        self.file = file
        self.url = url
        self.token = token
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self.product_version = version("gatewatch")
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self.file is not None:
            await self.file.open()
        else:
            headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._session = http.client_session(
                ca_file=self.ca_file, timeout_s=self.timeout_s, headers=headers
            )

    async def close(self) -> None:
        if self.file is not None:
            await self.file.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, alerts: list[Alert]) -> Delivery:
        delivery = Delivery()
        lines: list[tuple[Alert, bytes]] = []
        for alert in alerts:
            try:
                event = detection_finding(alert, self.product_version)
                lines.append((alert, orjson.dumps(event) + b"\n"))
            except ValueError as exc:  # e.g. an ip: subject that is no address
                delivery.rejected[alert.id] = f"ocsf: {exc}"
        if not lines:
            return delivery
        if self.file is not None:
            try:
                await self.file.append(b"".join(line for _, line in lines))
            except OSError as exc:
                delivery.retry = [a.id for a, _ in lines]
                delivery.retry_reason = f"ocsf file {self.file.path}: {exc!r}"
            return delivery
        await self._post(lines, delivery)
        return delivery

    async def _post(self, lines: list[tuple[Alert, bytes]], delivery: Delivery) -> bool:
        """POST `lines`; on a refusal, halves until the refused alert is alone. False once the
        receiver said "not now" (everything not yet delivered is then in `delivery.retry`)."""
        body = http.gzip(b"".join(line for _, line in lines))
        assert self._session is not None, "start() first"
        try:
            async with self._session.post(self.url, data=body) as resp:
                verdict = http.classify(resp.status)
                reason = f"HTTP {resp.status}: {(await resp.text(errors='replace'))[:300]}"
                after = http.retry_after(resp.headers)
        except http.CONNECTION_ERRORS as exc:
            verdict, reason, after = "retry", f"ocsf endpoint: {exc!r}", None
        if verdict == "ok":
            return True
        if verdict == "retry":
            delivery.retry += [a.id for a, _ in lines]
            delivery.retry_reason, delivery.retry_after = reason, after
            return False
        if len(lines) == 1:
            log.warning("ocsf.rejected", alert=lines[0][0].id, reason=reason)
            delivery.rejected[lines[0][0].id] = reason
            return True
        half = len(lines) // 2
        if not await self._post(lines[:half], delivery):
            delivery.retry += [a.id for a, _ in lines[half:]]
            return False
        return await self._post(lines[half:], delivery)


def build(settings: Settings) -> OcsfSink:
    path, url = settings.sink_ocsf_path, settings.sink_ocsf_url.get_secret_value()
    if bool(path) == bool(url):
        raise SinkConfigError(
            "set GATEWATCH_SINK_OCSF_PATH (a JSON-lines file) or GATEWATCH_SINK_OCSF_URL "
            "(an NDJSON endpoint), exactly one"
        )
    if url:
        return OcsfSink(
            url=url,
            token=settings.sink_ocsf_token.get_secret_value(),
            ca_file=settings.sink_ocsf_ca_file,
            timeout_s=settings.sink_ocsf_timeout_s,
        )
    rotate, keep = settings.sink_ocsf_rotate_bytes, settings.sink_ocsf_keep
    return OcsfSink(file=JsonLinesFile(path, rotate_bytes=rotate, keep=keep))
