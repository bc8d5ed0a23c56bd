"""Per-route policy: how sure fusion must be before acting, and how a decision is rolled out.

Operators roll gatewatch out route by route: shadow everywhere first, then `enforce` on `/login`
for 10% of subjects, stricter thresholds on the payment routes. A policy file (TOML) says so:

```toml
[default]
mode = "shadow"

[routes."/login"]
mode = "enforce"
canary_percent = 10
critical = true            # act on weaker evidence: thresholds x 0.8

[routes."/v1/payments"]
block = 0.7
```

Routes match by the longest prefix of the route template.

Analysts' false-positive reports move thresholds further, within bounds and for a while: workers
load those adjustments from Redis into `Policy.tuning` (`detectors/tuning.py` has the rule), and
`Policy.adjust` applies them to a verdict the route's thresholds made risky.
"""

from __future__ import annotations

import dataclasses
import tomllib
import zlib
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from detectors.fusion import Verdict
from detectors.tuning import Tuning
from pipeline.config import Mode

__all__ = ["Policy", "RoutePolicy"]

_CRITICAL_FACTOR = 0.8


class RoutePolicy(BaseModel):
    """The rules for one route prefix. Unset fields fall back to the global settings.

    >>> p = RoutePolicy(mode="enforce", canary_percent=50)
    >>> sorted({p.mode_for(f"ip:10.0.0.{i}", "shadow") for i in range(20)})
    ['enforce', 'shadow']
    >>> RoutePolicy(critical=True).thresholds((0.3, 0.6, 0.85))
    (0.24, 0.48, 0.68)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode | None = None
    canary_percent: int = Field(100, ge=0, le=100, description="Subjects the mode applies to")
    critical: bool = False
    tag: float | None = Field(None, gt=0, le=1)
    challenge: float | None = Field(None, gt=0, le=1)
    block: float | None = Field(None, gt=0, le=1)

    def mode_for(self, subject: str, default: Mode) -> Mode:
        mode = self.mode or default
        if self.canary_percent < 100 and zlib.crc32(subject.encode()) % 100 >= self.canary_percent:
            return "shadow"  # outside the canary: computed and audited, never enforced
        return mode

    def thresholds(self, base: tuple[float, float, float]) -> tuple[float, float, float]:
        factor = _CRITICAL_FACTOR if self.critical else 1.0
        tag, challenge, block = (round(x * factor, 3) for x in base)
        return (self.tag or tag, self.challenge or challenge, self.block or block)


class Policy(BaseModel):
    """A default `RoutePolicy` and overrides by route prefix.

    >>> policy = Policy(routes={"/login": RoutePolicy(critical=True), "/login/sso": {}})
    >>> policy.for_route("/login/sso").critical, policy.for_route("/login").critical
    (False, True)
    >>> policy.for_route("/search") is policy.default
    True
    """

    model_config = ConfigDict(extra="forbid")

    default: RoutePolicy = RoutePolicy()
    routes: dict[str, RoutePolicy] = Field(default_factory=dict)
    _tuning: Tuning = PrivateAttr(default_factory=Tuning)

    @model_validator(mode="after")
    def _prefixes_are_paths(self) -> Policy:
        for prefix in self.routes:
            if not prefix.startswith("/"):
                raise ValueError(f"route prefix {prefix!r} must start with '/'")
        self._by_length = sorted(self.routes.items(), key=lambda kv: len(kv[0]), reverse=True)
        self._cache: dict[str, RoutePolicy] = {}
        return self

    @property
    def tuning(self) -> Tuning:
        """Feedback's adjustments in force (replaced as a whole by the worker's refresh)."""
        return self._tuning

    @tuning.setter
    def tuning(self, tuning: Tuning) -> None:
        self._tuning = tuning

    @classmethod
    def from_file(cls, path: Path) -> Policy:
        with path.open("rb") as f:
            return cls.model_validate(tomllib.load(f))

    def for_route(self, route: str) -> RoutePolicy:
        found = self._cache.get(route)
        if found is None:
            found = next((p for k, p in self._by_length if route.startswith(k)), self.default)
            if len(self._cache) < 100_000:
                self._cache[route] = found
        return found

    def adjust(
        self,
        verdict: Verdict,
        route: str,
        thresholds: tuple[float, float, float],
        action_for: Callable[[float, tuple[float, float, float]], str],
    ) -> Verdict:
        """`verdict` (fused with `thresholds`, the route's) under feedback's raised thresholds
        for its detector on `route`. Called for risky verdicts only: an allow stays an allow."""
        tuning = self._tuning
        if not tuning:
            return verdict
        raised = tuning.raise_thresholds(thresholds, route, verdict.detector)
        if raised is thresholds:
            return verdict
        action = action_for(verdict.score, raised)
        return verdict if action == verdict.action else dataclasses.replace(verdict, action=action)
