"""Alert building in the worker: decision changes and findings become versioned, schema-valid
alerts with stable ids, "would" titles in shadow mode, aggregated findings, MITRE technique ids,
detector versions and request ids as evidence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from detectors import Fusion, RateAnomaly, default_detectors
from detectors.policy import Policy, RoutePolicy
from pipeline.alerts import Alert
from pipeline.config import Mode
from pipeline.events import GatewayEvent
from pipeline.mitre import BY_CODE, TECHNIQUES, attack_ids
from pipeline.worker.alerting import REPORTED, AlertCollector
from pipeline.worker.processor import Processor, StateStore
from tests.unit.conftest import T0_MS, make_event

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "pipeline" / "schemas" / "alert.schema.json"
WALL = 1_800_000_000_000
STUFFER = "198.51.100.7"
SCANNER = "203.0.113.5"
SQLI = "1' UNION SELECT password FROM users--"


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def processor(mode: Mode = "enforce", policy: Policy | None = None) -> Processor:
    return Processor(
        detectors=default_detectors(), fusion=Fusion(), mode=mode, policy=policy or Policy()
    )


def run(
    p: Processor,
    events: list[GatewayEvent],
    *,
    store: StateStore | None = None,
    collector: AlertCollector | None = None,
    wall_ms: int = WALL,
) -> tuple[list[Alert], AlertCollector]:
    store = store if store is not None else StateStore(10_000)
    collector = collector if collector is not None else AlertCollector(p, store, partition=3)
    collector.begin(events)
    p.process(events, store, wall_ms=wall_ms, report=collector)
    return collector.take(wall_ms), collector


def stuffing(n: int = 20, start_s: float = 0.0) -> list[GatewayEvent]:
    return [
        make_event(
            request_id=f"login-{i}",
            ts_ms=round(T0_MS + (start_s + i * 0.2) * 1000),
            client_ip=STUFFER,
            method="POST",
            path="/v1/auth/login",
            route="/v1/auth/login",
            status=401,
            node="kong-node-2",
            service="accounts",
            user_agent="python-requests/2.31",
        )
        for i in range(n)
    ]


def payloads(n: int, start_ms: int = T0_MS, every_ms: int = 1) -> list[GatewayEvent]:
    return [
        make_event(
            request_id=f"sqli-{start_ms + i * every_ms}",
            ts_ms=start_ms + i * every_ms,
            client_ip=SCANNER,
            path="/v1/search",
            route="/v1/search",
            query={"q": SQLI},
            user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        )
        for i in range(n)
    ]


def test_decision_change_alert_has_every_field(validator) -> None:
    p = processor("enforce")
    alerts, _ = run(p, stuffing())
    [alert] = [a for a in alerts if a.kind == "decision"]
    assert alert.schema_version == "1.1"
    assert alert.id.startswith("gw-") and len(alert.id) == 27
    assert alert.subject == f"ip:{STUFFER}" and alert.scope == "ip"
    assert alert.action == "block" and alert.mode == "enforce" and alert.enforced
    assert alert.title == f"block ip:{STUFFER}: credential stuffing"
    assert alert.severity == "high"
    assert alert.detector == "bruteforce" and alert.score >= 0.85
    assert (alert.gateway, alert.node, alert.service, alert.route) == (
        "kong",
        "kong-node-2",
        "accounts",
        "/v1/auth/login",
    )
    assert alert.client_ip == STUFFER
    assert T0_MS <= alert.event_time <= T0_MS + 4_000 and alert.emit_time == WALL
    assert alert.last_seen == alert.event_time
    assert alert.expires_at == WALL + 600_000
    top = alert.reasons[0]
    assert (top.detector, top.code, top.feature, top.limit) == (
        "bruteforce",
        "credential_stuffing",
        "failed_logins",
        5.0,
    )
    assert top.value is not None and top.value >= 5 and "failed logins" in top.text
    assert [r.score for r in alert.reasons] == sorted(
        (r.score for r in alert.reasons), reverse=True
    )
    assert alert.attack == ["T1110.004"]
    assert alert.detector_versions["bruteforce"] == "1" and alert.detector_versions["fusion"] == "1"
    assert set(alert.detector_versions) == {r.detector for r in alert.reasons} | {"fusion"}
    assert alert.model_version == p.model_version
    # Evidence: the attacker's own latest requests, no one else's.
    assert 1 <= len(alert.evidence) <= 5
    assert set(alert.evidence) <= {f"login-{i}" for i in range(20)}
    assert "login-19" in alert.evidence
    validator.validate(json.loads(alert.to_json()))
    assert Alert.from_json(alert.to_json()) == alert


@pytest.mark.parametrize(
    ("mode", "title", "enforced"),
    [
        ("shadow", f"would block ip:{STUFFER}: credential stuffing", False),
        ("log", f"would block ip:{STUFFER}: credential stuffing", False),
        ("challenge", f"challenge ip:{STUFFER} (would block): credential stuffing", True),
        ("enforce", f"block ip:{STUFFER}: credential stuffing", True),
    ],
)
def test_title_says_what_the_mode_lets_the_gateway_do(
    mode: Mode, title: str, enforced: bool, validator
) -> None:
    alerts, _ = run(processor(mode), stuffing())
    [alert] = [a for a in alerts if a.kind == "decision"]
    assert (alert.title, alert.enforced, alert.mode, alert.action) == (
        title,
        enforced,
        mode,
        "block",
    )
    validator.validate(json.loads(alert.to_json()))


def test_route_policy_mode_reaches_the_alert() -> None:
    policy = Policy(routes={"/v1/auth": RoutePolicy(mode="shadow")})
    alerts, _ = run(processor("enforce", policy), stuffing())
    [alert] = [a for a in alerts if a.kind == "decision"]
    assert alert.mode == "shadow" and alert.title.startswith("would block")


def test_only_changes_are_alerts_not_refreshes() -> None:
    p = processor()
    store = StateStore(1000)
    first, collector = run(p, stuffing(), store=store)
    assert [a.action for a in first if a.kind == "decision"] == ["block"]
    # Past half-life the standing block is refreshed (a decision written), but nothing changed.
    half = WALL + 300_000
    decisions = p.process(stuffing(5, start_s=5.0), store, wall_ms=half, report=collector)
    assert [d.action for d in decisions] == ["block"]
    assert [a for a in collector.take(half) if a.kind == "decision"] == []
    # Once it has expired (the refresh moved its expiry on), blocking again is a change again.
    later = half + 600_000
    collector.begin(stuffing(5, start_s=6.0))
    p.process(stuffing(5, start_s=6.0), store, wall_ms=later, report=collector)
    assert [a.action for a in collector.take(later) if a.kind == "decision"] == ["block"]


def test_redelivered_envelopes_give_the_same_ids() -> None:
    events = stuffing() + payloads(30, start_ms=T0_MS + 5_000)
    first, _ = run(processor(), events)
    # A worker restarted after a crash sees the same envelope again (fresh memory, later clock).
    again, _ = run(processor(), events, wall_ms=WALL + 42_000)
    assert sorted(a.id for a in first) == sorted(a.id for a in again)
    assert {a.kind for a in first} == {"decision", "finding"}
    assert len({a.id for a in first}) == len(first)


def test_a_scanners_5000_payloads_are_one_alert_with_a_count(validator) -> None:
    alerts, _ = run(processor(), payloads(5_000, every_ms=5))
    findings = [a for a in alerts if a.kind == "finding"]
    assert len(findings) == 1
    [alert] = findings
    assert alert.count == 5_000 and alert.subject == f"ip:{SCANNER}"
    assert alert.detector == "injection" and alert.reasons[0].code == "sqli"
    assert alert.reasons[0].value == 5_000 and alert.reasons[0].feature == "requests"
    assert alert.attack == ["T1190"]
    assert alert.evidence == [f"sqli-{T0_MS + i * 5}" for i in range(5)]
    assert alert.event_time == T0_MS and alert.last_seen == T0_MS + 4_999 * 5
    assert alert.title == f"SQL injection attempt from ip:{SCANNER} on /v1/search: 5000 requests"
    assert alert.detector_versions == {"injection": "1"}
    # The subject is blocked by then: the finding says what is being done about it.
    assert alert.action == "block" and alert.enforced
    [decided] = [a for a in alerts if a.kind == "decision"]
    assert decided.title == f"block ip:{SCANNER}: SQL injection"
    validator.validate(json.loads(alert.to_json()))


def test_a_window_is_reported_when_it_opens_and_again_with_its_final_count() -> None:
    p = processor()
    store = StateStore(1000)
    collector = AlertCollector(p, store, partition=0, window_s=60.0)
    opened, _ = run(p, payloads(10, every_ms=100), store=store, collector=collector)
    [first] = [a for a in opened if a.kind == "finding"]
    assert first.count == 10
    # More of the same window in later envelopes: nothing new until the window closes...
    more, _ = run(
        p, payloads(20, start_ms=T0_MS + 10_000, every_ms=100), store=store, collector=collector
    )
    assert [a for a in more if a.kind == "finding"] == []
    # ...which an envelope 60 s + grace later (any subject's) does: same id, final count.
    quiet = [make_event(request_id="later", ts_ms=T0_MS + 66_000, client_ip="192.0.2.99")]
    closed, _ = run(p, quiet, store=store, collector=collector)
    [final] = [a for a in closed if a.kind == "finding"]
    assert final.id == first.id and final.count == 30
    assert final.evidence == first.evidence and final.last_seen == T0_MS + 10_000 + 1_900
    # The next minute is a new window with a new id.
    next_minute, _ = run(p, payloads(1, start_ms=T0_MS + 70_000), store=store, collector=collector)
    [new] = [a for a in next_minute if a.kind == "finding"]
    assert new.id != first.id and new.count == 1


def test_an_idle_partition_reports_closed_windows_on_the_wall_clock() -> None:
    p = processor()
    store = StateStore(1000)
    collector = AlertCollector(p, store, partition=0)
    run(p, payloads(3), store=store, collector=collector, wall_ms=WALL)
    run(p, payloads(4, start_ms=T0_MS + 1_000), store=store, collector=collector, wall_ms=WALL)
    assert collector.sweep(WALL + 10_000) == []  # the window is still open
    [final] = collector.sweep(WALL + 70_000)
    assert final.count == 7 and final.emit_time == WALL + 70_000
    assert collector.sweep(WALL + 200_000) == []


def test_pii_masked_at_ingest_is_a_finding_about_the_route(validator) -> None:
    events = [
        make_event(
            request_id=f"pii-{i}",
            ts_ms=T0_MS + i,
            client_ip=f"192.0.2.{i}",
            path="/v1/users/[email]",
            route="/v1/users/{id}",
            pii=["email"],
        )
        for i in range(3)
    ]
    alerts, _ = run(processor("shadow"), events)
    [alert] = alerts
    assert alert.kind == "finding" and alert.subject == "route:/v1/users/{id}"
    assert alert.scope == "route" and alert.count == 3 and alert.client_ip is None
    assert alert.reasons[0].code == "pii_in_url" and alert.detector == "redaction"
    assert "email" in alert.reasons[0].text and alert.severity == "low"
    assert alert.evidence == ["pii-0", "pii-1", "pii-2"] and alert.attack == []
    assert alert.action == "allow" and not alert.enforced
    validator.validate(json.loads(alert.to_json()))


def test_secret_file_probe_is_reported_with_its_technique() -> None:
    events = [
        make_event(
            request_id="env", client_ip="192.0.2.44", path="/.env", route="/.env", status=404
        )
    ]
    alerts, _ = run(processor(), events)
    [alert] = [a for a in alerts if a.kind == "finding"]
    assert alert.reasons[0].code == "secret_file" and alert.attack == ["T1595.003"]
    assert alert.evidence == ["env"] and alert.subject == "ip:192.0.2.44"


def test_findings_leave_evidence_for_a_later_decision() -> None:
    """Request ids of a subject's earlier findings are kept (a tiny ring) and cited when a
    decision about it comes in a later envelope."""
    p = processor()
    store = StateStore(1000)
    collector = AlertCollector(p, store, partition=0)
    scanner = "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)"
    probe = make_event(request_id="nmap-1", client_ip="192.0.2.50", user_agent=scanner)
    first, _ = run(p, [probe], store=store, collector=collector)
    assert [a.kind for a in first] == ["decision", "finding"]
    assert first[0].evidence == ["nmap-1"]
    second = make_event(
        request_id="nmap-2", ts_ms=T0_MS + 1_000, client_ip="192.0.2.50", user_agent=scanner
    )
    later, _ = run(p, [second], store=store, collector=collector)
    [decision] = [a for a in later if a.kind == "decision"]
    assert decision.action == "block" and decision.evidence == ["nmap-1", "nmap-2"]


def test_the_evidence_ring_is_bounded() -> None:
    p = processor()
    collector = AlertCollector(p, StateStore(100), evidence=3, max_ring_subjects=2)
    for i in range(10):
        collector._remember("ip:192.0.2.1", [f"r{i}", f"r{i}"])
    assert collector._ring["ip:192.0.2.1"] == ["r7", "r8", "r9"]  # the latest, each once
    collector._remember("ip:192.0.2.2", ["x"])
    collector._remember("ip:192.0.2.3", ["y"])
    assert list(collector._ring) == ["ip:192.0.2.2", "ip:192.0.2.3"]  # least recent went


def test_model_version_follows_the_detector_versions(monkeypatch) -> None:
    before = processor().model_version
    assert before == processor().model_version
    monkeypatch.setattr(RateAnomaly, "version", "2")
    bumped = processor()
    assert bumped.detector_versions["rate"] == "2" and bumped.model_version != before


def test_every_detector_has_a_version() -> None:
    for detector in default_detectors():
        assert isinstance(detector.version, str) and detector.version, detector.name


def test_mitre_table() -> None:
    assert attack_ids(["brute_force"]) == ["T1110.001"]
    assert attack_ids(["credential_stuffing"]) == ["T1110.004"]
    assert attack_ids(["distributed_credential_stuffing"]) == ["T1110.003", "T1110.004"]
    assert attack_ids(["flood"]) == ["T1499.003"]
    assert attack_ids(["key_sharing"]) == ["T1078"]
    assert attack_ids(["scanner", "admin_probe"]) == ["T1595.002", "T1595.003"]
    assert attack_ids(["sqli", "xss", "lfi", "rce", "ssrf"]) == ["T1190"]
    assert attack_ids(["scraping"]) == ["T1119", "T1213"]
    assert attack_ids(["behaviour_anomaly", "pii_in_url", "no-such-code"]) == []
    # Every id is named, with its tactic, and is a real ATT&CK id shape.
    for code, ids in BY_CODE.items():
        for technique in ids:
            assert technique in TECHNIQUES, (code, technique)
    for technique, (name, tactic, tactic_name) in TECHNIQUES.items():
        assert technique[:2] == "T1" and tactic.startswith("TA00") and name and tactic_name


def test_reported_codes_are_codes_detectors_emit() -> None:
    from detectors.injection import KINDS

    emitted = set(KINDS) | {
        "secret_file",
        "admin_probe",
        "scanner",
        "shadow_endpoint",
        "undocumented_method",
        "pii_in_url",
    }
    assert set(REPORTED) == emitted


def test_schema_file_is_generated_from_the_model() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "pipeline.alerts"], check=True, capture_output=True, cwd=ROOT
    ).stdout
    assert json.loads(generated) == json.loads(SCHEMA_PATH.read_text()), (
        "regenerate it: python -m pipeline.alerts > pipeline/schemas/alert.schema.json"
    )


def test_a_1_0_record_still_validates(validator) -> None:
    old = {
        "schema_version": "1.0",
        "id": "gw-1",
        "kind": "decision",
        "event_time": 1,
        "emit_time": 2,
        "subject": "ip:192.0.2.1",
        "scope": "ip",
        "action": "block",
        "mode": "shadow",
        "enforced": False,
        "title": "would block ip:192.0.2.1",
        "severity": "high",
        "score": 0.9,
        "detector": "rate",
    }
    validator.validate(old)
    assert Alert.model_validate(old).count == 1
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(old | {"count": 0})


def test_reporting_alerts_changes_no_decision() -> None:
    """The same traffic (demo traffic with its stuffing run and flood) decides exactly alike with
    and without an alert collector listening, and the collector does hear of the changes."""
    import orjson

    from pipeline.demo.traffic import TrafficModel
    from pipeline.ingest.kong import KongParser
    from pipeline.ingest.redaction import Redactor

    model = TrafficModel(seed=5, consumers=200, browsers=300, nats=3)
    parser = KongParser(Redactor(b"unit"))
    events: list[GatewayEvent] = []
    now_ms = T0_MS
    while len(events) < 20_000:
        if len(events) > 5_000:
            model.start_attack()
        now_ms += 100
        events.extend(parser.parse_body(orjson.dumps(model.tick(now_ms, 0.1))).events)
    plain, reported = processor(), processor()
    plain_store, reported_store = StateStore(50_000), StateStore(50_000)
    collector = AlertCollector(reported, reported_store)
    without, with_, alerts = [], [], []
    for i in range(0, len(events), 500):
        batch = events[i : i + 500]
        wall = batch[-1].ts_ms
        without += [d.model_dump() for d in plain.process(batch, plain_store, wall_ms=wall)]
        collector.begin(batch)
        decided = reported.process(batch, reported_store, wall_ms=wall, report=collector)
        with_ += [d.model_dump() for d in decided]
        alerts += collector.take(wall)
    assert without == with_ and len(without) > 0
    changed = [a for a in alerts if a.kind == "decision"]
    assert changed and {a.subject for a in changed} <= {d["subject"] for d in with_}
