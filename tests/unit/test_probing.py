"""Sensitive-file and admin probing: scanners are blocked within a few requests; real routes,
browser noise and reloads are not probes."""

from __future__ import annotations

import pytest

from detectors.base import Signal, SubjectContext
from detectors.probing import MEDIUM, STRONG, WEAK, SensitiveProbing, load_restricted_files
from detectors.state import SubjectState
from pipeline.events import GatewayEvent
from pipeline.ingest.kong import KongParser
from tests.unit.conftest import T0_MS, body, kong_entry, make_event

PROBER = "198.51.100.23"
SCAN = [
    "/.env",
    "/.git/config",
    "/wp-admin/setup-config.php",
    "/phpmyadmin/",
    "/backup.sql",
    "/.aws/credentials",
    "/server-status",
    "/actuator/env",
]


@pytest.fixture
def detector() -> SensitiveProbing:
    return SensitiveProbing()


def probe(
    path: str, status: int = 404, *, at_s: float = 0.0, ip: str = PROBER, **fields: object
) -> GatewayEvent:
    return make_event(
        ts_ms=T0_MS + round(at_s * 1000),
        client_ip=ip,
        path=path,
        route=fields.pop("route", path),
        status=status,
        **fields,
    )


def run(detector: SensitiveProbing, events: list[GatewayEvent]) -> tuple[SubjectState, list]:
    """Inspect each event as the processor does, noting findings on the address's state."""
    state, scores = SubjectState(), []
    for event in events:
        t = event.ts_ms / 1000.0
        finding = detector.inspect(event)
        if finding is not None:
            state.note(finding.detector, finding.score, t, finding.kind, finding.reason)
        scores.append(judge(detector, state, t))
    return state, scores


def judge(detector: SensitiveProbing, state: SubjectState, now: float) -> Signal | None:
    return detector.score(state, SubjectContext(f"ip:{PROBER}", "ip", now))


def action(signal: Signal | None) -> str:
    score = 0.0 if signal is None else signal.score
    return "block" if score >= 0.85 else "challenge" if score >= 0.6 else "allow/tag"


def test_a_run_of_probes_is_blocked_within_a_few_requests(detector: SensitiveProbing) -> None:
    events = [probe(p, at_s=i * 0.3) for i, p in enumerate(SCAN)]
    _, scores = run(detector, events)
    actions = [action(s) for s in scores]
    assert actions[0] == "allow/tag"  # one 404 for /.env could be a curious person
    assert "block" in actions[:4]
    last = scores[-1]
    assert last is not None and last.kind == "sensitive_file_probing"
    assert last.reason == (
        "8 sensitive-file/admin probes, last '/actuator/env' -> 404 (Spring actuator)"
    )


def test_a_leaked_secret_weighs_more_than_a_missing_one(detector: SensitiveProbing) -> None:
    missing = detector.inspect(probe("/.env", 404))
    leaked = detector.inspect(probe("/.env", 200, ip="198.51.100.24"))
    assert missing is not None and leaked is not None
    assert leaked.score > missing.score
    _, [signal] = run(SensitiveProbing(), [probe("/.git/config", 200)])
    assert action(signal) == "challenge"


@pytest.mark.parametrize(
    "path",
    [
        "/favicon.ico",
        "/robots.txt",
        "/apple-touch-icon-precomposed.png",
        "/sitemap.xml",
        "/.well-known/security.txt",
        "/.well-known/openid-configuration",
        "/v1/products/{id}",
        "/v1/users/{id}/profile",
        "/v1/settings",
        "/v1/auth/login",
        "/v1/search",
        "/static/app.3f2a1c.js",
        "/v1/exports/{id}.zip",
        "/v1/reports/2024-01.csv",
        "/v1/processes/{id}",
        "/api/v1/idea-board",
    ],
)
def test_noise_and_ordinary_routes_are_nothing(detector: SensitiveProbing, path: str) -> None:
    assert detector.classify(path) is None
    assert detector.inspect(probe(path, 404)) is None


@pytest.mark.parametrize(
    ("path", "tier"),
    [
        ("/.env", STRONG),
        ("/api/.env.production", STRONG),
        ("/%2eenv", STRONG),  # percent-encoded
        ("/%252e%2565nv", STRONG),  # twice
        ("//.ENV", STRONG),  # case and doubled slashes
        ("/.git/HEAD", STRONG),
        ("/.svn/entries", STRONG),
        ("/.ssh/id_rsa", STRONG),
        ("/server-status", STRONG),
        ("/actuator/heapdump", STRONG),
        ("/wp-admin/", MEDIUM),
        ("/phpmyadmin/index.php", MEDIUM),
        ("/actuator", MEDIUM),
        ("/db.sql.gz", MEDIUM),
        ("/index.php~", MEDIUM),
        ("/config.php.bak", MEDIUM),
        ("/backup.tar.gz", MEDIUM),
        ("/.gitignore", MEDIUM),
        ("/composer.lock", MEDIUM),
        ("/admin", WEAK),
        ("/administrator/", WEAK),
    ],
)
def test_probe_tiers(detector: SensitiveProbing, path: str, tier: int) -> None:
    found = detector.classify(path)
    assert found is not None and found.tier == tier


def test_every_crs_restricted_file_is_a_probe(detector: SensitiveProbing) -> None:
    names = load_restricted_files()
    assert len(names) > 500
    for name in names:
        found = detector.classify("/" + name.lstrip("/"))
        assert found is not None and found.tier >= MEDIUM, name


