"""Learned state as plain data: what a detector's memory becomes in a checkpoint, and back.

A checkpoint is untrusted input (anyone who can write to Redis can write one), so it holds only
msgpack-able values (numbers, strings, bytes, lists, maps: never pickle, nothing that names code),
each read back through a field that checks its type and bounds. Whatever does not fit raises
`StateFormatError`, and the caller skips that piece of state.

A per-subject memory (`state.memo[detector.name]`) is a small object with `__slots__`; a
`SlotCodec` lists its fields with their kinds and a schema version, and turns one into a list
`[version, *fields]` and back:

>>> class Pace:
...     __slots__ = ("gaps", "last_t", "name")
>>> codec = SlotCodec(Pace, 1, [("last_t", REAL), ("gaps", count()), ("name", text(64))])
>>> p = Pace(); p.last_t, p.gaps, p.name = 12.5, 3, "MJ12bot"
>>> data = codec.encode(p)
>>> data
[1, 12.5, 3, 'MJ12bot']
>>> q = codec.decode(data)
>>> (q.last_t, q.gaps, q.name)
(12.5, 3, 'MJ12bot')
>>> codec.decode([1, float("nan"), 3, "x"])
Traceback (most recent call last):
...
detectors.codec.StateFormatError: Pace.last_t: not a finite number
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, Generic, TypeVar

__all__ = [
    "FLAG",
    "NONNEG",
    "REAL",
    "Field",
    "IntCodec",
    "MemoCodec",
    "SlotCodec",
    "StateFormatError",
    "StateVersionError",
    "bits",
    "count",
    "expect_list",
    "integer",
    "one_of",
    "text",
    "unit",
]

T = TypeVar("T")
# Times are epoch seconds, counters decay: nothing a detector keeps comes near this.
MAX_REAL = 1e15


class StateFormatError(ValueError):
    """A piece of checkpointed state that is not what its schema says: it is skipped."""


class StateVersionError(StateFormatError):
    """Checkpointed state written under another schema version (older or newer code)."""


class Field:
    """One value of a schema: `decode` checks and converts what a checkpoint holds, `encode`
    turns the live value into something msgpack carries (most are already)."""

    __slots__ = ("check", "encoder", "what")

    def __init__(
        self,
        what: str,
        check: Callable[[Any], Any],
        encoder: Callable[[Any], Any] | None = None,
    ) -> None:
        self.what = what
        self.check = check
        self.encoder = encoder

    def decode(self, raw: Any) -> Any:
        value = self.check(raw)
        if value is _BAD:
            raise StateFormatError(f"not {self.what}")
        return value

    def encode(self, value: Any) -> Any:
        return value if self.encoder is None else self.encoder(value)


def _to_bytes(size: int) -> Callable[[int], bytes]:
    def convert(value: int) -> bytes:
        return value.to_bytes(size, "little")

    return convert


_BAD = object()


def _real(raw: Any) -> Any:
    if type(raw) is float:
        return raw if math.isfinite(raw) and -MAX_REAL <= raw <= MAX_REAL else _BAD
    if type(raw) is int and -MAX_REAL <= raw <= MAX_REAL:
        return raw  # as the live state had it (decision times are integer milliseconds)
    return _BAD


REAL = Field("a finite number", _real)


def _nonneg(raw: Any) -> Any:
    value = _real(raw)
    return value if value is _BAD or value >= 0 else _BAD


# Decayed counts, sums of squares: a negative one would break the arithmetic (a square root).
NONNEG = Field("a finite number >= 0", _nonneg)
FLAG = Field("a boolean", lambda raw: raw if type(raw) is bool else _BAD)


def unit() -> Field:
    """A float in [0, 1]."""

    def check(raw: Any) -> Any:
        value = _real(raw)
        return value if value is not _BAD and 0 <= value <= 1 else _BAD

    return Field("a number in [0, 1]", check)


def integer(low: int, high: int) -> Field:
    return Field(
        f"an integer in [{low}, {high}]",
        lambda raw: raw if type(raw) is int and low <= raw <= high else _BAD,
    )


def count(high: int = 1 << 62) -> Field:
    """A non-negative integer."""
    return integer(0, high)


def text(max_chars: int) -> Field:
    return Field(
        f"a string of at most {max_chars} characters",
        lambda raw: raw if type(raw) is str and len(raw) <= max_chars else _BAD,
    )


def one_of(*values: str) -> Field:
    allowed = frozenset(values)

    def check(raw: Any) -> Any:
        return raw if type(raw) is str and raw in allowed else _BAD

    return Field(f"one of {sorted(allowed)}", check)


def bits(n: int) -> Field:
    """A sketch of `n` bits held in a Python int: msgpack integers stop at 64 bits, so a wider one
    travels as `n / 8` little-endian bytes."""
    if n <= 64:
        return integer(0, (1 << n) - 1)
    size = (n + 7) // 8

    def check(raw: Any) -> Any:
        if type(raw) is not bytes or len(raw) != size:
            return _BAD
        value = int.from_bytes(raw, "little")
        return value if value < 1 << n else _BAD

    return Field(f"{size} bytes of a {n}-bit sketch", check, _to_bytes(size))


def expect_list(raw: Any, length: int | None = None, what: str = "a list") -> list[Any]:
    if type(raw) is not list or (length is not None and len(raw) != length):
        shape = what if length is None else f"{what} of {length}"
        raise StateFormatError(f"not {shape}")
    return raw


class MemoCodec:
    """How one detector's per-subject memory is written to a checkpoint and read back."""

    version: int

    def encode(self, memo: Any) -> list[Any]:
        raise NotImplementedError

    def decode(self, data: Any) -> Any:
        raise NotImplementedError


