"""What a user agent says its client is: an attack tool, a declared crawler (wanted, or working for
someone else), browser automation, an HTTP library, a browser, nothing at all, or something else.

Attack tools come from the OWASP CRS list `scanners-user-agents.data` (copied into `data/crs/`);
crawlers, automation and libraries from the `crawler-user-agents` package (labelled patterns). Only
the first kind is evidence of an attack on its own: a declared crawler is information, and a
library such as `python-requests` or `okhttp` is what most legitimate API consumers send.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detectors.patterns import PatternSet

__all__ = [
    "AUTOMATION",
    "BROWSER",
    "BULK_CRAWLER",
    "CRAWLER",
    "EMPTY",
    "LIBRARY",
    "OTHER",
    "SCANNER",
    "UserAgentClass",
    "UserAgentClassifier",
    "load_crawler_patterns",
    "load_scanner_names",
]

SCANNER = "scanner"
AUTOMATION = "automation"
CRAWLER = "crawler"
BULK_CRAWLER = "bulk_crawler"
LIBRARY = "library"
BROWSER = "browser"
EMPTY = "empty"
OTHER = "other"

DATA_DIR = Path(__file__).resolve().parent / "data" / "crs"
# Crawlers a site owner normally wants, at whatever pace they keep: search engines, link previews,
# feed readers, uptime monitors. The rest of the list (SEO tools, AI and archive crawlers, ad
# verification, research scanners) works for someone else and is held to a polite pace.
_WANTED_TAGS = frozenset({"search-engine", "social-preview", "feed-reader", "monitoring"})
# A browser's user agent: the Mozilla/5.0 preamble, a platform, then a rendering engine. Crawlers
# and headless browsers look the same, so this is only asked once the lists have found nothing.
_BROWSER = re.compile(
    r"Mozilla/5\.0 \((?:Windows|Macintosh|X11|Linux|iPhone|iPad|iPod|Android)[^)]*\)"
    r" (?:AppleWebKit/|Gecko/)"
)
# Versions from which a browser sends fetch metadata (`Sec-Fetch-*`) on every HTTPS request:
# Chromium 76 (Chrome, Edge, Opera, Samsung Internet all carry `Chrome/N`), Firefox 90, Safari
# 16.4. A few versions of margin, and an unknown engine or version is never expected to send them.
_FETCH_METADATA = re.compile(
    r"Chrome/(\d+)\.|Firefox/(\d+)\.|Version/(\d+)\.(\d+)\S* (?:Mobile/\S+ )?Safari/"
)
# Placeholders people send instead of a user agent.
_BLANK = frozenset({"", "-", "null", "none", "undefined"})


@dataclass(frozen=True, slots=True)
class UserAgentClass:
    """`kind` is one of the module constants; `name` is what matched (the pattern's text);
    `fetch_metadata`: a browser whose claimed version sends `Sec-Fetch-*` headers."""

    kind: str
    name: str = ""
    fetch_metadata: bool = False


def _sends_fetch_metadata(user_agent: str) -> bool:
    """Whether the browser this user agent names sends `Sec-Fetch-*` (see `_FETCH_METADATA`).

    >>> _sends_fetch_metadata("Mozilla/5.0 (Windows NT 10.0) Gecko/20100101 Firefox/120.0")
    True
    >>> _sends_fetch_metadata("Mozilla/5.0 (iPhone; CPU iPhone OS 15_8 like Mac OS X) "
    ...                       "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/15.6 Mobile/15E148 "
    ...                       "Safari/604.1")
    False
    """
    found = _FETCH_METADATA.search(user_agent)
    if found is None:
        return False
    chrome, firefox, safari, minor = found.groups()
    if chrome is not None:
        return int(chrome) >= 80
    if firefox is not None:
        return int(firefox) >= 92
    return (int(safari), int(minor)) >= (16, 4)


def load_scanner_names(path: Path = DATA_DIR / "scanners-user-agents.data") -> list[str]:
    """The CRS scanner user-agent phrases, one a line, comments and blank lines dropped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [s for line in lines if (s := line.strip()) and not s.startswith("#")]


def load_crawler_patterns() -> list[tuple[str, str]]:
    """`(regex, kind)` for every `crawler-user-agents` entry, kind from its tags."""
    try:
        from crawleruseragents import CRAWLER_USER_AGENTS_DATA
    except ImportError as exc:  # pragma: no cover - a packaging error, not an input error
        raise RuntimeError(
            "the bots detectors need the crawler-user-agents package: pip install "
            "crawler-user-agents"
        ) from exc
    out = []
    for entry in CRAWLER_USER_AGENTS_DATA:
        tags = entry.get("tags") or ()
        if "browser-automation" in tags:
            kind = AUTOMATION
        elif "http-library" in tags:
            kind = LIBRARY
        elif _WANTED_TAGS.intersection(tags):
            kind = CRAWLER
        else:
            # SEO, AI, archive crawlers, and the list's own "scanner" tag (SSL Labs, Censys, Let's
            # Encrypt): declared, not attacking, but no reason to let them crawl at any pace.
            kind = BULK_CRAWLER
        out.append((entry["pattern"], kind))
    return out


class UserAgentClassifier:
    """Classifies user agents with one pattern set per list and remembers recent answers.

    The same few hundred user agents make nearly all traffic, so answers are cached per distinct
    string; the cache forgets its oldest entries beyond `max_cache`, so an attacker who sends a new
    user agent with every request costs one pattern-set search each (~15 µs), never memory.

    Parameters
    ----------
    max_cache
        Distinct user agents remembered.
    scanners
        Attack-tool phrases, matched case-insensitively as words (default: the CRS list).
    crawlers
        `(regex, kind)` patterns matched case-sensitively (default: `crawler-user-agents`).

    Examples
    --------
    >>> ua = UserAgentClassifier()
    >>> ua.classify("sqlmap/1.7.2#stable (https://sqlmap.org)")
    UserAgentClass(kind='scanner', name='sqlmap', fetch_metadata=False)
    >>> ua.classify("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)").kind
    'crawler'
    >>> ua.classify("python-requests/2.31.0").kind, ua.classify("").kind
    ('library', 'empty')
    >>> ua.classify("Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0").kind
    'browser'
    """

    def __init__(
        self,
        max_cache: int = 10_000,
        scanners: Sequence[str] | None = None,
        crawlers: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        if max_cache < 1:
            raise ValueError("max_cache must be at least 1")
        self.max_cache = max_cache
        names = list(load_scanner_names() if scanners is None else scanners)
        if any(len(n) < 3 for n in names):
            raise ValueError("scanner phrases must be at least 3 characters")
        self._scanner_names = [n.lower() for n in names]
        # Words, not substrings: "vega" must not fire inside "LasVegas", nor "nmap" in "snmapp".
        self._scanners = PatternSet(
            [(rf"(?<![a-z0-9]){re.escape(n)}(?![a-z])", n) for n in self._scanner_names]
        )
        patterns = list(load_crawler_patterns() if crawlers is None else crawlers)
        self._crawler_kinds = [kind for _, kind in patterns]
        self._crawlers = PatternSet([(p, None) for p, _ in patterns])
        self._cache: dict[str, UserAgentClass] = {}

    def __len__(self) -> int:
        """Distinct user agents currently remembered."""
        return len(self._cache)

    def classify(self, user_agent: str) -> UserAgentClass:
        known = self._cache.get(user_agent)
        if known is None:
            known = self._classify(user_agent)
            if len(self._cache) >= self.max_cache:
                del self._cache[next(iter(self._cache))]  # the oldest: dicts keep insertion order
            self._cache[user_agent] = known
        return known

    def _classify(self, user_agent: str) -> UserAgentClass:
        text = user_agent.strip()
        if text.lower() in _BLANK:
            return UserAgentClass(EMPTY)
        found = self._scanners.search(text.lower())
        if found:
            return UserAgentClass(SCANNER, self._scanner_names[found[0]])
        matched = self._crawlers.search(text)
        for kind in (AUTOMATION, CRAWLER, BULK_CRAWLER, LIBRARY):
            for index in matched:
                if self._crawler_kinds[index] == kind:
                    return UserAgentClass(kind, self._crawlers.matched(index, text).strip(" /;"))
        if _BROWSER.match(text):
            return UserAgentClass(BROWSER, fetch_metadata=_sends_fetch_metadata(text))
        return UserAgentClass(OTHER)
