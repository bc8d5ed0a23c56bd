"""API-spec drift: each finding kind, aggregation and its bounds, the discovery signal escalating
while benign clients (stale links, deprecated calls, shared addresses, shadow-API users) stay
unchallenged, and the standalone report."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors import Fusion, Signal, SubjectContext
from detectors.openapi import load_spec
from detectors.spec_drift import SpecDrift, drift_report
from detectors.spec_index import SpecIndex
from detectors.state import SubjectState
from pipeline.events import GatewayEvent
from pipeline.ingest.normalize import route_template
from pipeline.worker.processor import Processor, StateStore
from tests.unit.conftest import T0_MS, make_event

SHOP = Path(__file__).parent.parent / "fixtures" / "openapi" / "shop.yaml"
SCANNER = "203.0.113.66"
WORDLIST = (
    "admin", ".env", "actuator/health", "swagger.json", "graphql", "internal/users", "debug/vars",
    "backup.zip", "config", "console", "metrics", "server-status", "phpinfo.php", "api-docs",
    "v3/api-docs", "users/export", "admin/users", "private", "test", "staging", "old", "beta",
    "internal/metrics", "jobs", "webhooks", "uploads", "files/list", "logs", "status", "health",
    "keys", "tokens", "settings", "billing/export", "reports/all", "cache", "queue", "search/all",
    "system", "root",
)  # fmt: skip
SHADOW = {"internal/metrics", "debug/vars"}  # they exist: the upstream answers 200


@pytest.fixture(scope="module")
def shop() -> dict[str, Any]:
    return load_spec(SHOP)


@pytest.fixture
def drift(shop: dict[str, Any]) -> SpecDrift:
    return SpecDrift(SpecIndex([shop]))


def event(at_s: float, path: str, **fields: Any) -> GatewayEvent:
    return make_event(
        ts_ms=round(T0_MS + at_s * 1000), path=path, route=route_template(path), **fields
    )


def feed(
    drift: SpecDrift, states: dict[str, SubjectState], e: GatewayEvent
) -> dict[str, Signal | None]:
    """One event as the processor handles it: inspect once, the finding noted on every subject,
    then each subject's update and score."""
    t = e.ts_ms / 1000
    finding = drift.inspect(e)
    out = {}
    for subject in e.subjects():
        state = states.setdefault(subject, SubjectState())
        if finding is not None:
            state.note(drift.name, finding.score, t, finding.kind, finding.reason)
        ctx = SubjectContext(subject, subject.partition(":")[0], t)
        drift.update(state, e, ctx)
        out[subject] = drift.score(state, ctx)
    return out


def worst_action(drift: SpecDrift, events: Iterable[GatewayEvent]) -> dict[str, str]:
    """The strongest action fusion would take on each subject, from this detector alone."""
    fusion, rank = Fusion(), ["allow", "tag", "challenge", "block"]
    states: dict[str, SubjectState] = {}
    worst: dict[str, str] = {}
    for e in events:
        for subject, signal in feed(drift, states, e).items():
            action = fusion.action_for(signal.score) if signal else "allow"
            if rank.index(action) >= rank.index(worst.get(subject, "allow")):
                worst[subject] = action
    return worst


def scan(start_s: float = 0.0, rate: float = 3.0, ip: str = SCANNER) -> Iterator[GatewayEvent]:
    """A discovery run: every fifth request a documented one, the rest the word list."""
    for i, word in enumerate(WORDLIST):
        at = start_s + i / rate
        if i % 5 == 4:
            yield event(at, f"/v1/products/{i}", client_ip=ip)
        status = 200 if word in SHADOW else 405 if word in ("graphql", "webhooks") else 404
        yield event(at + 0.01, f"/v1/{word}", client_ip=ip, status=status)


# --- findings -------------------------------------------------------------------------------


def test_documented_traffic_yields_no_findings(drift: SpecDrift) -> None:
    calls = [
        ("GET", "/v1/products", {"page": "2", "q": "chair", "filter[color]": "red"}),
        ("GET", "/v2/products", {"apikey": "hmac:0123456789abcdef"}),
        ("POST", "/v1/products", {}),
        ("GET", "/v1/products/42", {}),
        ("HEAD", "/v1/products/42", {}),
        ("OPTIONS", "/v1/orders", {}),
        ("GET", "/v1/products/featured", {}),
        ("GET", "/v1/orders", {"from": "2024-01-01", "to": "2024-02-01"}),
        ("GET", "/v1/orders/9f1b6c1e-3a2b-4c5d-9e6f-0a1b2c3d4e5f", {}),
        ("GET", "/v1/files/invoice.pdf", {}),
        ("GET", "/v1/reports/weekly", {}),
        ("GET", "/v1/products/999", {}),  # a 404 on a documented path is an object not found
    ]
    for i, (method, path, query) in enumerate(calls * 20):
        status = 404 if path.endswith("999") else 200
        assert (
            drift.inspect(event(i * 0.1, path, method=method, query=query, status=status)) is None
        )
    assert drift.findings() == []
    assert sum(drift.calls.values()) == len(calls) * 20


