"""Key sharing: one credential used from many more places than its owner uses it from."""

from __future__ import annotations

import zlib

from detectors.base import Signal, SubjectContext
from detectors.sketch import distinct
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
    return round(distinct(sketch, _BITS))


class _Spread:
    __slots__ = ("current", "period_start", "periods", "previous", "usual")

    def __init__(self, t: float) -> None:
        self.period_start = t
        self.current = 0  # sketch of the networks seen this period
        self.previous = 0  # and the period before: a sharing spree is not cut in two by a roll
        self.usual = 0.0  # the most networks seen in two consecutive past periods
        self.periods = 0


class KeySharing:
    """Flags a consumer or key seen from many more networks (/24) over the last two periods than
    its owner ever used in two periods before. A server client uses a handful, a mobile app's key
    hundreds, every period; a leaked or resold key suddenly shows up across dozens of unrelated
    networks next to its owner's few.

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
    credential used from 27 networks (/24) in the last 2 periods of 60 s; usually at most 1
    """

    name = "key_sharing"
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
        self._last_event: GatewayEvent | None = None
        self._last_bit = 0

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
                spread.periods += 1
            idle = ctx.now >= spread.period_start + 2 * self.period_s
            spread.previous = 0 if idle else spread.current
            spread.current = 0
            spread.period_start = ctx.now
        if event is not self._last_event:
            # A consumer and its key see the same event: hash its network once.
            self._last_event = event
            self._last_bit = 1 << (zlib.crc32(_network(event.client_ip).encode()) % _BITS)
        spread.current |= self._last_bit

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        spread = state.memo.get(self.name) if state.memo is not None else None
        if not isinstance(spread, _Spread) or spread.periods == 0:
            return None
        if spread.usual > self.max_usual:
            return None  # an app's embedded key lives on many networks: spread says nothing
        networks = _distinct(spread.current | spread.previous)
        limit = max(float(self.min_networks), self.ratio * spread.usual)
        if networks < limit:
            return None
        score = round(min(1.0, 0.6 + 0.4 * (networks - limit) / limit), 3)
        reason = (
            f"credential used from {networks} networks (/24) in the last 2 periods of "
            f"{self.period_s:.0f} s; usually at most {spread.usual:.0f}"
        )
        return Signal(self.name, "key_sharing", score, reason)
