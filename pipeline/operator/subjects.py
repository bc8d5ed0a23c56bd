"""What an operator may name as a subject: exactly what the gateways can look up.

The Kong plugin and the Apigee enforcement flow look up a request's subjects by string equality in
local memory: `consumer:<id>`, `key:hmac:<16 hex>` (the pipeline's keyed fingerprint), the client
address as Python's `ipaddress` prints it, and its `/24` (IPv4) or `/64` (IPv6) range. An override
on anything else (`ip:not-an-ip`, `ip:10.0.0.0/8`, `ip:010.0.0.1`) would be stored and never match:
it is refused here with a line that says what is accepted. Equivalent spellings of an address
(`2001:DB8:0::1`) are rewritten to the one gateways use.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["ACCEPTED", "SubjectError", "canonical_subject"]

ACCEPTED = (
    "consumer:<id>, key:hmac:<16 hex digits>, ip:<address>, ip:<a.b.c>.0/24 or ip:<IPv6 network>/64"
)
_KEY = re.compile(r"hmac:[0-9a-f]{16}")
# Control characters never reach a gateway's subject (they are refused on ingest), and the Kong
# plugin keeps override subjects newline-joined in its shared dict.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ID_CHARS = 256
_RANGE_PREFIX = {4: 24, 6: 64}


class SubjectError(ValueError):
    """A subject no gateway could ever match; the message says why and what is accepted."""

    def __init__(self, subject: str, why: str) -> None:
        super().__init__(f"{subject!r} is not a subject gateways can match: {why} "
                         f"(accepted: {ACCEPTED})")


def canonical_subject(subject: str) -> str:
    """The subject as gateways spell it, or `SubjectError`.

    >>> canonical_subject("ip:2001:DB8:0::1"), canonical_subject("ip:203.0.113.0/24")
    ('ip:2001:db8::1', 'ip:203.0.113.0/24')
    >>> canonical_subject("ip:10.0.0.0/8")
    Traceback (most recent call last):
    ...
    pipeline.operator.subjects.SubjectError: 'ip:10.0.0.0/8' is not a subject gateways can match: \
gateways look up /24 (IPv4) and /64 (IPv6) ranges only (accepted: consumer:<id>, \
key:hmac:<16 hex digits>, ip:<address>, ip:<a.b.c>.0/24 or ip:<IPv6 network>/64)
    """
    kind, sep, rest = subject.partition(":")
    if not sep or kind not in ("consumer", "key", "ip"):
        raise SubjectError(subject, "unknown kind")
    if kind == "consumer":
        if not rest:
            raise SubjectError(subject, "empty consumer id")
        if len(rest) > MAX_ID_CHARS:
            raise SubjectError(subject, f"consumer ids are at most {MAX_ID_CHARS} characters")
        if _CONTROL.search(rest):
            raise SubjectError(subject, "control characters")
        if rest != rest.strip():
            raise SubjectError(subject, "leading or trailing spaces (gateways trim them)")
        return subject
    if kind == "key":
        if not _KEY.fullmatch(rest):
            raise SubjectError(
                subject, "keys are the pipeline's fingerprints, key:hmac: and 16 lowercase hex "
                "digits (see `gatewatch decision` or an alert for a key's subject)"
            )
        return subject
    return f"ip:{_address(subject, rest)}"


def _address(subject: str, text: str) -> str:
    if "%" in text:
        raise SubjectError(subject, "addresses are looked up without a zone id (%...)")
    if "/" not in text:
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            raise SubjectError(subject, "not an IP address") from None
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(text, strict=False)
            raise SubjectError(subject, f"host bits set (did you mean ip:{loose}?)") from None
        raise SubjectError(subject, "not an IP network") from None
    if network.prefixlen != _RANGE_PREFIX[network.version]:
        raise SubjectError(
            subject, "gateways look up /24 (IPv4) and /64 (IPv6) ranges only"
        )
    return str(network)
