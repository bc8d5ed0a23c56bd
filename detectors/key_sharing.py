"""Key sharing: one credential used from many more places than its owner uses it from."""

from __future__ import annotations

import zlib

from detectors.base import Signal, SubjectContext
from detectors.sketch import distinct, network
from detectors.state import SubjectState
from pipeline.events import GatewayEvent

__all__ = ["KeySharing"]

_BITS = 128
_CLIENT_BITS = 64


def _distinct(sketch: int) -> int:
    return round(distinct(sketch, _BITS))


class _Spread:
    __slots__ = (
        "clients",
        "current",
        "home",
        "period_clients",
        "period_start",
        "periods",
        "previous",
        "strangers",
        "strangers_before",
        "usual",
    )

    def __init__(self, t: float) -> None:
        self.period_start = t
        self.current = 0  # sketch of the networks seen this period
        self.previous = 0  # and the period before: a sharing spree is not cut in two by a roll
        self.strangers = 0  # networks new to the credential, reached with a client new to it
        self.strangers_before = 0  # the same, the period before
        self.home = 0  # every network of the credential's clean periods
        self.clients = 0  # every client (user agent) of its clean periods
        self.period_clients = 0
        self.usual = 0.0  # the most networks seen in two consecutive past periods
        self.periods = 0


class KeySharing:
    """Flags a consumer or key seen from many more networks (/24) over the last two periods than
    its owner ever used in two periods before. A server client uses a handful, a mobile app's key
    hundreds, every period; a leaked or resold key suddenly shows up across dozens of unrelated
    networks next to its owner's few.

    A network the credential never used before that is reached with a client (user agent) it
    never used either counts three times: the owner's own new address still runs the owner's
    client, a stranger holding the key brings their own. So three strangers next to a one-network
    owner call a leak, where eight of the owner's own new addresses would be needed.

    A credential is judged only once it has a full period of history: a key first seen from many
    networks may as well be an app's (the consumer kinds of the simulator have both).

    Parameters
    ----------
    period_s
        Length of a counting period.
    min_networks
        Networks below which nothing is said.
    ratio
        How many times its usual spread a credential must reach.
    max_usual
        A credential that usually spans more networks than this (a mobile app's key) is not
        judged: its spread cannot tell a leak from a busier day.

    Examples
    --------
    >>> state, sharing = SubjectState(), KeySharing()
    >>> def seen(t, ip, ua="okhttp/4.12.0"):
    ...     e = GatewayEvent(ts_ms=int(t * 1000), gateway="kong", client_ip=ip, consumer="c7",
    ...                      method="GET", path="/orders", route="/orders", status=200,
    ...                      user_agent=ua)
    ...     sharing.update(state, e, SubjectContext("consumer:c7", "consumer", t))
    >>> for t in range(0, 900, 5):
    ...     seen(t, f"10.1.0.{t % 3}")
    >>> sharing.score(state, SubjectContext("consumer:c7", "consumer", 900.0)) is None
    True
    >>> for i in range(3):
    ...     seen(900 + i, f"{20 + i}.{i * 7 % 250}.9.{i}", ua="curl/8.4.0")
    >>> signal = sharing.score(state, SubjectContext("consumer:c7", "consumer", 903.0))
    >>> for part in signal.reason.split("; "):
    ...     print(part)
    credential used from 4 networks (/24) in 2 periods of 60 s, 3 of them new with a new client
    usually at most 1
    """

    name = "key_sharing"
    version = "1"
    kinds = ("consumer", "key")
    needs = ("memo",)

    def __init__(
        self, period_s: float = 60.0, min_networks: int = 8, ratio: float = 4.0, max_usual: int = 10
    ) -> None:
        if ratio <= 1:
            raise ValueError("ratio must be > 1")
        self.period_s = period_s
        self.min_networks = min_networks
        self.ratio = ratio
        self.max_usual = max_usual

    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        if ctx.kind not in self.kinds:
            return
        memo = state.memo if state.memo is not None else {}
        state.memo = memo
        spread = memo.get(self.name)
        if spread is None:
            spread = memo[self.name] = _Spread(ctx.now)
        assert isinstance(spread, _Spread)
        if ctx.now >= spread.period_start + self.period_s:
            if not state.flagged and state.action == "allow":
                # A period seen under suspicion never becomes the usual spread (no poisoning).
                seen = float(_distinct(spread.current | spread.previous))
                spread.usual = max(spread.usual, seen)
                spread.home |= spread.current
                spread.clients |= spread.period_clients
                spread.periods += 1
            idle = ctx.now >= spread.period_start + 2 * self.period_s
            spread.previous = 0 if idle else spread.current
            spread.strangers_before = 0 if idle else spread.strangers
            spread.current = spread.strangers = spread.period_clients = 0
            spread.period_start = ctx.now
        net = 1 << (zlib.crc32(network(event.client_ip).encode()) % _BITS)
        client = 1 << (zlib.crc32(event.user_agent.encode()) % _CLIENT_BITS)
        spread.current |= net
        spread.period_clients |= client
        if spread.periods and not spread.home & net and not spread.clients & client:
            spread.strangers |= net

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        spread = state.memo.get(self.name) if state.memo is not None else None
        if not isinstance(spread, _Spread) or spread.periods == 0:
            return None
        if spread.usual > self.max_usual:
            return None  # an app's embedded key lives on many networks: spread says nothing
        networks = _distinct(spread.current | spread.previous)
        strangers = _distinct(spread.strangers | spread.strangers_before)
        weight = networks + 2 * strangers
        limit = max(float(self.min_networks), self.ratio * spread.usual)
        if weight < limit:
            return None
        score = round(min(1.0, 0.6 + 0.4 * (weight - limit) / limit), 3)
        reason = (
            f"credential used from {networks} networks (/24) in 2 periods of "
            f"{self.period_s:.0f} s, {strangers} of them new with a new client; "
            f"usually at most {spread.usual:.0f}"
        )
        # The value is what the limit applies to: networks, a stranger's counted three times.
        return Signal(
            self.name, "key_sharing", score, reason, "networks_weighted", float(weight),
            spread.usual, limit,
        )  # fmt: skip
