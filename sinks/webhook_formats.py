"""Webhook bodies: Slack (`text` + Block Kit `blocks`), Microsoft Teams (an Adaptive Card in a
`message`, what Teams' Workflows webhooks take; the older MessageCard went with the retired Office
365 connectors), or a user template.

Slack: `text` is the notification fallback; each alert is a section (title, reasons, fields:
subject, action and mode, route, score, ATT&CK) and a context line (id, times, evidence). `&`, `<`
and `>` are escaped as Slack asks, so a hostile value cannot become a mention (`<!channel>`) or a
link. Texts are cut to Block Kit's limits (header 150, section 3,000, field 2,000 characters; 50
blocks: 10 alerts per message at most).

Teams: one card per message; values go in TextBlocks and FactSets as plain JSON strings (Teams
renders a small Markdown subset in them), each cut to 1,000 characters, and shorter still until
the message is under 24 KB (Teams accepts 28 KB).

Template: Python's `string.Template`, chosen over Jinja2 on purpose: it has no expressions,
attribute access, filters or loops, so there is nothing to sandbox and nothing a template author
(or a value) can make it execute; it needs no dependency. The file is JSON with placeholders, one
alert per request. `$title` and the other text placeholders insert the value JSON-escaped without
its quotes (write `"$title"`), so no value can break out of its string; `$score`, `$event_time`,
`$emit_time`, `$enforced` insert JSON numbers/booleans and `$alert_json` the whole alert record as
a JSON object (write them unquoted). The result must parse as JSON, which `build` checks at start.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.alerts import Alert

__all__ = ["TEMPLATE_FIELDS", "Render", "slack_message", "teams_message", "template_renderer"]

Render = Callable[[list[Alert]], bytes]
ICON = {"info": "⚪", "low": "🔵", "medium": "🟡", "high": "🟠", "critical": "🔴"}
TEAMS_COLOR = {"info": "Default", "low": "Accent", "medium": "Warning", "high": "Attention"}
TEAMS_MAX_CHARS = 1000
TEAMS_MAX_BYTES = 24 * 1024  # Teams takes 28 KB; room for its own envelope


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack(text: str) -> str:
    """Slack's three control characters escaped (its documented rule for message text)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _verb(alert: Alert) -> str:
    if alert.operator:
        return alert.operator.action
    return alert.action if alert.enforced else f"would {alert.action} ({alert.mode})"


def _reasons(alert: Alert) -> str:
    lines = [f"{r.detector}: {r.text}" for r in alert.reasons]
    operator = alert.operator
    if operator and operator.reason and all(r.text != operator.reason for r in alert.reasons):
        lines.append(f"{operator.actor}: {operator.reason}")
    return "\n".join(lines)


def slack_message(alerts: list[Alert]) -> bytes:
    blocks: list[dict[str, Any]] = []
    head = f"gatewatch: {len(alerts)} alert{'s' * (len(alerts) != 1)}"
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": head}})
    for a in alerts:
        fields = [
            ("Subject", a.subject),
            ("Action", _verb(a)),
            ("Route", " ".join(filter(None, (a.gateway, a.service, a.route))) or "-"),
            ("Score", f"{a.score:.2f} ({a.severity})"),
        ]
        if a.attack:
            fields.append(("MITRE ATT&CK", ", ".join(a.attack)))
        title = f"{ICON.get(a.severity, '')} *{_slack(a.title)}*"
        body = _cut(f"{title}\n{_slack(_reasons(a))}", 3000)
        section: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": body}}
        section["fields"] = [
            {"type": "mrkdwn", "text": _cut(f"*{k}*\n{_slack(v)}", 2000)} for k, v in fields
        ]
        context = f"{a.id} · event {_iso(a.event_time)}"
        if a.evidence:
            context += " · requests " + ", ".join(a.evidence)
        blocks.append(section)
        elements = [{"type": "mrkdwn", "text": _cut(_slack(context), 2000)}]
        blocks.append({"type": "context", "elements": elements})
        blocks.append({"type": "divider"})
    fallback = _cut("; ".join(_slack(a.title) for a in alerts), 3000)
    return orjson.dumps({"text": fallback, "blocks": blocks})


