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
# Spreads of a clock's log-gaps the timing test mixes, from the tightest to the loosest.
_CLOCKS = 8


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
    version = "1"

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
        return Signal(
            self.name, evidence.kind, score, f"{evidence.reason} on {requests}",
            "scanner_requests", float(evidence.hits),
        )  # fmt: skip


class _Mimicry:
    """One subject's recent requests as a bot detector sees them; every field is a number.

    Counts, and the gap sample, are halved whenever they reach twice the window, so they describe
    roughly the last `window`..`2 * window` requests and stay small under any volume.
    """

    __slots__ = (
        "claims",
        "diversity",
        "empty",
        "forged",
        "headless",
        "last_t",
        "lg_m2",
        "lg_mean",
        "lg_n",
        "no_fetch",
        "no_lang",
        "no_referer",
        "paths",
        "paths_n",
        "seen",
    )

    def __init__(self, last_t: float) -> None:
        self.seen = 0  # requests counted
        self.claims = 0  # ... with a browser user agent
        self.forged = 0  # ... of those, without a header the claimed browser always sends:
        self.no_lang = 0  # ... accept-language (every browser)
        self.no_fetch = 0  # ... Sec-Fetch-* (the versions that send it)
        self.no_referer = 0  # ... of those, without referer
        self.empty = 0  # requests with no user agent
        self.headless = 0  # requests from declared browser automation (HeadlessChrome, Selenium)
        self.last_t = last_t
        # Gaps between requests, as logs: a clock's jitter is a share of its period, a person's
        # gaps spread over orders of magnitude. Count, mean and sum of squared deviations.
        self.lg_n = 0.0
        self.lg_mean = 0.0
        self.lg_m2 = 0.0
        self.paths = 0  # linear-counting sketch of distinct paths in the current window
        self.paths_n = 0
        self.diversity = -1.0  # distinct paths per request in the last full window; -1: none yet


