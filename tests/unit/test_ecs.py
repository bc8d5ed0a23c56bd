"""The Elastic sink's documents against ECS 9.4.0 (pinned in tests/fixtures/ecs): every field
exists with a compatible type, the categorisation fields use allowed values (each event.type one
its categories expect), and MITRE ids land in threat.*."""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.alerts import Alert, OperatorAction
from sinks.ecs import ecs_document
from tests.sinklib import make_alert

ECS = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "ecs" / "ecs_fields.json").read_text()
)
TEXT_TYPES = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text"}


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def fits(kind: str, value: Any) -> bool:
    if kind in TEXT_TYPES:
        return isinstance(value, str)
    if kind == "date":
        return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
    if kind == "long":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in ("float", "scaled_float", "double"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
        return True
    return False


def variants() -> list[Alert]:
    base = make_alert(4)
    return [
        base,
        make_alert(3, mode="enforce"),  # ip, enforced block
        make_alert(5, code="sqli"),  # a finding on a consumer
        make_alert(8, code="flood"),
        base.model_copy(update={"subject": "ip:203.0.113.0/24", "scope": "range"}),
        base.model_copy(update={"subject": "ip:2001:db8::7", "attack": ["T1595.003", "T9999"]}),
        base.model_copy(update={"subject": "key:9f2c", "scope": "key", "attack": []}),
        base.model_copy(update={"action": "allow", "evidence": [], "route": None}),
        base.model_copy(
            update={
                "kind": "operator",
                "action": "allow",
                "reasons": [],
                "attack": [],
                "operator": OperatorAction(action="override_allow", actor="alice", reason="fp"),
            }
        ),
    ]


@pytest.mark.parametrize("alert", variants(), ids=lambda a: f"{a.kind}-{a.scope}-{a.action}")
def test_every_field_is_ecs_with_its_type_and_allowed_values(alert: Alert) -> None:
    doc = flatten(ecs_document(alert, data_stream="logs-gatewatch.alerts-default"))
    for name, value in doc.items():
        assert name in ECS, f"{name} is not an ECS 9.4 field"
        spec = ECS[name]
        if "array" in spec["normalize"]:
            assert isinstance(value, list), f"{name} is an array in ECS"
        values = value if isinstance(value, list) else [value]
        assert values and all(fits(spec["type"], v) for v in values), (name, spec["type"], value)
    assert doc["event.kind"] in ECS["event.kind"]["allowed_values"]
    categories = ECS["event.category"]["allowed_values"]
    assert set(doc["event.category"]) <= set(categories)
    expected = {t for c in doc["event.category"] for t in categories[c]}
    assert set(doc["event.type"]) <= set(ECS["event.type"]["allowed_values"]) & expected
    assert doc["event.outcome"] in ECS["event.outcome"]["allowed_values"]
    assert Alert.model_validate_json(doc["event.original"]) == alert


def test_mitre_ids_fill_threat() -> None:
    alert = make_alert(4).model_copy(update={"attack": ["T1110.004", "T1110.001", "T1499.003"]})
    threat = ecs_document(alert)["threat"]
    assert threat["framework"] == "MITRE ATT&CK"
    assert threat["technique"]["id"] == ["T1110", "T1499"]
    assert threat["technique"]["name"] == ["Brute Force", "Endpoint Denial of Service"]
    assert threat["technique"]["subtechnique"]["id"] == ["T1110.004", "T1110.001", "T1499.003"]
    assert threat["technique"]["subtechnique"]["name"] == [
        "Credential Stuffing",
        "Password Guessing",
        "Application Exhaustion Flood",
    ]
    assert threat["tactic"] == {
        "id": ["TA0006", "TA0040"],
        "name": ["Credential Access", "Impact"],
        "reference": [
            "https://attack.mitre.org/tactics/TA0006/",
            "https://attack.mitre.org/tactics/TA0040/",
        ],
    }


def test_what_the_gateway_did_is_the_event_type() -> None:
    shadow = ecs_document(make_alert(3))  # would block, shadow mode
    enforced = ecs_document(make_alert(3, mode="enforce"))
    assert (shadow["event"]["type"], shadow["event"]["action"]) == (["info"], "would-block")
    assert (enforced["event"]["type"], enforced["event"]["action"]) == (["denied"], "block")
    assert "authentication" in shadow["event"]["category"]  # T1110: a credential attack


def test_only_a_single_address_is_an_ip_field() -> None:
    one = ecs_document(make_alert(4))
    wide = ecs_document(
        make_alert(4).model_copy(update={"subject": "ip:203.0.113.0/24", "scope": "range"})
    )
    assert one["source"] == {"address": "203.0.113.4", "ip": "203.0.113.4"}
    assert wide["source"] == {"address": "203.0.113.0/24"}  # a CIDR in an ip field fails mapping
    assert "related" not in wide
