"""Client addresses: benign and attacker address space never overlap.

Benign clients come from cloud and corporate ranges (API consumers), residential ISPs (browsers,
phones on wifi, some over IPv6), mobile carriers' NAT egress addresses (many users per address),
the crawlers' published ranges and monitoring services. Attackers come from hosting, VPN and Tor
space, but also rent cloud machines and buy residential proxies: their /16s share first octets
with benign pools (a detector cannot key on the first octet), and no attacker /16 is ever used by
benign traffic, so no attacker address nor its /24 is shared with a benign client and a label can
name every attacker subject.
"""

from __future__ import annotations

import random

__all__ = ["ATTACKER_PREFIXES", "BENIGN_PREFIXES", "IpSpace", "prefix16"]

# /16s by kind. A few are real operators' ranges (carriers, crawlers, monitors, hosting);
# nothing here depends on that beyond looking plausible in a log.
CLOUD = (
    "3.21",
    "3.85",
    "13.36",
    "18.134",
    "18.195",
    "20.42",
    "20.113",
    "34.74",
    "34.141",
    "35.187",
    "35.203",
    "52.14",
    "52.58",
    "54.93",
    "54.175",
)
CORPORATE = ("62.96", "62.153", "80.81", "80.149", "193.17", "193.104")
RESIDENTIAL = (
    "24.6",
    "24.130",
    "50.35",
    "67.180",
    "68.42",
    "71.205",
    "73.92",
    "76.104",
    "86.12",
    "86.147",
    "90.84",
    "98.207",
    "2.84",
    "2.126",
    "31.17",
    "37.201",
    "77.56",
    "78.193",
    "79.141",
    "81.57",
    "82.64",
    "83.223",
    "84.176",
    "88.65",
    "89.205",
    "92.40",
    "109.190",
)
RESIDENTIAL_V6 = ("2a02:8108", "2a01:cb00", "2600:1700", "2601:647", "2a00:23c6")
# Carriers: the handful of public egress addresses their CG-NATs share among subscribers.
CARRIERS = {
    "t-mobile-us": ("172.56.21.14", "172.56.21.77", "172.58.140.9"),
    "verizon": ("174.205.33.120", "174.205.33.98"),
    "att": ("107.77.198.15", "107.77.199.201"),
    "vodafone-de": ("109.43.49.6",),
}
GOOGLEBOT = ("66.249.66.1", "66.249.66.159", "66.249.68.71", "66.249.70.34", "66.249.79.130")
BINGBOT = ("157.55.39.214", "157.55.39.57", "207.46.13.101")
MONITORS = {
    "uptimerobot": ("69.162.124.226", "69.162.124.235"),
    "pingdom": ("178.255.152.2", "178.255.153.2", "178.162.206.244"),
    "kube-probe": ("10.0.12.5",),
}
# Attackers: hosting, VPN and Tor space; cloud machines; residential proxies.
ATTACKER = (
    # hosting, VPN, Tor
    "23.129", "45.134", "45.141", "45.155", "91.92", "91.241", "103.151", "103.214", "141.98",
    "146.70", "154.47", "162.55", "167.94", "176.111", "179.43", "185.220", "185.100", "192.42",
    "194.26", "209.141",
    # rented cloud machines
    "3.120", "18.222", "20.163", "34.125", "35.240", "52.201", "54.245",
    # residential proxies
    "24.61", "73.170", "76.190", "86.98", "90.112", "2.50", "77.90", "81.150", "188.25",
)  # fmt: skip


def _slash16(ip: str) -> str:
    return ".".join(ip.split(".")[:2])


BENIGN_PREFIXES = frozenset(
    CLOUD
    + CORPORATE
    + RESIDENTIAL
    + tuple(_slash16(ip) for ips in CARRIERS.values() for ip in ips)
    + tuple(_slash16(ip) for ips in MONITORS.values() for ip in ips)
    + tuple(_slash16(ip) for ip in GOOGLEBOT + BINGBOT)
    + ("10.0", "10.20")
)
ATTACKER_PREFIXES = frozenset(ATTACKER)
if BENIGN_PREFIXES & ATTACKER_PREFIXES:  # a typo in the tables must not go unnoticed
    raise RuntimeError(f"shared /16s: {sorted(BENIGN_PREFIXES & ATTACKER_PREFIXES)}")


def prefix16(ip: str) -> str:
    """The /16 of an IPv4 address as `a.b` (IPv6 addresses are their own)."""
    return ip if ":" in ip else _slash16(ip)


class IpSpace:
    """Hands out unique addresses per pool, deterministically from its own random stream.

    >>> space = IpSpace(random.Random(1))
    >>> prefix16(space.attacker()) in ATTACKER_PREFIXES
    True
    >>> len({space.residential() for _ in range(100)})
    100
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self._subnets: set[str] = set()

    def _fresh(self, make: object) -> str:
        for _ in range(1000):
            ip = make()  # type: ignore[operator]
            if ip not in self.used:
                self.used.add(ip)
                return ip
        raise RuntimeError("address pool exhausted")

    def _v4(self, prefixes: tuple[str, ...]) -> str:
        r = self.rng
        return f"{r.choice(prefixes)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def cloud(self) -> str:
        return self._fresh(lambda: self._v4(CLOUD))

    def corporate(self) -> str:
        return self._fresh(lambda: self._v4(CORPORATE))

    def residential(self, v6_share: float = 0.0) -> str:
        r = self.rng
        if r.random() < v6_share:
            return self._fresh(
                lambda: (
                    f"{r.choice(RESIDENTIAL_V6)}:{r.getrandbits(16):x}:{r.getrandbits(16):x}:"
                    f"{r.getrandbits(16):x}:{r.getrandbits(16):x}:{r.getrandbits(16):x}:"
                    f"{r.getrandbits(16):x}"
                )
            )
        return self._fresh(lambda: self._v4(RESIDENTIAL))

    def attacker(self) -> str:
        """One attacker address in a /24 no other attacker of this run has used."""
        return self.attacker_subnet_hosts(self.attacker_subnet(), 1)[0]

    def attacker_subnet(self) -> str:
        """A fresh attacker /24, as its first three octets (`"185.220.101"`)."""
        r = self.rng
        for _ in range(1000):
            net = f"{r.choice(ATTACKER)}.{r.randint(0, 255)}"
            if net not in self._subnets:
                self._subnets.add(net)
                return net
        raise RuntimeError("attacker subnets exhausted")

    def attacker_subnet_hosts(self, net: str, n: int) -> list[str]:
        if not 0 < n <= 254:
            raise ValueError("a /24 has 254 hosts")
        hosts = self.rng.sample(range(1, 255), n)
        out = [f"{net}.{h}" for h in hosts]
        self.used.update(out)
        return out
