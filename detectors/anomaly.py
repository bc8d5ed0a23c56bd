"""Behavioural anomaly: a River model over each subject's windows, normalised by its own baseline.

The rate and bruteforce detectors know what a flood or a stuffing run looks like; this one knows
nothing in advance. Each closed 1-second window of a subject with a baseline becomes a point of
five features, each measured against that subject's own normal (rate z-score, error, auth-failure
and path-diversity shifts, latency ratio), so one model serves every subject. A River
`HalfSpaceTrees` learns what normal deviations look like across subjects and scores how rare a
window's deviation is.
"""

from __future__ import annotations

from typing import Any

from river import anomaly
from river.tree.base import Leaf

from detectors.base import Declaration, Detector, Signal, SubjectContext
from detectors.codec import (
    FLAG,
    SlotCodec,
    StateFormatError,
    count,
    expect_list,
    integer,
    text,
    unit,
)
from detectors.state import FEATURE_NAMES, SubjectState
from pipeline.events import GatewayEvent

__all__ = ["BehaviourAnomaly"]


def _split(node: Any) -> tuple[int, float]:
    """A tree node's split as (index in FEATURE_NAMES, threshold); (-1, 0.0) for a leaf."""
    if isinstance(node, Leaf):
        return -1, 0.0
    return FEATURE_NAMES.index(node.feature), float(node.threshold)


class _Memo:
    __slots__ = ("reason", "score")

    def __init__(self) -> None:
        self.score = 0.0
        self.reason = ""


_MEMO = SlotCodec(_Memo, 1, [("score", unit()), ("reason", text(4096))])
_N_TREES, _HEIGHT, _WINDOW = 10, 6, 250


class BehaviourAnomaly(Detector):
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
    declares = Declaration(
        updates=True, kinds=("consumer", "key"), needs="memo", memo=_MEMO, model_version=1
    )

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
        self.declares = type(self).declares.for_kinds(kinds)  # type: ignore[arg-type]
        self.seed = seed
        self.model = self._new_model()
        self.learned = 0

    def _new_model(self) -> anomaly.HalfSpaceTrees:
        return anomaly.HalfSpaceTrees(
            n_trees=_N_TREES, height=_HEIGHT, window_size=_WINDOW, seed=self.seed
        )

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

    # -- checkpoints ---------------------------------------------------------------------------
    # River has no safe serializer for a HalfSpaceTrees (only pickle), so the model is written as
    # what it learned: per tree, each node's split (feature, threshold) and its two masses, in
    # depth-first order, plus the window counter. Loading builds the trees again from the seed
    # (River draws every split from `random.Random(seed)` when it sees the first window), checks
    # that they split where the checkpoint says, and sets the masses: the same model, node for node.

    def export_model(self) -> list[Any]:
        m = self.model
        trees = []
        for tree in m.trees:
            nodes = list(tree.iter_dfs())
            splits = [_split(n) for n in nodes]
            trees.append(
                [
                    [feature for feature, _ in splits],
                    [threshold for _, threshold in splits],
                    [n.l_mass for n in nodes],
                    [n.r_mass for n in nodes],
                ]
            )
        params = [_N_TREES, _HEIGHT, _WINDOW, self.seed]
        return [params, self.learned, m.counter, m._first_window, trees]

    def load_model(self, data: Any) -> None:
        params, learned, counter, first_window, trees = expect_list(data, 5, "an anomaly model")
        if params != [_N_TREES, _HEIGHT, _WINDOW, self.seed]:
            raise StateFormatError(f"anomaly model of other parameters {params!r}")
        learned = count().decode(learned)
        counter = integer(0, _WINDOW - 1).decode(counter)
        first_window = FLAG.decode(first_window)
        trees = expect_list(trees, None, "a list of trees")
        model = self._new_model()
        if trees:
            if len(trees) != _N_TREES:
                raise StateFormatError(f"{len(trees)} trees, not {_N_TREES}")
            model.learn_one(dict.fromkeys(FEATURE_NAMES, 0.5))  # River builds its trees here
            mass = integer(0, _WINDOW)
            size = 2 ** (_HEIGHT + 1) - 1
            for tree, saved in zip(model.trees, trees, strict=True):
                features, thresholds, l_mass, r_mass = (
                    expect_list(part, size, "a tree's nodes") for part in expect_list(saved, 4)
                )
                nodes = list(tree.iter_dfs())
                for i, node in enumerate(nodes):
                    feature, threshold = _split(node)
                    if features[i] != feature or thresholds[i] != threshold:
                        raise StateFormatError("anomaly trees split elsewhere than this model's")
                    node.l_mass = mass.decode(l_mass[i])
                    node.r_mass = mass.decode(r_mass[i])
        elif learned or counter or not first_window:
            raise StateFormatError("an anomaly model that learned without trees")
        model.counter = counter
        model._first_window = first_window
        self.model, self.learned = model, learned
