"""The contract every detector keeps, River-style.

Learning happens in `SubjectState.observe` (counters and baselines every detector shares) and, for a
detector with memory of its own, in its `update`; `score` reads a subject's state without changing it.

Three shapes, one protocol each, all optional except `score`:

- `inspect(event)`: a finding in one request on its own (an injection payload, a scanner user agent,
  a `/.env` probe). The processor calls it once per event and keeps the finding on every subject of
  the event as decayed *evidence*; `score` then turns the evidence into a signal.
- `update(state, event, ctx)`: per-subject memory the shared counters do not hold (timing, object
  ids walked, distinct addresses). The memory lives in `state.memo[detector.name]`, allocated only
  for subjects that need it, and must stay small (a subject's whole state is about 1 KB).
- `score(state, ctx)`: the subject's risk now, as a `Signal` with a reason a person can read.

Address ranges (`ip:a.b.c.0/24`) are judged only by detectors that set `judges_ranges = True`:
a range is many clients, and one client's behaviour must not condemn it. Such a detector also says,
with `wants_range(event)`, which requests its ranges are made of (logins, anonymous object reads).

Every detector has a `name` and a `version` (a class attribute, bumped when its logic changes).

Two optional attributes let the processor skip calls that cannot do anything (it makes several per
event, for up to four subjects each):

- `update_kinds`: the subject kinds `update` learns for, `"range"` for address ranges (default:
  every kind it judges);
- `needs`: `("memo",)` when `score` says nothing about a subject without an entry of its own in
  `state.memo`; `("memo", "evidence")` when an entry in either will do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from detectors.state import SubjectState
from pipeline.events import GatewayEvent

__all__ = ["Detector", "EventDetector", "Signal", "StatefulDetector", "SubjectContext"]


@dataclass(frozen=True, slots=True)
class Signal:
    """One detector's finding about one subject. `score` is in [0, 1]; high means risky.

    `kind` is the reason code (`brute_force`, `sqli`, `flood`: what alerts and the MITRE ATT&CK
    table in `pipeline/mitre.py` key on). Where the detector has them, the structured fields say
    which measured `feature` crossed which `limit`, with its `value` now and the subject's learned
    `baseline` for it, so a SIEM can filter and chart them (`reason` says the same for a person).
    A signal is built only when a detector fires, never on the quiet path.
    """

    detector: str
    kind: str
    score: float
    reason: str
    feature: str | None = None
    value: float | None = None
    baseline: float | None = None
    limit: float | None = None


# Not frozen: one is built per subject of every event, and a frozen dataclass is four times
# slower to build. Detectors read it and never change it.
@dataclass(slots=True)
class SubjectContext:
    subject: str
    kind: str  # consumer | key | ip
    now: float  # event time, seconds


class Detector(Protocol):
    name: str
    # Bumped whenever the detector's logic changes what it decides; alerts carry it, and the
    # processor's `model_version` is derived from every detector's.
    version: str

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        """A signal when the subject looks risky now, else None (always None while warming up)."""
        ...


class EventDetector(Detector, Protocol):
    def inspect(self, event: GatewayEvent) -> Signal | None:
        """A finding in this one request, or None. May learn from the request (e.g. an endpoint's
        normal parameter shapes) but never from one it flags."""
        ...


class StatefulDetector(Detector, Protocol):
    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        """Learn from one event of this subject, in `state.memo[self.name]`."""
        ...
