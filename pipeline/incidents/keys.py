"""What an alert says about where it belongs: its attack family, its grouping keys, its user agent.

An incident is a set of alerts connected through shared grouping keys within the quiet window
(see `builder.py`). The keys of one alert are a function of that alert alone, which is what makes
the grouping independent of the order alerts arrive in:

- `s:<subject>`: every alert, operator actions and de-escalations included (their timeline).
- `r:<range>`: the /24 (IPv4) or /64 (IPv6) of an address or range subject: one rented range.
- `rf:<family>:<tenant>:<route>`: one route under attack by one family from many subjects.
- `c:<family>:<user agent>`: one campaign trait, the user agent a detector names in its reason
  (the distributed-stuffing detector names the UA its failing logins share; the scanner-UA
  detector names the scanner).

Only alerts strong enough to open an incident (`opens`) link through the last three: a `tag` on
a neighbour of an attacker must not pull that neighbour into the attacker's incident.
"""

from __future__ import annotations

import ipaddress
import re

from pipeline.alerts import Alert

__all__ = [
    "ACTION_RANK",
    "FAMILY_LABELS",
    "SEVERITY_RANK",
    "families_of",
    "grouping_keys",
    "opens",
    "range_of",
    "user_agents_of",
]

ACTION_RANK = {"allow": 0, "tag": 1, "challenge": 2, "block": 3}
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}

# Detector name -> attack family. A detector's reason codes vary (sqli, xss, ... for injection);
# its family does not.
_DETECTOR_FAMILY = {
    "bruteforce": "credential",
    "distributed_stuffing": "credential",
    "rate": "flood",
    "object_walk": "scraping",
    "scraping": "scraping",
    "injection": "injection",
    "bot_ua": "bot",
    "bot_behaviour": "bot",
    "crawler_pace": "bot",
    "probing": "probing",
    "key_sharing": "key_sharing",
    "spec_drift": "spec_drift",
    "anomaly": "anomaly",
    "redaction": "pii",  # the collector's PII masking, reported as an API-surface finding
}
# Reason codes whose family is plain even when the detector is unknown (another build's name).
_CODE_FAMILY = {
    "brute_force": "credential",
    "credential_stuffing": "credential",
    "distributed_credential_stuffing": "credential",
    "flood": "flood",
    "scraping": "scraping",
    "bola_enumeration": "scraping",
    "sensitive_file_probing": "probing",
    "secret_file": "probing",
    "admin_probe": "probing",
    "key_sharing": "key_sharing",
    "behaviour_anomaly": "anomaly",
    "pii_in_url": "pii",
    "shadow_endpoint": "spec_drift",
    "undocumented_method": "spec_drift",
}
FAMILY_LABELS = {
    "credential": "credential attack",
    "flood": "flood",
    "scraping": "scraping / object enumeration",
    "injection": "injection probing",
    "bot": "bot traffic",
    "probing": "sensitive-file probing",
    "key_sharing": "key sharing",
    "spec_drift": "API spec drift",
    "anomaly": "behavioural anomaly",
    "pii": "PII in URLs",
}
# A route under attack by many subjects is one incident for these families; an anomaly or a
# shared key belongs to its subject alone.
_ROUTE_FAMILIES = frozenset(
    {"credential", "flood", "scraping", "injection", "bot", "probing", "spec_drift", "pii"}
)
_UA = re.compile(r"""(?:\bUA|user agent) (?:'([^']{1,200})'|"([^"]{1,200})")""")
_MIN_FINDING_SEVERITY = SEVERITY_RANK["medium"]


def families_of(alert: Alert) -> list[str]:
    """The attack families an alert's reasons name, sorted (operator actions have none).

    >>> from pipeline.incidents.testing import make_alert
    >>> families_of(make_alert(detector="rate", code="flood"))
    ['flood']
    """
    if alert.kind == "operator":
        return []
    found = {_family(r.detector, r.code) for r in alert.reasons}
    if not found:
        found.add(_family(alert.detector, ""))
    return sorted(found)


def _family(detector: str, code: str) -> str:
    return _DETECTOR_FAMILY.get(detector) or _CODE_FAMILY.get(code) or detector or code or "other"


def opens(alert: Alert) -> bool:
    """Strong enough to open an incident: a challenge or block (in any mode: "would block" in
    shadow counts), or a finding of medium severity or more. Tags, de-escalations and operator
    actions only join an incident their subject already has."""
    if alert.kind == "decision":
        return ACTION_RANK[alert.action] >= ACTION_RANK["challenge"]
    if alert.kind == "finding":
        return SEVERITY_RANK[alert.severity] >= _MIN_FINDING_SEVERITY
    return False


def range_of(subject: str) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) an address or range subject lies in.

    >>> range_of("ip:203.0.113.9"), range_of("ip:203.0.113.0/24"), range_of("consumer:c1")
    ('203.0.113.0/24', '203.0.113.0/24', None)
    >>> range_of("ip:2001:db8::1")
    '2001:db8::/64'
    """
    kind, _, rest = subject.partition(":")
    if kind != "ip":
        return None
    try:
        net = ipaddress.ip_network(rest, strict=False)
    except ValueError:
        return None
    prefix = 24 if net.version == 4 else 64
    if net.prefixlen < prefix:
        return str(net)
    return str(net.supernet(new_prefix=prefix))


def user_agents_of(alert: Alert) -> list[str]:
    """User agents the alert's reasons name (a campaign's shared UA, a scanner's).

    >>> from pipeline.incidents.testing import make_alert
    >>> user_agents_of(make_alert(text="3 of 4 logins failing from 9 addresses, UA 'curl/8.1'"))
    ['curl/8.1']
    """
    found: set[str] = set()
    for reason in alert.reasons:
        for m in _UA.finditer(reason.text):
            found.add(m.group(1) or m.group(2))
    return sorted(found)


def grouping_keys(alert: Alert) -> list[str]:
    """Every key this alert links through (see the module docstring), sorted.

    >>> from pipeline.incidents.testing import make_alert
    >>> grouping_keys(make_alert(subject="ip:203.0.113.9", route="/v1/login", detector="rate"))
    ['r:203.0.113.0/24', 'rf:flood::/v1/login', 's:ip:203.0.113.9']
    >>> grouping_keys(make_alert(subject="ip:203.0.113.9", action="tag"))
    ['s:ip:203.0.113.9']
    """
    keys = {f"s:{alert.subject}"}
    if opens(alert):
        if (net := range_of(alert.subject)) is not None:
            keys.add(f"r:{net}")
        families = families_of(alert)
        if alert.route:
            keys.update(
                f"rf:{f}:{alert.tenant or ''}:{alert.route}"
                for f in families
                if f in _ROUTE_FAMILIES
            )
        for ua in user_agents_of(alert):
            keys.update(f"c:{f}:{ua}" for f in families)
    return sorted(keys)
