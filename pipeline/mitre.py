"""MITRE ATT&CK technique ids per reason code: the one table alerts (and the sinks' ECS, OCSF and
CEF fields) take them from.

A reason code is a detector signal's `kind` (`detectors.base.Signal`), or a finding code the
worker reports (`pii_in_url`). Codes not listed map to no technique: a bot without an attack
(`bot`, `aggressive_crawler`), an anomaly that only says "unusual", and API-surface findings about
the API rather than a client (`shadow_endpoint`, `undocumented_method`, `pii_in_url`).

Choices a reader may question:
- `distributed_credential_stuffing` is stuffing (T1110.004) and spraying (T1110.003): access logs
  carry no user names, and a few failures per address from many addresses is how both are run.
- `bola_enumeration` walks object ids the client is refused (403/404): an attempt on an
  authorisation flaw of a public-facing API (T1190) to read others' data (T1213).
- `scraping` is automated collection (T1119) from an information repository, the API (T1213).
- sensitive-file, admin and undocumented-endpoint probing are wordlist scanning (T1595.003); a
  scanner's own user agent is vulnerability scanning (T1595.002).

Only sub-techniques are listed where one fits; the parent is the part before the dot.

>>> attack_ids(["credential_stuffing", "sqli", "flood", "sqli", "bot"])
['T1110.004', 'T1190', 'T1499.003']
>>> TECHNIQUES["T1110.004"]
('Brute Force: Credential Stuffing', 'TA0006', 'Credential Access')
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BY_CODE", "TECHNIQUES", "attack_ids"]

# Technique id -> (name, tactic id, tactic name); the tactic is the one this use of it serves.
TECHNIQUES: dict[str, tuple[str, str, str]] = {
    "T1078": ("Valid Accounts", "TA0001", "Initial Access"),
    "T1110.001": ("Brute Force: Password Guessing", "TA0006", "Credential Access"),
    "T1110.003": ("Brute Force: Password Spraying", "TA0006", "Credential Access"),
    "T1110.004": ("Brute Force: Credential Stuffing", "TA0006", "Credential Access"),
    "T1119": ("Automated Collection", "TA0009", "Collection"),
    "T1190": ("Exploit Public-Facing Application", "TA0001", "Initial Access"),
    "T1213": ("Data from Information Repositories", "TA0009", "Collection"),
    "T1499.003": ("Endpoint Denial of Service: Application Exhaustion Flood", "TA0040", "Impact"),
    "T1595.002": ("Active Scanning: Vulnerability Scanning", "TA0043", "Reconnaissance"),
    "T1595.003": ("Active Scanning: Wordlist Scanning", "TA0043", "Reconnaissance"),
}

# Reason code -> technique ids (detector in the comment).
BY_CODE: dict[str, tuple[str, ...]] = {
    "brute_force": ("T1110.001",),  # bruteforce: one consumer or key failing logins
    "credential_stuffing": ("T1110.004",),  # bruteforce: one address failing many logins
    "distributed_credential_stuffing": ("T1110.004", "T1110.003"),  # distributed_stuffing
    "flood": ("T1499.003",),  # rate
    "scraping": ("T1119", "T1213"),  # object_walk
    "bola_enumeration": ("T1190", "T1213"),  # object_walk
    "key_sharing": ("T1078",),  # key_sharing: a credential used far beyond its owner
    "scanner": ("T1595.002",),  # bot_ua: an attack tool's user agent
    "secret_file": ("T1595.003",),  # probing
    "admin_probe": ("T1595.003",),  # probing
    "sensitive_file_probing": ("T1595.003",),  # probing
    "unknown_endpoint_probe": ("T1595.003",),  # spec_drift
    "shadow_endpoint_discovery": ("T1595.003",),  # spec_drift
    "sqli": ("T1190",),  # injection
    "xss": ("T1190",),
    "lfi": ("T1190",),
    "rce": ("T1190",),
    "ssrf": ("T1190",),
}


def attack_ids(codes: Iterable[str]) -> list[str]:
    """The technique ids of these reason codes, each once, sorted."""
    return sorted({t for code in codes for t in BY_CODE.get(code, ())})
