"""API-spec drift findings, aggregated per (kind, method, route) and bounded.

Findings are reported, not acted on: a shadow endpoint seen 40,000 times is one line with a count,
when it was first and last seen, what it answered and a few of the subjects that called it. Every
text in a finding comes from requests (attacker-controlled), so texts are cut short and each kind
keeps a fixed number of lines: a flood of random paths cannot grow this, nor push out the
endpoints that were called most.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detectors.codec import StateFormatError, count, expect_list, text

__all__ = ["KINDS", "Finding", "FindingLog"]

# Most severe first: the order of a report.
KINDS = (
    "shadow_endpoint",
    "undocumented_method",
    "unknown_endpoint_probe",
    "deprecated_operation",
    "unknown_parameter",
)
MAX_TEXT = 256
MAX_STATUSES = 8
MAX_PARAMS = 16


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the drift report (JSON-able through `as_dict`)."""

    kind: str
    method: str
    route: str
    count: int
    first_seen_ms: int
    last_seen_ms: int
    statuses: dict[str, int]
    subjects: list[str]
    operation_id: str = ""
    spec: str = ""
    params: dict[str, int] = field(default_factory=dict)
    documented_methods: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "route": self.route,
            "count": self.count,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "statuses": dict(self.statuses),
            "subjects": list(self.subjects),
            "operation_id": self.operation_id,
            "spec": self.spec,
            "params": dict(self.params),
            "documented_methods": list(self.documented_methods),
        }


class _Tally:
    __slots__ = (
        "count",
        "first",
        "last",
        "methods",
        "op",
        "params",
        "spec",
        "statuses",
        "subjects",
    )

    def __init__(self, t_ms: int, op: str, spec: str, methods: list[str]) -> None:
        self.count = 0
        self.first = t_ms
        self.last = t_ms
        self.statuses: dict[str, int] = {}
        self.subjects: list[str] = []
        self.params: dict[str, int] = {}
        self.op = op
        self.spec = spec
        self.methods = methods