class BrowserMimicry:
    """Scores clients that claim to be browsers but behave like scripts.

    Weak signals over the subject's last `window`..`2 * window` requests, fused:

    - *headers*: share of browser-agent requests missing a header the claimed browser always
      sends: `accept-language` (every browser), `Sec-Fetch-*` (Chrome 80+, Firefox 92+, Safari
      16.4+, judged once the gateway's logs are seen to carry it). A script that copies Chrome's
      user agent rarely copies the rest. Weak alone (0.25 at most): a privacy proxy strips some;
    - *timing*: a sequential test of the gaps between requests, whose logs spread tightly
      around the period for a clock (a `sleep` loop, `machine_spread` at most) and by
      `human_spread` or more for people (think time, bursts of a page's calls). The likelihood
      ratio of the two (`regularity`) reaches `odds` (1000:1 by default) after 4 gaps of a clock
      within a few percent, after ~9 of a loop jittered by ±25%, and for people only by a
      1-in-`odds` chance;
    - *referer*: browser requests that never carry one, as no page of the site led to them
      (weak, and only next to machine timing);
    - *crawl*: distinct paths per request (from a full window).

    They combine by noisy-OR with interaction terms, so that forged headers *and* a clock reach a
    challenge while either alone stays below one, and crawling raises a suspect further: an SDK
    polling every 5 s is not a browser claim and is never judged; a dashboard tab polling every
    30 s sends its headers and only scores the weak timing term (0.1).

    Parameters
    ----------
    window
        Requests the ratios and the gap sample describe.
    min_requests
        Browser-agent requests (and gaps) needed before anything is said.
    regular_spread, machine_spread, human_spread
        Standard deviation of log-gaps: the tightest and loosest clock, and the least a person's
        gaps spread (a clock jittered by ±x% spreads by about x/170).
    odds
        Likelihood ratio of a clock over a person at which timing scores 1.
    min_gap_s
        Shorter gaps (one page's parallel calls, or two clients) count as this long; a client
        whose gaps average less than twice this is bursting, and its timing is not judged.
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
    >>> def request(i, t_ms, headers):
    ...     e = GatewayEvent(ts_ms=t_ms, gateway="kong", client_ip=f"203.0.113.{i // 100}",
    ...                      method="GET", path=f"/products/{i}", route="/products/{id}",
    ...                      status=200, user_agent=chrome, headers=headers)
    ...     ctx = SubjectContext(f"ip:{e.client_ip}", "ip", t_ms / 1000)
    ...     detector.update(state, e, ctx)  # the processor calls it, then the shared counters:
    ...     state.observe(e, auth_route=False, baseline_after=5, fading_factor=0.05)
    >>> for i in range(100):  # people in browsers: the gateway's logs carry Sec-Fetch-Mode
    ...     state = SubjectState()
    ...     request(i, 1_000_000 + i, {"accept-language": "en", "sec-fetch-mode": "cors"})
    >>> state = SubjectState()
    >>> for i in range(200, 206):  # a script with Chrome's user agent, every second to ±1%
    ...     request(i, 1_000_000 + (i - 200) * 1_000 + (i % 3) * 10, {})
    >>> signal = detector.score(state, SubjectContext("ip:203.0.113.2", "ip", 1005.0))
    >>> signal.kind, signal.score >= 0.6
    ('stealth_bot', True)
    >>> for part in signal.reason.split(", "):
    ...     print(part)
    browser UA without accept-language or Sec-Fetch-* on 5/5 requests (no referer on 5)
    inter-arrival 1.00 s ± 2% over 5 gaps
    """

    name = "bot_behaviour"
    version = "1"
    # Only anonymous clients claim to be people: see `_anonymous`.
    kinds = ("ip",)
    needs = ("memo",)

    def __init__(
        self,
        window: int = 32,
        min_requests: int = 4,
        regular_spread: float = 0.03,
        machine_spread: float = 0.2,
        human_spread: float = 0.6,
        odds: float = 1000.0,
        min_gap_s: float = 0.2,
        session_gap_s: float = 120.0,
        forget_after_s: float = 1800.0,
        classifier: UserAgentClassifier | None = None,
    ) -> None:
        if window < 4:
            raise ValueError("window must be at least 4")
        if not 2 <= min_requests <= 2 * window:
            raise ValueError("need 2 <= min_requests <= 2 * window")
        if not 0 < regular_spread <= machine_spread < human_spread:
            raise ValueError("need 0 < regular_spread <= machine_spread < human_spread")
        if odds <= 1:
            raise ValueError("odds must be above 1")
        if not 0 < min_gap_s < session_gap_s <= forget_after_s:
            raise ValueError("need 0 < min_gap_s < session_gap_s <= forget_after_s")
        self.window = window
        self.min_requests = min_requests
        self.regular_spread = regular_spread
        self.machine_spread = machine_spread
        self.human_spread = human_spread
        self.odds = odds
        self.min_gap_s = min_gap_s
        self.session_gap_s = session_gap_s
        self.forget_after_s = forget_after_s
        self.classifier = classifier if classifier is not None else UserAgentClassifier()
        self._log_odds = math.log(odds)
        self._paced = math.log(2.0 * min_gap_s)
        person = human_spread**2
        ratio = machine_spread / regular_spread
        clocks = [(regular_spread * ratio ** (i / (_CLOCKS - 1))) ** 2 for i in range(_CLOCKS)]
        self._clocks = [(math.log(person / c), 1.0 / c - 1.0 / person) for c in clocks]
        # The processor calls `update` once per subject of an event: classify each event once.
        self._last_event: GatewayEvent | None = None
        self._last_kind = ""
        self._fetch_expected = False
        self._lang_logged = True
        self._fetch_logged = False
        # gateway -> [browser requests, with accept-language, of versions sending Sec-Fetch-*,
        # of those with it]
        self._sources: dict[str, list[int]] = {}

    def update(self, state: SubjectState, event: GatewayEvent, ctx: SubjectContext) -> None:
        if event is not self._last_event:
            self._last_event = event
            self._last_kind = ""
            if _anonymous(event):
                found = self.classifier.classify(event.user_agent)
                self._last_kind = found.kind
                self._fetch_expected = found.fetch_metadata
                if found.kind == BROWSER and event.method != "OPTIONS":
                    self._source_logs_headers(event)
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
            # The shared counters kept the first request's time: its gap is not lost.
            memo = state.memo[self.name] = _Mimicry(state.sustained_ts)
        assert isinstance(memo, _Mimicry)
        self._count(memo, kind, event)
        self._time(memo, t)
        self._crawl(memo, event.path)

    def _source_logs_headers(self, event: GatewayEvent) -> None:
        """Whether this gateway's logs carry accept-language and Sec-Fetch-Mode at all: an Apigee
        template without them would make every browser look bare. Accept-language is assumed
        logged until enough browsers say otherwise; fetch metadata only once some carry it."""
        seen = self._sources.get(event.gateway)
        if seen is None:
            seen = [0, 0, 0, 0]
            if len(self._sources) < MAX_SOURCES:
                self._sources[event.gateway] = seen
        headers = event.headers
        seen[0] += 1
        seen[1] += "accept-language" in headers
        if self._fetch_expected:
            seen[2] += 1
            seen[3] += "sec-fetch-mode" in headers
        if seen[0] >= 100_000:
            for i in range(4):
                seen[i] //= 2
        self._lang_logged = seen[0] < 500 or seen[1] >= 0.02 * seen[0]
        self._fetch_logged = seen[2] >= 50 and seen[3] >= 0.5 * seen[2]

    def _count(self, m: _Mimicry, kind: str, event: GatewayEvent) -> None:
        if m.seen >= 2 * self.window:
            m.seen //= 2
            m.claims //= 2
            m.forged //= 2
            m.no_lang //= 2
            m.no_fetch //= 2
            m.no_referer //= 2
            m.empty //= 2
            m.headless //= 2
        m.seen += 1
        if kind == BROWSER:
            m.claims += 1
            # A CORS preflight is the browser's own request, sent without the page's headers.
            if self._lang_logged and event.method != "OPTIONS":
                headers = event.headers
                no_lang = "accept-language" not in headers
                no_fetch = (
                    self._fetch_logged and self._fetch_expected and "sec-fetch-mode" not in headers
                )
                m.no_lang += no_lang
                m.no_fetch += no_fetch
                m.forged += no_lang or no_fetch
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
        if gap > self.session_gap_s:
            return
        if m.lg_n >= 2 * self.window:
            m.lg_n /= 2
            m.lg_m2 /= 2
        # One page's parallel calls come in the same few milliseconds, whose logs would spread
        # without end: a clock never does that, and flooring keeps it one large deviation.
        x = math.log(max(gap, self.min_gap_s))
        m.lg_n += 1
        diff = x - m.lg_mean
        m.lg_mean += diff / m.lg_n
        m.lg_m2 += diff * (x - m.lg_mean)

    def _crawl(self, m: _Mimicry, path: str) -> None:
        # crc32, not hash(): string hashes change per process and replays must be reproducible;
        # CRC is linear, so neighbouring ids (/p/1, /p/2) are spread by a multiplicative hash.
        m.paths |= 1 << (((zlib.crc32(path.encode()) * 0x9E3779B1) & 0xFFFFFFFF) >> _PATH_SHIFT)
        m.paths_n += 1
        if m.paths_n >= self.window:
            m.diversity = min(1.0, distinct(m.paths, _PATH_BITS) / m.paths_n)
            m.paths = m.paths_n = 0

    def regularity(self, m: _Mimicry) -> float:
        """Log-likelihood ratio of the gaps under a clock over a person, both log-normal, from
        the log-gaps' sum of squared deviations (a sum of independent terms, Helmert): the
        person's spread at its least, the clock's mixed over `_CLOCKS` spreads from the tightest
        to the loosest. A mixture, not the best-fitting clock, so that the ratio can be watched
        after every request: for log-normal gaps spread `human_spread` or more it reaches `odds`
        with chance `1 / odds` at most, however long it is watched (Ville's inequality; the
        halving of old samples and the floor on short gaps bend this a little)."""
        dof = m.lg_n - 1.0
        if dof < 1.0:
            return 0.0
        best = -math.inf
        terms = []
        for log_ratio, precision in self._clocks:
            term = 0.5 * dof * log_ratio - 0.5 * m.lg_m2 * precision
            terms.append(term)
            best = max(best, term)
        return best + math.log(sum(math.exp(x - best) for x in terms) / len(terms))

    def score(self, state: SubjectState, ctx: SubjectContext) -> Signal | None:
        memo = state.memo.get(self.name) if state.memo is not None else None
        if not isinstance(memo, _Mimicry):
            return None
        m = memo
        parts: list[str] = []
        keep = 1.0
        timing = 0.0
        # A "clock" at the floor is a burst of parallel calls, not a pace.
        if m.lg_n >= self.min_requests and m.lg_mean >= self._paced:
            timing = min(1.0, max(0.0, self.regularity(m) / self._log_odds))
        headers = 0.0
        browser = m.claims >= self.min_requests and 2 * m.claims >= m.seen
        if browser:
            headers = m.forged / m.claims
            referer = m.no_referer / m.claims
            crawl = max(0.0, min(1.0, (m.diversity - 0.3) / 0.5)) if m.diversity >= 0 else 0.0
            keep *= 1.0 - 0.25 * headers
            keep *= 1.0 - 0.1 * timing
            keep *= 1.0 - 0.55 * headers * timing
            # Scripts send neither a referer nor the headers: count the referer only once the
            # headers are a browser's (a headless browser driven straight at the API).
            keep *= 1.0 - 0.15 * referer * timing * (1.0 - headers)
            keep *= 1.0 - 0.3 * crawl * max(headers, timing)
            if m.forged:
                lacks = " or ".join(
                    name
                    for name, n in (("accept-language", m.no_lang), ("Sec-Fetch-*", m.no_fetch))
                    if n
                )
                lacks = f"browser UA without {lacks} on {m.forged}/{m.claims} requests"
                if m.no_referer:
                    lacks += f" (no referer on {m.no_referer})"
                parts.append(lacks)
            if timing > 0:
                spread = math.sqrt(m.lg_m2 / (m.lg_n - 1.0))
                parts.append(
                    f"inter-arrival {math.exp(m.lg_mean):.2f} s ± {spread:.0%} over "
                    f"{round(m.lg_n)} gaps"
                )
                if referer > 0 and not m.forged:
                    parts.append(f"no referer on {m.no_referer}/{m.claims} requests")
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
    version = "1"
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
        return Signal(
            self.name, "aggressive_crawler", score, reason, "requests_per_s", round(rate, 3),
            None, self.max_rate,
        )  # fmt: skip
