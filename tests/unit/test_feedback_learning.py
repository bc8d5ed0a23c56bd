"""The learning rule of feedback, on a simulated false positive through the worker's Processor.

A partner's nightly export (40 requests/s for 20 s after a steady 3/s) is challenged by the rate
detector. The analyst reports it; the report is turned into an allow override of the consumer and
a threshold adjustment for the rate detector on the export route (`detectors/tuning.py`), and the
next night:
- the same benign pattern, from the partner and from another partner, is no longer challenged;
- a flood of the same size on another route is, and a far larger one on the export route still is;
- the windows of the allowed consumer that the detectors refused to learn are learned.
"""

from __future__ import annotations

import pytest

from detectors.fusion import Fusion
from detectors.policy import Policy, RoutePolicy
from detectors.tuning import Tuning, decayed, learn
from pipeline.worker.processor import StateStore

from .feedback_traffic import EXPORT, SEARCH, export_night, flood, processor, run, verdicts

# Each partner reads orders from its app servers and exports from a batch host.
PARTNER, PARTNER_APP, PARTNER_IP = "consumer:partner-a", "198.51.100.10", "198.51.100.20"
OTHER, OTHER_APP, OTHER_IP = "consumer:partner-b", "198.51.100.11", "198.51.100.30"
ATTACKER, ATTACKER_IP = "consumer:leaked-app", "203.0.113.66"


def _night_one() -> tuple[object, StateStore, dict[str, str]]:
    proc = processor()
    store = StateStore(10_000)
    decided = run(proc, store, export_night(0, "partner-a", PARTNER_APP, PARTNER_IP))
    return proc, store, decided


def test_the_export_is_challenged_before_any_feedback() -> None:
    _, store, decided = _night_one()
    # The consumer, against its own 3/s; its batch host is a new address (cold limit 150/s).
    assert verdicts(decided, PARTNER, f"ip:{PARTNER_IP}") == ["challenge", "allow"]
    # Its challenged windows were not learned: the baseline still says ~3/s.
    baseline = store.peek(PARTNER).baseline  # type: ignore[union-attr]
    assert baseline is not None and baseline.rate_mean < 5


def _after_feedback() -> tuple[object, StateStore]:
    """Night one, then what `gatewatch feedback consumer:partner-a --false-positive --route
    /v1/export --detector rate` makes the workers load: the override and the adjustment learned
    from the challenged score (0.6)."""
    proc, store, _ = _night_one()
    score = 0.6
    challenge = Policy().for_route(EXPORT).thresholds(Fusion().thresholds)[1]
    adjustment = learn(0.0, score=score, challenge=challenge)
    proc.allowed = frozenset({PARTNER})  # type: ignore[attr-defined]
    proc.policy.tuning = Tuning({(EXPORT, "rate"): adjustment})  # type: ignore[attr-defined]
    return proc, store


def test_after_a_false_positive_the_same_benign_pattern_is_not_challenged() -> None:
    proc, store = _after_feedback()
    decided = run(
        proc, store,
        export_night(1, "partner-a", PARTNER_APP, PARTNER_IP),
        export_night(1, "partner-b", OTHER_APP, OTHER_IP),  # same export, never reported
        flood(1, "leaked-app", ATTACKER_IP, SEARCH),   # the same rate on another route
    )  # fmt: skip
    rank = {"allow": 0, "tag": 1, "challenge": 2, "block": 3}
    assert PARTNER not in decided  # allowed: nothing is decided against it
    for subject in (f"ip:{PARTNER_IP}", OTHER, f"ip:{OTHER_IP}"):
        assert rank[decided.get(subject, "allow")] <= rank["tag"], subject
    assert verdicts(decided, ATTACKER, f"ip:{ATTACKER_IP}") == ["challenge", "challenge"]


def test_without_the_feedback_the_other_partner_is_challenged() -> None:
    """The control for the test above: the same night, no report."""
    proc, store, _ = _night_one()
    decided = run(proc, store, export_night(1, "partner-b", OTHER_APP, OTHER_IP))
    assert verdicts(decided, OTHER) == ["challenge"]


