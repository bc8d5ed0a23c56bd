"""Bots: attack tools by their user agent, and bots dressed as browsers by their behaviour.

Three detectors share one `UserAgentClassifier`:

- `ScannerAgent` (`inspect`): a request whose user agent is an attack tool from the CRS scanners
  list (sqlmap, nikto, nuclei, masscan, ...) is strong evidence on its own.
- `BrowserMimicry` (`update` + `score`): a client that claims to be a browser but sends none of the
  headers a browser sends, at a machine's regular pace, crawling many paths. Each of these is weak
  alone (a polling dashboard tab is regular; a privacy proxy drops the referer); together they
  catch a stealth bot whose user agent is a perfect copy of Chrome's. An empty user agent and
  headless-browser agents add weak evidence here too.

- `CrawlerPace` (`update` + `score`): a self-declared SEO, AI or archive crawler (MJ12bot,
  AhrefsBot, Bytespider) crawling faster than a polite pace is throttled.

Declared crawlers a site wants (Googlebot, bingbot, link previews, uptime monitors) and HTTP
libraries (`python-requests`, `okhttp`, `curl`) are never flagged for their user agent: the first
announce themselves, the second are how most legitimate API consumers talk. Nor are
authenticated clients judged on behaviour here: a consumer's integration polls like a machine by
design, and the rate and anomaly detectors hold it to its own baseline.
"""

from __future__ import annotations

import math
import zlib

from detectors.base import Signal, SubjectContext
from detectors.sketch import distinct
from detectors.state import SubjectState
from detectors.useragents import (
    AUTOMATION,
    BROWSER,
    BULK_CRAWLER,
    EMPTY,
    SCANNER,
    UserAgentClassifier,
)
from pipeline.events import GatewayEvent

__all__ = ["BrowserMimicry", "CrawlerPace", "ScannerAgent"]

_PATH_BITS = 128
_PATH_SHIFT = 32 - 7
MAX_SOURCES = 64


def _anonymous(event: GatewayEvent) -> bool:
    """Whether no consumer or credential vouches for the request. An authenticated client is a
    customer's integration whatever user agent its code sets (Zapier, a script sending Chrome's):
    polling like a machine is its job, and its pace is judged against its own baseline by the
    rate and anomaly detectors, not here."""
    return event.consumer is None and event.credential is None


def _shown(user_agent: str, limit: int = 40) -> str:
    return user_agent if len(user_agent) <= limit else user_agent[: limit - 1] + "…"


class ScannerAgent:
    """Flags requests whose user agent is an attack tool and scores the subject's decayed count.

    One such request reaches `first_score` (a challenge by default) and two are a block: nobody
    sends `sqlmap/1.7` by accident, but one request deserves a chance to be a mis-set header.

    Parameters
    ----------
    first_score
        The subject's score after one request; each further request compounds it (noisy-OR).
    classifier
        Shared with `BrowserMimicry`, so a user agent is classified once per process.

    Examples
    --------
    >>> detector, state = ScannerAgent(), SubjectState()
    >>> e = GatewayEvent(ts_ms=1_000, gateway="kong", client_ip="198.51.100.7", method="GET",
    ...                  path="/search", route="/search", status=200, user_agent="sqlmap/1.7")
    >>> finding = detector.inspect(e)
    >>> finding.reason
    "scanner user agent 'sqlmap/1.7' (CRS scanners list)"
    >>> state.note(finding.detector, finding.score, 1.0, finding.kind, finding.reason)
    >>> detector.score(state, SubjectContext("ip:198.51.100.7", "ip", 1.0)).score
    0.75
    >>> state.note(finding.detector, finding.score, 2.0, finding.kind, finding.reason)
    >>> detector.score(state, SubjectContext("ip:198.51.100.7", "ip", 2.0)).score
    0.937
    """

    name = "bot_ua"

    def __init__(
        self, first_score: float = 0.75, classifier: UserAgentClassifier | None = None
    ) -> None:
        if not 0 < first_score < 1:
            raise ValueError("first_score must be in (0, 1)")
        self.first_score = first_score
        self.classifier = classifier if classifier is not None else UserAgentClassifier()
        self._rate = -math.log(1.0 - first_score)

    def inspect(self, event: GatewayEvent) -> Signal | None:
        found = self.classifier.classify(event.user_agent)
        if found.kind != SCANNER:
            return None
        reason = f"scanner user agent '{_shown(event.user_agent.strip())}' (CRS scanners list)"
        return Signal(self.name, "scanner", 1.0, reason)

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        evidence = state.evidence.get(self.name) if state.evidence else None
        if evidence is None:
            return None
        value = evidence.value(ctx.now)
        score = round(1.0 - math.exp(-self._rate * value), 3)
        if score < 0.05:
            return None
        requests = "1 request" if evidence.hits == 1 else f"{evidence.hits} requests"
        return Signal(self.name, evidence.kind, score, f"{evidence.reason} on {requests}")


