"""The contract every detector keeps, River-style, and what it declares to the processor.

Learning happens in `SubjectState.observe` (counters and baselines every detector shares) and, for
a detector with memory of its own, in its `update`; `score` reads a subject's state without
changing it.

Three calls, all optional except `score`:

- `inspect(event)`: a finding in one request on its own (an injection payload, a scanner user agent,
  a `/.env` probe). The processor calls it once per event and keeps the finding on every subject of
  the event as decayed *evidence*; `score` then turns the evidence into a signal.
- `update(state, event, ctx)`: per-subject memory the shared counters do not hold (timing, object
  ids walked, distinct addresses). The memory lives in `state.memo[detector.name]`, allocated only
  for subjects that need it, and must stay small (a subject's whole state is about 1 KB).
- `score(state, ctx)`: the subject's risk now, as a `Signal` with a reason a person can read.

A detector says which of them it has, and how the processor may spare calls, in its `declares`
(a `Declaration`), checked against the methods it overrides when its class is defined: the
processor reads only the declaration, and a detector cannot have a call the processor never makes.

Address ranges (`ip:a.b.c.0/24`) are judged only by detectors declaring `judges_ranges`: a range is
many clients, and one client's behaviour must not condemn it. Such a detector also says, with
`wants_range(event)`, which requests its ranges are made of (logins, anonymous object reads).

Every detector has a `name` and a `version` (a class attribute, bumped when its logic changes what
it decides): alerts carry it, and the processor's `model_version` is derived from all of them.

Learned state is saved in checkpoints (`detectors/state_codec.py`) as plain data: a detector with
per-subject memory declares the `memo` codec of `state.memo[name]`; one with model-level learning
(parameter shapes, a River model, campaign traits) declares `model_version` and implements
`export_model` / `load_model`, which must turn the model into msgpack-able values and back,
checking everything it reads (a checkpoint is untrusted input) and raising `StateFormatError`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from detectors.codec import MemoCodec, StateFormatError
from detectors.state import SubjectState
from pipeline.events import GatewayEvent

__all__ = [
    "KINDS",
    "Declaration",
    "Detector",
    "Kind",
    "Needs",
    "Signal",
    "StateFormatError",
    "SubjectContext",
    "UpdateKind",
]

Kind = Literal["consumer", "key", "ip"]
UpdateKind = Literal["consumer", "key", "ip", "range"]
# When `score` can say anything: always (it reads the shared counters), only for a subject with an
# entry of its own in `state.memo`, or with one either there or in `state.evidence`.
Needs = Literal["always", "memo", "memo_or_evidence"]
KINDS: tuple[Kind, ...] = ("consumer", "key", "ip")


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


@dataclass(frozen=True, slots=True)
class Declaration:
    """What a detector tells the processor.

    Parameters
    ----------
    inspects, updates
        Whether it has `inspect` / `update` (checked against the class when it is defined).
    kinds
        Subject kinds it judges (and learns for).
    update_kinds
        Kinds `update` learns for, `"range"` for address ranges; None: every kind in `kinds`, and
        ranges when it judges them. Lets the processor skip calls that change nothing.
    needs
        When `score` can say anything (see `Needs`): the processor skips the other calls.
    judges_ranges
        Whether it judges address ranges (then it has `wants_range`).
    memo
        How its per-subject memory is checkpointed: required when it `updates`.
    model_version
        Schema version of its model-level state (`export_model` / `load_model`); 0: it has none.

    >>> Declaration(updates=True, kinds=("ip",), update_kinds=("consumer",))
    Traceback (most recent call last):
    ...
    ValueError: update_kinds ('consumer',) outside the kinds it judges ('ip',)
    """

    inspects: bool = False
    updates: bool = False
    kinds: tuple[Kind, ...] = KINDS
    update_kinds: tuple[UpdateKind, ...] | None = None
    needs: Needs = "always"
    judges_ranges: bool = False
    memo: MemoCodec | None = None
    model_version: int = 0

    def __post_init__(self) -> None:
        if not self.kinds or not set(self.kinds) <= set(KINDS):
            raise ValueError(f"kinds must be some of {KINDS}, not {self.kinds!r}")
        if self.update_kinds is not None:
            allowed = set(self.kinds) | ({"range"} if self.judges_ranges else set())
            if not self.updates or not set(self.update_kinds) <= allowed:
                raise ValueError(
                    f"update_kinds {self.update_kinds!r} outside the kinds it judges {self.kinds!r}"
                )
        if self.needs not in ("always", "memo", "memo_or_evidence"):
            raise ValueError(f"unknown needs {self.needs!r}")
        if self.needs != "always" and not (self.updates or self.inspects):
            raise ValueError("needs a memo or evidence it has no call to make")
        if self.updates != (self.memo is not None):
            raise ValueError("a detector that updates declares its memo codec, and only then")
        if self.model_version < 0:
            raise ValueError("model_version must not be negative")

    def updates_for(self, kind: UpdateKind) -> bool:
        """Whether `update` can change anything on a subject of `kind` (`"range"`: a range)."""
        if not self.updates:
            return False
        if self.update_kinds is not None:
            return kind in self.update_kinds
        return self.judges_ranges if kind == "range" else kind in self.kinds

    def for_kinds(self, kinds: tuple[Kind, ...]) -> Declaration:
        """The same declaration judging only `kinds` (a detector whose kinds are a parameter)."""
        return replace(self, kinds=kinds)


# What each declared call needs overridden.
_CALLS = (
    ("inspects", ("inspect",)),
    ("updates", ("update",)),
    ("judges_ranges", ("wants_range",)),
)


class Detector:
    """Base of every detector: the calls the processor may make, with do-nothing defaults, and
    the declaration that says which ones a subclass really has.

    >>> class Quiet(Detector):
    ...     name = "quiet"
    ...     declares = Declaration(inspects=True)
    ...     def score(self, state, ctx):
    ...         return None
    Traceback (most recent call last):
    ...
    TypeError: Quiet declares inspects but does not override inspect
    """

    name: ClassVar[str]
    # Bumped whenever the detector's logic changes what it decides (every shipped detector sets
    # its own); not `declares.model_version`, the format of its checkpointed model.
    version: ClassVar[str] = "1"
    # Per instance when its kinds are a parameter (see `Declaration.for_kinds`).
    declares: Declaration = Declaration()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.declares
        for flag, methods in _CALLS:
            for method in methods:
                overridden = getattr(cls, method) is not getattr(Detector, method)
                if getattr(declared, flag) != overridden:
                    verb = "does not override" if not overridden else "overrides"
                    said = flag if overridden is False else f"not {flag}"
                    raise TypeError(f"{cls.__name__} declares {said} but {verb} {method}")
        learns = declared.model_version > 0
        for method in ("export_model", "load_model"):
            if learns != (getattr(cls, method) is not getattr(Detector, method)):
                raise TypeError(
                    f"{cls.__name__}: {method} goes with a model_version above 0, and only then"
                )

    def inspect(self, event: GatewayEvent) -> Signal | None:
        """A finding in this one request, or None. May learn from the request (e.g. an endpoint's
        normal parameter shapes) but never from one it flags."""
        return None

    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        """Learn from one event of this subject, in `state.memo[self.name]`."""

    def wants_range(self, event: GatewayEvent) -> bool:
        """Whether this request also counts towards its client's address range."""
        return False

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        """A signal when the subject looks risky now, else None (always None while warming up)."""
        raise NotImplementedError

    def export_model(self) -> Any:
        """The model-level learned state as msgpack-able data (schema `declares.model_version`)."""
        raise NotImplementedError

    def load_model(self, data: Any) -> None:
        """Replace the model-level learned state with `data` from `export_model`, checked; raises
        `StateFormatError` (leaving the model as it was) when it does not fit."""
        raise NotImplementedError
