"""Scores a replay against the simulator's labels, the way a security team judges a detector.

- An episode is *detected* when a `challenge` or `block` decision hits one of its attacker subjects
  (or the `/24` / `/64` range of one of its addresses) between its start and 60 s after its end.
  Time to detect is simulated time from the episode's start to that decision; for credential
  attacks the attempts the attacker made until then are counted too.
- A *false positive* is a `challenge` or `block` on a benign subject, or on a range holding no
  attacker address. Subjects that only ever appear in the same requests as an attacker (the key
  behind a shared credential) are the attack's; one also seen in benign requests (an app key
  real users share, which an attacker lifted) stays benign.
- Benign exposure is counted in subject-hours: for each benign subject, the time from its first
  request to the end of the run (it could be wrongly blocked at any moment of it).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.decisions import Decision
from pipeline.events import GatewayEvent
from pipeline.worker.processor import range_subject

__all__ = ["ACTING", "Scorer"]

ACTING = ("challenge", "block")
GRACE_MS = 60_000
CREDENTIAL_SCENARIOS = ("credential_stuffing", "distributed_credential_stuffing", "brute_force")


@dataclass
class _Episode:
    id: str
    scenario: str
    start_ms: int
    end_ms: int
    subjects: set[str]
    ranges: set[str]
    attempts: list[int] = field(default_factory=list)  # auth attempt times, for credential attacks
    detected_ms: int | None = None
    detected_by: str = ""


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


class Scorer:
    """Feed it every replayed event (`observe`), then the decisions (`report`)."""

    def __init__(self, labels: dict[str, Any], is_auth_route: Callable[[str], bool]) -> None:
        self.end_ms = int(labels["end_ms"])
        self.episodes = [
            _Episode(
                id=str(e["id"]),
                scenario=str(e["scenario"]),
                start_ms=int(e["start_ms"]),
                end_ms=int(e["end_ms"]),
                subjects=set(e["subjects"]),
                ranges={
                    r
                    for s in e["subjects"]
                    if s.startswith("ip:") and (r := range_subject(s[3:])) is not None
                },
            )
            for e in labels["episodes"]
        ]
        self._by_subject: dict[str, list[_Episode]] = {}
        for episode in self.episodes:
            for subject in episode.subjects:
                self._by_subject.setdefault(subject, []).append(episode)
        self._attack_ranges = {r for e in self.episodes for r in e.ranges}
        self.is_auth_route = is_auth_route
        self.first_seen: dict[str, int] = {}
        self.associated: set[str] = set()
        self.benign_seen: set[str] = set()
        # A labelled consumer's credential (`key:`), found in the traffic: the labels name the
        # consumer, the gateway's log also names the key it authenticated with.
        self.aliases: dict[str, list[_Episode]] = {}

    def observe(self, event: GatewayEvent) -> None:
        subjects = event.subjects()
        if event.consumer and event.credential:
            owner = self._by_subject.get(f"consumer:{event.consumer}")
            if owner is not None:
                self.aliases.setdefault(f"key:{event.credential}", owner)
        attacker: list[_Episode] | None = None
        for subject in subjects:
            if subject not in self.first_seen:
                self.first_seen[subject] = event.ts_ms
            found = self._by_subject.get(subject)
            if found is not None:
                attacker = found
        active = [e for e in attacker if e.start_ms <= event.ts_ms <= e.end_ms] if attacker else []
        if not active:
            self.benign_seen.update(subjects)
            return
        # Everything this attacker's requests carry belongs to the attack.
        self.associated.update(s for s in subjects if s not in self._by_subject)
        if event.method != "GET" and self.is_auth_route(event.route):
            for episode in active:
                episode.attempts.append(event.ts_ms)

    def report(self, decisions: Iterable[Decision]) -> dict[str, Any]:
        # A subject also seen in benign requests (an app key shared by thousands of real users
        # that an attacker lifted) is benign: blocking it is a false positive.
        self.associated -= self.benign_seen
        false_positives: dict[str, Decision] = {}
        tagged: set[str] = set()
        for d in sorted(decisions, key=lambda d: d.updated_at):
            hit = self._episodes_hit(d.subject)
            if d.action not in ACTING:
                if d.action == "tag" and not hit and d.subject not in self.associated:
                    tagged.add(d.subject)
                continue
            for episode in hit:
                if (
                    episode.detected_ms is None
                    and episode.start_ms <= d.updated_at <= episode.end_ms + GRACE_MS
                ):
                    episode.detected_ms, episode.detected_by = d.updated_at, d.subject
            if not hit and d.subject not in self.associated:
                false_positives.setdefault(d.subject, d)
        return {
            "scenarios": self._scenarios(),
            "benign": self._benign(false_positives, tagged),
            "missed": [
                {"id": e.id, "scenario": e.scenario, "subjects": sorted(e.subjects)[:3]}
                for e in self.episodes
                if e.detected_ms is None
            ],
        }

    def _episodes_hit(self, subject: str) -> list[_Episode]:
        found = self._by_subject.get(subject) or self.aliases.get(subject)
        if found is not None:
            return found
        if "/" in subject and subject in self._attack_ranges:
            return [e for e in self.episodes if subject in e.ranges]
        return []

    def _scenarios(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for scenario in sorted({e.scenario for e in self.episodes}):
            episodes = [e for e in self.episodes if e.scenario == scenario]
            found = [e for e in episodes if e.detected_ms is not None]
            delays = [((e.detected_ms or 0) - e.start_ms) / 1000 for e in found]
            row: dict[str, Any] = {
                "episodes": len(episodes),
                "detected": len(found),
                "recall": round(len(found) / len(episodes), 3),
                "median_time_to_detect_s": round(statistics.median(delays), 2) if delays else None,
                "p90_time_to_detect_s": _quantile(delays, 0.9),
                "delays_s": [round(d, 2) for d in delays],
            }
            if scenario in CREDENTIAL_SCENARIOS:
                attempts = [
                    sum(1 for t in e.attempts if t <= (e.detected_ms or 0)) for e in found
                ]
                row["median_attempts_to_detect"] = (
                    statistics.median(attempts) if attempts else None
                )
                row["attempts_to_detect"] = attempts
            out[scenario] = row
        return out

    def _benign(self, false_positives: dict[str, Decision], tagged: set[str]) -> dict[str, Any]:
        benign = [
            s
            for s in self.first_seen
            if s not in self._by_subject and s not in self.associated and s not in self.aliases
        ]
        hours = sum(max(0, self.end_ms - self.first_seen[s]) for s in benign) / 3_600_000
        fp = len(false_positives)
        return {
            "subjects": len(benign),
            "subject_hours": round(hours, 1),
            "false_positive_subjects": fp,
            "fp_per_1000_subject_hours": round(1000 * fp / hours, 3) if hours else None,
            "tagged_subjects": len(tagged),
            "false_positives_by_detector": dict(
                Counter(d.detector for d in false_positives.values()).most_common()
            ),
            "false_positive_examples": [
                {"subject": s, "action": d.action, "reasons": d.reasons}
                for s, d in list(false_positives.items())[:10]
            ],
        }
