"""What a query parameter of one endpoint normally holds, learned online: a number, a UUID, a token,
free text, a URL, JSON...

A payload in a parameter that is always a number is strong evidence; the same words in a search box
that takes any text are weak. Memory is bounded: at most `max_keys` (route template, parameter)
pairs, and at most `max_params_per_route` parameters per route, so a scanner inventing parameter
names cannot grow it. The caller only learns from requests it did not flag.
"""

from __future__ import annotations

import re
from typing import Any

from detectors.codec import StateFormatError, count, expect_list, text

__all__ = ["SHAPES", "STRICT", "ParamShapes", "shape_of"]

SHAPES = ("numeric", "uuid", "hex", "bool", "date", "token", "url", "json", "text")
# Shapes whose values cannot carry any payload: a deviation from them is itself suspicious.
STRICT = frozenset({"numeric", "uuid", "hex", "bool", "date"})
# Which observed shapes each shape covers: a parameter is given the narrowest shape that covers
# nearly all its values ("shoes" and "red dress" make a text parameter, not a token one).
_COVERS = {
    "numeric": ("numeric",),
    "uuid": ("uuid",),
    "hex": ("hex",),
    "bool": ("bool",),
    "date": ("date",),
    "token": ("numeric", "uuid", "hex", "bool", "token"),
    "url": ("url",),
    "json": ("json",),
    "text": SHAPES,
}

_NUMERIC = re.compile(r"-?\d{1,30}(?:\.\d{1,30})?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"(?:0x)?[0-9a-fA-F]{8,128}")
_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_TOKEN = re.compile(r"[\w.,:~+-]{1,128}")
_INDEX = {name: i for i, name in enumerate(SHAPES)}
# Past this many values, only every SAMPLE_EVERY-th value of a parameter is classified.
SAMPLE_AFTER = 512
SAMPLE_EVERY = 16
_COVER_INDEX = tuple((name, tuple(_INDEX[s] for s in _COVERS[name])) for name in SHAPES)


def shape_of(value: str) -> str:
    """The shape of one value.

    >>> [shape_of(v) for v in ("42", "true", "2024-05-01", "usb-c", "red dress", "https://x.io")]
    ['numeric', 'bool', 'date', 'token', 'text', 'url']
    """
    if _NUMERIC.fullmatch(value):
        return "numeric"
    if len(value) == 36 and _UUID.fullmatch(value):
        return "uuid"
    if value in ("true", "false", "True", "False", "TRUE", "FALSE"):
        return "bool"
    if value[:1].isdigit() and _DATE.fullmatch(value):
        return "date"
    if _HEX.fullmatch(value) and any(c.isdigit() for c in value):
        return "hex"
    if _TOKEN.fullmatch(value):
        return "token"
    if value.startswith(("http://", "https://", "//")):
        return "url"
    if value[:1] in "{[":
        return "json"
    return "text"


class _Counts:
    __slots__ = ("counts", "n", "seen", "shape", "shape_at")

    def __init__(self) -> None:
        self.n = 0  # values classified
        self.seen = 0  # values offered
        self.counts = [0] * len(SHAPES)
        self.shape: str | None = None  # as of shape_at values classified
        self.shape_at = -1


class ParamShapes:
    """Online shape statistics per (route template, parameter name).

    Parameters
    ----------
    learn_after
        Observations of a parameter before its shape is trusted.
    dominance
        Share of observations the dominant shape must hold to be the parameter's shape.
    max_keys, max_params_per_route
        Memory bounds; once reached, new parameters are not learned (known ones still are).

    Examples
    --------
    >>> shapes = ParamShapes(learn_after=3)
    >>> for v in ("1", "22", "333"):
    ...     shapes.learn("/orders", "id", v)
    >>> shapes.shape("/orders", "id"), shapes.shape("/orders", "q")
    ('numeric', None)
    """

    def __init__(
        self,
        learn_after: int = 20,
        dominance: float = 0.95,
        max_keys: int = 50_000,
        max_params_per_route: int = 64,
    ) -> None:
        if learn_after < 1:
            raise ValueError("learn_after must be at least 1")
        if not 0.5 < dominance <= 1.0:
            raise ValueError("dominance must be in (0.5, 1]")
        if max_keys < 1 or max_params_per_route < 1:
            raise ValueError("max_keys and max_params_per_route must be at least 1")
        self.learn_after = learn_after
        self.dominance = dominance
        self.max_keys = max_keys
        self.max_params_per_route = max_params_per_route
        self._routes: dict[str, dict[str, _Counts]] = {}
        self._keys = 0

    def __len__(self) -> int:
        """How many (route, parameter) pairs are tracked."""
        return self._keys

    def learn(self, route: str, name: str, value: str) -> None:
        params = self._routes.get(route)
        if params is None:
            if self._keys >= self.max_keys:
                return
            params = self._routes[route] = {}
        counts = params.get(name)
        if counts is None:
            if self._keys >= self.max_keys or len(params) >= self.max_params_per_route:
                return
            counts = params[name] = _Counts()
            self._keys += 1
        counts.seen += 1
        if counts.n >= SAMPLE_AFTER and counts.seen % SAMPLE_EVERY:
            return  # well known: a sample keeps following drift at a fraction of the cost
        counts.n += 1
        counts.counts[_INDEX[shape_of(value)]] += 1

    def shape(self, route: str, name: str) -> str | None:
        """The learned shape of the parameter, or None while unknown or mixed."""
        params = self._routes.get(route)
        counts = params.get(name) if params is not None else None
        if counts is None or counts.n < self.learn_after:
            return None
        if counts.shape_at != counts.n:
            counts.shape, counts.shape_at = self._narrowest(counts), counts.n
        return counts.shape

    def export(self) -> list[Any]:
        """What was learned, as plain data: `[[route, [[name, n, seen, counts], ...]], ...]`."""
        return [
            [route, [[name, c.n, c.seen, list(c.counts)] for name, c in params.items()]]
            for route, params in self._routes.items()
        ]

    def load(self, data: Any) -> None:
        """Replace what was learned with `export()`'s data, checked (`StateFormatError`)."""
        name, n = text(65536), count()
        routes: dict[str, dict[str, _Counts]] = {}
        keys = 0
        for row in expect_list(data, None, "a list of routes"):
            route, params_in = expect_list(row, 2, "a route's parameters")
            params = routes[name.decode(route)] = {}
            for param in expect_list(params_in, None, "a list of parameters"):
                pname, classified, seen, counts_in = expect_list(param, 4, "a parameter")
                counts = _Counts()
                counts.n, counts.seen = n.decode(classified), n.decode(seen)
                counts.counts = [n.decode(c) for c in expect_list(counts_in, len(SHAPES))]
                if sum(counts.counts) != counts.n or counts.n > counts.seen:
                    raise StateFormatError("shape counts that do not add up")
                params[name.decode(pname)] = counts
            keys += len(params)
            if len(params) > self.max_params_per_route or keys > self.max_keys:
                raise StateFormatError("more parameters than this detector keeps")
        self._routes, self._keys = routes, keys

    def _narrowest(self, counts: _Counts) -> str | None:
        need = self.dominance * counts.n
        c = counts.counts
        for name, covered in _COVER_INDEX:
            if sum(c[i] for i in covered) >= need:
                return name
        return None  # unreachable: text covers everything