def test_health_endpoint_of_actuator_is_not_a_probe(detector: SensitiveProbing) -> None:
    assert detector.classify("/actuator/health") is None
    assert detector.classify("/actuator/info") is None


def test_a_real_admin_api_is_learned_and_not_flagged(detector: SensitiveProbing) -> None:
    """An API with /admin routes its admin consumer uses: successes are never findings, and once
    learned, its 404s (a deleted user) are not either; a stranger's scan still is."""
    admin = [
        probe(f"/admin/users/{i}", 200, route="/admin/users/{id}", at_s=i, consumer="backoffice")
        for i in range(10)
    ]
    assert [detector.inspect(e) for e in admin] == [None] * 10
    assert detector.known("/admin/users/{id}")
    gone = probe("/admin/users/999", 404, route="/admin/users/{id}", consumer="backoffice")
    assert detector.inspect(gone) is None
    assert detector.inspect(probe("/admin/users/5", 404, route="/admin/users/{id}")) is None
    assert detector.inspect(probe("/wp-admin/", 404)) is not None


def test_authenticated_success_on_a_listed_file_is_not_a_probe(
    detector: SensitiveProbing,
) -> None:
    e = probe("/v1/package.json", 200, consumer="ci-bot")
    assert detector.classify(e.route) is not None
    assert detector.inspect(e) is None


def test_a_public_asset_served_to_many_clients_is_learned(detector: SensitiveProbing) -> None:
    """An SPA's /config.json matches the CRS list; browsers everywhere get it with a 200."""
    hits = [detector.inspect(probe("/config.json", 200, ip=f"192.0.2.{i}")) for i in range(1, 40)]
    assert hits[0] is not None and hits[0].score <= 0.2
    assert detector.known("/config.json")
    assert hits[-1] is None


def test_secrets_are_never_learned(detector: SensitiveProbing) -> None:
    for i in range(1, 40):
        detector.inspect(probe("/.env", 200, ip=f"192.0.2.{i}", consumer=f"c{i}"))
    assert detector.inspect(probe("/.env", 200, ip="198.51.100.99")) is not None


def test_failed_probes_teach_nothing(detector: SensitiveProbing) -> None:
    for i in range(1, 60):
        detector.inspect(probe("/wp-login.php", 404, ip=f"203.0.113.{i}", consumer=f"c{i}"))
    assert not detector.known("/wp-login.php")


def test_a_reload_is_not_a_second_probe(detector: SensitiveProbing) -> None:
    assert detector.inspect(probe("/admin", 404, at_s=0)) is not None
    assert detector.inspect(probe("/admin", 404, at_s=10)) is None
    assert detector.inspect(probe("/admin", 404, at_s=400)) is not None  # judged on event time


def test_evidence_fades(detector: SensitiveProbing) -> None:
    state, _ = run(detector, [probe(p, at_s=i) for i, p in enumerate(SCAN[:3])])
    assert judge(detector, state, T0_MS / 1000 + 3) is not None
    assert judge(detector, state, T0_MS / 1000 + 7200) is None


def test_memory_is_bounded_under_a_unique_path_scan() -> None:
    detector = SensitiveProbing(max_routes=50, max_recent=100, max_cache=200)
    for i in range(3_000):
        path = f"/backup-{i}.sql"
        detector.inspect(probe(path, 200 if i % 2 else 404, at_s=i * 0.01, ip=f"10.0.{i % 250}.1"))
    assert len(detector._cache) <= 200
    assert len(detector._recent) <= 100
    assert len(detector._routes) <= 50


def test_through_the_kong_parser(parser: KongParser, detector: SensitiveProbing) -> None:
    entry = kong_entry("3.8")
    entry["request"]["uri"] = "/.git/config"
    entry["request"]["url"] = "http://example.com/.git/config"
    entry["request"]["querystring"] = {}
    entry["response"]["status"] = 404
    [event] = parser.parse_body(body(entry)).events
    finding = detector.inspect(event)
    assert finding is not None and finding.kind == "secret_file"
    assert "'/.git/config' -> 404" in finding.reason


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        SensitiveProbing(secret_weight=0.0)
    with pytest.raises(ValueError):
        SensitiveProbing(medium_weight=0.9, secret_weight=0.5)
    with pytest.raises(ValueError):
        SensitiveProbing(learn_clients=65)
    with pytest.raises(ValueError):
        SensitiveProbing(max_cache=0)


def test_through_the_processor() -> None:
    from detectors import Fusion
    from pipeline.worker.processor import Processor, StateStore

    processor = Processor(
        detectors=[SensitiveProbing()], fusion=Fusion(), mode="enforce", event_clock=True
    )
    scan = [probe(p, at_s=i * 0.2) for i, p in enumerate(SCAN)]
    admin = [
        probe(
            f"/admin/users/{i}",
            200,
            route="/admin/users/{id}",
            at_s=i,
            ip="192.0.2.8",
            consumer="backoffice",
        )
        for i in range(30)
    ]
    browser = [probe("/favicon.ico", 404, at_s=i * 30, ip="192.0.2.9") for i in range(10)]
    events = sorted([*scan, *admin, *browser], key=lambda e: e.ts_ms)
    store = StateStore(max_subjects=100)
    decisions = []
    for i in range(0, len(events), 16):  # envelope-sized batches, as a worker gets them
        decisions.extend(processor.process(events[i : i + 16], store))
    final = {d.subject: d for d in sorted(decisions, key=lambda d: d.updated_at)}
    assert final[f"ip:{PROBER}"].action == "block"
    assert final[f"ip:{PROBER}"].detector == "probing"
    assert set(final) == {f"ip:{PROBER}"}
