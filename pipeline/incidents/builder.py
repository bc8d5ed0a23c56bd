"""Alerts into incidents: connected components of "shares a grouping key within the quiet window".

Two alerts belong to one incident when they share a grouping key (`keys.py`) and their event
times are at most `quiet_s` apart, or are linked through a chain of such pairs. That relation is
defined by the alerts alone, so the incidents (and their ids, named after their earliest alert)
are the same whatever order the alerts arrive in; an alert that bridges two incidents merges them,
and the merged-away id stays resolvable as an alias.

Per grouping key the store keeps intervals `[start, end, incident]`: the time span of one chain of
that key's alerts. An alert at `t` touches every interval with `start - quiet <= t <= end + quiet`.
An incident is resolved once nothing has joined it for `quiet_s`.

One builder writes at a time (the alerts topic has one partition, so the sink runner's consumer
group hands it to one process); each batch is read, folded in memory and committed in one
transaction together with the ids of the alerts it consumed, so a redelivered alert changes
nothing and a crash before the commit loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from pipeline.alerts import Alert
from pipeline.incidents.keys import grouping_keys
from pipeline.incidents.model import Incident, alert_count
from pipeline.incidents.store import Commit, IncidentStore

__all__ = ["IncidentBuilder"]

log = structlog.get_logger(__name__)
MAX_INTERVALS = 50  # per key: the latest chains; older ones only matter to very late alerts


@dataclass
class _Batch:
    """The working copy of one batch: loaded incidents, local aliases, touched intervals."""

    incidents: dict[str, Incident] = field(default_factory=dict)
    alias: dict[str, str] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    intervals: dict[str, list[list[int | str]]] = field(default_factory=dict)
    subjects: dict[str, set[str]] = field(default_factory=dict)

    def find(self, incident: str) -> str:
        while incident in self.alias:
            incident = self.alias[incident]
        return incident

    def rename(self, old: str, incident: Incident) -> None:
        if old == incident.id:
            return
        self.incidents.pop(old, None)
        self.incidents[incident.id] = incident
        self.alias[old] = incident.id
        self.removed.add(old)
        self.subjects.setdefault(incident.id, set()).update(self.subjects.pop(old, set()))


class IncidentBuilder:
    def __init__(self, store: IncidentStore, *, quiet_s: float = 900.0) -> None:
        if quiet_s <= 0:
            raise ValueError("quiet_s must be > 0")
        self.store = store
        self.quiet_ms = int(quiet_s * 1000)

    async def add(self, alerts: list[Alert]) -> list[str]:
        """Fold `alerts` in; returns the ids of the incidents they changed (sorted).

        An alert id already consumed changes nothing, unless it comes back with a higher request
        count (a finding window closing: the same alert, upserted): then only the count moves."""
        unique: dict[str, Alert] = {}
        for a in alerts:
            if a.id not in unique or alert_count(a) > alert_count(unique[a.id]):
                unique[a.id] = a
        known = await self.store.seen_counts(sorted(unique))
        new = sorted(
            (a for i, a in unique.items() if i not in known), key=lambda a: (a.event_time, a.id)
        )
        recounts = sorted(
            (a for i, a in unique.items() if i in known and alert_count(a) > known[i]),
            key=lambda a: a.id,
        )
        if not new and not recounts:
            return []
        keys = {a.id: grouping_keys(a) for a in (*new, *recounts)}
        all_keys = sorted({k for ks in keys.values() for k in ks})
        batch = _Batch(intervals=await self.store.intervals(all_keys))
        wanted = {
            str(iv[2])
            for a in (*new, *recounts)
            for k in keys[a.id]
            for iv in batch.intervals.get(k, [])
            if self._touches(iv, a.event_time)
        }
        for old, incident in (await self.store.load(sorted(wanted))).items():
            batch.incidents.setdefault(incident.id, incident)
            if old != incident.id:
                batch.alias[old] = incident.id
        for alert in new:
            self._fold(batch, alert, keys[alert.id])
        for alert in recounts:
            self._recount(batch, alert, keys[alert.id], known[alert.id])
        touched = sorted(batch.incidents)
        for ivs in batch.intervals.values():
            for iv in ivs:
                iv[2] = batch.find(str(iv[2]))
        await self.store.commit(
            Commit(
                incidents=[batch.incidents[i] for i in touched],
                aliases={old: batch.find(old) for old in sorted(batch.removed)},
                intervals=batch.intervals,
                subjects={i: sorted(s) for i, s in batch.subjects.items()},
                alert_counts={a.id: alert_count(a) for a in (*new, *recounts)},
            )
        )
        log.info(
            "incidents.folded", alerts=len(new), recounted=len(recounts), incidents=len(touched)
        )
        return touched

    def _recount(self, batch: _Batch, alert: Alert, keys: list[str], known: int) -> None:
        roots = self._roots(batch, alert, keys)
        if roots:  # else its incident expired: nothing left to count into
            batch.incidents[roots[0]].recount(alert, known)

    def _roots(self, batch: _Batch, alert: Alert, keys: list[str]) -> list[str]:
        """The incidents (loaded in `batch`) whose intervals `alert` touches, oldest first."""
        t = alert.event_time
        found = {
            batch.find(str(iv[2]))
            for k in keys
            for iv in batch.intervals.get(k, [])
            if self._touches(iv, t)
        }
        # Ids missing from the batch are incidents that expired from the store.
        return sorted(
            (r for r in found if r in batch.incidents), key=lambda r: batch.incidents[r].root
        )

    def _touches(self, iv: list[int | str], t: int) -> bool:
        return int(iv[0]) - self.quiet_ms <= t <= int(iv[1]) + self.quiet_ms

    def _fold(self, batch: _Batch, alert: Alert, keys: list[str]) -> None:
        t = alert.event_time
        found = [batch.incidents[r] for r in self._roots(batch, alert, keys)]
        if not found:
            target = Incident.start(alert)
            batch.incidents[target.id] = target
        else:
            target = found[0]
            before = target.id
            for other in found[1:]:
                target.merge(other)
                batch.incidents.pop(other.id, None)
                batch.alias[other.id] = before
                batch.removed.add(other.id)
                batch.subjects.setdefault(before, set()).update(batch.subjects.pop(other.id, set()))
            target.add(alert)
            batch.rename(before, target)
        batch.subjects.setdefault(target.id, set()).add(alert.subject)
        for k in keys:
            span = [t, t]
            keep = []
            for iv in batch.intervals.get(k, []):
                if self._touches(iv, t):
                    span = [min(span[0], int(iv[0])), max(span[1], int(iv[1]))]
                else:
                    keep.append(iv)
            keep.append([span[0], span[1], target.id])
            keep.sort(key=lambda iv: (int(iv[1]), int(iv[0])))
            batch.intervals[k] = keep[-MAX_INTERVALS:]
