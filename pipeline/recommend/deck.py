"""Kong rate limits for review, as a decK file: one `rate-limiting` plugin per consumer.

Each entry is scoped to its consumer (Kong's consumer id, as Kong logs it and gatewatch names the
subject), counts per consumer (`limit_by: consumer`), and is preceded by a comment citing the
baseline it came from. `policy: local` (per node) needs no Redis or database: with N nodes behind
a balancer a consumer may get up to N times the limit, so divide by the node count or switch to
`policy: redis` if that matters. The file adds plugins only: merge it into your state file after
review, or apply it with `deck gateway apply` (adds and updates, never deletes).
"""

from __future__ import annotations

import json
import time

from pipeline.recommend.baselines import Recommendation

__all__ = ["TAG", "render_deck"]

TAG = "gatewatch-recommended"


def render_deck(recommendations: list[Recommendation], *, source: str) -> str:
    lines = [
        "# gatewatch recommend: per-consumer rate limits learned from traffic, FOR REVIEW.",
        f"# Source: {source}; generated {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}.",
        "# Each limit is the consumer's own p99 x 3 per second (and 3x its mean per minute): "
        "check",
        "# the cited baseline against what the consumer is entitled to before applying.",
        "# Apply after review: deck gateway apply <this file>   (adds/updates only)",
        '_format_version: "3.0"',
    ]
    if not recommendations:
        lines.append("plugins: []")
        return "\n".join(lines) + "\n"
    lines.append("plugins:")
    for r in recommendations:
        lines += [
            f"  # {_comment(r.citation())}",
            "  - name: rate-limiting",
            f"    consumer: {json.dumps(r.consumer)}",
            "    config:",
            f"      second: {r.per_second}",
            f"      minute: {r.per_minute}",
            "      limit_by: consumer",
            "      policy: local",
            "      fault_tolerant: true",
            f"    tags: [{TAG}]",
        ]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> str:
    return " ".join(text.split())  # one line, whatever a consumer id holds
