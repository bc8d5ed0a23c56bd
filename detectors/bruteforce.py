"""Brute force and credential stuffing: one subject failing logins again and again, and campaigns
spread over thousands of addresses that each fail only once or twice."""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict

from detectors.base import Signal, SubjectContext
from detectors.routes import AuthRoutes
from detectors.sketch import distinct, vote
from detectors.state import AUTH_DECAY_TAU_S, SubjectState
from pipeline.events import GatewayEvent

__all__ = ["BruteForce", "DistributedStuffing"]


def is_range(subject: str) -> bool:
    return "/" in subject


class BruteForce:
    """Scores decayed login failures (401/403 on an authentication route) and their share of
    attempts. A person mistyping a password fails a few times; a NAT address with hundreds of users
    fails often but rarely in proportion; a stuffing run fails dozens of times, nearly always.

    Parameters
    ----------
    min_failures
        Decayed failures below which nothing is said.
    full_failures
        Decayed failures at which the score reaches its maximum.
    min_failure_ratio
        Share of failing attempts below which nothing is said.
    auth_routes, shared_addresses
        A consumer or key that logged in successfully (on `auth_routes`) from this many addresses
        is shared by a population (a phone app's client id): its failures are its users' and a
        guesser among them is judged on its own address, never on the app's credential.

    Examples
    --------
    >>> from pipeline.events import GatewayEvent
    >>> state, detector = SubjectState(), BruteForce()
    >>> for i in range(20):
    ...     e = GatewayEvent(ts_ms=1_000 + i * 100, gateway="kong", client_ip="203.0.113.9",
    ...                      method="POST", path="/login", route="/login", status=401)
    ...     state.observe(e, auth_route=True, baseline_after=5, fading_factor=0.05)
    >>> signal = detector.score(state, SubjectContext("ip:203.0.113.9", "ip", now=3.0))
    >>> signal.score
    1.0
    >>> signal.reason
    '20 failed logins of 20 attempts (100% failing, decay 120 s)'
    """

    name = "bruteforce"
    version = "1"
    update_kinds = ("consumer", "key")  # `update` learns the addresses credentials log in from

    def __init__(
        self,
        min_failures: float = 5.0,
        full_failures: float = 15.0,
        min_failure_ratio: float = 0.5,
        auth_routes: AuthRoutes | None = None,
        shared_addresses: int = 8,
    ) -> None:
        if not 0 < min_failures < full_failures:
            raise ValueError("need 0 < min_failures < full_failures")
        self.min_failures = min_failures
        self.full_failures = full_failures
        self.min_failure_ratio = min_failure_ratio
        self.auth_routes = auth_routes if auth_routes is not None else AuthRoutes()
        self.shared_addresses = shared_addresses

    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        if ctx.kind == "ip" or event.status >= 400 or event.method == "GET":
            return
        if not self.auth_routes(event.route):
            return
        memo = state.memo if state.memo is not None else {}
        state.memo = memo
        seen = int(memo.get(self.name, 0))  # type: ignore[call-overload]
        memo[self.name] = seen | (1 << (zlib.crc32(event.client_ip.encode()) & 63))

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        if is_range(ctx.subject):
            return None  # a range is many clients: `DistributedStuffing` judges it
        if state.auth_failures < self.min_failures:
            return None  # decayed, they can only be fewer
        if ctx.kind != "ip" and state.memo is not None and self.name in state.memo:
            logged_in_from = _distinct(int(state.memo[self.name]))  # type: ignore[call-overload]
            if logged_in_from >= self.shared_addresses:
                return None
        attempts, failures = state.decayed_auth(ctx.now)
        if failures < self.min_failures:
            return None
        ratio = failures / attempts
        if ratio < self.min_failure_ratio:
            return None
        volume = min(1.0, (failures - self.min_failures) / (self.full_failures - self.min_failures))
        score = round((0.3 + 0.7 * volume) * min(1.0, ratio / 0.8), 3)
        kind = "credential_stuffing" if ctx.kind == "ip" else "brute_force"
        reason = (
            f"{failures:.0f} failed logins of {attempts:.0f} attempts "
            f"({ratio:.0%} failing, decay {AUTH_DECAY_TAU_S:.0f} s)"
        )
        return Signal(
            self.name, kind, score, reason, "failed_logins", round(failures, 3), None,
            self.min_failures,
        )  # fmt: skip


class _Trait:
    """Decayed login attempts and failures of one client trait, the addresses behind them, and
    the address failing most (a majority vote: by how many failures it leads all others)."""

    __slots__ = ("attempts", "failures", "ips", "lead", "top", "ts")

    def __init__(self) -> None:
        self.attempts = 0.0
        self.failures = 0.0
        self.ts = 0.0
        self.ips = 0  # 64-bit linear-counting sketch of the failing addresses
        self.top = ""
        self.lead = 0.0

    def add(self, t: float, failed: bool, ip: str, tau: float) -> None:
        decay = math.exp(-max(0.0, t - self.ts) / tau)
        self.attempts = self.attempts * decay + 1.0
        self.failures = self.failures * decay + failed
        self.ts = max(self.ts, t)
        if failed:
            self.ips |= 1 << (zlib.crc32(ip.encode()) & 63)
            self.top, self.lead = vote(self.top, self.lead * decay, ip)

    def dominated(self) -> bool:
        """One address fails more than the others together: a loud guesser (`BruteForce`'s)
        amid other clients' typos, not a campaign spread over many."""
        return self.lead > 0.5 * self.failures

    def addresses(self) -> int:
        return _distinct(self.ips)


