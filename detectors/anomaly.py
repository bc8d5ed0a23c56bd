"""Behavioural anomaly: a River model over each subject's windows, normalised by its own baseline.

The rate and bruteforce detectors know what a flood or a stuffing run looks like; this one knows
nothing in advance. Each closed 1-second window of a subject with a baseline becomes a point of
five features, each measured against that subject's own normal (rate z-score, error, auth-failure
and path-diversity shifts, latency ratio), so one model serves every subject. A River
`HalfSpaceTrees` learns what normal deviations look like across subjects and scores how rare a
window's deviation is.
"""

from __future__ import annotations

from river import anomaly

from detectors.base import Signal, SubjectContext
from detectors.state import FEATURE_NAMES, SubjectState
from pipeline.events import GatewayEvent

__all__ = ["BehaviourAnomaly"]


class _Memo:
    __slots__ = ("reason", "score")

    def __init__(self) -> None:
        self.score = 0.0
        self.reason = ""


class BehaviourAnomaly:
    """Scores each closed window of a warmed-up subject with one shared `HalfSpaceTrees`.

    The model learns only windows nobody flagged and it did not find anomalous itself, so an
    attacker cannot teach it their behaviour, however slowly they ramp up.

    Parameters
    ----------
    threshold
        Model score from which a window is anomalous.
    min_windows
        Baseline windows a subject needs before it is judged.
    warmup
        Windows the model learns before it judges anyone.
    kinds
        Subject kinds judged (a per-address baseline is rarely long enough).

    Examples
    --------
    >>> detector = BehaviourAnomaly(warmup=300, min_windows=20)
    >>> state = SubjectState()
    >>> def second(s, n, errors=0):
    ...     for i in range(n):
    ...         e = GatewayEvent(ts_ms=s * 1000 + i, gateway="kong", client_ip="10.0.0.1",
    ...                          consumer="c1", method="GET", path=f"/items/{i % 3}",
    ...                          route="/items/{id}", status=500 if i < errors else 200,
    ...                          latency_ms=40.0)
    ...         detector.update(state, e, SubjectContext("consumer:c1", "consumer", e.ts_ms / 1000))
    ...         state.observe(e, auth_route=False, baseline_after=5, fading_factor=0.05)
    >>> for s in range(400):
    ...     second(s, 4 + s % 3)
    >>> detector.score(state, SubjectContext("consumer:c1", "consumer", 400.0)) is None
    True
    >>> second(400, 60, errors=50); second(401, 1)
    >>> signal = detector.score(state, SubjectContext("consumer:c1", "consumer", 401.0))
    >>> signal.kind, 0.3 <= signal.score <= 0.5
    ('behaviour_anomaly', True)
    """

    name = "anomaly"
    version = "1"
    needs = ("memo",)

    def __init__(
        self,
        threshold: float = 0.6,
        min_windows: int = 60,
        warmup: int = 2_000,
        kinds: tuple[str, ...] = ("consumer", "key"),
        seed: int = 42,
    ) -> None:
        if not 0 < threshold < 1:
            raise ValueError("threshold must be in (0, 1)")
        self.threshold = threshold
        self.min_windows = min_windows
        self.warmup = warmup
        self.kinds = kinds
        self.model = anomaly.HalfSpaceTrees(n_trees=10, height=6, window_size=250, seed=seed)
        self.learned = 0

    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        # Called before the event is observed: a window this event closes is complete and not yet
        # learned by the subject's baseline, so it is judged against the baseline it had.
        baseline = state.baseline
        if (
            baseline is None
            or ctx.kind not in self.kinds
            or baseline.windows < self.min_windows
            or not state.closes_window(ctx.now)
        ):
            return
        memo = state.memo if state.memo is not None else {}
        state.memo = memo
        seen = memo.get(self.name)
        if seen is None:
            seen = memo[self.name] = _Memo()
        assert isinstance(seen, _Memo)
        window = state.window()
        x = dict(zip(FEATURE_NAMES, baseline.normalise(window), strict=True))
        score = self.model.score_one(x) if self.learned >= self.warmup else 0.0
        if score >= self.threshold:
            top = max(FEATURE_NAMES, key=lambda k: abs(x[k] - 0.5))
            seen.score = score
            seen.reason = (
                f"window unlike this subject's usual behaviour (model score {score:.2f}; "
                f"most unusual: {top}, {window.requests} requests, {window.error_ratio:.0%} errors)"
            )
        else:
            seen.score = 0.0
            if not state.flagged and state.action == "allow":
                self.model.learn_one(x)
                self.learned += 1

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        seen = state.memo.get(self.name) if state.memo is not None else None
        if not isinstance(seen, _Memo) or seen.score < self.threshold:
            return None
        # An anomaly alone only tags: it says "unusual", not "attack"; next to another
        # detector's signal it tips fusion towards acting.
        strength = (seen.score - self.threshold) / (1.0 - self.threshold)
        return Signal(
            self.name, "behaviour_anomaly", round(0.3 + 0.2 * strength, 3), seen.reason,
            "anomaly_score", round(seen.score, 3), None, self.threshold,
        )  # fmt: skip