def test_the_adjustment_is_bounded_a_flood_on_the_reported_route_is_still_blocked() -> None:
    proc, store = _after_feedback()
    decided = run(proc, store, flood(1, "leaked-app", ATTACKER_IP, EXPORT, rate=120))
    assert verdicts(decided, ATTACKER, f"ip:{ATTACKER_IP}") == ["block", "block"]


def test_an_allowed_subjects_flagged_windows_are_learned() -> None:
    proc, store = _after_feedback()
    before = store.peek(PARTNER).baseline.windows  # type: ignore[union-attr]
    run(proc, store, export_night(1, "partner-a", PARTNER_APP, PARTNER_IP))
    baseline = store.peek(PARTNER).baseline  # type: ignore[union-attr]
    # Every window of the night was learned, the export's 40/s included...
    assert baseline.windows - before >= 319
    assert baseline.rate_mean > 15


@pytest.mark.parametrize(
    ("score", "challenge", "others", "expected"),
    [
        (0.6, 0.6, 0.0, 0.05),    # just over the threshold: one step
        (0.7, 0.6, 0.0, 0.26),    # enough that 0.7 falls below challenge
        (0.7, 0.6, 0.2, 0.0725),  # other keys already do most of the work
        (0.95, 0.6, 0.0, 0.3),    # a strong detection: capped, still challenged
        (0.4, 0.6, 0.0, 0.05),    # only tagged: one step
        (None, 0.6, 0.0, 0.05),   # score unknown (decision expired): one step
    ],
)
def test_learning_rule(
    score: float | None, challenge: float, others: float, expected: float
) -> None:
    assert learn(0.0, score=score, challenge=challenge, others=others) == pytest.approx(expected)


def test_reports_accumulate_up_to_the_cap_and_decay() -> None:
    a = 0.0
    for _ in range(10):
        a = learn(a, score=None, challenge=0.6)
    assert a == 0.3
    assert decayed(a, 14 * 86400, 7 * 86400) == pytest.approx(0.075)


def test_thresholds_stay_ordered_and_below_one_at_the_cap() -> None:
    tuning = Tuning({(None, "rate"): 0.3, ("/v1", None): 0.3, ("/v1", "rate"): 0.3})
    for base in [(0.3, 0.6, 0.85), (0.24, 0.48, 0.68), (0.01, 0.02, 1.0)]:
        tag, challenge, block = tuning.raise_thresholds(base, "/v1/export", "rate")
        assert 0 < tag < challenge < block <= 1 or block == 1.0


def test_route_keys_match_by_longest_prefix_and_detector() -> None:
    tuning = Tuning({("/v1", None): 0.1, ("/v1/export", None): 0.2, ("/v1/export", "rate"): 0.3})
    assert tuning.adjustment("/v1/export/{id}", "rate") == pytest.approx(1 - 0.8 * 0.7)
    assert tuning.adjustment("/v1/export/{id}", "bruteforce") == pytest.approx(0.2)
    assert tuning.adjustment("/v1/orders", "rate") == pytest.approx(0.1)
    assert tuning.adjustment("/v2/orders", "rate") == 0.0


def test_policy_adjust_only_lowers_a_risky_verdict() -> None:
    policy = Policy(routes={EXPORT: RoutePolicy(critical=True)})
    fusion = Fusion()
    thresholds = policy.for_route(EXPORT).thresholds(fusion.thresholds)
    from detectors.base import Signal

    verdict = fusion.fuse([Signal("rate", "flood", 0.6, "40/s")], thresholds)
    assert verdict.action == "challenge"  # critical route: 0.48 challenges
    assert policy.adjust(verdict, EXPORT, thresholds, fusion.action_for) is verdict
    policy.tuning = Tuning({(EXPORT, "rate"): 0.3})
    adjusted = policy.adjust(verdict, EXPORT, thresholds, fusion.action_for)
    assert (adjusted.action, adjusted.score) == ("tag", 0.6)
