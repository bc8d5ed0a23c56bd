"""Key sharing: one credential used from many more places than its owner uses it from."""

from __future__ import annotations

import math
import zlib

from detectors.base import Signal, SubjectContext
from detectors.state import SubjectState
from pipeline.events import GatewayEvent

__all__ = ["KeySharing"]

_BITS = 128


def _network(ip: str) -> str:
    """The /24 (IPv4) or the first four groups (IPv6) of an address: hosts of one owner share it."""
    if ":" in ip:
        return ":".join(ip.split(":")[:4])
    return ip.rsplit(".", 1)[0]


def _distinct(sketch: int) -> int:
    zeros = _BITS - sketch.bit_count()
    return _BITS * 3 if zeros == 0 else round(-_BITS * math.log(zeros / _BITS))


class _Spread:
    __slots__ = ("current", "period_start", "periods", "usual")

    def __init__(self, t: float) -> None:
        self.period_start = t
        self.current = 0  # sketch of the networks seen this period
        self.usual = 0.0  # the most networks seen in one past period
        self.periods = 0


class KeySharing:
    """Flags a consumer or key seen from many more networks (/24) in one period than in any period
    before. A server client uses a handful; a leaked or resold key shows up across dozens of
    unrelated networks at once, next to its owner.

    Parameters
    ----------
    period_s
        Length of a counting period.
    min_networks
        Networks in the current period below which nothing is said.
    ratio
        How many times its usual spread a credential must reach.
    cold_networks
        Before one full period is known, the spread that is suspicious on its own.

    Examples
    --------
    >>> state, sharing = SubjectState(), KeySharing()
    >>> def seen(t, ip):
    ...     e = GatewayEvent(ts_ms=int(t * 1000), gateway="kong", client_ip=ip, consumer="c7",
    ...                      method="GET", path="/orders", route="/orders", status=200)
    ...     sharing.update(state, e, SubjectContext("consumer:c7", "consumer", t))
    >>> for t in range(0, 900, 5):
    ...     seen(t, f"10.1.0.{t % 3}")
    >>> sharing.score(state, SubjectContext("consumer:c7", "consumer", 900.0)) is None
    True
    >>> for i in range(25):
    ...     seen(900 + i, f"{20 + i}.{i * 7 % 250}.9.{i}")
    >>> print(sharing.score(state, SubjectContext("consumer:c7", "consumer", 925.0)).reason)
    credential used from 25 networks (/24) in this period; usually at most 1
    """

    name = "key_sharing"
    kinds = ("consumer", "key")

    def __init__(
        self,
        period_s: float = 300.0,
        min_networks: int = 8,
        ratio: float = 4.0,
        cold_networks: int = 20,
    ) -> None:
        if ratio <= 1:
            raise ValueError("ratio must be > 1")
        self.period_s = period_s
        self.min_networks = min_networks
        self.ratio = ratio
        self.cold_networks = cold_networks

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
                spread.usual = max(spread.usual, float(_distinct(spread.current)))
                spread.periods += 1
            spread.current = 0
            spread.period_start = ctx.now
        spread.current |= 1 << (zlib.crc32(_network(event.client_ip).encode()) % _BITS)

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        spread = state.memo.get(self.name) if state.memo is not None else None
        if not isinstance(spread, _Spread):
            return None
        networks = _distinct(spread.current)
        if networks < self.min_networks:
            return None
        limit = self.cold_networks if spread.periods == 0 else max(
            float(self.min_networks), self.ratio * spread.usual
        )
        if networks < limit:
            return None
        score = round(min(1.0, 0.5 + 0.5 * (networks - limit) / limit), 3)
        usual = "no full period yet" if spread.periods == 0 else f"usually at most {spread.usual:.0f}"
        reason = f"credential used from {networks} networks (/24) in this period; {usual}"
        return Signal(self.name, "key_sharing", score, reason)
