"""Processor: events in, decisions out (escalations and half-life refreshes only), no I/O."""

from __future__ import annotations

import ipaddress
import random

import pydantic
import pytest

from detectors import AuthRoutes, Fusion, SubjectContext, default_detectors
from detectors.state import SubjectState
from pipeline.decisions import Decision
from pipeline.events import GatewayEvent
from pipeline.worker.processor import (
    DECISION_TTL_S,
    Processor,
    StateStore,
    range_subject,
)
from tests.unit.conftest import T0_MS, make_event

WALL = 1_800_000_000_000  # decision clock, independent of event time
ATTACKER = "198.51.100.7"


@pytest.fixture
def processor() -> Processor:
    return Processor(detectors=default_detectors(), fusion=Fusion(), mode="enforce")


@pytest.fixture
def store() -> StateStore:
    return StateStore(max_subjects=1000)


def failed_logins(n: int, start_s: float = 0.0, every_s: float = 0.2) -> list[GatewayEvent]:
    """Credential stuffing: one address, many accounts, nearly every attempt refused."""
    return [
        make_event(
            ts_ms=round(T0_MS + (start_s + i * every_s) * 1000),
            client_ip=ATTACKER,
            method="POST",
            path="/v1/auth/login",
            route="/v1/auth/login",
            status=401,
        )
        for i in range(n)
    ]


def final(decisions: list[Decision]) -> dict[str, Decision]:
    """The last decision per subject of one batch (what ends up in Redis)."""
    return {d.subject: d for d in decisions}


def test_credential_stuffing_is_blocked(processor: Processor, store: StateStore) -> None:
    [decision] = final(processor.process(failed_logins(20), store, wall_ms=WALL)).values()
    assert decision.subject == f"ip:{ATTACKER}"
    assert decision.action == "block"
    assert decision.score >= 0.85
    assert decision.detector == "bruteforce"
    assert "failed logins" in decision.reasons[0]
    assert decision.mode == "enforce"
    assert decision.model_version == processor.model_version
    assert decision.updated_at == WALL
    assert decision.expires_at - decision.updated_at == 600_000


def test_standing_decision_is_not_repeated(processor: Processor, store: StateStore) -> None:
    first = processor.process(failed_logins(20), store, wall_ms=WALL)
    assert [d.action for d in final(first).values()] == ["block"]
    # More of the same within the TTL, before half-life: the gateway already has it.
    for k in range(1, 5):
        more = failed_logins(10, start_s=4.0 * k)
        assert processor.process(more, store, wall_ms=WALL + k * 60_000) == []


def test_standing_decision_is_refreshed_after_half_life(
    processor: Processor, store: StateStore
) -> None:
    processor.process(failed_logins(20), store, wall_ms=WALL)
    half = WALL + DECISION_TTL_S["block"] * 1000 // 2
    assert processor.process(failed_logins(5, start_s=4.0), store, wall_ms=half - 1) == []
    [refresh] = processor.process(failed_logins(5, start_s=5.0), store, wall_ms=half)
    assert (refresh.action, refresh.updated_at, refresh.expires_at) == (
        "block",
        half,
        half + 600_000,
    )
    # The refresh starts a new half-life.
    assert processor.process(failed_logins(5, start_s=6.0), store, wall_ms=half + 1000) == []


def test_expired_decision_is_issued_again(processor: Processor, store: StateStore) -> None:
    processor.process(failed_logins(20), store, wall_ms=WALL)
    [again] = processor.process(failed_logins(5, start_s=4.0), store, wall_ms=WALL + 600_000)
    assert again.action == "block" and again.updated_at == WALL + 600_000


def test_escalation_is_written_at_once(processor: Processor, store: StateStore) -> None:
    [first] = processor.process(failed_logins(10, every_s=0.1), store, wall_ms=WALL)
    assert first.action == "challenge"
    assert first.expires_at - first.updated_at == DECISION_TTL_S["challenge"] * 1000
    [second] = processor.process(
        failed_logins(10, start_s=1.0, every_s=0.1), store, wall_ms=WALL + 1000
    )
    assert second.action == "block"
    assert second.score > first.score


