"""Detectors on hand-fed subject state: brute force, rate floods, and their fusion."""

from __future__ import annotations

import pytest

from detectors import BruteForce, Fusion, RateAnomaly, Signal, SubjectContext
from detectors.state import SubjectState
from tests.unit.conftest import T0_MS, make_event

T0_S = T0_MS / 1000
IP = "203.0.113.9"


def feed(state: SubjectState, at_s: float, *, auth: bool = False, **overrides: object) -> None:
    """One request `at_s` seconds after T0, as the processor feeds it."""
    event = make_event(ts_ms=round(T0_MS + at_s * 1000), client_ip=IP, **overrides)
    state.observe(event, auth_route=auth, baseline_after=5, fading_factor=0.05)


def login(state: SubjectState, at_s: float, status: int, method: str = "POST") -> None:
    feed(state, at_s, auth=True, method=method, path="/login", route="/login", status=status)


def ctx(at_s: float, kind: str = "ip") -> SubjectContext:
    return SubjectContext(f"{kind}:x", kind, now=T0_S + at_s)


# --- BruteForce -----------------------------------------------------------------------------


def test_a_few_typos_are_not_brute_force() -> None:
    state = SubjectState()
    for i in range(3):
        login(state, i * 5.0, 401)
    login(state, 16.0, 200)
    assert BruteForce().score(state, ctx(16.0)) is None


def test_twenty_failures_in_four_seconds_are_credential_stuffing() -> None:
    state = SubjectState()
    for i in range(20):
        login(state, i * 0.2, 401)
    signal = BruteForce().score(state, ctx(4.0))
    assert signal is not None
    assert signal.score >= 0.85
    assert signal.kind == "credential_stuffing"  # an IP trying many accounts
    assert signal.reason.startswith("20 failed logins of 20 attempts (100% failing")


def test_the_same_failures_on_a_consumer_are_brute_force() -> None:
    state = SubjectState()
    for i in range(20):
        login(state, i * 0.2, 403)
    signal = BruteForce().score(state, ctx(4.0, kind="consumer"))
    assert signal is not None and signal.kind == "brute_force"


def test_a_nat_address_with_many_users_is_not_brute_force() -> None:
    state = SubjectState()
    for i in range(200):  # 200 logins over 100 s, one in ten failing
        login(state, i * 0.5, 401 if i % 10 == 0 else 200)
    attempts, failures = state.decayed_auth(T0_S + 100)
    assert failures >= BruteForce().min_failures  # enough failures: only the ratio saves it
    assert failures / attempts < 0.2
    assert BruteForce().score(state, ctx(100.0)) is None


def test_failures_decay() -> None:
    state = SubjectState()
    for i in range(20):
        login(state, i * 0.2, 401)
    assert BruteForce().score(state, ctx(4.0)) is not None
    assert BruteForce().score(state, ctx(4.0 + 30 * 60)) is None


def test_get_on_a_login_route_is_not_an_attempt() -> None:
    state = SubjectState()
    for i in range(50):
        login(state, i * 0.1, 401, method="GET")  # the login page, not a login
    assert state.decayed_auth(T0_S + 5) == (0.0, 0.0)
    assert BruteForce().score(state, ctx(5.0)) is None


def test_failures_off_auth_routes_are_not_attempts() -> None:
    state = SubjectState()
    for i in range(50):
        feed(state, i * 0.1, method="POST", status=401)
    assert BruteForce().score(state, ctx(5.0)) is None


def test_brute_force_score_grows_with_volume() -> None:
    few, many = SubjectState(), SubjectState()
    for i in range(8):
        login(few, i * 0.1, 401)
    for i in range(15):
        login(many, i * 0.1, 401)
    low, high = BruteForce().score(few, ctx(2.0)), BruteForce().score(many, ctx(2.0))
    assert low is not None and high is not None
    assert 0.3 <= low.score < high.score


@pytest.mark.parametrize(("low", "high"), [(0, 15), (15, 5), (5, 5), (-1, 5)])
def test_brute_force_rejects_bad_thresholds(low: float, high: float) -> None:
    with pytest.raises(ValueError):
        BruteForce(min_failures=low, full_failures=high)


# --- RateAnomaly ----------------------------------------------------------------------------


def burst(state: SubjectState, second: int, n: int) -> None:
    for i in range(n):
        feed(state, second + i / (n + 1))


def steady(state: SubjectState, seconds: int, per_second: int = 3) -> None:
    for second in range(seconds):
        burst(state, second, per_second)


def test_new_subject_is_judged_by_the_cold_limit_only() -> None:
    state = SubjectState()
    burst(state, 0, 100)
    assert state.baseline is None
    assert RateAnomaly().score(state, ctx(1.0)) is None  # 100/s < cold limit 150/s


def test_new_subject_flooding_is_flagged() -> None:
    state = SubjectState()
    burst(state, 0, 400)
    signal = RateAnomaly().score(state, ctx(1.0))
    assert signal is not None
    assert (signal.kind, signal.score) == ("flood", 1.0)
    assert "no baseline yet" in signal.reason


def test_cold_score_scales_with_the_excess() -> None:
    state = SubjectState()
    burst(state, 0, 200)  # a third over the cold limit
    signal = RateAnomaly().score(state, ctx(1.0))
    assert signal is not None and signal.score == pytest.approx(0.6)