def _distinct(sketch: int) -> int:
    """Distinct addresses in a 64-bit sketch (a full one reads as 256)."""
    return round(distinct(sketch, 64, saturated=256))


class DistributedStuffing:
    """Credential stuffing spread over many addresses: each fails once or twice, too few for
    `BruteForce`, but together they share a client *trait* (user agent and header shape) whose logins
    nearly all fail, from many addresses, in ranges they rent.

    Two kinds of evidence:

    - a campaign: a trait whose decayed failures reach `min_failures` from at least `min_addresses`
      failing addresses at a failure share of `min_failure_ratio`; every further failed login with
      that trait is a finding (weight `weight`) on its address and its range;
    - a range (`ip:a.b.c.0/24`) whose own logins fail from `min_range_addresses` addresses or more.

    Benign typos do not make a campaign: people share user agents with many others who log in
    successfully, so a trait's failure share stays low.

    Examples
    --------
    >>> from pipeline.events import GatewayEvent
    >>> d = DistributedStuffing(AuthRoutes())
    >>> def login(i, status=401):
    ...     return GatewayEvent(ts_ms=1_000 + i * 200, gateway="kong", client_ip=f"198.51.{i % 7}.{i}",
    ...                         method="POST", path="/login", route="/login", status=status,
    ...                         user_agent="Mozilla/5.0 X", header_fingerprint="abc")
    >>> [d.inspect(login(i)) is not None for i in range(12)].count(True)
    4
    >>> print(d.inspect(login(12)).reason)
    failed login in a campaign on /login: 13 of 13 logins failing from 11 addresses, UA 'Mozilla/5.0 X'
    """

    name = "distributed_stuffing"
    version = "1"
    judges_ranges = True
    # Addresses and ranges only: a campaign riding on an app's key is thousands of users' key.
    kinds = ("ip",)
    update_kinds = ("range",)
    needs = ("memo", "evidence")

    def __init__(
        self,
        auth_routes: AuthRoutes,
        min_failures: float = 8.0,
        min_addresses: int = 6,
        min_failure_ratio: float = 0.7,
        min_range_addresses: int = 3,
        weight: float = 0.35,
        tau_s: float = 120.0,
        max_traits: int = 20_000,
    ) -> None:
        if not 0 < min_failure_ratio <= 1:
            raise ValueError("min_failure_ratio must be in (0, 1]")
        self.auth_routes = auth_routes
        self.min_failures = min_failures
        self.min_addresses = min_addresses
        self.min_failure_ratio = min_failure_ratio
        self.min_range_addresses = min_range_addresses
        self.weight = weight
        self.tau_s = tau_s
        self.max_traits = max_traits
        self._traits: OrderedDict[tuple[str, str, str], _Trait] = OrderedDict()

    def wants_range(self, event: GatewayEvent) -> bool:
        return event.method != "GET" and self.auth_routes(event.route)

    def inspect(self, event: GatewayEvent) -> Signal | None:
        if event.method == "GET" or not self.auth_routes(event.route):
            return None
        key = (event.route, event.user_agent[:200], event.header_fingerprint)
        trait = self._traits.get(key)
        if trait is None:
            trait = self._traits[key] = _Trait()
            if len(self._traits) > self.max_traits:
                self._traits.popitem(last=False)
        else:
            self._traits.move_to_end(key)
        failed = event.status in (401, 403)
        trait.add(event.ts_ms / 1000.0, failed, event.client_ip, self.tau_s)
        if not failed or trait.failures < self.min_failures:
            return None
        ratio = trait.failures / trait.attempts
        addresses = trait.addresses()
        if ratio < self.min_failure_ratio or addresses < self.min_addresses or trait.dominated():
            return None
        reason = (
            f"failed login in a campaign on {event.route}: {trait.failures:.0f} of "
            f"{trait.attempts:.0f} logins failing from {addresses} addresses, "
            f"UA {event.user_agent[:40]!r}"
        )
        return Signal(
            self.name, "distributed_credential_stuffing", self.weight, reason,
            "failing_addresses", float(addresses), None, float(self.min_addresses),
        )  # fmt: skip

    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        if is_range(ctx.subject) and event.status in (401, 403) and self.auth_routes(event.route):
            memo = state.memo if state.memo is not None else {}
            state.memo = memo
            memo[self.name] = int(memo.get(self.name, 0)) | (1 << (zlib.crc32(event.client_ip.encode()) & 63))

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        campaign = 0.0
        reason = ""
        feature: str | None = None
        value: float | None = None
        limit: float | None = None
        if state.evidence is not None and (found := state.evidence.get(self.name)) is not None:
            campaign = min(1.0, found.value(ctx.now))
            reason = found.reason
            feature, value = "campaign_logins", float(found.hits)
        spread = 0.0
        if is_range(ctx.subject) and state.memo is not None and self.name in state.memo:
            addresses = _distinct(int(state.memo[self.name]))  # type: ignore[call-overload]
            attempts, failures = state.decayed_auth(ctx.now)
            if addresses >= self.min_range_addresses and failures >= 5 and attempts:
                ratio = failures / attempts
                if ratio >= self.min_failure_ratio:
                    spread = min(1.0, 0.3 + 0.7 * (failures - 5) / 15) * min(1.0, ratio / 0.9)
                    reason = (
                        f"{failures:.0f} failed logins of {attempts:.0f} from {addresses} "
                        f"addresses in this range ({ratio:.0%} failing)"
                    )
                    feature, value = "failing_addresses", float(addresses)
                    limit = float(self.min_range_addresses)
        score = round(max(campaign, spread), 3)
        if score <= 0.0:
            return None
        return Signal(
            self.name, "distributed_credential_stuffing", score, reason, feature, value, None, limit
        )
