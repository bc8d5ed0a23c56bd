"""Injection probing: SQLi, XSS, path traversal / LFI, command injection / RCE and SSRF payloads in
a request's path and query, judged against what each endpoint's parameters normally hold.

`inspect` looks at one request: the URL path and every query parameter name and value (as the
gateway logged them after redaction: secrets are fingerprints, PII masked), decoded the way a WAF
decodes them (`injection_decode`), scanned by the rules of each class (`injection_rules`). The
strongest finding is weighed by the parameter's learned shape (`injection_shapes`): in a parameter
that always holds a number any payload counts more, and a quote or a `<` alone counts; in a
free-text search box only strong findings keep their weight. Requests it flags are never learned
from.

`score` turns a subject's decayed findings into a signal: one clear payload is worth a tag, a few in
a minute a challenge, a scanner's run (sqlmap, nikto) a block.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from detectors.base import Signal, SubjectContext
from detectors.injection_decode import Decoded, decode
from detectors.injection_rules import DATA_DIR, Hit, RuleSet
from detectors.injection_shapes import STRICT, ParamShapes, shape_of
from detectors.state import EVIDENCE_TAU_S, SubjectState
from pipeline.events import GatewayEvent

__all__ = ["KINDS", "InjectionDetector"]

KINDS = ("sqli", "xss", "lfi", "rce", "ssrf")
_NAMES = {"sqli": "SQLi", "xss": "XSS", "lfi": "path traversal", "rce": "command injection",
          "ssrf": "SSRF"}  # fmt: skip
EXCERPT_CHARS = 40
MAX_CACHED_NAMES = 4096
MAX_CACHED_VALUES = 8192
MAX_CACHED_CHARS = 256
# Values made only of these characters (no space) cannot hold a payload of any class.
_PLAIN = re.compile(r"[A-Za-z0-9_.,:@+\-]*")
# ...except these, which are whole payloads in plain characters.
_PLAIN_SUSPECT = re.compile(
    r"information_schema|pg_|sqlite_|sys(?:objects|columns)|xp_|@@|::|169\.254|\.\.", re.IGNORECASE
)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")
# Paths made only of these, and without "..", need no decoding or scanning.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.,@+\-/{}~=]*")
# In a parameter that always holds a number, a UUID, a date...: characters no such value has.
_MARKERS = (
    (
        "sqli",
        "quote or SQL syntax",
        re.compile(r"['\"`]|--|#|/\*|\b(?:or|and|union|select|sleep)\b"),
    ),
    ("xss", "angle bracket", re.compile(r"[<>]")),
    ("rce", "shell metacharacter", re.compile(r"[;|`]|\$\(|&&")),
)
_MARKER_STRENGTH = 0.45
# In a parameter that takes free text, a finding short of 0.7 keeps this share of its score: the
# medium rules (a batch "if", a path) then fall below `min_score` there.
FREE_TEXT_DAMPING = 0.45
# Parameters that name where a browser goes next: an internal address there is no SSRF.
_REDIRECT_PARAM = re.compile(
    r"(?:^|[_\-.])(?:redirect|redir|return|returnto|next|continue|callback|goto|success|cancel|"
    r"back|done|finish|logout)(?:[_\-]?(?:uri|url|to|path|page))?$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class _Finding:
    score: float
    hit: Hit
    where: str
    note: str
    excerpt: str


class InjectionDetector:
    """Finds injection payloads in single requests and scores subjects by the findings they made.

    Parameters
    ----------
    min_score
        A request whose strongest finding scores below this is not flagged (and is learned from).
    tag_at, challenge_at, block_at
        Decayed evidence (sum of finding scores, time constant `EVIDENCE_TAU_S`) at which the
        subject's score reaches 0.3 (tag), 0.6 (challenge) and 0.85 (block); 1.0 at twice
        `block_at`.
    learn_after, max_params, max_params_per_route
        Parameter-shape learning (`ParamShapes`): observations before a shape is trusted, and the
        memory bounds.
    data_dir
        Where the CRS word lists are.
    engine
        How the literals that select rules are found: `re2` (google-re2), `python`, or `auto`
        (re2 when installed). Findings are the same; only the cost differs.

    Examples
    --------
    >>> from pipeline.events import GatewayEvent
    >>> detector = InjectionDetector()
    >>> event = GatewayEvent(ts_ms=1_000, gateway="kong", client_ip="203.0.113.9", method="GET",
    ...                      path="/search", route="/search", status=200,
    ...                      query={"q": "1 UNION SELECT username, password FROM users--"})
    >>> finding = detector.inspect(event)
    >>> finding.kind, finding.score
    ('sqli', 1.0)
    >>> finding.reason
    'SQLi in ?q: UNION SELECT at "1 union select username, password from u…"'
    >>> benign = event.model_copy(update={"query": {"q": "O'Brien union station"}})
    >>> detector.inspect(benign) is None
    True
    >>> state = SubjectState()
    >>> for i in range(3):
    ...     state.note(detector.name, finding.score, 1.0 + i, finding.kind, finding.reason)
    >>> detector.score(state, SubjectContext("ip:203.0.113.9", "ip", now=4.0)).score
    0.661
    """

    name = "injection"
    version = "1"

    def __init__(
        self,
        min_score: float = 0.3,
        tag_at: float = 0.5,
        challenge_at: float = 2.0,
        block_at: float = 6.0,
        learn_after: int = 20,
        max_params: int = 50_000,
        max_params_per_route: int = 64,
        data_dir: Path = DATA_DIR,
        engine: str = "auto",
    ) -> None:
        if not 0 < min_score <= 1:
            raise ValueError("min_score must be in (0, 1]")
        if not 0 < tag_at < challenge_at < block_at:
            raise ValueError("need 0 < tag_at < challenge_at < block_at")
        self.min_score = min_score
        self.tag_at = tag_at
        self.challenge_at = challenge_at
        self.block_at = block_at
        self.learn_after = learn_after
        self.max_params = max_params
        self.max_params_per_route = max_params_per_route
        self.data_dir = data_dir
        self.engine = engine
        self.rules = _rules(data_dir, engine)
        self.shapes = ParamShapes(learn_after, max_keys=max_params,
                                  max_params_per_route=max_params_per_route)  # fmt: skip
        # False freezes the learned shapes (an evaluation judging every request on the same state).
        self.learning = True
        # Per parameter name: plain (nothing to scan), and whether it names a redirect target.
        self._names: dict[str, tuple[bool, bool]] = {}
        self._value_cache: dict[tuple[str, bool, bool], tuple[Decoded, list[Hit]] | None] = {}
        self._knots = ((0.0, 0.0), (tag_at, 0.3), (challenge_at, 0.6), (block_at, 0.85),
                       (2 * block_at, 1.0))  # fmt: skip

    # -- one request --------------------------------------------------------------------------
    def inspect(self, event: GatewayEvent) -> Signal | None:
        best: _Finding | None = None
        path = event.path
        if ".." in path or not _PLAIN_PATH.fullmatch(path):
            best = self._judge(decode(path), "the path", None, in_path=True, best=best)
        query = event.query
        if query:
            best = self._inspect_query(event.route, query, best)
        if best is None or best.score < self.min_score:
            if query and self.learning and event.status < 400:
                # Only endpoints that exist and accepted the request teach what is normal.
                learn = self.shapes.learn
                route = event.route
                for name, value in query.items():
                    if value and not value.startswith("hmac:"):
                        learn(route, name, value)
            return None
        hit = best.hit
        reason = f"{_NAMES[hit.kind]} in {best.where}{best.note}: {hit.label} at {best.excerpt}"
        return Signal(self.name, hit.kind, best.score, reason)

    def _inspect_query(
        self, route: str, query: dict[str, str], best: _Finding | None
    ) -> _Finding | None:
        names = self._names
        for name, value in query.items():
            known = names.get(name)
            if known is None:
                known = (
                    _PLAIN_NAME.fullmatch(name) is not None,
                    _REDIRECT_PARAM.search(name) is not None,
                )
                if len(names) < MAX_CACHED_NAMES:  # a scanner inventing names fills it once
                    names[name] = known
            plain_name, redirect = known
            if not plain_name:
                best = self._judge(decode(name), "a parameter name", None, best=best)
            # Empty, a number or a word, or a secret the ingest replaced by its fingerprint.
            if not value or value.isalnum() or value.startswith("hmac:"):
                continue
            shape = self.shapes.shape(route, name)
            scanned = self._scan_value(value, redirect, shape == "url")
            if scanned is None:
                continue
            d, hits = scanned
            hits = hits + self._markers(d, shape, value)
            if hits:
                where = f"?{name[:EXCERPT_CHARS]}"
                best = self._score_hits(hits, d, where, shape, value, False, best)
        return best

    def _scan_value(
        self, value: str, redirect: bool, url_param: bool
    ) -> tuple[Decoded, list[Hit]] | None:
        """The decoded value and the rules it matches; None for a value with nothing to scan.
        Values repeat (page sizes, sort keys, popular searches): answers are cached (bounded)."""
        key = (value, redirect, url_param)
        cache = self._value_cache
        if key in cache:
            return cache[key]
        answer: tuple[Decoded, list[Hit]] | None
        if _PLAIN.fullmatch(value) and _PLAIN_SUSPECT.search(value) is None:
            hit = self.rules.os_file(value) if "." in value else None
            answer = (decode(value), [hit]) if hit is not None else None
        else:
            d = decode(value)
            answer = (d, self.rules.scan(d, redirect=redirect, url_param=url_param))
        if len(value) <= MAX_CACHED_CHARS:
            if len(cache) >= MAX_CACHED_VALUES:
                cache.clear()
            cache[key] = answer
        return answer

    @staticmethod
    def _markers(d: Decoded, shape: str | None, value: str) -> list[Hit]:
        """In a parameter that always holds a number, a UUID, a date...: characters none has."""
        if shape not in STRICT or shape_of(value) == shape:
            return []
        out = []
        for kind, label, rx in _MARKERS:
            m = rx.search(d.text)
            if m is not None:
                out.append(Hit(kind, label, _MARKER_STRENGTH, m.start()))
        return out

    def _judge(
        self, d: Decoded, where: str, shape: str | None, *, in_path: bool = False,
        best: _Finding | None,
    ) -> _Finding | None:  # fmt: skip
        hits = self.rules.scan(d, in_path=in_path)
        if not hits:
            return best
        return self._score_hits(hits, d, where, shape, "", in_path, best)

    @staticmethod
    def _score_hits(
        hits: list[Hit],
        d: Decoded,
        where: str,
        shape: str | None,
        value: str,
        in_path: bool,
        best: _Finding | None,
    ) -> _Finding | None:
        """The strongest hit, plus a little for each other rule that agrees, weighed by the
        parameter's shape; kept if it beats `best`."""
        top = max(hits, key=lambda h: h.strength)
        others = len({h.label for h in hits}) - 1
        score = top.strength + 0.1 * min(2, others)
        note = ""
        if shape in STRICT and shape_of(value) != shape:
            score += 0.2
            note = f" (normally {shape})"
        elif shape == "token":
            score += 0.1
        elif shape in ("text", "json", "url") and top.strength < 0.7:
            score *= FREE_TEXT_DAMPING
            note = f" (free {shape})" if shape != "url" else " (a URL parameter)"
        # A value still percent-encoded after the gateway decoded it once was encoded twice.
        if d.encoded_layers >= (2 if in_path else 1):
            score += 0.1
        score = round(min(1.0, score), 3)
        if best is not None and best.score >= score:
            return best
        return _Finding(score, top, where, note, _excerpt(d.text, top.pos))

    # -- one subject --------------------------------------------------------------------------
    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        evidence = state.evidence.get(self.name) if state.evidence else None
        if evidence is None:
            return None
        value = evidence.value(ctx.now)
        score = self._evidence_score(value)
        if score < 0.05:
            return None
        reason = (
            f"{evidence.hits} injection finding{'s' if evidence.hits != 1 else ''} "
            f"(decayed weight {value:.2f}, decay {EVIDENCE_TAU_S:.0f} s); last: {evidence.reason}"
        )
        return Signal(
            self.name, evidence.kind, score, reason, "injection_findings", float(evidence.hits)
        )

    def _evidence_score(self, value: float) -> float:
        knots = self._knots
        for (x0, y0), (x1, y1) in itertools.pairwise(knots):
            if value <= x1:
                return round(y0 + (y1 - y0) * (value - x0) / (x1 - x0), 3)
        return 1.0


@functools.lru_cache(maxsize=4)
def _rules(data_dir: Path, engine: str) -> RuleSet:
    """One compiled rule set per data folder, shared by every detector (it is read-only)."""
    return RuleSet(data_dir, engine)


def _excerpt(text: str, pos: int) -> str:
    """At most `EXCERPT_CHARS` characters of the payload around where it matched, quoted."""
    start = max(0, min(pos, len(text) - EXCERPT_CHARS) - 4)
    piece = text[start : start + EXCERPT_CHARS]
    cut = start + EXCERPT_CHARS < len(text)
    return (
        '"'
        + piece.encode("unicode_escape").decode("ascii").replace('"', '\\"')[:60]
        + ('…"' if cut else '"')
    )
