"""Where recommendations come from: each consumer's learned rate baseline and the limit it implies.

A consumer's baseline (`detectors.state.Baseline`) is an exponentially weighted mean and variance
of its requests per one-second window, learned only from windows no detector flagged. The limits
proposed are those of `detectors.rate.recommended_limit` (its p99 x 3, which the workers already
attach to decisions) per second, and three times its larger average (fast or ~10-minute memory)
per minute. Only consumers whose baseline has at least `warmup_windows` windows are proposed.

Today the states are read by replaying a log file through the worker's detection step
(`from_replay`); a consumer the replay decided against is marked, so its limit gets a second look.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.rate import recommended_limit
from detectors.state import SubjectState
from pipeline.config import Settings
from pipeline.evaluation.replay import ReplayResult, parse_lines, replay
from pipeline.ingest.redaction import Redactor
from pipeline.worker.processor import StateStore, build_processor

__all__ = ["Recommendation", "from_replay", "from_states"]

_P99_Z = 2.33
FACTOR = 3.0
MINUTE_FACTOR = 3.0
WARMUP_WINDOWS = 30


@dataclass(frozen=True)
class Recommendation:
    """One consumer's proposed limits and the baseline they came from."""

    consumer: str
    gateway: str | None
    per_second: int
    per_minute: int
    rate_mean: float
    rate_std: float
    rate_p99: float
    rate_slow: float
    windows: int
    last_seen_ms: int
    decided_against: int

    def citation(self) -> str:
        """One line saying where the numbers come from."""
        when = _iso(self.last_seen_ms)
        flagged = (
            f"; decided against {self.decided_against}x in the source: review first"
            if self.decided_against
            else ""
        )
        return (
            f"baseline of consumer:{self.consumer}: {self.rate_mean:.2f}/s mean, "
            f"{self.rate_p99:.2f}/s p99 (sd {self.rate_std:.2f}), ~10 min mean "
            f"{self.rate_slow:.2f}/s, {self.windows} one-second windows learned, last seen {when}; "
            f"limits: p99 x {FACTOR:g} per second, larger mean x 60 x {MINUTE_FACTOR:g} per "
            f"minute{flagged}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": f"consumer:{self.consumer}",
            "consumer": self.consumer,
            "gateway": self.gateway,
            "per_second": self.per_second,
            "per_minute": self.per_minute,
            "baseline": {
                "rate_mean": round(self.rate_mean, 3),
                "rate_std": round(self.rate_std, 3),
                "rate_p99": round(self.rate_p99, 3),
                "rate_slow": round(self.rate_slow, 3),
                "windows": self.windows,
                "last_seen_ms": self.last_seen_ms,
                "last_seen": _iso(self.last_seen_ms),
            },
            "decided_against": self.decided_against,
            "citation": self.citation(),
        }


def from_states(
    states: Iterable[tuple[str, SubjectState]],
    *,
    gateways: dict[str, str] | None = None,
    decided: Counter[str] | None = None,
) -> list[Recommendation]:
    """Recommendations for the consumer subjects among `states` (busiest first)."""
    out = []
    for subject, state in states:
        kind, _, consumer = subject.partition(":")
        baseline = state.baseline
        if kind != "consumer" or baseline is None:
            continue
        per_second = recommended_limit(baseline, FACTOR, WARMUP_WINDOWS)
        if per_second is None:
            continue
        std = math.sqrt(max(0.0, baseline.rate_var))
        mean = max(baseline.rate_mean, baseline.rate_slow)
        out.append(
            Recommendation(
                consumer=consumer,
                gateway=(gateways or {}).get(consumer),
                per_second=per_second,
                per_minute=max(per_second, math.ceil(mean * 60 * MINUTE_FACTOR)),
                rate_mean=baseline.rate_mean,
                rate_std=std,
                rate_p99=baseline.rate_mean + _P99_Z * std,
                rate_slow=baseline.rate_slow,
                windows=baseline.windows,
                last_seen_ms=int(state.w_start * 1000),
                decided_against=(decided or Counter())[subject],
            )
        )
    out.sort(key=lambda r: (-r.rate_mean, r.consumer))
    return out


def from_replay(
    path: Path, source: str, settings: Settings
) -> tuple[list[Recommendation], ReplayResult]:
    """Replay a log file (`gatewatch replay`'s formats) through the worker's detection step and
    recommend from the states it learned."""
    result = ReplayResult()
    redactor = Redactor(settings.redaction_key.get_secret_value().encode())
    gateways: dict[str, str] = {}

    def observe(event: Any) -> None:
        if event.consumer:
            gateways[event.consumer] = event.gateway

    store = StateStore(settings.max_subjects)
    with path.open("rb") as lines:
        replay(
            parse_lines(lines, source, redactor, result),
            build_processor(settings, event_clock=True),
            max_subjects=settings.max_subjects,
            observe=observe,
            result=result,
            store=store,
        )
    decided = Counter(d.subject for d in result.decisions if d.action in ("challenge", "block"))
    states = (
        (subject, state)
        for subject in (f"consumer:{c}" for c in gateways)
        if (state := store.peek(subject)) is not None
    )
    return from_states(states, gateways=gateways, decided=decided), result


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
