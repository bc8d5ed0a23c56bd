"""What stands between a sender and Kafka: who may send, how much, and what was already sent.

- `SenderAuth`: a bearer token (what Kong's http-log can send as a static header) or an HMAC
  signature of the body with a timestamp (for senders that can compute one, e.g. an Apigee
  JavaScript callout); the timestamp bounds replays.
- `SourceRateLimiter`: a token bucket of entries per source address, so one noisy or hostile
  sender cannot starve the others; bounded to a fixed number of tracked sources.
- `Deduplicator`: Kong retries a batch after a timeout even when the first attempt landed; the
  `request.id` of entries already on Kafka are remembered for a while and dropped on a retry.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from pipeline.events import GatewayEvent

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Deduplicator",
    "SenderAuth",
    "SourceRateLimiter",
]

T = TypeVar("T")
SIGNATURE_HEADER = "X-Gatewatch-Signature"
TIMESTAMP_HEADER = "X-Gatewatch-Timestamp"


class SenderAuth:
    """Accepts `Authorization: Bearer <token>`, or `X-Gatewatch-Timestamp: <unix s>` with
    `X-Gatewatch-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`.

    >>> auth = SenderAuth(token="t", hmac_secret=b"s", clock=lambda: 1000.0)
    >>> auth.check({"Authorization": "Bearer t"}, b"{}")
    >>> auth.check({}, b"{}")
    'missing credentials'
    >>> sig = SenderAuth.sign(b"s", b"{}", 1000)
    >>> auth.check({"X-Gatewatch-Timestamp": "1000", "X-Gatewatch-Signature": sig}, b"{}")
    >>> auth.check({"X-Gatewatch-Timestamp": "1000", "X-Gatewatch-Signature": sig}, b"{} ")
    'bad signature'
    """

    def __init__(
        self,
        *,
        token: str = "",
        hmac_secret: bytes = b"",
        max_skew_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bearer = f"Bearer {token}".encode() if token else None
        self.hmac_secret = hmac_secret
        self.max_skew_s = max_skew_s
        self.clock = clock

    @property
    def configured(self) -> bool:
        return self._bearer is not None or bool(self.hmac_secret)

    @staticmethod
    def sign(secret: bytes, body: bytes, timestamp: int) -> str:
        mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
        return "v1=" + mac.hexdigest()

    def precheck(self, headers: Mapping[str, str]) -> str | None:
        """What can be decided before the body is read: the reason to refuse the sender, or
        None (a valid token, or a fresh timestamp whose signature `check` verifies once the body
        is read).

        >>> auth = SenderAuth(token="t", hmac_secret=b"s", clock=lambda: 1000.0)
        >>> auth.precheck({}), auth.precheck({"Authorization": "Bearer x"})
        ('missing credentials', 'bad token')
        >>> auth.precheck({"X-Gatewatch-Timestamp": "1", "X-Gatewatch-Signature": "v1=00"})
        'stale timestamp'
        """
        if not self.body_signed(headers):
            return self.check(headers, b"")
        signature, stamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
        if signature and stamp and self.hmac_secret:
            return self._stamp_error(stamp)
        return "bad token" if headers.get("Authorization") else "missing credentials"

    def body_signed(self, headers: Mapping[str, str]) -> bool:
        """Whether the sender is to be authenticated by a signature of its body."""
        return not (headers.get("Authorization") and self._bearer is not None)

    def _stamp_error(self, stamp: str) -> str | None:
        if not stamp.isascii() or not stamp.isdigit():
            return "bad timestamp"
        if abs(self.clock() - int(stamp)) > self.max_skew_s:
            return "stale timestamp"
        return None

    def check(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """None when the sender is authenticated, else the reason it is not."""
        given = headers.get("Authorization", "")
        if given and self._bearer is not None:
            return None if hmac.compare_digest(given.encode(), self._bearer) else "bad token"
        signature, stamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
        if signature and stamp and self.hmac_secret:
            if error := self._stamp_error(stamp):
                return error
            expected = self.sign(self.hmac_secret, body, int(stamp))
            return (
                None
                if hmac.compare_digest(signature.encode(), expected.encode())
                else "bad signature"
            )
        return "bad token" if given else "missing credentials"


class SourceRateLimiter:
    """Token bucket per source: `rate` entries per second, bursts up to `burst`.

    >>> now = [0.0]
    >>> limiter = SourceRateLimiter(rate=10, burst=20, clock=lambda: now[0])
    >>> limiter.take("10.0.0.1", 20), limiter.take("10.0.0.1", 1)
    (0.0, 0.1)
    >>> now[0] = 1.0
    >>> limiter.take("10.0.0.1", 10)
    0.0
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, source: str, n: int) -> float:
        """Take `n` entries' worth; 0.0 when allowed, else seconds to wait before retrying."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if n > tokens:
            # A batch larger than the burst can never fit: let it through on a full bucket.
            wait = 0.0 if tokens >= self.burst else (min(n, self.burst) - tokens) / self.rate
        if wait == 0.0:
            tokens -= n
        self._buckets[source] = (tokens, now)
        if len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return round(wait, 3)


def _event_request_id(event: GatewayEvent) -> str | None:
    return event.request_id


class Deduplicator:
    """Remembers ids for `window_s` seconds, at most `max_ids` of them (oldest forgotten first).

    >>> dedupe = Deduplicator(window_s=60, max_ids=2)
    >>> dedupe.is_new("a"), dedupe.is_new("b")
    (True, True)
    >>> dedupe.remember(["a", "b"])
    >>> dedupe.is_new("a")
    False
    >>> dedupe.remember(["c"])
    >>> dedupe.is_new("a")
    True
    """

    def __init__(
        self, window_s: float, max_ids: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self.max_ids = max_ids
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def is_new(self, request_id: str) -> bool:
        seen_at = self._seen.get(request_id)
        return seen_at is None or self.clock() - seen_at > self.window_s

    def filter(
        self, events: list[T], request_id: Callable[[T], str | None] = _event_request_id
    ) -> tuple[list[T], int]:
        """Events whose request id was not seen yet (on Kafka already, or earlier in this
        batch), and how many were dropped. Events without an id always pass. `request_id` reads
        the id of one event (a `GatewayEvent` by default; `itemgetter("request_id")` for field
        dicts)."""
        fresh: list[T] = []
        batch_ids: set[str] = set()
        seen, now, window = self._seen, self.clock(), self.window_s  # `is_new`, inlined
        for event in events:
            rid = request_id(event)
            if rid is not None:
                if rid in batch_ids:
                    continue
                seen_at = seen.get(rid)
                if seen_at is not None and now - seen_at <= window:
                    continue
                batch_ids.add(rid)
            fresh.append(event)
        return fresh, len(events) - len(fresh)

    def remember(self, request_ids: Iterable[str]) -> None:
        """Call only once the entries are on Kafka: a retry after a 503 must not be dropped."""
        now = self.clock()
        seen = self._seen
        for rid in request_ids:
            seen.pop(rid, None)
            seen[rid] = now
        while seen and (
            len(seen) > self.max_ids or now - next(iter(seen.values())) > self.window_s
        ):
            seen.popitem(last=False)
