"""Many regular expressions tried on a value at the cost of a few: each rule is only tried when a
literal it cannot match without is in the value.

Python's `re` tries every branch of a large alternation at every position: one alternation of the
SQL rules costs tens of microseconds on an ordinary sentence. Instead, the literals each rule needs
(`required_literals`, read from the compiled pattern's parse tree: "select" for a UNION SELECT rule,
one of the quotes for a quote rule) are looked up in the value all at once (`LiteralSet`: an RE2 set
when `google-re2` is installed, else substring tests grouped by first character), and only the
rules whose literal is there are run. The result is exactly what running every rule would give.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

__all__ = ["Hit", "LiteralSet", "Rule", "RuleBook", "required_literals"]

_MAX_ALTERNATIVES = 48
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


def _exact(items: Sequence[tuple[object, object]]) -> set[str] | None:
    """Every string `items` can match, when that is a small set of literals; else None."""
    outs = {""}
    for op, av in items:
        alts: set[str] | None
        if op is sre.LITERAL:
            alts = {chr(av)}  # type: ignore[arg-type]
        elif op is sre.IN:
            members = av  # type: ignore[assignment]
            if len(members) > 8 or not all(o is sre.LITERAL for o, _ in members):  # type: ignore[arg-type]
                return None
            alts = {chr(a) for _, a in members}  # type: ignore[misc]
        elif op is sre.SUBPATTERN:
            alts = _exact(av[-1])  # type: ignore[index]
        elif op is sre.BRANCH:
            alts = set()
            for branch in av[1]:  # type: ignore[index]
                found = _exact(branch)
                if found is None:
                    return None
                alts |= found
        else:
            return None
        if alts is None:
            return None
        outs = {o + a for o in outs for a in alts}
        if len(outs) > _MAX_ALTERNATIVES:
            return None
    return outs


def _required(items: Sequence[tuple[object, object]]) -> frozenset[str] | None:
    candidates: list[frozenset[str]] = []
    n = len(items)
    for i in range(n):
        outs = {""}
        j = i
        while j < n:  # the longest run of literal pieces from i: "union", {"nc", "ncat"}
            piece = _exact([items[j]])
            if piece is None:
                break
            longer = {o + p for o in outs for p in piece}
            if len(longer) > _MAX_ALTERNATIVES:
                break
            outs, j = longer, j + 1
        if j > i and "" not in outs:
            candidates.append(frozenset(outs))
        op, av = items[i]
        inner: frozenset[str] | None = None
        if op is sre.SUBPATTERN:
            inner = _required(av[-1])  # type: ignore[index]
        elif op is sre.BRANCH:
            union: set[str] = set()
            for branch in av[1]:  # type: ignore[index]
                found = _required(branch)
                if found is None:
                    union = set()
                    break
                union |= found
            inner = frozenset(union) or None
        elif op in _REPEATS and av[0] >= 1:  # type: ignore[index]
            inner = _required(av[2])  # type: ignore[index]
        if inner:
            candidates.append(inner)
    if not candidates:
        return None
    # The most selective: longest shortest alternative, then fewest alternatives.
    return max(candidates, key=lambda c: (min(map(len, c)), -len(c)))


def required_literals(pattern: str) -> frozenset[str] | None:
    """Strings one of which every match of `pattern` contains, or None when there are none.

    >>> sorted(required_literals(r"\\bunion\\s+select\\b"))
    ['select']
    >>> sorted(required_literals(r"\\b(?:nc|ncat|netcat)\\s+-"))
    ['nc', 'ncat', 'netcat']
    >>> required_literals(r"\\w+\\s+\\d") is None
    True
    """
    return _required(list(sre_parse.parse(pattern)))


class LiteralSet:
    """Which of many literal strings occur in a text.

    >>> LiteralSet(["select", "union", "'"]).find("1' union select 2") == {"select", "union", "'"}
    True
    """

    def __init__(self, literals: Iterable[str], engine: str = "auto") -> None:
        if engine not in ("auto", "re2", "python"):
            raise ValueError("engine must be auto, re2 or python")
        self.literals = tuple(sorted(set(literals)))
        self._re2 = None
        if engine != "python":
            try:
                import re2  # google-re2: one linear-time pass for all literals
            except ImportError:
                if engine == "re2":
                    raise
            else:
                matcher = re2.Set.SearchSet(re2.Options())
                for literal in self.literals:
                    matcher.Add(re.escape(literal))
                matcher.Compile()
                self._re2 = matcher
        # Without RE2: literals filed under their first two characters (one for a one-character
        # literal), and only those filed under a pair the text holds are looked for.
        self._singles = frozenset(lit for lit in self.literals if len(lit) == 1)
        self._by_pair: dict[str, tuple[str, ...]] = {}
        for literal in self.literals:
            if len(literal) > 1:
                pair = literal[:2]
                self._by_pair[pair] = (*self._by_pair.get(pair, ()), literal)

    @property
    def engine(self) -> str:
        return "re2" if self._re2 is not None else "python"

    def find(self, text: str) -> set[str]:
        if self._re2 is not None:
            literals = self.literals
            return {literals[i] for i in self._re2.Match(text) or ()}
        found = set(self._singles.intersection(text))
        by_pair = self._by_pair
        pairs = {text[i : i + 2] for i in range(len(text) - 1)}
        for pair in pairs.intersection(by_pair):
            for literal in by_pair[pair]:
                if literal in text:
                    found.add(literal)
        return found


@dataclass(frozen=True, slots=True)
class Hit:
    """One rule that matched a value."""

    kind: str  # sqli | xss | lfi | rce | ssrf
    label: str
    strength: float
    pos: int  # where in the decoded text it matched (for the reason's excerpt)


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str
    label: str
    strength: float
    regex: re.Pattern[str]
    literals: frozenset[str] | None  # None: always tried


class RuleBook:
    """Rules indexed by their required literals."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self._always = tuple(i for i, r in enumerate(self.rules) if r.literals is None)
        self._by_literal: dict[str, tuple[int, ...]] = {}
        for i, rule in enumerate(self.rules):
            for literal in rule.literals or ():
                self._by_literal[literal] = (*self._by_literal.get(literal, ()), i)

    @property
    def literals(self) -> frozenset[str]:
        return frozenset(self._by_literal)

    def candidates(self, present: set[str]) -> list[Rule]:
        """The rules worth trying on a text holding the literals `present`, in book order."""
        chosen = set(self._always)
        by_literal = self._by_literal
        for literal in present:
            chosen.update(by_literal.get(literal, ()))
        rules = self.rules
        return [rules[i] for i in sorted(chosen)]
