"""Server-side request forgery: URLs (and bare addresses) pointing a server at itself, its network
or its cloud's metadata service, however the address is spelled.

Hosts are judged, not matched: `2852039166`, `0xA9FEA9FE`, `0251.0376.0251.0376`,
`[::ffff:a9fe:a9fe]` and `169.254.169.254.nip.io` all reach 169.254.169.254. Metadata host names
come from CRS `ssrf.data`. A loopback or private address is normal where a browser is sent next
(`redirect_uri`, RFC 8252 loopback redirects): the caller says so with `redirect`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from detectors.injection_engine import Hit

__all__ = ["metadata_hosts", "ssrf_hits"]

_URL = re.compile(
    r"(?<![a-z0-9+.-])(?P<scheme>(?:jar:)?[a-z][a-z0-9+.-]{1,15})\s*:\s*[/\\]{1,3}\s*(?P<auth>[^/?#\\\s]*)"
)
_DANGEROUS_SCHEMES = frozenset(
    {"gopher", "dict", "ldap", "ldaps", "tftp", "netdoc", "jar:http", "jar:https"}
)
_REBIND = re.compile(
    r"(?:^|\.)(?:nip\.io|xip\.io|sslip\.io|localtest\.me|lvh\.me|burpcollaborator\.net|oast\.\w+|interact\.sh)$"
)
_BARE_METADATA = re.compile(
    r"(?<![\d.])169\.254\.169\.254(?![\d])|\bmetadata\.google\.internal\b|(?<![\d.])100\.100\.100\.200(?![\d])"
)
_METADATA_IPS = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254")
)


def metadata_hosts(entries: Iterable[str]) -> frozenset[str]:
    """Host names (not addresses) of the URLs in `entries` (CRS `ssrf.data` lines)."""
    hosts = set()
    for entry in entries:
        m = _URL.search(entry.lower())
        if m:
            host = m.group("auth").rsplit("@", 1)[-1].split(":", 1)[0]
            if host and not host[0].isdigit() and not host.startswith("[") and "." not in host[:1]:
                if "localhost" not in host and _REBIND.search(host) is None and host.isascii():
                    hosts.add(host)
    return frozenset(hosts)


_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]+|\d+)(?:\.(?:0x[0-9a-f]+|\d+)){0,3}")


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton's forms: 1-4 parts, each decimal, octal (leading 0) or hex (0x)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums = []
    for p in parts:
        try:
            if p.startswith(("0x", "0X")):
                nums.append(int(p[2:], 16))
            elif len(p) > 1 and p.startswith("0"):
                nums.append(int(p, 8))
            else:
                nums.append(int(p, 10))
        except ValueError:
            return None
    value = 0
    for i, n in enumerate(nums[:-1]):
        if n > 255:
            return None
        value |= n << (24 - 8 * i)
    last_bits = 32 - 8 * (len(nums) - 1)
    if nums[-1] >= 1 << last_bits:
        return None
    return ipaddress.IPv4Address(value | nums[-1])


def _host_risk(host: str, metadata_hosts: frozenset[str]) -> tuple[float, str] | None:
    if not host:
        return None
    if host in metadata_hosts:
        return 0.9, f"cloud metadata host {host}"
    if host.startswith("["):
        try:
            ip6 = ipaddress.IPv6Address(host.strip("[]").split("%")[0])
        except ValueError:
            return None
        mapped = ip6.ipv4_mapped
        how = "IPv4-mapped"
        if mapped is None and int(ip6) >> 32 == 0 and int(ip6) > 1:
            # The deprecated IPv4-compatible form [::169.254.169.254]: still an IPv4 address to
            # the stacks that accept it, and nobody writes one but to dodge a filter.
            mapped, how = ipaddress.IPv4Address(int(ip6)), "IPv4-compatible"
        if mapped is not None:
            risk = _ip_risk(mapped)
            return (min(1.0, risk[0] + 0.1), f"{risk[1]} ({how})") if risk else None
        return _ip_risk(ip6)
    if host == "localhost" or host.endswith((".localhost", ".localdomain")):
        return 0.35, "localhost"
    if _REBIND.search(host):
        embedded = re.search(r"\d{1,3}(?:[.-]\d{1,3}){3}", host)
        if embedded:
            ip = _legacy_ipv4(embedded.group(0).replace("-", "."))
            risk = _ip_risk(ip) if ip else None
            if risk:
                return min(1.0, risk[0] + 0.1), f"{risk[1]} behind wildcard DNS"
        return 0.6, "wildcard DNS service"
    if not (host[0].isdigit()):
        return None
    canonical = re.fullmatch(
        r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}", host
    )
    ip = _legacy_ipv4(host)
    if ip is None:
        if _NUMERIC_HOST.fullmatch(host):
            # Too large for an address: some resolvers wrap it around (2^32 + 169.254.169.254).
            return 0.8, f"numeric host {host[:20]}, obfuscated"
        return None
    risk = _ip_risk(ip)
    if canonical:
        return risk
    # Nobody writes an address as 2852039166, 0x7f.1 or 0251.0376.0251.0376 but to dodge a filter.
    label = risk[1] if risk else f"address {ip}"
    return max(0.8, risk[0] if risk else 0.0), f"{label}, obfuscated"


# Loopback, private and localhost scores: at most this.
_LOCAL = 0.65


def _ip_risk(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[float, str] | None:
    if ip in _METADATA_IPS:
        return 0.9, f"cloud metadata address {ip}"
    if ip.is_loopback or ip.is_unspecified:
        return 0.65, f"loopback address {ip}"
    if ip.is_link_local:
        return 0.85, f"link-local address {ip}"
    if ip.is_private:
        return 0.55, f"private address {ip}"
    return None


def ssrf_hits(
    text: str, metadata_hosts: frozenset[str], out: list[Hit], *, redirect: bool, bare: bool = True
) -> None:
    """Append to `out` the riskiest URL target in `text`, or with `bare` a metadata address
    written without a scheme (`169.254.169.254/latest/user-data`): that is only a request target
    where the value is taken as a URL or a path, not in any parameter."""
    if ":" in text:
        for m in _URL.finditer(text):
            scheme = m.group("scheme")
            host = m.group("auth").rsplit("@", 1)[-1]
            if host.startswith("["):
                host = host[: host.find("]") + 1] if "]" in host else host
            else:
                host = host.split(":", 1)[0]
            risk = _host_risk(host.rstrip("."), metadata_hosts)
            if scheme in _DANGEROUS_SCHEMES:
                target = f" to {risk[1]}" if risk else ""
                out.append(
                    Hit(
                        "ssrf",
                        f"{scheme}:// URL{target}",
                        max(0.75, risk[0] if risk else 0.0),
                        m.start(),
                    )
                )
                return
            if risk is not None and not (redirect and risk[0] <= _LOCAL):
                out.append(Hit("ssrf", f"URL to {risk[1]}", risk[0], m.start()))
                return
    m = _BARE_METADATA.search(text) if bare else None
    if m is not None:
        out.append(Hit("ssrf", "cloud metadata address", 0.8, m.start()))