def test_warm_subject_steady_rate_is_normal() -> None:
    state = SubjectState()
    steady(state, 60)
    assert state.baseline is not None and state.baseline.windows >= 10
    assert state.baseline.rate_mean == pytest.approx(3.0)
    assert RateAnomaly().score(state, ctx(60.0)) is None


def test_warm_subject_sudden_burst_is_flagged() -> None:
    state = SubjectState()
    steady(state, 60)
    burst(state, 60, 60)  # 20x its normal rate, far below the cold limit
    signal = RateAnomaly().score(state, ctx(61.0))
    assert signal is not None and signal.score >= 0.85
    assert "baseline 3.0" in signal.reason and "limit 30/s" in signal.reason


def test_burst_rate_outlives_its_window() -> None:
    state = SubjectState()
    steady(state, 60)
    burst(state, 60, 60)
    assert state.current_rate() == 60
    feed(state, 61.0)  # the next window opens with a single request
    assert state.current_rate() == 60  # the closed burst still counts
    feed(state, 63.0)  # after a gap the old burst is no longer "now"
    assert state.current_rate() == 1


def _flood_then_next_window(*, flag: bool = False, action: str = "allow") -> tuple[float, float]:
    """Baseline mean before and after a 60 req/s second that scoring flagged (or not)."""
    state = SubjectState()
    steady(state, 60)
    assert state.baseline is not None
    before = state.baseline.rate_mean
    state.action = action
    burst(state, 60, 60)
    assert RateAnomaly().score(state, ctx(61.0)) is not None
    state.flagged = flag  # what the processor does with a non-allow verdict
    feed(state, 61.0)  # closes the flood window
    return before, state.baseline.rate_mean


def test_unflagged_flood_window_is_learned() -> None:
    before, after = _flood_then_next_window()
    assert after > before + 1  # the control for the two tests below


def test_flagged_flood_window_is_not_learned() -> None:
    before, after = _flood_then_next_window(flag=True)
    assert after == pytest.approx(before)


def test_flood_under_a_standing_block_is_not_learned() -> None:
    state = SubjectState()
    steady(state, 60)
    assert state.baseline is not None
    before = state.baseline.rate_mean
    state.action = "block"
    for second in range(60, 70):  # a sustained flood, and idle seconds after it
        burst(state, second, 60)
    feed(state, 90.0)
    assert state.baseline.rate_mean == pytest.approx(before)


def test_flagged_flag_lasts_one_window() -> None:
    state = SubjectState()
    steady(state, 60)
    state.flagged = True
    feed(state, 60.0)
    assert state.flagged is False


# --- Fusion ---------------------------------------------------------------------------------


def sig(score: float, detector: str = "rate", reason: str = "r") -> Signal:
    return Signal(detector, "kind", score, reason)


@pytest.mark.parametrize(
    ("score", "action"),
    [
        (0.0, "allow"),
        (0.29, "allow"),
        (0.3, "tag"),
        (0.59, "tag"),
        (0.6, "challenge"),
        (0.849, "challenge"),
        (0.85, "block"),
        (1.0, "block"),
    ],
)
def test_fusion_thresholds(score: float, action: str) -> None:
    assert Fusion().action_for(score) == action
    assert Fusion().fuse([sig(score)]).action == action


@pytest.mark.parametrize(
    ("scores", "expected"),
    [([0.5, 0.5], 0.75), ([0.9], 0.9), ([0.3, 0.3, 0.3], 0.657), ([1.0, 0.2], 1.0), ([0.0], 0.0)],
)
def test_fusion_is_noisy_or(scores: list[float], expected: float) -> None:
    assert Fusion().fuse([sig(s) for s in scores]).score == pytest.approx(expected)


def test_weak_signals_add_up_to_a_stronger_action() -> None:
    f = Fusion()
    assert f.fuse([sig(0.4)]).action == "tag"
    assert f.fuse([sig(0.4), sig(0.4)]).action == "challenge"  # 0.64


def test_fusion_reasons_strongest_first_and_capped() -> None:
    verdict = Fusion(max_reasons=2).fuse(
        [sig(0.2, "a", "weak"), sig(0.9, "b", "strong"), sig(0.5, "c", "middle")]
    )
    assert verdict.reasons == ["b: strong", "c: middle"]
    assert verdict.detector == "b"


def test_fusion_of_nothing_allows() -> None:
    verdict = Fusion().fuse([])
    assert (verdict.score, verdict.action, verdict.reasons, verdict.detector) == (
        0.0,
        "allow",
        [],
        "",
    )


@pytest.mark.parametrize(
    ("tag", "challenge", "block"),
    [(0.0, 0.6, 0.85), (0.6, 0.3, 0.85), (0.3, 0.9, 0.85), (0.3, 0.6, 1.1), (0.3, 0.6, 0.6)],
)
def test_fusion_rejects_bad_thresholds(tag: float, challenge: float, block: float) -> None:
    with pytest.raises(ValueError):
        Fusion(tag=tag, challenge=challenge, block=block)


def test_fusion_custom_thresholds() -> None:
    assert Fusion(tag=0.1, challenge=0.2, block=1.0).action_for(0.99) == "challenge"