def test_shadow_endpoint_and_probe_split_on_the_answer(drift: SpecDrift) -> None:
    for i in range(3):
        found = drift.inspect(event(i, "/v1/internal/metrics", client_ip=f"192.0.2.{i}"))
        assert found is not None and found.kind == "shadow_endpoint"
    probe = drift.inspect(event(5, "/v1/.git/config", status=404))
    assert probe is not None and probe.kind == "unknown_endpoint_probe"
    assert probe.reason == "GET /v1/.git/config answered 404, no documented path"
    shadow, missing = drift.findings()
    assert (shadow.kind, shadow.method, shadow.route, shadow.count) == (
        "shadow_endpoint",
        "GET",
        "/v1/internal/metrics",
        3,
    )
    assert (shadow.first_seen_ms, shadow.last_seen_ms) == (T0_MS, T0_MS + 2000)
    assert shadow.subjects == ["ip:192.0.2.0", "ip:192.0.2.1", "ip:192.0.2.2"]
    assert shadow.statuses == {"200": 3}
    assert (missing.kind, missing.route, missing.statuses) == (
        "unknown_endpoint_probe",
        "/v1/.git/config",
        {"404": 1},
    )


def test_reasons_quote_long_paths_short(drift: SpecDrift) -> None:
    found = drift.inspect(event(0, "/v1/" + "z" * 5000, status=404))
    assert found is not None and len(found.reason) < 200
    assert found.reason.startswith("GET /v1/zzzz") and "…" in found.reason
    [finding] = drift.findings()
    assert len(finding.route) == 256  # findings keep a little more, still bounded


def test_undocumented_paths_are_aggregated_by_route_template(drift: SpecDrift) -> None:
    for i in range(50):
        drift.inspect(event(i, f"/v1/internal/users/{1000 + i}", status=200))
    [finding] = drift.findings()
    assert (finding.route, finding.count) == ("/v1/internal/users/{id}", 50)


def test_undocumented_method(drift: SpecDrift) -> None:
    found = drift.inspect(event(0, "/v1/products/7", method="PUT", status=405))
    assert found is not None and found.kind == "undocumented_method"
    assert found.reason == "PUT not documented on /v1/products/{productId}, answered 405"
    [finding] = drift.findings()
    assert (finding.method, finding.route, finding.documented_methods) == (
        "PUT",
        "/v1/products/{productId}",
        ["DELETE", "GET"],
    )


def test_deprecated_operation_is_reported_not_scored(drift: SpecDrift) -> None:
    assert drift.inspect(event(0, "/v1/products/7", method="DELETE", consumer="c1")) is None
    assert drift.inspect(event(1, "/old/legacy/items")) is None
    legacy, delete = sorted(
        (f for f in drift.findings() if f.kind == "deprecated_operation"), key=lambda f: f.route
    )
    assert (delete.route, delete.operation_id, delete.spec, delete.subjects) == (
        "/v1/products/{productId}",
        "deleteProduct",
        "shop fixture",
        ["consumer:c1"],
    )
    assert legacy.operation_id == "legacyItems"


def test_unknown_parameters_are_named_and_counted(drift: SpecDrift) -> None:
    for i in range(4):
        query = {"q": "x", "debug": "1"} | ({"admin": "true"} if i % 2 else {})
        assert drift.inspect(event(i, "/v1/products", query=query)) is None
    [finding] = drift.findings()
    assert (finding.kind, finding.route, finding.operation_id, finding.count) == (
        "unknown_parameter",
        "/v1/products",
        "listProducts",
        4,
    )
    assert finding.params == {"debug": 4, "admin": 2}


def test_findings_are_json_able(drift: SpecDrift) -> None:
    drift.inspect(event(0, "/v1/products", query={"debug": "1"}))
    drift.inspect(event(1, "/v1/nope", status=404))
    rows = orjson.loads(orjson.dumps([f.as_dict() for f in drift.findings()]))
    assert [r["kind"] for r in rows] == ["unknown_endpoint_probe", "unknown_parameter"]


def test_example_subjects_and_statuses_are_bounded(drift: SpecDrift) -> None:
    for i in range(100):
        drift.inspect(event(i, "/v1/secret", client_ip=f"198.51.100.{i}", status=400 + i))
    [finding] = drift.findings()
    assert finding.count == 100
    assert len(finding.subjects) == 5
    assert len(finding.statuses) == 9 and finding.statuses["other"] == 92


