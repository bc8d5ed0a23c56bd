"""Webhook bodies at their limits: ten alerts of hostile, oversized values still make a Slack
message Block Kit accepts and a Teams message under its size limit; the template placeholders
are exactly the documented ones."""

from __future__ import annotations

import orjson

from pipeline.alerts import Alert, AlertReason
from sinks.webhook_formats import TEMPLATE_FIELDS, _fields, slack_message, teams_message
from tests.alert_samples import HOSTILE, alert
from tests.receivers.webhook import slack_problem, teams_ok


def huge(n: int) -> list[Alert]:
    text = "".join(HOSTILE) + "\x00" * 500
    reasons = [AlertReason(detector="d", code="c", text=text * 5, score=0.5)]
    return [
        alert(
            i,
            title=text * 3,
            route=text,
            subject=f"consumer:{text}",
            scope="consumer",
            reasons=reasons,
            attack=["T1190"] * 50,
            evidence=[text] * 20,
        )
        for i in range(n)
    ]


def test_slack_messages_stay_within_block_kit() -> None:
    message = orjson.loads(slack_message(huge(10)))
    assert slack_problem(message) is None
    assert len(message["blocks"]) == 31


def test_teams_messages_stay_under_the_size_limit() -> None:
    alerts = huge(10)
    body = teams_message(alerts)
    message = orjson.loads(body)
    assert teams_ok(message) and len(body) <= 24 * 1024
    facts = [
        f
        for b in message["attachments"][0]["content"]["body"]
        if b["type"] == "FactSet"
        for f in b["facts"]
        if f["title"] == "Alert id"
    ]
    assert [f["value"] for f in facts] == [a.id for a in alerts]


def test_template_placeholders_are_the_documented_ones() -> None:
    assert set(_fields(alert())) == TEMPLATE_FIELDS
