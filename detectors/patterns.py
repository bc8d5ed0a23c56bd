"""Many regular expressions searched at once, fast enough for the per-request path.

One alternation of 1,500 crawler patterns costs Python's `re` close to a millisecond on a Chrome
user agent (it tries every branch at every position), and an attacker who rotates user agents or
probe paths defeats any cache. So each pattern is filed under three characters that every match
of it must contain, and a text is only tested against the patterns whose three characters it
holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["PatternSet", "required_literal"]

GRAM = 3
# Text that most browser user agents and API paths share: filing patterns under pieces of it would
# test them on nearly every request.
_COMMON = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
    "/api/v1/v2/users/products/orders/search/accounts/items/login/auth/token/profile/settings/"
    "images/static/assets/index.html",
)


def _grams(text: str) -> list[str]:
    return [text[i : i + GRAM] for i in range(len(text) - GRAM + 1)]


_COMMON_GRAMS = frozenset(g for t in _COMMON for g in _grams(t) + _grams(t.lower()))


def _skip_class(p: str, i: int) -> int:
    """Index just past the character class that starts at `p[i] == "["`."""
    i += 1
    if i < len(p) and p[i] == "^":
        i += 1
    if i < len(p) and p[i] == "]":
        i += 1  # a leading "]" is a literal
    while i < len(p) and p[i] != "]":
        i += 2 if p[i] == "\\" else 1
    return i + 1


def _skip_group(p: str, i: int) -> int:
    """Index just past the group that starts at `p[i] == "("`."""
    depth = 0
    while i < len(p):
        c = p[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _skip_class(p, i)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def required_literal(pattern: str) -> str | None:
    """The longest run of plain characters every match of `pattern` contains, or None.

    Conservative: groups, classes, wildcards and optional characters end a run, and a top-level
    alternation has no single required literal.

    >>> required_literal(r"Googlebot\\/")
    'Googlebot/'
    >>> required_literal(r"[wW]get")
    'get'
    >>> required_literal(r"AdsBot-Google([^-]|$)")
    'AdsBot-Google'
    >>> required_literal(r"Chirp|gotosocial") is None
    True
    """
    runs: list[str] = []
    cur: list[str] = []

    def flush() -> None:
        if cur:
            runs.append("".join(cur))
            cur.clear()

    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1] if i + 1 < n else ""
            i += 2
            if not nxt or nxt.isalnum():  # \d, \s, \b, ... are classes or assertions
                flush()
                continue
            cur.append(nxt)
        elif c == "[":
            flush()
            i = _skip_class(pattern, i)
        elif c == "(":
            flush()  # a group may be optional or an alternation: nothing in it is required
            i = _skip_group(pattern, i)
        elif c == "|":
            return None
        elif c in "?*{":
            if cur:
                cur.pop()  # the character before is optional
            flush()
            i = pattern.index("}", i) + 1 if c == "{" and "}" in pattern[i:] else i + 1
        elif c == "+":
            last = cur[-1] if cur else None
            flush()
            if last is not None:
                cur.append(last)  # "ab+c" holds "ab" and "bc", not "abc"
            i += 1
        elif c in "^$.":
            flush()
            i += 1
        else:
            cur.append(c)
            i += 1
    flush()
    best = max(runs, key=len, default="")
    return best if len(best) >= GRAM else None


class PatternSet:
    """Searches a text for many regexes, testing only those whose required literal it may hold.

    Parameters
    ----------
    patterns
        `(regex, literal)` pairs; `literal` is text every match contains (None: work it out with
        `required_literal`). Patterns without one are searched as one alternation on every text.
    flags
        `re` flags for every pattern. Matching is case-sensitive unless the caller lowercases both
        the patterns and the text.

    Examples
    --------
    >>> ps = PatternSet([(r"Googlebot\\/", None), (r"[bB]ingbot", None), (r"^curl", None)])
    >>> ps.search("Mozilla/5.0 (compatible; bingbot/2.0)"), ps.search("curl/8.5"), ps.search("x")
    ([1], [2], [])
    """

    def __init__(self, patterns: Sequence[tuple[str, str | None]], *, flags: int = 0) -> None:
        self._regexes = [re.compile(p, flags) for p, _ in patterns]
        buckets: dict[str, list[int]] = {}
        residual: list[int] = []
        for index, (pattern, literal) in enumerate(patterns):
            literal = literal if literal is not None else required_literal(pattern)
            if literal is None or len(literal) < GRAM:
                residual.append(index)
                continue
            # File it under its rarest piece: uncommon in ordinary traffic, then least shared.
            gram = min(_grams(literal), key=lambda g: (g in _COMMON_GRAMS, len(buckets.get(g, ()))))
            buckets.setdefault(gram, []).append(index)
        self._buckets = {g: tuple(ix) for g, ix in buckets.items()}
        self._residual = tuple(residual)
        self._residual_re = (
            re.compile("|".join(f"(?:{patterns[i][0]})" for i in residual), flags)
            if residual
            else None
        )

    def __len__(self) -> int:
        return len(self._regexes)

    def matched(self, index: int, text: str) -> str:
        """What pattern `index` matches in `text` (empty if nothing)."""
        found = self._regexes[index].search(text)
        return found.group(0) if found else ""

    def search(self, text: str) -> list[int]:
        """Indices of the patterns found in `text`, in ascending order."""
        found: set[int] = set()
        buckets = self._buckets
        regexes = self._regexes
        tried: set[int] | None = None
        for i in range(len(text) - GRAM + 1):
            candidates = buckets.get(text[i : i + GRAM])
            if candidates is None:
                continue
            if tried is None:
                tried = set()
            for index in candidates:
                if index not in tried:
                    tried.add(index)
                    if regexes[index].search(text):
                        found.add(index)
        if self._residual_re is not None and self._residual_re.search(text):
            found.update(i for i in self._residual if regexes[i].search(text))
        return sorted(found)
