"""Documented operations compiled for matching requests: which operation a method and a path are,
and which query parameters it takes.

Paths of all documents and server base paths go into one segment trie. A concrete segment wins
over a template (`/users/me` before `/users/{id}`, as OpenAPI says), and a typed path parameter
only takes what its schema allows (an `integer` id does not take `admin`), so a probe of
`/users/admin` is not mistaken for a documented call. Lookups are cached by route template
(`/users/{id}`) when the documents make that exact, else by path; the cache is bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detectors.openapi import VAR, DocumentedOperation, SpecError, read_document
from pipeline.ingest.normalize import route_template

__all__ = ["Operation", "PathEntry", "SpecIndex"]

# Longer paths are never documented ones; the caps also bound the matcher's recursion.
MAX_SEGMENTS = 48
MAX_PATH_CHARS = 4096
_INT = re.compile(r"^-?\d+$")
# No exponent: a `{hex}` route token (hex digits, at least one letter) must never look numeric.
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
# Literal parts of a mixed segment (`v{n}`) made only of these could match some but not all of
# the paths behind one route token (`{id}` digits, `{uuid}`, `{hex}`): a route key would be inexact.
_TOKEN_CHARS = frozenset("0123456789abcdefABCDEF-")
# The most constrained template segment is tried first.
_RANK = {"enum": 0, "int": 1, "number": 2, "pattern": 3, "any": 4}


@dataclass(frozen=True, slots=True, eq=False)
class Operation:
    """One documented operation at one base path (identity-hashed: a dictionary key on the hot
    path)."""

    method: str
    template: str  # base path included
    operation_id: str
    deprecated: bool
    query: frozenset[str]
    query_prefixes: tuple[str, ...] = ()
    open_query: bool = False
    spec: str = ""
    implicit: bool = False  # HEAD beside GET, OPTIONS: accepted, not documented

    def unknown_params(self, names: Iterable[str]) -> list[str]:
        """The query parameter names this operation does not document.

        >>> op = Operation("GET", "/items", "listItems", False, frozenset({"page"}), ("filter[",))
        >>> op.unknown_params(["page", "page[]", "filter[color]", "debug"])
        ['debug']
        """
        if self.open_query:
            return []
        known, prefixes = self.query, self.query_prefixes
        out = []
        for name in names:
            if name in known or (name.endswith("[]") and name[:-2] in known):
                continue
            if prefixes and name.startswith(prefixes):
                continue
            out.append(name)
        return out


@dataclass(slots=True)
class PathEntry:
    """A documented path (base path included) and its operations by upper-case method."""

    template: str
    operations: dict[str, Operation]


class _Segment:
    """What one template segment accepts: any value, an integer, a number, an enum, a pattern."""

    __slots__ = ("key", "kind", "pattern", "values")

    def __init__(
        self,
        kind: str,
        values: frozenset[str] = frozenset(),
        pattern: re.Pattern[str] | None = None,
    ) -> None:
        self.kind = kind
        self.values = values
        self.pattern = pattern
        self.key = (kind, values, pattern.pattern if pattern else None)

    def accepts(self, seg: str) -> bool:
        kind = self.kind
        if kind == "any":
            return True
        if kind == "pattern":
            assert self.pattern is not None
            return self.pattern.fullmatch(seg) is not None
        # A value the ingest masked (`[email]`, `[card]`) was a real value of some shape.
        if seg[0] == "[" and seg[-1] == "]":
            return True
        if kind == "int":
            return _INT.match(seg) is not None
        if kind == "number":
            return _NUMBER.match(seg) is not None
        return seg in self.values


class _Node:
    __slots__ = ("entry", "literal", "params")

    def __init__(self) -> None:
        self.entry: PathEntry | None = None
        self.literal: dict[str, _Node] = {}
        self.params: list[tuple[_Segment, _Node]] = []


class SpecIndex:
    """Documented operations of one or more OpenAPI 3.x documents, matched by method and path.

    Parameters
    ----------
    specs
        Parsed OpenAPI 3.0/3.1 documents (see `detectors.openapi.load_spec`).
    base_paths
        Public base paths to use instead of the documents' `servers` (when a gateway publishes
        the API under another prefix than the one documented).
    implicit_head
        HEAD is accepted wherever GET is documented (servers answer it without saying so).
    implicit_options
        OPTIONS is accepted on every documented path (CORS preflight, answered by the gateway).
    ignored_params
        Query parameter names accepted everywhere (cache busters, tracking tags).
    cache_size
        Paths (or route templates) whose match is remembered.

    Examples
    --------
    >>> spec = {"openapi": "3.0.3", "info": {"title": "shop", "version": "1"},
    ...         "servers": [{"url": "https://api.example.com/v1"}],
    ...         "paths": {"/users/{id}": {
    ...             "parameters": [{"name": "id", "in": "path", "required": True,
    ...                             "schema": {"type": "integer"}}],
    ...             "get": {"operationId": "getUser",
    ...                     "parameters": [{"name": "fields", "in": "query"}]}}}}
    >>> index = SpecIndex([spec])
    >>> entry = index.match("/v1/users/42")
    >>> entry.template, sorted(entry.operations)
    ('/v1/users/{id}', ['GET', 'HEAD', 'OPTIONS'])
    >>> entry.operations["GET"].unknown_params(["fields", "debug"])
    ['debug']
    >>> index.match("/v1/users/admin") is None, index.match("/users/42") is None
    (True, True)
    """

    def __init__(
        self,
        specs: Sequence[Mapping[str, Any]],
        *,
        base_paths: Sequence[str] | None = None,
        implicit_head: bool = True,
        implicit_options: bool = True,
        ignored_params: Iterable[str] = (),
        cache_size: int = 8192,
    ) -> None:
        if not specs:
            raise SpecError("no OpenAPI document given")
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self.base_paths = list(base_paths) if base_paths is not None else None
        self.implicit_head = implicit_head
        self.implicit_options = implicit_options
        self.ignored_params = frozenset(ignored_params)
        self.cache_size = cache_size
        self.titles: list[str] = []
        self.operations: list[Operation] = []  # documented ones, one per base path
        self._root = _Node()
        self._route_keyed = True
        self._cache: dict[str, PathEntry | None] = {}
        for number, spec in enumerate(specs, 1):
            title, documented = read_document(
                spec, number, base_paths=self.base_paths, ignored_params=self.ignored_params
            )
            self.titles.append(title)
            self._add(documented)
        self._add_implicit()

    def match(self, path: str, route: str | None = None) -> PathEntry | None:
        """The documented path that `path` is, or None. `route` is the event's route template; it
        keys the cache when it is the path's template and the documents make that exact."""
        if "{" in path:
            # Literal braces: not cacheable, as cache keys with braces are route templates.
            return self._lookup(path)
        if (
            route is not None
            and route != path
            and self._route_keyed
            and "{" in route
            and route.count("/") == path.count("/")
        ):
            key = route
        else:
            key = path
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        entry = self._lookup(path)
        if len(cache) >= self.cache_size:
            cache.clear()  # cheaper than LRU bookkeeping; hot keys come back in one miss each
        cache[key] = entry
        return entry

    def _lookup(self, path: str) -> PathEntry | None:
        if len(path) > MAX_PATH_CHARS:
            return None
        segs = [s for s in path.split("/") if s]
        return _walk(self._root, segs, 0) if len(segs) <= MAX_SEGMENTS else None

    def cached(self) -> int:
        """How many lookups are remembered (at most `cache_size`)."""
        return len(self._cache)

    def _add(self, documented: list[DocumentedOperation]) -> None:
        # One matcher per template segment whatever the operation: operations of one path that
        # type a path parameter differently share the loosest reading of it.
        by_path: dict[str, list[DocumentedOperation]] = {}
        for doc_op in documented:
            by_path.setdefault(doc_op.path, []).append(doc_op)
        for path, doc_ops in by_path.items():
            segments = self._segments(path, [d.path_schemas for d in doc_ops])
            for doc_op in doc_ops:
                for base in doc_op.bases:
                    op = Operation(
                        method=doc_op.method,
                        template=(base + path).rstrip("/") or "/",
                        operation_id=doc_op.operation_id,
                        deprecated=doc_op.deprecated,
                        query=doc_op.query,
                        query_prefixes=doc_op.query_prefixes,
                        open_query=doc_op.open_query,
                        spec=doc_op.spec,
                    )
                    self.operations.append(op)
                    prefix: list[str | _Segment] = [s for s in base.split("/") if s]
                    self._insert(prefix + segments, op)

    def _segments(self, path: str, schemas: list[Mapping[str, Any]]) -> list[str | _Segment]:
        out: list[str | _Segment] = []
        for seg in (s for s in path.split("/") if s):
            if "{" not in seg:
                out.append(seg)
                continue
            readings = [self._segment(seg, by_name) for by_name in schemas]
            same = all(r.key == readings[0].key for r in readings)
            out.append(readings[0] if same else _Segment("any"))
        return out

    def _segment(self, seg: str, schemas: Mapping[str, Any]) -> _Segment:
        whole = VAR.fullmatch(seg)
        if whole is None:
            parts = VAR.split(seg)
            if all(set(part) <= _TOKEN_CHARS for part in parts[::2]):
                self._route_keyed = False
            pattern = "".join(
                re.escape(part) if i % 2 == 0 else "[^/]+?" for i, part in enumerate(parts)
            )
            return _Segment("pattern", pattern=re.compile(pattern))
        schema = schemas.get(whole.group(1))
        if not isinstance(schema, Mapping):
            return _Segment("any")
        enum = schema.get("enum")
        if isinstance(enum, list) and enum and all(isinstance(v, str | int) for v in enum):
            values = frozenset(str(v) for v in enum)
            if any(route_template("/" + v) != "/" + v for v in values):
                self._route_keyed = False
            return _Segment("enum", values=values)
        kind = schema.get("type")
        if kind == "integer":
            return _Segment("int")
        if kind == "number":
            return _Segment("number")
        if kind == "boolean":
            return _Segment("enum", values=frozenset({"true", "false"}))
        return _Segment("any")

    def _insert(self, segments: list[str | _Segment], op: Operation) -> None:
        node = self._root
        for seg in segments:
            if isinstance(seg, str):
                if route_template("/" + seg) != "/" + seg:
                    self._route_keyed = False  # a literal `2` in /api/2/...: `{id}` is not exact
                node = node.literal.setdefault(seg, _Node())
                continue
            for existing, child in node.params:
                if existing.key == seg.key:
                    node = child
                    break
            else:
                child = _Node()
                node.params.append((seg, child))
                node.params.sort(key=lambda pair: _RANK[pair[0].kind])
                node = child
        if node.entry is None:
            node.entry = PathEntry(op.template, {})
        # Two documents (or two base paths) may document the same path: the first one wins.
        node.entry.operations.setdefault(op.method, op)

    def reachable(self) -> list[Operation]:
        """Every operation a request can match, the implicit ones (HEAD, OPTIONS) included."""
        out: list[Operation] = []
        stack = [self._root]
        while stack:
            node = stack.pop()
            stack.extend(node.literal.values())
            stack.extend(child for _, child in node.params)
            if node.entry is not None:
                out.extend(node.entry.operations.values())
        return out

    def _add_implicit(self) -> None:
        """HEAD beside GET and OPTIONS everywhere, added after all documents so that a document
        that does document them wins."""
        stack = [self._root]
        while stack:
            node = stack.pop()
            stack.extend(node.literal.values())
            stack.extend(child for _, child in node.params)
            if node.entry is None:
                continue
            ops = node.entry.operations
            get = ops.get("GET")
            if self.implicit_head and get is not None and "HEAD" not in ops:
                ops["HEAD"] = Operation(
                    "HEAD",
                    get.template,
                    get.operation_id,
                    get.deprecated,
                    get.query,
                    get.query_prefixes,
                    get.open_query,
                    get.spec,
                    implicit=True,
                )
            if self.implicit_options and "OPTIONS" not in ops:
                ops["OPTIONS"] = Operation(
                    "OPTIONS", node.entry.template, "", False, frozenset(), (), True, implicit=True
                )


def _walk(node: _Node, segs: list[str], i: int) -> PathEntry | None:
    if i == len(segs):
        return node.entry
    seg = segs[i]
    child = node.literal.get(seg)
    if child is not None:
        found = _walk(child, segs, i + 1)
        if found is not None:
            return found
    for matcher, child in node.params:
        if matcher.accepts(seg):
            found = _walk(child, segs, i + 1)
            if found is not None:
                return found
    return None
