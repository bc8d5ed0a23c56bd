"""Helpers shared by every gateway parser: route templates, tolerant number parsing and the
bounds of a plausible entry."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MAX_STATUS",
    "MIN_STATUS",
    "NO_WINDOW_BOUNDS",
    "ParseError",
    "TimeWindow",
    "as_int",
    "ascii_ints",
    "check_status",
    "check_timestamp",
    "route_template",
]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEXID = re.compile(r"^[0-9a-fA-F]{16,}$")
_NUM = re.compile(r"^\d+$")
# ASCII digits only (str.isdigit also accepts "²"), and few enough to fit a signed 64-bit integer:
# anything larger would pass here and then break msgpack further down.
_INT = re.compile(r"^\s*-?[0-9]{1,18}\s*$")
_MAX = 2**63 - 1
_DIGITS = re.compile(r"(?<![0-9])[0-9]{1,18}(?![0-9])")


# What an HTTP status can be (RFC 9110 defines 1xx-5xx). nginx's 499 (client closed) is in range.
MIN_STATUS = 100
MAX_STATUS = 599
_DAY_S = 86_400


class ParseError(ValueError):
    """An input field is missing or has the wrong type; the message is the reject reason."""


def check_status(status: int, field: str) -> int:
    """`status` if it is an HTTP status, else a ParseError naming `field`.

    >>> check_status(99999, "response.status")
    Traceback (most recent call last):
    ...
    pipeline.ingest.normalize.ParseError: response.status: 99999 is not an HTTP status (100-599)
    """
    if not MIN_STATUS <= status <= MAX_STATUS:
        raise ParseError(f"{field}: {status} is not an HTTP status ({MIN_STATUS}-{MAX_STATUS})")
    return status


@dataclass(frozen=True)
class TimeWindow:
    """How far from now an entry's timestamp may be: a clock gone wrong on a gateway, or a
    forged entry, must not reach the detectors (windows, baselines and expiry all run on event
    time). 0 lifts a bound. Live ingest uses one; offline replays of old logs do not.

    >>> window = TimeWindow(max_future_s=86_400, max_age_s=30 * 86_400, clock=lambda: 1e9)
    >>> check_timestamp(1_000_000_000_000, "started_at", window, window.bounds())
    1000000000000
    >>> check_timestamp(997_000_000_000, "started_at", window, window.bounds())
    Traceback (most recent call last):
    ...
    pipeline.ingest.normalize.ParseError: started_at: 34.7 days in the past (limit 30 days)
    """

    max_future_s: float = _DAY_S
    max_age_s: float = 30 * _DAY_S
    clock: Callable[[], float] = time.time

    def bounds(self) -> tuple[int, int]:
        """Lowest and highest acceptable epoch-ms timestamps, now (compute once per body)."""
        now_ms = int(self.clock() * 1000)
        low = now_ms - int(self.max_age_s * 1000) if self.max_age_s else 1
        high = now_ms + int(self.max_future_s * 1000) if self.max_future_s else _MAX
        return max(1, low), high


def _time_error(ts_ms: int, field: str, bounds: tuple[int, int], window: TimeWindow | None) -> int:
    if ts_ms <= 0:
        raise ParseError(f"{field}: {ts_ms} is not an epoch-millisecond timestamp")
    assert window is not None
    now_ms = int(window.clock() * 1000)
    if ts_ms > bounds[1]:
        ahead, limit = _span((ts_ms - now_ms) / 1000), _span(window.max_future_s)
        raise ParseError(f"{field}: {ahead} in the future (limit {limit})")
    behind, limit = _span((now_ms - ts_ms) / 1000), _span(window.max_age_s)
    raise ParseError(f"{field}: {behind} in the past (limit {limit})")


def _span(seconds: float) -> str:
    if seconds >= _DAY_S:
        days = f"{seconds / _DAY_S:.1f}".removesuffix(".0")
        return f"{days} day" if days == "1" else f"{days} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}".removesuffix(".0") + " h"
    return f"{seconds:.0f} s"


# Without a window, a timestamp must still be a positive epoch: no one sent a request in 1969.
NO_WINDOW_BOUNDS = (1, 2**63 - 1)


def check_timestamp(
    ts_ms: int, field: str, window: TimeWindow | None, bounds: tuple[int, int]
) -> int:
    """`ts_ms` if it lies within `bounds` (from `window.bounds()`, or NO_WINDOW_BOUNDS)."""
    if bounds[0] <= ts_ms <= bounds[1]:
        return ts_ms
    return _time_error(ts_ms, field, bounds, window)


def route_template(path: str) -> str:
    """Collapse object ids in a path so that one endpoint has one name.

    >>> route_template("/users/123/orders/9f1b6c1e-3a2b-4c5d-9e6f-0a1b2c3d4e5f")
    '/users/{id}/orders/{uuid}'
    >>> route_template("/")
    '/'
    """
    parts = path.split("/")
    for i, seg in enumerate(parts):
        if not seg:
            continue
        if _NUM.match(seg):
            parts[i] = "{id}"
        elif len(seg) == 36 and _UUID.match(seg):
            parts[i] = "{uuid}"
        elif _HEXID.match(seg):
            parts[i] = "{hex}"
    return "/".join(parts)


def as_int(value: object, field: str, *, default: int | None = None) -> int:
    """An integer from an int, a float or a numeric string (Kong 1.x sends sizes as strings)."""
    if isinstance(value, bool):
        raise ParseError(f"{field}: expected an integer, got a boolean")
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX:
        return int(value)
    if isinstance(value, int):
        if abs(value) > _MAX:
            raise ParseError(f"{field}: integer out of range")
        return value
    if isinstance(value, str) and _INT.match(value):
        return int(value)
    if value is None and default is not None:
        return default
    if value is None or value == "":
        if default is not None:
            return default
        raise ParseError(f"{field}: missing")
    raise ParseError(f"{field}: expected an integer, got {type(value).__name__}")


def ascii_ints(text: str) -> list[int]:
    """Every run of ASCII digits in `text` that fits an int64, in order.

    >>> ascii_ints("502, 200 : 200")
    [502, 200, 200]
    """
    return [int(tok) for tok in _DIGITS.findall(text)]