class FindingLog:
    """Counts findings per (kind, method, route), keeping at most `max_per_kind` routes per kind.

    When a kind is full, the less-called half of its routes (the oldest first among equals) is
    dropped and counted in `evicted`; `totals` keeps every hit.

    Parameters
    ----------
    max_per_kind
        Routes kept per finding kind.
    max_subjects
        Example subjects kept per route.

    Examples
    --------
    >>> log = FindingLog(max_per_kind=4)
    >>> for i in range(3):
    ...     log.record("shadow_endpoint", "GET", "/internal/debug", 1_000 + i, 200, "ip:10.0.0.1")
    >>> for i in range(10):
    ...     log.record("unknown_endpoint_probe", "GET", f"/probe{i}", 2_000 + i, 404, "ip:10.0.0.9")
    >>> top = log.findings()[0]
    >>> top.kind, top.route, top.count, top.statuses, top.subjects
    ('shadow_endpoint', '/internal/debug', 3, {'200': 3}, ['ip:10.0.0.1'])
    >>> [f.route for f in log.findings() if f.kind == "unknown_endpoint_probe"]
    ['/probe6', '/probe7', '/probe8', '/probe9']
    >>> log.totals["unknown_endpoint_probe"], log.evicted["unknown_endpoint_probe"]
    (10, 6)
    """

    def __init__(self, max_per_kind: int = 256, max_subjects: int = 5) -> None:
        if max_per_kind < 2:
            raise ValueError("max_per_kind must be at least 2")
        if max_subjects < 0:
            raise ValueError("max_subjects must not be negative")
        self.max_per_kind = max_per_kind
        self.max_subjects = max_subjects
        self._tallies: dict[str, dict[tuple[str, str], _Tally]] = {k: {} for k in KINDS}
        self.totals: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.evicted: dict[str, int] = dict.fromkeys(KINDS, 0)

    def record(
        self,
        kind: str,
        method: str,
        route: str,
        t_ms: int,
        status: int,
        subject: str,
        *,
        operation_id: str = "",
        spec: str = "",
        params: list[str] | None = None,
        documented_methods: list[str] | None = None,
    ) -> None:
        table = self._tallies[kind]
        key = (method[:16], route[:MAX_TEXT])
        tally = table.get(key)
        if tally is None:
            if len(table) >= self.max_per_kind:
                self._evict(kind, table)
            tally = table[key] = _Tally(t_ms, operation_id, spec, documented_methods or [])
        self.totals[kind] += 1
        tally.count += 1
        tally.first = min(tally.first, t_ms)
        tally.last = max(tally.last, t_ms)
        code = str(status)
        if code in tally.statuses or len(tally.statuses) < MAX_STATUSES:
            tally.statuses[code] = tally.statuses.get(code, 0) + 1
        else:
            tally.statuses["other"] = tally.statuses.get("other", 0) + 1
        if len(tally.subjects) < self.max_subjects and subject not in tally.subjects:
            tally.subjects.append(subject[:MAX_TEXT])
        for name in params or ():
            name = name[:64]
            if name in tally.params or len(tally.params) < MAX_PARAMS:
                tally.params[name] = tally.params.get(name, 0) + 1

    def _evict(self, kind: str, table: dict[tuple[str, str], _Tally]) -> None:
        ranked = sorted(table.items(), key=lambda kv: (kv[1].count, kv[1].last), reverse=True)
        keep = self.max_per_kind // 2
        for key, _ in ranked[keep:]:
            del table[key]
        self.evicted[kind] += len(ranked) - keep

    def findings(self) -> list[Finding]:
        """Every kept finding, most severe kind first, then most frequent."""
        out = []
        for kind in KINDS:
            rows = sorted(self._tallies[kind].items(), key=lambda kv: (-kv[1].count, kv[0]))
            for (method, route), t in rows:
                out.append(
                    Finding(
                        kind=kind,
                        method=method,
                        route=route,
                        count=t.count,
                        first_seen_ms=t.first,
                        last_seen_ms=t.last,
                        statuses=dict(t.statuses),
                        subjects=list(t.subjects),
                        operation_id=t.op,
                        spec=t.spec,
                        params=dict(t.params),
                        documented_methods=list(t.methods),
                    )
                )
        return out

    def __len__(self) -> int:
        return sum(len(table) for table in self._tallies.values())

    def export(self) -> list[Any]:
        """Everything kept, as plain data (for checkpoints)."""
        rows = [
            [
                *(kind, method, route, t.count, t.first, t.last),
                *(t.statuses, t.subjects, t.params, t.op, t.spec, t.methods),
            ]
            for kind, table in self._tallies.items()
            for (method, route), t in table.items()
        ]
        return [rows, self.totals, self.evicted]

    def load(self, data: Any) -> None:
        """Replace what is kept with `export()`'s data, checked (`StateFormatError`)."""
        rows, totals_in, evicted_in = expect_list(data, 3, "a finding log")
        name, big, n, ms = text(MAX_TEXT), text(65536), count(), count(1 << 62)
        tallies: dict[str, dict[tuple[str, str], _Tally]] = {k: {} for k in KINDS}
        for row in expect_list(rows, None, "a list of findings"):
            (kind, method, route, hits, first, last, statuses, subjects, params, op, spec,
             methods) = expect_list(row, 12, "a finding")  # fmt: skip
            table = tallies.get(kind) if isinstance(kind, str) else None
            if table is None or len(table) >= self.max_per_kind:
                raise StateFormatError(f"a finding of kind {kind!r} this log does not keep")
            t = _Tally(ms.decode(first), big.decode(op), big.decode(spec),
                       [big.decode(m) for m in expect_list(methods)])  # fmt: skip
            t.count, t.last = n.decode(hits), ms.decode(last)
            t.statuses = _counts(statuses, MAX_STATUSES + 1)
            t.params = _counts(params, MAX_PARAMS)
            t.subjects = [name.decode(s) for s in expect_list(subjects)][: self.max_subjects]
            table[(name.decode(method), name.decode(route))] = t
        totals = _counts(totals_in, len(KINDS))
        evicted = _counts(evicted_in, len(KINDS))
        if set(totals) != set(KINDS) or set(evicted) != set(KINDS):
            raise StateFormatError("finding totals for other kinds")
        self._tallies, self.totals, self.evicted = tallies, totals, evicted


def _counts(raw: Any, most: int) -> dict[str, int]:
    """A {text: count} map of at most `most` entries."""
    if type(raw) is not dict or len(raw) > most:
        raise StateFormatError(f"not a map of at most {most} counts")
    name, n = text(MAX_TEXT), count()
    return {name.decode(k): n.decode(v) for k, v in raw.items()}
