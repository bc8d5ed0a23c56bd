"""Override subjects are refused unless a gateway could match them, with a line saying why."""

from __future__ import annotations

import pytest
import typer

from pipeline.operator.cli import parse_ttl
from pipeline.operator.subjects import ACCEPTED, SubjectError, canonical_subject


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("ip:203.0.113.9", "ip:203.0.113.9"),
        ("ip:2001:DB8:0:0::1", "ip:2001:db8::1"),
        ("ip:203.0.113.0/24", "ip:203.0.113.0/24"),
        ("ip:2001:db8:1:2::/64", "ip:2001:db8:1:2::/64"),
        ("consumer:partner-a", "consumer:partner-a"),
        ("consumer:App of Zoë", "consumer:App of Zoë"),
        ("key:hmac:0123456789abcdef", "key:hmac:0123456789abcdef"),
    ],
)
def test_accepted_subjects_come_out_as_gateways_spell_them(given: str, canonical: str) -> None:
    assert canonical_subject(given) == canonical


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("ip:not-an-ip", "not an IP address"),
        ("ip:10.0.0.0/8", "/24 (IPv4) and /64 (IPv6) ranges only"),
        ("ip:2001:db8::/48", "/24 (IPv4) and /64 (IPv6) ranges only"),
        ("ip:10.0.0.5/24", "did you mean ip:10.0.0.0/24?"),
        ("ip:010.0.0.1", "not an IP address"),
        ("ip:10.0.0.0/33", "not an IP network"),
        ("ip:", "not an IP address"),
        ("ip:fe80::1%eth0", "without a zone id"),
        ("user:alice", "unknown kind"),
        ("203.0.113.9", "unknown kind"),
        ("consumer:", "empty consumer id"),
        ("consumer: padded ", "leading or trailing spaces"),
        ("consumer:a\nb", "control characters"),
        ("consumer:" + "x" * 257, "at most 256"),
        ("key:0123456789abcdef", "key:hmac:"),
        ("key:hmac:0123456789ABCDEF", "key:hmac:"),
        ("key:hmac:0123", "key:hmac:"),
    ],
)
def test_subjects_no_gateway_can_match_are_refused(given: str, why: str) -> None:
    with pytest.raises(SubjectError) as refused:
        canonical_subject(given)
    message = str(refused.value)
    assert why in message and ACCEPTED in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("30m", 1800.0), ("12h", 43200.0), ("7d", 604800.0), ("45", 45.0),
     ("1.5h", 5400.0), ("never", None), ("0", None)],
)  # fmt: skip
def test_ttl(text: str, seconds: float | None) -> None:
    assert parse_ttl(text, 60) == seconds


@pytest.mark.parametrize("text", ["soon", "-5m", "7w", ""])
def test_bad_ttl_is_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="use 90s, 30m, 12h, 7d or never"):
        parse_ttl(text, 60)
