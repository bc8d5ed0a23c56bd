"""Alerts for the sink tests: a typical one, and values an attacker controls at their worst."""

from __future__ import annotations

import random
from typing import Any

from pipeline.alerts import Alert, AlertReason
from pipeline.operator import audit

__all__ = ["HOSTILE", "alert", "operator_alert", "random_text"]

# Every character CEF, syslog, JSON and Slack's mrkdwn treat specially, and injection attempts.
HOSTILE = [
    "pipe | in | title",
    "back\\slash and trailing \\",
    "equals=sign and key=value cs1=forged",
    "line\nbreak\r\nand CR\rend",
    " leading and trailing spaces  ",
    "CEF:0|forged|header|1|x|y|10| act=allow",
    "literal \\n and \\= and \\|",
    "<14>1 - forged syslog - - -",
    "tab\there, nul\x00 and bell\x07",
    'json "quotes" {"a":1} </script>',
    "ünïcödé 中文 😀 \u2028",
    "${id} $title {{ 7*7 }} <!channel> <@U123>",
]


def alert(n: int = 0, **changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "id": f"gw-test-{n:06d}",
        "kind": "decision",
        "event_time": 1_714_557_600_000 + n,
        "emit_time": 1_714_557_600_250 + n,
        "subject": "ip:203.0.113.9",
        "scope": "ip",
        "tenant": "default",
        "gateway": "kong",
        "node": "kong-eu-1",
        "service": "shop",
        "route": "/v1/login",
        "action": "block",
        "mode": "shadow",
        "enforced": False,
        "title": "would block ip:203.0.113.9: credential stuffing",
        "severity": "high",
        "score": 0.93,
        "detector": "bruteforce",
        "reasons": [
            AlertReason(
                detector="bruteforce",
                code="credential_stuffing",
                text="42 failed logins in 60 s",
                score=0.93,
                feature="auth_failures",
                value=42,
                baseline=1.5,
                limit=20,
            ),
            AlertReason(detector="rate", code="flood", text="rate 8x baseline", score=0.4),
        ],
        "attack": ["T1110.004", "T1110"],
        "detector_versions": {"bruteforce": "1.2.0", "rate": "1.0.1"},
        "model_version": "m-7",
        "evidence": ["req-1", "req-2", "req-3"],
        "expires_at": 1_714_557_900_000,
    }
    return Alert(**(fields | changes))


def operator_alert(n: int = 0, action: str = "override_allow") -> Alert:
    """An operator action as the audit trail writes it (pipeline/operator/audit.py)."""
    return audit.operator_alert(
        action,
        "consumer:partner-7",
        actor="alice",
        reason="partner batch sync",
        at_ms=1_714_557_600_000 + n,
        route="/v1/orders",
    )


ALPHABET = "\\=|\n\r \t\x00ab1é中😀#%\"'{}<>$"


def random_text(rng: random.Random, max_len: int = 40) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_len)))