def test_benign_traffic_makes_no_decisions(processor: Processor, store: StateStore) -> None:
    decisions = []
    for second in range(30):
        batch = []
        for i in range(12):
            user = i % 3
            batch.append(
                make_event(
                    ts_ms=T0_MS + second * 1000 + i * 80,
                    client_ip=f"192.0.2.{10 + i % 5}",
                    consumer=f"user-{user}",
                    credential=f"hmac:{user:016x}",
                    path=f"/v1/products/{second * 12 + i}",
                    route="/v1/products/{id}",
                    # A stale link now and then (every 404 on one address would be enumeration).
                    status=404 if i == 7 and second % 4 == 0 else 200,
                )
            )
        if second % 10 == 0:  # a login now and then, one of them mistyped
            for status in (401, 200) if second == 10 else (200,):
                batch.append(
                    make_event(
                        ts_ms=T0_MS + second * 1000 + 999,
                        client_ip="192.0.2.10",
                        method="POST",
                        path="/v1/auth/login",
                        route="/v1/auth/login",
                        status=status,
                    )
                )
        decisions += processor.process(batch, store, wall_ms=WALL + second * 1000)
    assert decisions == []
    # Every IP, consumer and key has state, and the range the logins came from.
    assert len(store) == 5 + 3 + 3 + 1


def test_every_subject_of_an_event_is_scored(processor: Processor, store: StateStore) -> None:
    events = [
        e.model_copy(update={"consumer": "victim", "credential": "hmac:00000000000000aa"})
        for e in failed_logins(20)
    ]
    decisions = final(processor.process(events, store, wall_ms=WALL)).values()
    assert {d.subject for d in decisions} == {
        "consumer:victim",
        "key:hmac:00000000000000aa",
        f"ip:{ATTACKER}",
    }
    assert all(d.action == "block" for d in decisions)