def test_a_flood_of_random_paths_stays_bounded(shop: dict[str, Any]) -> None:
    drift = SpecDrift(SpecIndex([shop], cache_size=500), max_findings_per_kind=100)
    states: dict[str, SubjectState] = {}
    rng = random.Random(11)

    def flood(n: int) -> None:
        for _ in range(n):
            path = f"/v1/{rng.getrandbits(48):x}/{rng.getrandbits(32):x}g"
            status = rng.choice((200, 404, 404, 405))
            feed(drift, states, event(0.001 * rng.random(), path, client_ip=SCANNER, status=status))

    tracemalloc.start()
    try:
        flood(6000)
        after_first = tracemalloc.get_traced_memory()[0]
        flood(6000)
        after_second = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # The second flood adds (nearly) nothing: every structure is already at its bound.
    assert after_second - after_first < 128 * 1024
    assert drift.index.cached() <= 500
    assert len(drift.log) <= 2 * 100
    assert sum(drift.log.totals.values()) == 12_000
    assert sum(drift.log.evicted.values()) > 11_000
    [state] = states.values()
    assert set(state.memo or {}) == {"spec_drift"}  # one fixed-size sketch for the subject


def test_the_most_called_routes_survive_a_flood(drift: SpecDrift) -> None:
    for i in range(200):
        drift.inspect(event(i, "/v1/internal/metrics"))
    for i in range(5000):
        drift.inspect(event(300 + i * 0.01, f"/v1/random-{i}", status=404))
    kept = {(f.kind, f.route): f.count for f in drift.findings()}
    assert kept[("shadow_endpoint", "/v1/internal/metrics")] == 200
    assert len(kept) <= 1 + drift.log.max_per_kind


# --- discovery ------------------------------------------------------------------------------


def test_discovery_escalates_to_challenge_then_block(drift: SpecDrift) -> None:
    states: dict[str, SubjectState] = {}
    fusion = Fusion()
    first: dict[str, float] = {}
    last: Signal | None = None
    for e in scan():
        signal = feed(drift, states, e)[f"ip:{SCANNER}"]
        if signal is None:
            continue
        last = signal
        first.setdefault(fusion.action_for(signal.score), (e.ts_ms - T0_MS) / 1000)
    assert first["challenge"] <= 10.0
    assert first["block"] <= 15.0
    assert last is not None and last.kind == "shadow_endpoint_discovery"
    assert 36 <= int(last.reason.split()[0]) <= 46  # 40 distinct words, a sketch's estimate
    assert "answered 4xx/5xx" in last.reason and "last: GET /v1/root answered 404" in last.reason