class SlotCodec(MemoCodec, Generic[T]):
    """A `__slots__` object as `[version, *fields]`, every field checked on the way back."""

    def __init__(self, cls: type[T], version: int, fields: Sequence[tuple[str, Field]]) -> None:
        names = [name for name, _ in fields]
        slots = set(getattr(cls, "__slots__", ()))
        if set(names) != slots:
            raise TypeError(f"{cls.__name__}: a codec lists exactly its slots {sorted(slots)}")
        self.cls = cls
        self.version = version
        self.fields = list(fields)
        self._get = attrgetter(*names)
        # Only wide sketches need converting; their converters, by position in the output.
        self._convert = [
            (i + 1, f.encoder) for i, (_, f) in enumerate(fields) if f.encoder is not None
        ]
        self._single = len(names) == 1

    def encode(self, memo: T) -> list[Any]:
        # On the checkpoint path for every changed subject: kept to a few C calls.
        if self._single:
            out = [self.version, self._get(memo)]
        else:
            out = [self.version, *self._get(memo)]
        for i, convert in self._convert:
            out[i] = convert(out[i])
        return out

    def decode(self, data: Any) -> T:
        raw = expect_list(data, len(self.fields) + 1, f"a {self.cls.__name__}")
        if raw[0] != self.version:
            raise StateVersionError(f"{self.cls.__name__} schema {raw[0]!r}, not {self.version}")
        obj = self.cls.__new__(self.cls)
        for (name, f), value in zip(self.fields, raw[1:], strict=True):
            try:
                setattr(obj, name, f.decode(value))
            except StateFormatError as exc:
                raise StateFormatError(f"{self.cls.__name__}.{name}: {exc}") from None
        return obj


class IntCodec(MemoCodec):
    """A memory that is one `n`-bit sketch (a plain int), as `[version, sketch]`."""

    def __init__(self, version: int, n: int) -> None:
        self.version = version
        self.field = bits(n)

    def encode(self, memo: Any) -> list[Any]:
        return [self.version, self.field.encode(int(memo))]

    def decode(self, data: Any) -> int:
        raw = expect_list(data, 2, "a sketch")
        if raw[0] != self.version:
            raise StateVersionError(f"sketch schema {raw[0]!r}, not {self.version}")
        value: int = self.field.decode(raw[1])
        return value
