"""OCSF Detection Findings from sinks/ocsf.py validated against the OCSF 1.8.0 schema (the pinned
copy in tests/fixtures/ocsf, and the full schema in ../shared/data/ocsf when it is there): every
alert shape, random alerts (hypothesis), and the validator itself refusing broken findings."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.alerts import Alert, AlertReason
from sinks.ocsf import detection_finding
from tests.alert_samples import HOSTILE, alert, operator_alert
from tests.fixtures.ocsf.pin_ocsf import files
from tests.ocsf_validator import OcsfSchema

ROOT = Path(__file__).resolve().parent.parent.parent
PINNED = ROOT / "tests" / "fixtures" / "ocsf"
# The reference data sits beside the checkout (CI) or beside the worktrees' parent.
FULL = next(
    (p for p in (ROOT.parent / "shared/data/ocsf", ROOT.parent.parent / "shared/data/ocsf")
     if (p / "dictionary.json").exists()),
    None,
)  # fmt: skip
SCHEMAS = {"pinned": OcsfSchema(PINNED)} | ({"full": OcsfSchema(FULL)} if FULL else {})


def shapes() -> dict[str, Alert]:
    return {
        "shadow-ip": alert(),
        "enforced-block": alert(mode="enforce", enforced=True),
        "enforced-challenge": alert(mode="challenge", enforced=True, action="challenge"),
        "tag": alert(mode="enforce", enforced=True, action="tag", severity="low"),
        "ipv6": alert(subject="ip:2001:db8::7"),
        "range": alert(subject="ip:203.0.113.0/24", scope="range"),
        "key": alert(subject="key:hmac:ab12", scope="key", evidence=[], route=None),
        "consumer": alert(subject="consumer:shop-web", scope="consumer", tenant=None),
        "finding": alert(kind="finding", severity="critical", attack=["T1190", "T9999.001"]),
        "bare": alert(reasons=[], attack=[], evidence=[], route=None, detector="anomaly"),
        "operator": operator_alert(),
        "false-positive": operator_alert(action="feedback_false_positive"),
        "confirmed": operator_alert(action="feedback_confirmed"),
        "deny": operator_alert(action="override_deny"),
        "hostile": alert(
            title=HOSTILE[3],
            route=HOSTILE[0],
            subject=f"consumer:{HOSTILE[10]}",
            scope="consumer",
            reasons=[AlertReason(detector="injection", code="sqli", text=HOSTILE[9], score=0.9)],
        ),
    }


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
@pytest.mark.parametrize("shape", sorted(shapes()))
def test_every_alert_shape_is_a_valid_detection_finding(schema: str, shape: str) -> None:
    finding = detection_finding(shapes()[shape], "0.1.0")
    assert SCHEMAS[schema].validate(finding, "detection_finding") == []
    json.dumps(finding, allow_nan=False)  # plain JSON, nothing the encoder must guess


def test_the_mapping() -> None:
    a = alert()
    f = detection_finding(a, "0.1.0")
    assert (f["class_uid"], f["category_uid"], f["type_uid"], f["activity_id"]) == (
        2004, 2, 200401, 1,
    )  # fmt: skip
    assert (f["severity_id"], f["risk_score"], f["time"]) == (4, 93, a.emit_time)
    assert (f["action"], f["disposition"], f["is_alert"]) == ("Observed", "Detected", True)
    info = f["finding_info"]
    assert (info["uid"], info["title"]) == (a.id, a.title)
    assert info["types"] == ["credential_stuffing", "flood"]
    assert info["analytic"] == {
        "name": "bruteforce", "uid": "bruteforce", "type_id": 3, "type": "Statistical",
        "version": "1.2.0",
    }  # fmt: skip
    [stuffing, brute] = info["attacks"]
    assert stuffing["technique"]["uid"] == "T1110"
    assert stuffing["sub_technique"]["uid"] == "T1110.004"
    assert stuffing["tactic"] == {"uid": "TA0006", "name": "Credential Access"}
    assert "sub_technique" not in brute
    assert [e["http_request"]["uid"] for e in f["evidences"]] == a.evidence
    assert {e["src_endpoint"]["ip"] for e in f["evidences"]} == {"203.0.113.9"}
    assert f["observables"] == [
        {"name": "evidences[].src_endpoint.ip", "type_id": 2, "type": "IP Address",
         "value": "203.0.113.9"}
    ]  # fmt: skip
    assert f["unmapped"]["gatewatch"]["reasons"][0]["baseline"] == 1.5
    assert f["metadata"]["uid"] == a.id and f["metadata"]["tenant_uid"] == "default"

    enforced = detection_finding(alert(mode="enforce", enforced=True), "0.1.0")
    assert (enforced["action_id"], enforced["disposition_id"]) == (2, 2)  # Denied, Blocked
    op = detection_finding(shapes()["false-positive"], "0.1.0")
    assert (op["activity_id"], op["type_uid"], op["status"]) == (2, 200402, "Suppressed")
    assert (op["disposition"], op["is_alert"]) == ("Exonerated", False)
    assert op["finding_info"]["desc"] == "operator: partner batch sync"  # said once
    deny = detection_finding(shapes()["deny"], "0.1.0")
    assert (deny["action"], deny["disposition"]) == ("Denied", "Blocked")
    confirmed = detection_finding(shapes()["confirmed"], "0.1.0")
    assert (confirmed["status"], confirmed["action"]) == ("In Progress", "Observed")


reasons = st.builds(
    AlertReason,
    detector=st.sampled_from(["bruteforce", "injection", "x"]),
    code=st.text(min_size=1, max_size=20),
    text=st.text(max_size=50),
    score=st.floats(0, 1),
    feature=st.none() | st.text(max_size=10),
    value=st.none() | st.floats(allow_nan=False, allow_infinity=False),
)
random_alerts = st.builds(
    alert,
    n=st.integers(0, 10**6),
    title=st.text(max_size=80),
    subject=st.sampled_from(["ip:198.51.100.7", "ip:2001:db8::1", "consumer:c", "user:u"]),
    route=st.none() | st.text(max_size=40),
    action=st.sampled_from(["allow", "tag", "challenge", "block"]),
    mode=st.sampled_from(["shadow", "log", "challenge", "enforce"]),
    enforced=st.booleans(),
    kind=st.sampled_from(["decision", "finding"]),
    severity=st.sampled_from(["info", "low", "medium", "high", "critical"]),
    score=st.floats(0, 1),
    reasons=st.lists(reasons, max_size=3),
    attack=st.lists(
        st.sampled_from(["T1110.001", "T1595", "T1190", "T1499.003", "T0"]), max_size=3
    ),
    evidence=st.lists(st.text(max_size=12), max_size=4),
    tenant=st.none() | st.text(max_size=10),
)


@settings(max_examples=200, deadline=None)
@given(random_alerts)
def test_random_alerts_validate(a: Alert) -> None:
    scope = "ip" if a.subject.startswith("ip:") else a.subject.partition(":")[0]
    a = a.model_copy(update={"scope": scope})
    assert SCHEMAS["pinned"].validate(detection_finding(a, "0.1.0"), "detection_finding") == []


BREAKAGES: dict[str, tuple[Any, str]] = {
    "unknown attribute": (lambda f: f["finding_info"].update(bogus=1), "finding_info.bogus"),
    "missing required": (lambda f: f.pop("finding_info"), "finding_info: required"),
    "wrong caption": (lambda f: f.update(severity="Low"), "severity 'Low' is not 'High'"),
    "bad enum": (lambda f: f.update(status_id=42), "status_id: 42"),
    "bad ip": (lambda f: f["evidences"][0]["src_endpoint"].update(ip="1.2.3"), "ip_t"),
    "bad type": (lambda f: f.update(time="yesterday"), "time: 'yesterday'"),
    "type_uid": (lambda f: f.update(type_uid=200403), "type_uid"),
    "class_uid": (lambda f: f.update(class_uid=2005), "class_uid"),
    "undeclared profile": (lambda f: f["metadata"].update(profiles=[]), "security_control"),
    "empty evidence": (lambda f: f["evidences"].append({}), "at least one of"),
    "not an array": (lambda f: f["finding_info"].update(types="sqli"), "an array expected"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_validator_refuses_broken_findings(breakage: str) -> None:
    finding = copy.deepcopy(detection_finding(alert(), "0.1.0"))
    change, message = BREAKAGES[breakage]
    change(finding)
    errors = SCHEMAS["pinned"].validate(finding, "detection_finding")
    assert any(message in e for e in errors), errors


@pytest.mark.skipif(FULL is None, reason="the full OCSF schema is not beside this checkout")
def test_the_pinned_copy_matches_the_full_schema() -> None:
    assert FULL is not None
    for relative, data in files(FULL).items():
        assert json.loads((PINNED / relative).read_text()) == data, relative