class _Mimicry:
    """One subject's recent requests as a bot detector sees them; every field is a number.

    Counts are halved whenever `seen` reaches twice the window, so they describe roughly the last
    `window`..`2 * window` requests and stay small under any volume.
    """

    __slots__ = (
        "claims",
        "diversity",
        "empty",
        "gap_mean",
        "gap_var",
        "gaps",
        "headless",
        "last_t",
        "no_lang",
        "no_referer",
        "paths",
        "paths_n",
        "seen",
    )

    def __init__(self, t: float) -> None:
        self.seen = 0  # requests counted
        self.claims = 0  # ... with a browser user agent
        self.no_lang = 0  # ... of those, without accept-language
        self.no_referer = 0  # ... of those, without referer
        self.empty = 0  # requests with no user agent
        self.headless = 0  # requests from declared browser automation (HeadlessChrome, Selenium)
        self.last_t = t
        self.gaps = 0
        self.gap_mean = 0.0
        self.gap_var = 0.0
        self.paths = 0  # linear-counting sketch of distinct paths in the current window
        self.paths_n = 0
        self.diversity = -1.0  # distinct paths per request in the last full window; -1: none yet


class BrowserMimicry:
    """Scores clients that claim to be browsers but behave like scripts.

    Three sub-scores over the subject's last `window`..`2 * window` requests:

    - *headers*: share of browser-agent requests without `accept-language`, which every browser
      sends on every request (weak alone: 0.25 at most);
    - *timing*: regularity of the inter-arrival times, from their exponentially weighted
      coefficient of variation (`cv <= regular_cv` is a machine; `cv >= human_cv` is a person,
      whose think-time makes gaps vary by more than their mean);
    - *crawl*: distinct paths per request.

    They combine by noisy-OR with an interaction term, so that bare headers *and* a metronome
    reach a challenge while either alone stays below one, and crawling raises a suspect further:
    an SDK polling every 5 s is not a browser claim and is never judged; a dashboard tab polling
    every 30 s sends its headers and only scores the weak timing term (0.1).

    Parameters
    ----------
    window
        Requests the ratios and the timing statistics describe (EW weight `2 / (window + 1)`).
    min_requests
        Browser-agent requests (and gaps) needed before anything is said.
    regular_cv, human_cv
        Coefficient of variation of the gaps at which timing scores 1 and 0.
    session_gap_s
        A longer gap starts a new session and is not a sample of the client's pace.
    forget_after_s
        A longer silence forgets the subject's memory altogether.
    classifier
        Shared with `ScannerAgent`.

    Examples
    --------
    >>> detector, state = BrowserMimicry(), SubjectState()
    >>> chrome = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
    ...           "Gecko) Chrome/120.0.0.0 Safari/537.36")
    >>> ctx = SubjectContext("ip:203.0.113.50", "ip", 0.0)
    >>> for i in range(40):
    ...     e = GatewayEvent(ts_ms=1_000_000 + i * 1_000 + (i % 3) * 10, gateway="kong",
    ...                      client_ip="203.0.113.50", method="GET", path=f"/products/{i}",
    ...                      route="/products/{id}", status=200, user_agent=chrome)
    ...     detector.update(state, e, ctx)  # the processor calls it, then the shared counters:
    ...     state.observe(e, auth_route=False, baseline_after=5, fading_factor=0.05)
    >>> signal = detector.score(state, SubjectContext("ip:203.0.113.50", "ip", 1040.0))
    >>> signal.kind, signal.score >= 0.6
    ('stealth_bot', True)
    >>> for part in signal.reason.split(", "):
    ...     print(part)
    browser UA without accept-language on 39/39 requests (no referer on 39)
    inter-arrival 1.00 s ± 1%
    ~29 distinct paths in 32 requests
    """

    name = "bot_behaviour"
    # Only anonymous clients claim to be people: see `_anonymous`.
    kinds = ("ip",)
    needs = ("memo",)

    def __init__(
        self,
        window: int = 32,
        min_requests: int = 8,
        regular_cv: float = 0.1,
        human_cv: float = 0.6,
        session_gap_s: float = 120.0,
        forget_after_s: float = 1800.0,
        classifier: UserAgentClassifier | None = None,
    ) -> None:
        if window < 4:
            raise ValueError("window must be at least 4")
        if not 1 <= min_requests <= 2 * window:
            raise ValueError("need 1 <= min_requests <= 2 * window")
        if not 0 <= regular_cv < human_cv:
            raise ValueError("need 0 <= regular_cv < human_cv")
        if not 0 < session_gap_s <= forget_after_s:
            raise ValueError("need 0 < session_gap_s <= forget_after_s")
        self.window = window
        self.min_requests = min_requests
        self.regular_cv = regular_cv
        self.human_cv = human_cv
        self.session_gap_s = session_gap_s
        self.forget_after_s = forget_after_s
        self.classifier = classifier if classifier is not None else UserAgentClassifier()
        self._alpha = 2.0 / (window + 1)
        # The processor calls `update` once per subject of an event: classify each event once.
        self._last_event: GatewayEvent | None = None
        self._last_kind = ""
        self._headers_logged = True
        # gateway -> [browser requests, of which with accept-language]
        self._sources: dict[str, list[int]] = {}

    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        if event is not self._last_event:
            self._last_event = event
            self._last_kind = ""
            if _anonymous(event):
                self._last_kind = self.classifier.classify(event.user_agent).kind
                if self._last_kind == BROWSER and event.method != "OPTIONS":
                    self._headers_logged = self._source_logs_headers(event)
        kind = self._last_kind
        if not kind:
            return  # authenticated: not a claim to be a person (see `_anonymous`)
        t = event.ts_ms / 1000.0  # event time: a replay or a lagging batch is judged alike
        memo = state.memo.get(self.name) if state.memo is not None else None
        if isinstance(memo, _Mimicry) and t - memo.last_t > self.forget_after_s:
            # After a long silence whoever comes next (a new lease of the address) starts clean.
            del state.memo[self.name]  # type: ignore[union-attr]
            memo = None
        if memo is None:
            if kind not in (BROWSER, EMPTY, AUTOMATION):
                return  # SDKs, apps and crawlers are not judged here: no memory for them
            if state.w_requests == 0 and state.windows_seen == 0:
                # A subject's first request: one-shot addresses (a million-IP campaign spends one
                # or two requests each) never pay for this memory. (`update` runs before the
                # shared counters `observe` the event.)
                return
            if state.memo is None:
                state.memo = {}
            memo = state.memo[self.name] = _Mimicry(t)
        assert isinstance(memo, _Mimicry)
        self._count(memo, kind, event)
        self._time(memo, t)
        self._crawl(memo, event.path)

    def _source_logs_headers(self, event: GatewayEvent) -> bool:
        """Whether this gateway's logs carry accept-language at all: an Apigee template without
        it would make every browser look bare. Judged on its browser requests, once enough."""
        seen = self._sources.get(event.gateway)
        if seen is None:
            seen = [0, 0]
            if len(self._sources) < MAX_SOURCES:
                self._sources[event.gateway] = seen
        seen[0] += 1
        seen[1] += "accept-language" in event.headers
        if seen[0] >= 100_000:
            seen[0] //= 2
            seen[1] //= 2
        return seen[0] < 500 or seen[1] >= 0.02 * seen[0]

    def _count(self, m: _Mimicry, kind: str, event: GatewayEvent) -> None:
        if m.seen >= 2 * self.window:
            m.seen //= 2
            m.claims //= 2
            m.no_lang //= 2
            m.no_referer //= 2
            m.empty //= 2
            m.headless //= 2
        m.seen += 1
        if kind == BROWSER:
            m.claims += 1
            # A CORS preflight is the browser's own request, sent without the page's headers.
            if self._headers_logged and event.method != "OPTIONS":
                headers = event.headers
                m.no_lang += "accept-language" not in headers
                m.no_referer += "referer" not in headers
        elif kind == EMPTY:
            m.empty += 1
        elif kind == AUTOMATION:
            m.headless += 1

    def _time(self, m: _Mimicry, t: float) -> None:
        gap = t - m.last_t
        if gap < 0:
            return  # out of order (several gateway nodes): not a sample, and keep the latest time
        m.last_t = t
        if m.seen == 1 or gap > self.session_gap_s:
            return
        if m.gaps == 0:
            m.gap_mean, m.gap_var = gap, 0.0
        else:
            # Exponentially weighted mean and variance (West 1979), a few floats per subject.
            diff = gap - m.gap_mean
            incr = self._alpha * diff
            m.gap_mean += incr
            m.gap_var = (1.0 - self._alpha) * (m.gap_var + diff * incr)
        m.gaps = min(m.gaps + 1, 1 << 16)

    def _crawl(self, m: _Mimicry, path: str) -> None:
        # crc32, not hash(): string hashes change per process and replays must be reproducible;
        # CRC is linear, so neighbouring ids (/p/1, /p/2) are spread by a multiplicative hash.
        m.paths |= 1 << (((zlib.crc32(path.encode()) * 0x9E3779B1) & 0xFFFFFFFF) >> _PATH_SHIFT)
        m.paths_n += 1
        if m.paths_n >= self.window:
            m.diversity = min(1.0, distinct(m.paths, _PATH_BITS) / m.paths_n)
            m.paths = m.paths_n = 0

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        memo = state.memo.get(self.name) if state.memo is not None else None
        if not isinstance(memo, _Mimicry):
            return None
        m = memo
        parts: list[str] = []
        keep = 1.0
        timing = 0.0
        cv = -1.0
        if m.gaps >= self.min_requests and m.gap_mean > 0:
            # The EW variance starts at 0 and under-reads for its first ~window samples: a few
            # Poisson gaps would look twice as regular as they are. Correct it (as Adam does).
            seen = 1.0 - (1.0 - self._alpha) ** (m.gaps - 1)
            cv = math.sqrt(max(0.0, m.gap_var) / seen) / m.gap_mean
            timing = min(1.0, max(0.0, (self.human_cv - cv) / (self.human_cv - self.regular_cv)))
        headers = 0.0
        browser = m.claims >= self.min_requests and 2 * m.claims >= m.seen
        if browser:
            headers = m.no_lang / m.claims
            crawl = max(0.0, min(1.0, (m.diversity - 0.3) / 0.5)) if m.diversity >= 0 else 0.0
            keep *= 1.0 - 0.25 * headers
            keep *= 1.0 - 0.1 * timing
            keep *= 1.0 - 0.55 * headers * timing
            keep *= 1.0 - 0.3 * crawl * max(headers, timing)
            if m.no_lang:
                lacks = f"browser UA without accept-language on {m.no_lang}/{m.claims} requests"
                if m.no_referer:
                    lacks += f" (no referer on {m.no_referer})"
                parts.append(lacks)
            if timing > 0:
                parts.append(f"inter-arrival {m.gap_mean:.2f} s ± {cv:.0%}")
            if crawl > 0 and parts:
                n = self.window
                parts.append(f"~{round(m.diversity * n)} distinct paths in {n} requests")
        if m.seen >= self.min_requests:
            if m.empty:
                keep *= 1.0 - 0.2 * m.empty / m.seen
                parts.append(f"no user agent on {m.empty}/{m.seen} requests")
            if m.headless:
                keep *= 1.0 - 0.35 * m.headless / m.seen
                parts.append(f"headless-browser user agent on {m.headless}/{m.seen} requests")
        score = round(1.0 - keep, 3)
        if score < 0.05 or not parts:
            return None
        kind = "stealth_bot" if browser and headers * timing > 0 else "bot"
        return Signal(self.name, kind, score, ", ".join(parts))