def test_flood_closing_inside_a_batch_is_scored_not_learned(
    processor: Processor, store: StateStore
) -> None:
    """A batch (one envelope) easily spans a second boundary. The flood window it closes must not
    teach the baseline that the flood is normal before any detector has looked at it."""

    def second(s: int, n: int) -> list[GatewayEvent]:
        return [
            make_event(ts_ms=T0_MS + s * 1000 + i * (900 // n), consumer="c1") for i in range(n)
        ]

    for s in range(60):  # one batch per second, ~3 req/s
        assert processor.process(second(s, 3), store, wall_ms=WALL) == []
    state = store.get("consumer:c1")
    assert state.baseline is not None
    before = state.baseline.rate_mean

    decisions = processor.process(second(60, 60) + second(61, 1), store, wall_ms=WALL)

    assert state.baseline.rate_mean == pytest.approx(before)
    assert "consumer:c1" in {d.subject for d in decisions}


# --- StateStore, auth routes, Decision <-> Redis --------------------------------------------


def test_state_store_evicts_the_least_recently_used() -> None:
    store = StateStore(max_subjects=2)
    a, b = store.get("ip:a"), store.get("ip:b")
    assert store.get("ip:a") is a  # a is now the most recent
    store.get("ip:c")  # evicts b, not a
    assert len(store) == 2
    assert store.get("ip:a") is a
    assert store.get("ip:b") is not b  # b was forgotten: a fresh state


def test_state_store_keeps_state_below_the_limit() -> None:
    store = StateStore(max_subjects=3)
    states = [store.get(f"ip:{i}") for i in range(3)]
    assert [store.get(f"ip:{i}") for i in range(3)] == states
    assert len(store) == 3


@pytest.mark.parametrize(
    ("route", "auth"),
    [
        ("/v1/auth/login", True),
        ("/oauth/token", True),
        ("/v1/Sessions", True),
        ("/signin", True),
        ("/v1/products", False),
        ("/v1/users/{id}", False),
        ("/", False),
    ],
)
def test_is_auth_route(processor: Processor, route: str, auth: bool) -> None:
    assert processor.auth_routes(route) is auth
    assert processor.auth_routes(route) is auth  # the cached answer is the same


def test_auth_route_patterns_are_configurable() -> None:
    p = Processor(detectors=[], fusion=Fusion(), auth_routes=AuthRoutes(("connect",)))
    assert p.auth_routes("/oidc/connect") and not p.auth_routes("/v1/auth/login")


def test_decision_redis_roundtrip(processor: Processor, store: StateStore) -> None:
    [decision] = final(processor.process(failed_logins(20), store, wall_ms=WALL)).values()
    fields = decision.to_redis()
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["action"] == "block" and fields["expires_at"] == str(WALL + 600_000)
    assert Decision.from_redis(fields) == decision


def test_decision_redis_roundtrip_of_odd_reasons() -> None:
    decision = Decision(
        subject="key:hmac:0123456789abcdef",
        score=0.857,
        action="challenge",
        reasons=['rate: "quoted", comma, ±unicode', ""],
        detector="rate",
        model_version="gatewatch-643c53f1",
        mode="shadow",
        updated_at=1,
        expires_at=2,
    )
    assert Decision.from_redis(decision.to_redis()) == decision


def test_decision_from_redis_validates() -> None:
    fields = {
        "subject": "ip:1",
        "score": "1.5",
        "action": "block",
        "reasons": "[]",
        "detector": "x",
        "model_version": "m",
        "mode": "shadow",
        "updated_at": "1",
        "expires_at": "2",
    }
    with pytest.raises(pydantic.ValidationError):
        Decision.from_redis(fields)
    fields["score"] = "0.5"
    del fields["reasons"]
    assert Decision.from_redis(fields).reasons == []


def _range_by_ipaddress(ip: str) -> str | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if addr.version == 4 else 64
    return f"ip:{ipaddress.ip_network(f'{addr}/{prefix}', strict=False)}"


@pytest.mark.parametrize(
    "ip",
    [
        "203.0.113.77", "0.0.0.0", "255.255.255.255", "10.0.0.01", "010.1.1.1", "256.1.1.1",
        "1.2.3", "1.2.3.4.5", "1..3.4", "1.2.3.4 ", " 1.2.3.4", "1.2.3.٤", "1.2.3.²", "1.2.3.0004",
        "1.2.3.-4", "+1.2.3.4", "1.2.3.4/24", "1.2.3.4\n", "2001:db8::1", "::ffff:1.2.3.4", "::1",
        "", "nope",
    ],
)  # fmt: skip
def test_range_subject_is_what_ipaddress_says(ip: str) -> None:
    assert range_subject(ip) == _range_by_ipaddress(ip)


def test_range_subject_agrees_with_ipaddress_on_random_quads() -> None:
    rng = random.Random(3)
    parts = ["0", "00", "7", "07", "99", "255", "256", "300", "1000", "", "a", "1e", " 5"]
    for _ in range(5_000):
        ip = ".".join(rng.choice(parts + [str(rng.randint(0, 255))]) for _ in range(4))
        assert range_subject(ip) == _range_by_ipaddress(ip), ip


def _busy_states() -> list[SubjectState]:
    """Subjects with every shared counter up (a flood, failing logins, a long baseline) but no
    memo or evidence of any detector's own."""
    flood, logins, regular = SubjectState(), SubjectState(), SubjectState()
    for second in range(400):
        for i in range(3 if second < 399 else 400):
            e = make_event(ts_ms=T0_MS + second * 1000 + i, route=f"/v1/r{i % 7}", status=200)
            flood.observe(e, auth_route=False, baseline_after=5, fading_factor=0.05)
        e = make_event(ts_ms=T0_MS + second * 1000, method="POST", route="/login", status=401)
        logins.observe(e, auth_route=True, baseline_after=5, fading_factor=0.05)
        regular.observe(make_event(ts_ms=T0_MS + second * 1000), auth_route=False,
                        baseline_after=5, fading_factor=0.05)  # fmt: skip
    for state in (flood, logins, regular):
        state.memo = state.evidence = None
    return [flood, logins, regular]


def test_detectors_that_need_a_memo_say_nothing_without_one() -> None:
    # The processor does not call a detector declaring `needs` for a subject without an entry of
    # its own: that must be exactly a call that would have returned None.
    detectors = [d for d in default_detectors() if getattr(d, "needs", ())]
    assert {d.name for d in detectors} >= {"object_walk", "key_sharing", "anomaly"}
    now = T0_MS / 1000 + 400.5
    states = _busy_states()
    # ... busy enough for the detectors reading shared counters to speak up:
    everyone = {d.name: d for d in default_detectors()}
    flood, logins, _ = states
    assert everyone["rate"].score(flood, SubjectContext("consumer:c", "consumer", now))
    assert everyone["bruteforce"].score(logins, SubjectContext("ip:192.0.2.10", "ip", now))
    for state in states:
        for subject in ("consumer:c", "key:k", "ip:192.0.2.10", "ip:192.0.2.0/24"):
            ctx = SubjectContext(subject, subject.partition(":")[0], now)
            for detector in detectors:
                assert detector.score(state, ctx) is None, (detector.name, subject)


def test_update_kinds_leave_out_only_calls_that_change_nothing() -> None:
    # DistributedStuffing learns for address ranges only: on any other subject `update` is a no-op.
    stuffing = next(d for d in default_detectors() if d.name == "distributed_stuffing")
    assert stuffing.update_kinds == ("range",)
    for subject in ("consumer:c", "key:k", "ip:192.0.2.10"):
        state = SubjectState()
        e = make_event(method="POST", route="/login", path="/login", status=401)
        stuffing.update(state, e, SubjectContext(subject, subject.partition(":")[0], T0_MS / 1000))
        assert state.memo is None