def teams_message(alerts: list[Alert]) -> bytes:
    """The card, its texts cut until the message is under TEAMS_MAX_BYTES."""
    limit = TEAMS_MAX_CHARS
    while True:
        body = _teams_body(alerts, limit)
        if len(body) <= TEAMS_MAX_BYTES or limit <= 16:
            return body
        limit //= 2


def _teams_body(alerts: list[Alert], limit: int) -> bytes:
    body: list[dict[str, Any]] = []
    for a in alerts:
        facts = [
            ("Subject", a.subject),
            ("Action", _verb(a)),
            ("Route", " ".join(filter(None, (a.gateway, a.service, a.route))) or "-"),
            ("Score", f"{a.score:.2f} ({a.severity})"),
            ("MITRE ATT&CK", ", ".join(a.attack) or "-"),
            ("Event time", _iso(a.event_time)),
            ("Alert id", a.id),
        ]
        body.append(
            {
                "type": "TextBlock",
                "text": _cut(a.title, limit),
                "weight": "Bolder",
                "wrap": True,
                "color": TEAMS_COLOR.get(a.severity, "Attention"),
            }
        )
        # The id is never cut: it is how an analyst finds the alert.
        cut = [{"title": k, "value": v if k == "Alert id" else _cut(v, limit)} for k, v in facts]
        body.append({"type": "FactSet", "facts": cut})
        if a.reasons or a.operator:
            text = _cut(_reasons(a), limit)
            body.append({"type": "TextBlock", "text": text, "wrap": True, "isSubtle": True})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    attachment = {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
    return orjson.dumps({"type": "message", "attachments": [attachment]})


def _text_fields(a: Alert) -> dict[str, str]:
    return {
        "id": a.id,
        "kind": a.kind,
        "title": a.title,
        "subject": a.subject,
        "scope": a.scope,
        "action": a.action,
        "mode": a.mode,
        "severity": a.severity,
        "detector": a.detector,
        "tenant": a.tenant or "",
        "gateway": a.gateway or "",
        "node": a.node or "",
        "service": a.service or "",
        "route": a.route or "",
        "reasons": _reasons(a),
        "reason_codes": ",".join(r.code for r in a.reasons),
        "attack": ",".join(a.attack),
        "evidence": ",".join(a.evidence),
        "event_time_iso": _iso(a.event_time),
        "emit_time_iso": _iso(a.emit_time),
        "model_version": a.model_version,
    }


def _fields(a: Alert) -> dict[str, str]:
    out = {k: orjson.dumps(v).decode()[1:-1] for k, v in _text_fields(a).items()}
    out |= {
        "score": repr(a.score),
        "event_time": str(a.event_time),
        "emit_time": str(a.emit_time),
        "enforced": "true" if a.enforced else "false",
        "alert_json": a.to_json().decode(),
    }
    return out


TEMPLATE_FIELDS = frozenset(
    "id kind title subject scope action mode severity detector tenant gateway node service route "
    "reasons reason_codes attack evidence event_time_iso emit_time_iso model_version "
    "score event_time emit_time enforced alert_json".split()
)


def template_renderer(text: str) -> Render:
    """A renderer for one alert per message; `ValueError` names what is wrong with `text`."""
    template = string.Template(text)
    if not template.is_valid():
        raise ValueError("a `$` that starts no placeholder (write `$$` for a dollar sign)")
    unknown = set(template.get_identifiers()) - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"unknown placeholders {sorted(unknown)}; known: {sorted(TEMPLATE_FIELDS)}"
        )

    def render(alerts: list[Alert]) -> bytes:
        [alert] = alerts
        body = template.substitute(_fields(alert)).encode()
        orjson.loads(body)  # raises orjson.JSONDecodeError (a ValueError) when it is not JSON
        return body

    return render
