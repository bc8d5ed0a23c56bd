"""Subject states and learned models as bytes for checkpoints: msgpack of plain values, read back
through typed, bounded fields (`detectors/codec.py`). Never pickle: a checkpoint is untrusted input.

A subject state (schema `STATE_VERSION`) is one msgpack array: the `SubjectState` counters in
`_FIELDS` order, then its baseline (an array, or nil), its evidence chain (an array of links, or
nil) and its memo (a map `{detector name: [memo schema version, *fields]}`, or nil). A model is
`[model schema version, data]` per detector, from its `export_model`.

What cannot be read is skipped, never guessed at: a whole subject when its counters are wrong; one
detector's memo when that detector is not running here (`foreign`) or wrote another schema
(`version`), the subject's other state kept.

>>> from detectors import default_detectors
>>> codec = StateCodec(default_detectors())
>>> state = SubjectState()
>>> state.w_requests, state.auth_failures, state.memo = 3, 2.5, {"bruteforce": 0b1011}
>>> copy, notes = codec.decode(codec.encode(state))
>>> copy.w_requests, copy.auth_failures, copy.memo, notes
(3, 2.5, {'bruteforce': 11}, [])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

import msgpack

from detectors.base import Detector
from detectors.codec import (
    FLAG,
    NONNEG,
    REAL,
    Field,
    MemoCodec,
    StateFormatError,
    StateVersionError,
    bits,
    count,
    expect_list,
    one_of,
    text,
    unit,
)
from detectors.state import Baseline, Evidence, SubjectState

__all__ = ["STATE_VERSION", "StateCodec", "pack", "unpack"]

STATE_VERSION = 1
_ACTION = one_of("allow", "tag", "challenge", "block")
_FIELDS: tuple[tuple[str, Field], ...] = (
    ("w_start", REAL),
    ("w_requests", count()),
    ("w_errors", count()),
    ("w_auth", count()),
    ("w_auth_fail", count()),
    ("w_latency", NONNEG),
    ("w_paths", bits(64)),
    ("prev_requests", count()),
    ("sustained", NONNEG),
    ("sustained_ts", REAL),
    ("windows_seen", count()),
    ("auth_attempts", NONNEG),
    ("auth_failures", NONNEG),
    ("auth_ts", REAL),
    ("flagged", FLAG),
    ("action", _ACTION),
    ("decided_at", REAL),
    ("expires_at", REAL),
)
_BASELINE: tuple[tuple[str, Field], ...] = (
    ("fading_factor", unit()),
    ("rate_mean", NONNEG),
    ("rate_sq", NONNEG),
    ("rate_slow", NONNEG),
    ("error_ratio", NONNEG),
    ("auth_failure_ratio", NONNEG),
    ("path_diversity", NONNEG),
    ("latency", NONNEG),
    ("windows", count()),
    ("busy", FLAG),
)
_EVIDENCE: tuple[tuple[str, Field], ...] = (
    ("detector", text(256)),
    ("total", NONNEG),
    ("ts", REAL),
    ("hits", count()),
    ("kind", text(256)),
    ("reason", text(65536)),
)
_MAX_LINKS = 64  # evidence links: one per detector
_get_fields = attrgetter(*(name for name, _ in _FIELDS))
_get_baseline = attrgetter(*(name for name, _ in _BASELINE))
_get_evidence = attrgetter(*(name for name, _ in _EVIDENCE))
# What one checkpointed value may hold at most: a state is about 1 KB, a model a few MB.
_LIMITS = {
    "max_str_len": 1 << 20,
    "max_bin_len": 1 << 20,
    "max_array_len": 1 << 20,
    "max_map_len": 1 << 16,
    "max_ext_len": 0,
}


_packer = msgpack.Packer(use_bin_type=True)


def pack(value: Any) -> bytes:
    packed: bytes = _packer.pack(value)
    return packed


def unpack(raw: bytes) -> Any:
    """msgpack to plain values, bounded, with no extension types: `StateFormatError` otherwise."""
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True, **_LIMITS)
    except Exception as exc:  # msgpack raises several kinds (ValueError, ExtraData, ...)
        raise StateFormatError(f"not msgpack: {exc}") from None


class StateCodec:
    """Encodes and decodes the subject states and models of one set of detectors."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.memos: dict[str, MemoCodec] = {
            d.name: d.declares.memo for d in detectors if d.declares.memo is not None
        }
        self._encoders = {name: codec.encode for name, codec in self.memos.items()}
        self.learners = {d.name: d for d in detectors if d.declares.model_version > 0}

    # -- subject states ---------------------------------------------------------------------------
    def encode(self, state: SubjectState) -> bytes:
        # Runs for every changed subject of every checkpoint: kept to a few C calls.
        baseline = state.baseline
        evidence = state.evidence
        memo = state.memo
        links = None
        if evidence is not None:
            links = []
            link: Evidence | None = evidence
            while link is not None:
                links.append(_get_evidence(link))
                link = link.next
        memos = None
        if memo is not None:
            encoders = self._encoders
            memos = {name: encoders[name](m) for name, m in memo.items()}
        return _packer.pack(
            (
                *_get_fields(state),
                None if baseline is None else _get_baseline(baseline),
                links,
                memos,
            )
        )

    def decode(self, raw: bytes) -> tuple[SubjectState, list[tuple[str, str]]]:
        """The state, and the (reason, detail) of any detector memo left out of it."""
        data = expect_list(unpack(raw), len(_FIELDS) + 3, "a subject state")
        state = SubjectState.__new__(SubjectState)
        _fill(state, _FIELDS, data)
        baseline_in, links_in, memos_in = data[len(_FIELDS) :]
        state.baseline = None
        if baseline_in is not None:
            baseline = Baseline.__new__(Baseline)
            _fill(baseline, _BASELINE, expect_list(baseline_in, len(_BASELINE), "a baseline"))
            state.baseline = baseline
        state.evidence = None
        if links_in is not None:
            links = expect_list(links_in, None, "an evidence chain")
            if not 0 < len(links) <= _MAX_LINKS:
                raise StateFormatError("an evidence chain of no or too many links")
            chain: Evidence | None = None
            for raw_link in reversed(links):
                link = Evidence.__new__(Evidence)
                _fill(link, _EVIDENCE, expect_list(raw_link, len(_EVIDENCE), "evidence"))
                link.next = chain
                chain = link
            state.evidence = chain
        notes: list[tuple[str, str]] = []
        state.memo = None
        if memos_in is not None:
            if type(memos_in) is not dict:
                raise StateFormatError("a memo that is not a map")
            memo: dict[str, object] = {}
            for name, entry in memos_in.items():
                codec = self.memos.get(name)
                if codec is None:
                    notes.append(("foreign", f"memo of {str(name)[:64]!r}, no such detector here"))
                    continue
                try:
                    memo[name] = codec.decode(entry)
                except StateVersionError as exc:
                    notes.append(("version", f"{name}: {exc}"))
            state.memo = memo or None
        return state, notes

    # -- models -----------------------------------------------------------------------------------
    def export_models(self) -> dict[str, bytes]:
        """Each learning detector's model, packed as `[schema version, data]`."""
        return {
            name: pack([d.declares.model_version, d.export_model()])
            for name, d in self.learners.items()
        }

    def load_model(self, name: str, raw: bytes) -> None:
        """Load one detector's packed model; raises `StateFormatError` (the model unchanged)."""
        detector = self.learners.get(name)
        if detector is None:
            raise StateFormatError(f"a model of {name[:64]!r}, no such detector here")
        version, data = expect_list(unpack(raw), 2, "a model")
        if version != detector.declares.model_version:
            raise StateVersionError(
                f"{name} model schema {version!r}, not {detector.declares.model_version}"
            )
        detector.load_model(data)

    def load_models(self, models: Mapping[str, bytes]) -> list[tuple[str, str, str]]:
        """Load every model that fits; (detector, reason, detail) of each one that did not."""
        skipped = []
        for name, raw in models.items():
            try:
                self.load_model(name, raw)
            except StateVersionError as exc:
                skipped.append((name, "version", str(exc)))
            except StateFormatError as exc:
                reason = "foreign" if name not in self.learners else "corrupt"
                skipped.append((name, reason, str(exc)))
        return skipped


def _fill(obj: object, fields: tuple[tuple[str, Field], ...], values: list[Any]) -> None:
    for (name, f), value in zip(fields, values, strict=False):
        try:
            setattr(obj, name, f.decode(value))
        except StateFormatError as exc:
            raise StateFormatError(f"{type(obj).__name__}.{name}: {exc}") from None