def test_method_tampering_is_discovery_too(drift: SpecDrift) -> None:
    events = []
    for i, method in enumerate(["PUT", "PATCH", "TRACE", "CONNECT"] * 8):
        path = [
            "/v1/products",
            "/v1/orders",
            "/v1/products/featured",
            "/v1/reports/daily",
            "/v1/files/a.txt",
            "/old/legacy/items",
            "/v2/orders",
            "/v2/products",
        ][i // 4]
        events.append(event(i * 0.3, path, method=method, status=405))
    assert worst_action(drift, events)["ip:192.0.2.10"] in ("challenge", "block")


def test_discovery_fades_when_the_scan_stops(drift: SpecDrift) -> None:
    states: dict[str, SubjectState] = {}
    for e in scan():
        feed(drift, states, e)
    state = states[f"ip:{SCANNER}"]
    ctx = SubjectContext(f"ip:{SCANNER}", "ip", T0_MS / 1000 + 20)
    assert drift.score(state, ctx) is not None
    later = SubjectContext(f"ip:{SCANNER}", "ip", T0_MS / 1000 + 180)
    assert drift.score(state, later) is None


def test_update_without_inspect_still_knows_undocumented_requests(drift: SpecDrift) -> None:
    state = SubjectState()
    for i, word in enumerate(WORDLIST[:20]):
        e = event(i * 0.2, f"/v1/{word}", status=404)
        drift.update(state, e, SubjectContext("ip:x", "ip", e.ts_ms / 1000))
    signal = drift.score(state, SubjectContext("ip:x", "ip", T0_MS / 1000 + 4))
    assert signal is not None and signal.score >= 0.6


def test_subjects_with_only_documented_traffic_pay_nothing(drift: SpecDrift) -> None:
    states: dict[str, SubjectState] = {}
    for i in range(100):
        feed(drift, states, event(i, f"/v1/products/{i}", consumer="c1", credential="hmac:k"))
    assert all(state.memo is None and state.evidence is None for state in states.values())


def benign(seconds: int, seed: int = 5) -> Iterator[GatewayEvent]:
    """Ten minutes of clients that should never be challenged."""
    rng = random.Random(seed)
    promos = "summer winter spring autumn sale black-friday cyber-monday easter xmas clearance"
    stale = [f"/v1/promo/{name}" for name in promos.split()]
    for second in range(seconds):
        # A polling client whose status link went stale: one undocumented 404 every 5 s.
        if second % 5 == 0:
            yield event(second, "/v1/status", client_ip="192.0.2.50", status=404)
        # A partner still calling the deprecated delete, and the v1 listing with an extra tag.
        yield event(second + 0.2, f"/v1/products/{second}", method="DELETE", consumer="partner")
        yield event(second + 0.3, "/v1/products", query={"utm": "x"}, consumer="partner")
        # A mobile-carrier address: many people, each now and then following one stale promo link.
        for k in range(20):
            at = second + k / 20
            if rng.random() < 0.02:
                yield event(at, rng.choice(stale), client_ip="100.64.0.1", status=404)
            else:
                yield event(at, f"/v1/products/{rng.randrange(5000)}", client_ip="100.64.0.1")
        # An internal tool using undocumented endpoints it is allowed to: all 2xx.
        yield event(second + 0.5, f"/v1/internal/tool-{second % 12}", consumer="backoffice")
        # A developer with a few typos in the first minute.
        if second < 60 and second % 12 == 0:
            yield event(second + 0.7, f"/v1/prodcts-{second}", consumer="dev", status=404)


def test_benign_clients_are_never_challenged(drift: SpecDrift) -> None:
    worst = worst_action(drift, benign(600))
    assert {s: a for s, a in worst.items() if a in ("challenge", "block")} == {}
    # Not even tagged, except perhaps the carrier address, whose promo links add up.
    assert {s for s, a in worst.items() if a == "tag"} <= {"ip:100.64.0.1"}
    kinds = {f.kind for f in drift.findings()}
    assert kinds == {
        "unknown_endpoint_probe",
        "deprecated_operation",
        "unknown_parameter",
        "shadow_endpoint",
    }


def test_a_scan_among_benign_traffic_is_caught(drift: SpecDrift) -> None:
    events = sorted([*benign(120), *scan(start_s=30.0)], key=lambda e: e.ts_ms)
    worst = worst_action(drift, events)
    assert worst[f"ip:{SCANNER}"] == "block"
    assert [s for s, a in worst.items() if a in ("challenge", "block")] == [f"ip:{SCANNER}"]


def test_the_processor_turns_discovery_into_a_decision(drift: SpecDrift) -> None:
    processor = Processor(detectors=[drift], fusion=Fusion(), event_clock=True)
    store = StateStore(1000)
    decisions = []
    events = list(scan())
    for i in range(0, len(events), 10):
        decisions += processor.process(events[i : i + 10], store)
    actions = [(d.subject, d.action, d.detector) for d in decisions]
    assert (f"ip:{SCANNER}", "block", "spec_drift") in actions
    blocked = next(d for d in decisions if d.action == "block")
    assert blocked.updated_at - T0_MS <= 15_000
    assert "distinct undocumented endpoints" in blocked.reasons[0]


# --- report ---------------------------------------------------------------------------------


def test_drift_report(shop: dict[str, Any]) -> None:
    events = sorted([*benign(120), *scan(start_s=30.0)], key=lambda e: e.ts_ms)
    report = drift_report(events, [shop])
    assert orjson.loads(orjson.dumps(report)) == report
    assert report["specs"] == ["shop fixture"]
    assert report["events"] == len(events)
    assert report["documented_operations"] == 19  # 9 operations at /v1 and at /v2, 1 at /old
    uncalled = {(op["method"], op["route"]) for op in report["uncalled_operations"]}
    assert ("GET", "/v1/files/{name}.{ext}") in uncalled
    assert ("GET", "/v1/products") not in uncalled
    assert report["operations_called"] == report["documented_operations"] - len(uncalled)
    kinds = {f["kind"] for f in report["findings"]}
    assert {"shadow_endpoint", "unknown_endpoint_probe", "deprecated_operation"} <= kinds
    [scanner] = report["discovery_subjects"][:1]
    assert scanner["subject"] == f"ip:{SCANNER}" and scanner["action"] == "block"
    assert scanner["first_challenged_ms"] - (T0_MS + 30_000) <= 10_000
    flagged = {s["subject"] for s in report["discovery_subjects"]}
    assert flagged <= {f"ip:{SCANNER}", "ip:100.64.0.1"}
    assert report["finding_totals"]["unknown_endpoint_probe"] >= 30


def test_bad_parameters_are_rejected(shop: dict[str, Any]) -> None:
    index = SpecIndex([shop])
    with pytest.raises(ValueError, match="min_distinct"):
        SpecDrift(index, min_distinct=10, full_distinct=5)
    with pytest.raises(ValueError, match="window_s"):
        SpecDrift(index, window_s=0)
    with pytest.raises(ValueError, match="min_share"):
        SpecDrift(index, min_share=0)
