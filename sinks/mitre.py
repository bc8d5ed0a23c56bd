"""MITRE ATT&CK (Enterprise) names and tactics for the technique ids alerts carry, so a sink can
fill `threat.*` (ECS) or `attacks` (OCSF) with more than a bare id.

Only the techniques gatewatch's detectors can report are listed; an unknown id still goes out as
an id (with its reference URL), just without a name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TACTICS", "TECHNIQUES", "Technique", "technique"]

FRAMEWORK = "MITRE ATT&CK"

TACTICS: dict[str, str] = {
    "TA0001": "Initial Access",
    "TA0002": "Execution",
    "TA0003": "Persistence",
    "TA0004": "Privilege Escalation",
    "TA0005": "Defense Evasion",
    "TA0006": "Credential Access",
    "TA0007": "Discovery",
    "TA0009": "Collection",
    "TA0040": "Impact",
    "TA0043": "Reconnaissance",
}

# id -> (name, tactic ids); sub-techniques name only themselves, their tactics are the parent's.
TECHNIQUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "T1059": ("Command and Scripting Interpreter", ("TA0002",)),
    "T1078": ("Valid Accounts", ("TA0001", "TA0003", "TA0004", "TA0005")),
    "T1083": ("File and Directory Discovery", ("TA0007",)),
    "T1087": ("Account Discovery", ("TA0007",)),
    "T1110": ("Brute Force", ("TA0006",)),
    "T1110.001": ("Password Guessing", ()),
    "T1110.003": ("Password Spraying", ()),
    "T1110.004": ("Credential Stuffing", ()),
    "T1119": ("Automated Collection", ("TA0009",)),
    "T1190": ("Exploit Public-Facing Application", ("TA0001",)),
    "T1213": ("Data from Information Repositories", ("TA0009",)),
    "T1498": ("Network Denial of Service", ("TA0040",)),
    "T1499": ("Endpoint Denial of Service", ("TA0040",)),
    "T1499.002": ("Service Exhaustion Flood", ()),
    "T1499.003": ("Application Exhaustion Flood", ()),
    "T1499.004": ("Application or System Exploitation", ()),
    "T1552": ("Unsecured Credentials", ("TA0006",)),
    "T1552.001": ("Credentials In Files", ()),
    "T1589": ("Gather Victim Identity Information", ("TA0043",)),
    "T1592": ("Gather Victim Host Information", ("TA0043",)),
    "T1595": ("Active Scanning", ("TA0043",)),
    "T1595.001": ("Scanning IP Blocks", ()),
    "T1595.002": ("Vulnerability Scanning", ()),
    "T1595.003": ("Wordlist Scanning", ()),
}


@dataclass(frozen=True, slots=True)
class Technique:
    id: str  # the technique (T1110), never a sub-technique
    name: str | None
    reference: str
    subtechnique_id: str | None  # T1110.004
    subtechnique_name: str | None
    subtechnique_reference: str | None
    tactics: tuple[str, ...]  # tactic ids


def technique(attack_id: str) -> Technique:
    """What ATT&CK says about a technique or sub-technique id.

    >>> t = technique("T1110.004")
    >>> t.id, t.name, t.subtechnique_name, [TACTICS[x] for x in t.tactics]
    ('T1110', 'Brute Force', 'Credential Stuffing', ['Credential Access'])
    >>> t.subtechnique_reference
    'https://attack.mitre.org/techniques/T1110/004/'
    """
    parent, _, sub = attack_id.partition(".")
    name, tactics = TECHNIQUES.get(parent, (None, ()))
    return Technique(
        id=parent,
        name=name,
        reference=f"https://attack.mitre.org/techniques/{parent}/",
        subtechnique_id=attack_id if sub else None,
        subtechnique_name=TECHNIQUES.get(attack_id, (None, ()))[0] if sub else None,
        subtechnique_reference=f"https://attack.mitre.org/techniques/{parent}/{sub}/"
        if sub
        else None,
        tactics=tactics,
    )