class _Pace:
    __slots__ = ("gap_mean", "gaps", "last_t", "name")

    def __init__(self, t: float, name: str) -> None:
        self.last_t = t
        self.gaps = 0
        self.gap_mean = 0.0
        self.name = name


class CrawlerPace:
    """Throttles self-declared crawlers that work for someone else and crawl too fast.

    SEO, AI-training, archive and ad-verification crawlers (`crawler-user-agents` tags other than
    search-engine, social-preview, feed-reader and monitoring) announce themselves honestly; what
    makes one a problem is its pace. Above `max_rate` requests per second, sustained over
    `min_requests`, it is challenged (a 429 with Retry-After is the polite answer), and blocked
    at three times the rate. Search engines and link previews are never judged here.

    Parameters
    ----------
    max_rate
        Requests per second a crawler may keep up (one a second is the usual crawl-delay).
    window
        Requests the exponentially weighted mean gap describes.
    min_requests
        Gaps needed before anything is said.
    session_gap_s
        A longer gap is a pause between crawls, not a sample of the pace.
    classifier
        Shared with the other bot detectors.

    Examples
    --------
    >>> detector, state = CrawlerPace(), SubjectState()
    >>> ua = "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)"
    >>> ctx = SubjectContext("ip:203.0.113.80", "ip", 0.0)
    >>> for i in range(40):
    ...     e = GatewayEvent(ts_ms=i * 250, gateway="kong", client_ip="203.0.113.80",
    ...                      method="GET", path=f"/products/{i}", route="/products/{id}",
    ...                      status=200, user_agent=ua)
    ...     detector.update(state, e, ctx)
    >>> signal = detector.score(state, SubjectContext("ip:203.0.113.80", "ip", 10.0))
    >>> signal.score, signal.reason
    (0.9, "declared crawler 'MJ12bot' at 4.0 requests/s (polite pace 1/s)")
    """

    name = "crawler_pace"
    kinds = ("ip",)
    needs = ("memo",)

    def __init__(
        self,
        max_rate: float = 1.0,
        window: int = 32,
        min_requests: int = 20,
        session_gap_s: float = 120.0,
        classifier: UserAgentClassifier | None = None,
    ) -> None:
        if max_rate <= 0 or session_gap_s <= 0:
            raise ValueError("max_rate and session_gap_s must be positive")
        if not 1 <= min_requests or window < 2:
            raise ValueError("need min_requests >= 1 and window >= 2")
        self.max_rate = max_rate
        self.window = window
        self.min_requests = min_requests
        self.session_gap_s = session_gap_s
        self.classifier = classifier if classifier is not None else UserAgentClassifier()
        self._alpha = 2.0 / (window + 1)

    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        if not _anonymous(event):
            return
        found = self.classifier.classify(event.user_agent)
        if found.kind != BULK_CRAWLER:
            # No memory for other clients, and those behind a crawler's address do not speed it up.
            return
        memo = state.memo.get(self.name) if state.memo is not None else None
        t = event.ts_ms / 1000.0
        if not isinstance(memo, _Pace):
            if state.memo is None:
                state.memo = {}
            state.memo[self.name] = _Pace(t, found.name)
            return
        gap = t - memo.last_t
        if gap < 0:
            return
        memo.last_t = t
        if gap > self.session_gap_s:
            return
        memo.gap_mean = (
            gap if memo.gaps == 0 else memo.gap_mean + self._alpha * (gap - memo.gap_mean)
        )
        memo.gaps = min(memo.gaps + 1, 1 << 16)
        memo.name = found.name

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        memo = state.memo.get(self.name) if state.memo is not None else None
        if not isinstance(memo, _Pace) or memo.gaps < self.min_requests:
            return None
        rate = 1.0 / memo.gap_mean if memo.gap_mean > 0 else float("inf")
        if rate <= self.max_rate:
            return None
        over = min(1.0, (rate / self.max_rate - 1.0) / 2.0)
        score = round(0.6 + 0.3 * over, 3)
        reason = (
            f"declared crawler '{memo.name}' at {rate:.1f} requests/s "
            f"(polite pace {self.max_rate:g}/s)"
        )
        return Signal(self.name, "aggressive_crawler", score, reason)
