"""Ground truth: attack episodes and the labels document the evaluator reads.

An episode names every attacker identity as a gatewatch subject (`ip:<addr>`,
`consumer:<id>`). Every other subject in the traffic is benign. A consumer subject is spelled the
way the gateway's parser will spell it: Kong's consumer id, or on Apigee the developer app name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FORMATS", "SCENARIOS", "Episode", "labels_document"]

# Output formats: Kong http-log JSON lines, Apigee MessageLogging syslog lines.
FORMATS = ("kong", "apigee-syslog")

SCENARIOS = (
    "credential_stuffing",
    "distributed_credential_stuffing",
    "brute_force",
    "scraping",
    "bola_enumeration",
    "injection_probing",
    "bad_ua_bot",
    "stealth_bot",
    "consumer_flood",
    "key_sharing",
    "sensitive_file_probing",
    "shadow_endpoint_discovery",
)


@dataclass(eq=False)
class Episode:
    """One attack: planned window, attacker subjects, and what it actually sent."""

    id: str
    scenario: str
    start_ms: int
    end_ms: int
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    ips: set[str] = field(default_factory=set)
    # Kong consumer id -> developer app name (what Apigee calls the consumer).
    consumers: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    first_ms: int | None = None
    last_ms: int | None = None

    def count(self, ts_ms: int) -> None:
        self.requests += 1
        if self.first_ms is None:
            self.first_ms = ts_ms
        self.last_ms = ts_ms

    def subjects(self, fmt: str = "kong") -> list[str]:
        names = self.consumers.values() if fmt.startswith("apigee") else self.consumers
        return [f"consumer:{c}" for c in names] + [f"ip:{ip}" for ip in sorted(self.ips)]

    def as_dict(self, fmt: str = "kong") -> dict[str, Any]:
        return {
            "id": self.id,
            "scenario": self.scenario,
            "subjects": self.subjects(fmt),
            # What the attack really did: its first and last request (the plan if it sent none).
            "start_ms": self.first_ms if self.first_ms is not None else self.start_ms,
            "end_ms": self.last_ms if self.last_ms is not None else self.end_ms,
            "planned_window_ms": [self.start_ms, self.end_ms],
            "requests": self.requests,
            "description": self.description,
            "params": self.params,
        }


def labels_document(
    *,
    seed: int,
    minutes: float,
    start_ms: int,
    end_ms: int,
    episodes: list[Episode],
    benign_subjects: int,
    auth_routes: list[str],
    shadow_endpoints: list[dict[str, str]],
    fmt: str = "kong",
) -> dict[str, Any]:
    return {
        "seed": seed,
        "minutes": minutes,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "format": fmt,
        "episodes": [e.as_dict(fmt) for e in episodes],
        "auth_routes": auth_routes,
        "benign_subjects": benign_subjects,
        "shadow_endpoints": shadow_endpoints,
    }
