"""Bot detectors: attack-tool user agents, and browsers that behave like scripts."""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Sequence

import pytest

from detectors.base import Detector, Signal, SubjectContext
from detectors.bots import BrowserMimicry, CrawlerPace, ScannerAgent
from detectors.patterns import PatternSet, required_literal
from detectors.state import SubjectState
from detectors.useragents import (
    AUTOMATION,
    BROWSER,
    BULK_CRAWLER,
    CRAWLER,
    EMPTY,
    LIBRARY,
    OTHER,
    SCANNER,
    UserAgentClassifier,
    load_crawler_patterns,
    load_scanner_names,
)
from pipeline.events import GatewayEvent
from tests.unit.conftest import T0_MS, make_event

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.0.0 Safari/537.36"
)
SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"
BROWSER_HEADERS = {"accept-language": "en-US,en;q=0.9", "referer": "https://shop.example/"}
SCANNER_UAS = (
    "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36 Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
    "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "Fuzz Faster U Fool v2.1.0-dev",
    "WPScan v3.8.25 (https://wpscan.com/wordpress-security-scanner)",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "gobuster/3.6",
)
CRAWLER_UAS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/129.0.6668.70 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
)
LIBRARY_UAS = (
    "python-requests/2.31.0",
    "Go-http-client/2.0",
    "okhttp/4.12.0",
    "axios/1.6.7",
    "curl/8.5.0",
)


@pytest.fixture(scope="module")
def classifier() -> UserAgentClassifier:
    return UserAgentClassifier()


def feed(
    detectors: Sequence[Detector], state: SubjectState, events: list[GatewayEvent], subject: str
) -> None:
    """What the processor does per event and subject: update, observe, note inspect findings."""
    kind = subject.partition(":")[0]
    for event in events:
        t = event.ts_ms / 1000.0
        for detector in detectors:
            if detector.declares.updates:
                detector.update(state, event, SubjectContext(subject, kind, t))
        state.observe(event, auth_route=False, baseline_after=5, fading_factor=0.05)
        for detector in detectors:
            finding = detector.inspect(event) if detector.declares.inspects else None
            if finding is not None:
                state.note(finding.detector, finding.score, t, finding.kind, finding.reason)


def judge(detector: Detector, state: SubjectState, subject: str, now: float) -> Signal | None:
    return detector.score(state, SubjectContext(subject, subject.partition(":")[0], now))


def browsing(
    n: int,
    gaps: list[float],
    *,
    ua: str = CHROME,
    headers: dict[str, str] | None = None,
    ip: str = "203.0.113.50",
    paths: list[str] | None = None,
    consumer: str | None = None,
) -> list[GatewayEvent]:
    events, t_ms = [], T0_MS
    for i in range(n):
        t_ms += round(gaps[i % len(gaps)] * 1000)
        path = paths[i % len(paths)] if paths else f"/v1/products/{1000 + i}"
        events.append(
            make_event(
                ts_ms=t_ms,
                client_ip=ip,
                consumer=consumer,
                path=path,
                route=re.sub(r"/\d+", "/{id}", path),
                user_agent=ua,
                headers=dict(headers or {}),
            )
        )
    return events


# --- user-agent classes ----------------------------------------------------------------------


def test_every_crs_scanner_phrase_is_a_scanner(classifier: UserAgentClassifier) -> None:
    names = load_scanner_names()
    assert len(names) > 60
    for name in names:
        for ua in (f"{name}/1.0", f"Mozilla/5.0 (compatible; {name.upper()})"):
            assert classifier.classify(ua).kind == SCANNER, ua


@pytest.mark.parametrize("ua", SCANNER_UAS)
def test_attack_tools_are_scanners(classifier: UserAgentClassifier, ua: str) -> None:
    assert classifier.classify(ua).kind == SCANNER


@pytest.mark.parametrize(
    ("ua", "kind"),
    [
        *((ua, CRAWLER) for ua in CRAWLER_UAS),
        ("Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)", BULK_CRAWLER),
        ("Mozilla/5.0 (compatible; GPTBot/1.0; +https://openai.com/gptbot)", BULK_CRAWLER),
        ("facebookexternalhit/1.1", CRAWLER),
        *((ua, LIBRARY) for ua in LIBRARY_UAS),
        (CHROME, BROWSER),
        (SAFARI_IOS, BROWSER),
        (FIREFOX, BROWSER),
        ("", EMPTY),
        ("-", EMPTY),
        ("MyShop/5.2 (iPhone; iOS 17.4)", OTHER),
        ("acme-sdk-java/3.4.1", OTHER),
        # Scanner names are words: not "vega" inside "LasVegas", not "nmap" inside "Unmapped".
        ("LasVegasGuide/2.3 (Android 14)", OTHER),
        ("UnmappedClient/1.0", OTHER),
        (CHROME.replace("Chrome/", "HeadlessChrome/"), AUTOMATION),
    ],
)
def test_benign_and_declared_user_agents(
    classifier: UserAgentClassifier, ua: str, kind: str
) -> None:
    assert classifier.classify(ua).kind == kind


def test_every_crawler_list_instance_is_recognised(classifier: UserAgentClassifier) -> None:
    from crawleruseragents import CRAWLER_USER_AGENTS_DATA

    missed = [
        ua
        for entry in CRAWLER_USER_AGENTS_DATA
        for ua in entry["instances"]
        if classifier.classify(ua).kind in (BROWSER, OTHER, EMPTY)
    ]
    assert missed == []


def test_pattern_set_finds_what_a_plain_search_finds() -> None:
    patterns = [p for p, _ in load_crawler_patterns()]
    regexes = [re.compile(p) for p in patterns]
    indexed = PatternSet([(p, None) for p in patterns])
    from crawleruseragents import CRAWLER_USER_AGENTS_DATA

    instances = [ua for e in CRAWLER_USER_AGENTS_DATA for ua in e["instances"]]
    texts = [*random.Random(3).sample(instances, 150), CHROME, SAFARI_IOS, FIREFOX, *LIBRARY_UAS]
    for text in texts:
        assert indexed.search(text) == [i for i, r in enumerate(regexes) if r.search(text)], text


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        (r"Googlebot\/", "Googlebot/"),
        (r"^Apache-HttpClient", "Apache-HttpClient"),
        (r"S[eE][mM]rushBot", "rushBot"),
        (r"BlogTraffic\/\d\.\d+ Feed-Fetcher", " Feed-Fetcher"),
        (r"ab+cde", "bcde"),
        (r"colou?rfully", "rfully"),
        (r"Automaton|Newsify", None),
        (r"[a-z]+", None),
    ],
)
def test_required_literal(pattern: str, literal: str | None) -> None:
    assert required_literal(pattern) == literal
    if literal is not None:
        # What it returns must really be in every match.
        for sample in ("Googlebot/2.1", "Apache-HttpClient/4", "SemrushBot", "abbbcde"):
            m = re.search(pattern, sample)
            assert m is None or literal in m.group(0)


def test_user_agent_cache_is_bounded() -> None:
    small = UserAgentClassifier(max_cache=100)
    for i in range(5_000):
        assert small.classify(f"{CHROME} rnd/{i}").kind == BROWSER
    assert len(small) == 100
    # The most recent ones are still remembered.
    assert f"{CHROME} rnd/4999" in small._cache


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        UserAgentClassifier(max_cache=0)
    with pytest.raises(ValueError):
        UserAgentClassifier(scanners=["ab"], crawlers=[])
    with pytest.raises(ValueError):
        ScannerAgent(first_score=1.0)
    with pytest.raises(ValueError):
        BrowserMimicry(window=2)
    with pytest.raises(ValueError):
        BrowserMimicry(regular_spread=0.5, human_spread=0.2)
    with pytest.raises(ValueError):
        BrowserMimicry(odds=1.0)
    with pytest.raises(ValueError):
        BrowserMimicry(min_requests=1)
    with pytest.raises(ValueError):
        BrowserMimicry(session_gap_s=600.0, forget_after_s=60.0)


# --- ScannerAgent ------------------------------------------------------------------------------


def test_one_scanner_request_challenges_two_block(classifier: UserAgentClassifier) -> None:
    detector, state = ScannerAgent(classifier=classifier), SubjectState()
    event = make_event(user_agent="sqlmap/1.7", client_ip="198.51.100.7")
    finding = detector.inspect(event)
    assert finding is not None
    assert finding.reason == "scanner user agent 'sqlmap/1.7' (CRS scanners list)"
    feed([detector], state, [event], "ip:198.51.100.7")
    first = judge(detector, state, "ip:198.51.100.7", T0_MS / 1000)
    assert first is not None and 0.6 <= first.score < 0.85
    feed([detector], state, [make_event(ts_ms=T0_MS + 400, user_agent="sqlmap/1.7")], "ip:x")
    second = judge(detector, state, "ip:198.51.100.7", T0_MS / 1000 + 0.4)
    assert second is not None and second.score >= 0.85
    assert second.reason.endswith("on 2 requests")


def test_scanner_evidence_fades(classifier: UserAgentClassifier) -> None:
    detector, state = ScannerAgent(classifier=classifier), SubjectState()
    feed([detector], state, [make_event(user_agent="nikto/2.5")], "ip:x")
    later = judge(detector, state, "ip:x", T0_MS / 1000 + 3600)
    assert later is None


@pytest.mark.parametrize("ua", [*CRAWLER_UAS, *LIBRARY_UAS, CHROME, "", "okhttp/4.9.3"])
def test_crawlers_libraries_and_browsers_are_not_flagged_by_ua(
    classifier: UserAgentClassifier, ua: str
) -> None:
    assert ScannerAgent(classifier=classifier).inspect(make_event(user_agent=ua)) is None


def test_long_user_agent_is_shortened_in_the_reason(classifier: UserAgentClassifier) -> None:
    finding = ScannerAgent(classifier=classifier).inspect(make_event(user_agent=SCANNER_UAS[2]))
    assert finding is not None
    shown = finding.reason.split("'")[1]
    assert len(shown) == 40 and shown.endswith("…")


# --- BrowserMimicry ---------------------------------------------------------------------------


def test_stealth_bot_is_caught_by_behaviour(classifier: UserAgentClassifier) -> None:
    """Perfect Chrome UA, no accept-language/referer, every 1.00 s ± 2%, walking the catalogue."""
    rng = random.Random(5)
    gaps = [1.0 + rng.uniform(-0.02, 0.02) for _ in range(60)]
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    events = browsing(60, gaps)
    feed([detector], state, events, "ip:203.0.113.50")
    signal = judge(detector, state, "ip:203.0.113.50", events[-1].ts_ms / 1000)
    assert signal is not None
    assert signal.kind == "stealth_bot" and signal.score >= 0.6
    assert "without accept-language on" in signal.reason
    assert "inter-arrival 1.00 s" in signal.reason


def test_stealth_bot_with_jitter_is_still_challenged(classifier: UserAgentClassifier) -> None:
    rng = random.Random(8)
    gaps = [rng.uniform(1.5, 2.5) for _ in range(80)]  # cv ~0.14: a sleep(random) loop
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    events = browsing(80, gaps)
    feed([detector], state, events, "ip:x")
    signal = judge(detector, state, "ip:x", events[-1].ts_ms / 1000)
    assert signal is not None and signal.score >= 0.6


def first_challenge(detector: BrowserMimicry, events: list[GatewayEvent]) -> int | None:
    """How many requests it takes (judged after each, as a worker's batches do) to a challenge."""
    state = SubjectState()
    subject = f"ip:{events[0].client_ip}"
    for n, event in enumerate(events, 1):
        feed([detector], state, [event], subject)
        signal = judge(detector, state, subject, event.ts_ms / 1000)
        if signal is not None and signal.score >= 0.6:
            return n
    return None


def people_on(detector: BrowserMimicry, gateway: str, headers: dict[str, str]) -> None:
    """Ordinary visitors of a gateway, from which the detector learns what its logs carry."""
    for i in range(60):
        events = browsing(3, [5.0], headers=headers, ip=f"198.18.0.{i}")
        for e in events:
            e.gateway = gateway
        feed([detector], SubjectState(), events, f"ip:198.18.0.{i}")


FETCHING = {**BROWSER_HEADERS, "sec-fetch-mode": "cors"}


def test_a_clock_without_browser_headers_is_challenged_after_four_gaps(
    classifier: UserAgentClassifier,
) -> None:
    """The sequential test concludes on 4 gaps of a clock within 2% (the first request's gap
    counts), not on 3; a 3 s period is challenged 12 s in."""
    rng = random.Random(3)
    for period in (0.5, 1.0, 3.0):
        gaps = [period * (1 + rng.uniform(-0.02, 0.02)) for _ in range(20)]
        assert first_challenge(BrowserMimicry(classifier=classifier), browsing(20, gaps)) == 5


def test_a_script_copying_accept_language_is_caught_by_missing_fetch_metadata(
    classifier: UserAgentClassifier,
) -> None:
    detector = BrowserMimicry(classifier=classifier)
    people_on(detector, "kong", FETCHING)
    bot = browsing(30, [1.5], headers=BROWSER_HEADERS)  # accept-language and referer, copied
    state = SubjectState()
    feed([detector], state, bot, "ip:x")
    signal = judge(detector, state, "ip:x", bot[-1].ts_ms / 1000)
    assert signal is not None and signal.score >= 0.6 and signal.kind == "stealth_bot"
    # The first request is counted for timing only: memory is spent from the second on.
    assert signal.reason.startswith("browser UA without Sec-Fetch-* on 29/29 requests")
    # The same client on a gateway whose logs never carry Sec-Fetch-Mode proves nothing.
    people_on(detector, "apigee", BROWSER_HEADERS)
    for e in bot:
        e.gateway = "apigee"
    state = SubjectState()
    feed([detector], state, bot, "ip:x")
    signal = judge(detector, state, "ip:x", bot[-1].ts_ms / 1000)
    assert signal is None or signal.score < 0.3


def test_browsers_too_old_for_fetch_metadata_are_not_held_to_it(
    classifier: UserAgentClassifier,
) -> None:
    """iOS 15 Safari sends no Sec-Fetch-*: a kiosk of them refreshing on a timer is a person's
    browser doing what it is told."""
    old_safari = SAFARI_IOS.replace("17_6", "15_8").replace("Version/17.6", "Version/15.6")
    assert not classifier.classify(old_safari).fetch_metadata
    assert classifier.classify(SAFARI_IOS).fetch_metadata
    detector = BrowserMimicry(classifier=classifier)
    people_on(detector, "kong", FETCHING)
    kiosk = browsing(60, [10.0], ua=old_safari, headers=BROWSER_HEADERS, paths=["/v1/offers"])
    state = SubjectState()
    feed([detector], state, kiosk, "ip:x")
    signal = judge(detector, state, "ip:x", kiosk[-1].ts_ms / 1000)
    assert signal is None or signal.score < 0.3


def human_gaps(rng: random.Random, n: int) -> list[float]:
    """Page views: a burst of API calls (tens of ms apart), then seconds to minutes of reading."""
    gaps = []
    while len(gaps) < n:
        gaps.extend(rng.uniform(0.01, 0.15) for _ in range(rng.randint(1, 5)))
        gaps.append(rng.lognormvariate(2.0, 1.0))
    return gaps[:n]


def test_human_browser_is_not_flagged(classifier: UserAgentClassifier) -> None:
    rng = random.Random(11)
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    events = browsing(300, human_gaps(rng, 300), headers=BROWSER_HEADERS)
    feed([detector], state, events, "ip:x")
    assert judge(detector, state, "ip:x", events[-1].ts_ms / 1000) is None


def test_sdk_polling_every_five_seconds_is_not_judged(classifier: UserAgentClassifier) -> None:
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    events = browsing(
        200, [5.0], ua="python-requests/2.31.0", paths=["/v1/jobs/42"], consumer="etl"
    )
    feed([detector], state, events, "consumer:etl")
    assert judge(detector, state, "consumer:etl", events[-1].ts_ms / 1000) is None
    assert state.memo is None  # nothing allocated for a subject it never judges


def test_dashboard_tab_polling_with_browser_headers_stays_below_tag(
    classifier: UserAgentClassifier,
) -> None:
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    events = browsing(100, [30.0], headers=BROWSER_HEADERS, paths=["/v1/notifications"])
    feed([detector], state, events, "ip:x")
    signal = judge(detector, state, "ip:x", events[-1].ts_ms / 1000)
    assert signal is None or signal.score < 0.3


def test_missing_headers_alone_is_weak(classifier: UserAgentClassifier) -> None:
    """A browser UA without accept-language at a human pace (a privacy proxy, say): tag at most."""
    rng = random.Random(2)
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    events = browsing(200, human_gaps(rng, 200))
    feed([detector], state, events, "ip:x")
    signal = judge(detector, state, "ip:x", events[-1].ts_ms / 1000)
    assert signal is not None and signal.score < 0.6


def test_carrier_nat_of_many_browsers_is_not_flagged(classifier: UserAgentClassifier) -> None:
    rng = random.Random(4)
    users = [
        browsing(60, human_gaps(rng, 60), ua=ua, headers=BROWSER_HEADERS, ip="100.64.0.1")
        for ua in [CHROME, SAFARI_IOS, FIREFOX] * 20
    ]
    for u in users:  # each user starts at a different moment
        shift = rng.randint(0, 600_000)
        for e in u:
            e.ts_ms += shift
    merged = sorted((e for u in users for e in u), key=lambda e: e.ts_ms)
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    feed([detector], state, merged, "ip:100.64.0.1")
    assert judge(detector, state, "ip:100.64.0.1", merged[-1].ts_ms / 1000) is None


def test_timing_is_judged_on_event_time_not_arrival(classifier: UserAgentClassifier) -> None:
    """A human's day replayed in one tight loop is still human; a bot's backlog is still a bot."""
    rng = random.Random(9)
    human = browsing(200, human_gaps(rng, 200))
    bot = browsing(200, [1.0])
    verdicts = []
    for events in (human, bot):
        detector, state = BrowserMimicry(classifier=classifier), SubjectState()
        for event in events:  # the context's clock is wrong on purpose: it must not be used
            detector.update(state, event, SubjectContext("ip:x", "ip", 0.0))
            state.observe(event, auth_route=False, baseline_after=5, fading_factor=0.05)
        verdicts.append(judge(detector, state, "ip:x", events[-1].ts_ms / 1000))
    assert verdicts[0] is None or verdicts[0].score < 0.6
    assert verdicts[1] is not None and verdicts[1].score >= 0.6


def test_out_of_order_events_do_not_break_timing(classifier: UserAgentClassifier) -> None:
    events = browsing(60, [1.0])
    events[10], events[11] = events[11], events[10]  # two gateway nodes, a little skew
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    feed([detector], state, events, "ip:x")
    signal = judge(detector, state, "ip:x", events[-1].ts_ms / 1000)
    assert signal is not None and signal.kind == "stealth_bot"


def test_empty_user_agent_is_weak_evidence(classifier: UserAgentClassifier) -> None:
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    events = browsing(100, [2.0], ua="")
    feed([detector], state, events, "ip:x")
    signal = judge(detector, state, "ip:x", events[-1].ts_ms / 1000)
    assert signal is not None and 0 < signal.score < 0.3
    assert "no user agent on" in signal.reason


def test_headless_browser_is_tagged_at_most(classifier: UserAgentClassifier) -> None:
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    headless = CHROME.replace("Chrome/", "HeadlessChrome/")
    events = browsing(100, [2.0], ua=headless)
    feed([detector], state, events, "ip:x")
    signal = judge(detector, state, "ip:x", events[-1].ts_ms / 1000)
    assert signal is not None and signal.score < 0.6


def test_nothing_is_said_while_warming_up(classifier: UserAgentClassifier) -> None:
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    events = browsing(detector.min_requests - 1, [1.0])
    feed([detector], state, events, "ip:x")
    assert judge(detector, state, "ip:x", events[-1].ts_ms / 1000) is None


def test_memory_stays_bounded_and_forgets_after_silence(classifier: UserAgentClassifier) -> None:
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    events = browsing(5_000, [1.0])
    feed([detector], state, events, "ip:x")
    assert state.memo is not None
    memo = state.memo[detector.name]
    assert memo.seen <= 2 * detector.window and memo.claims <= 2 * detector.window
    size = sum(sys.getsizeof(getattr(memo, s)) for s in memo.__slots__) + sys.getsizeof(memo)
    assert size < 600
    # An hour later the address belongs to someone else, a person with a real browser.
    later = browsing(30, human_gaps(random.Random(1), 30), headers=BROWSER_HEADERS)
    for e in later:
        e.ts_ms += 5_000_000 + 3_600_000
    feed([detector], state, later, "ip:x")
    assert state.memo[detector.name].claims == 30
    assert judge(detector, state, "ip:x", later[-1].ts_ms / 1000) is None


def test_a_source_that_never_logs_accept_language_is_not_held_against_browsers(
    classifier: UserAgentClassifier,
) -> None:
    """An Apigee MessageLogging template without Accept-Language: every browser looks bare."""
    detector = BrowserMimicry(classifier=classifier)
    rng = random.Random(6)
    for i in range(30):  # ordinary users of that gateway
        users = browsing(30, human_gaps(rng, 30), ip=f"192.0.2.{i}")
        for e in users:
            e.gateway = "apigee"
        feed([detector], SubjectState(), users, f"ip:192.0.2.{i}")
    tab = browsing(100, [30.0], paths=["/v1/notifications"], ip="192.0.2.200")
    for e in tab:
        e.gateway = "apigee"
    state = SubjectState()
    feed([detector], state, tab, "ip:192.0.2.200")
    signal = judge(detector, state, "ip:192.0.2.200", tab[-1].ts_ms / 1000)
    assert signal is None or signal.score < 0.3
    # Kong's logs carry every header: a stealth bot there is still caught by the same detector.
    bot, bot_state = browsing(60, [1.0]), SubjectState()
    feed([detector], bot_state, bot, "ip:x")
    caught = judge(detector, bot_state, "ip:x", bot[-1].ts_ms / 1000)
    assert caught is not None and caught.score >= 0.6


def test_cors_preflights_are_not_bare_requests(classifier: UserAgentClassifier) -> None:
    events = browsing(120, [15.0], headers=BROWSER_HEADERS, paths=["/v1/cart"])
    for e in events[::2]:  # every other request is its preflight, without the page's headers
        e.method, e.headers = "OPTIONS", {}
    detector, state = BrowserMimicry(classifier=classifier), SubjectState()
    feed([detector], state, events, "ip:x")
    signal = judge(detector, state, "ip:x", events[-1].ts_ms / 1000)
    assert signal is None or signal.score < 0.3


# --- CrawlerPace ------------------------------------------------------------------------------

MJ12 = "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)"


def crawl(ua: str, rate: float, n: int = 80, seed: int = 1) -> list[GatewayEvent]:
    rng = random.Random(seed)
    return browsing(n, [rng.expovariate(rate) for _ in range(n)], ua=ua)


@pytest.mark.parametrize(("rate", "least", "most"), [(2.0, 0.6, 0.84), (12.0, 0.85, 0.9)])
def test_a_bulk_crawler_crawling_fast_is_throttled(
    classifier: UserAgentClassifier, rate: float, least: float, most: float
) -> None:
    detector, state = CrawlerPace(classifier=classifier), SubjectState()
    events = crawl(MJ12, rate)
    feed([detector], state, events, "ip:x")
    signal = judge(detector, state, "ip:x", events[-1].ts_ms / 1000)
    assert signal is not None and least <= signal.score <= most
    assert signal.reason.startswith("declared crawler 'MJ12bot' at ")


@pytest.mark.parametrize(
    ("ua", "rate"),
    [(MJ12, 0.4), (CRAWLER_UAS[0], 5.0), (CRAWLER_UAS[2], 5.0), ("python-requests/2.31", 9.0)],
)
def test_polite_crawlers_search_engines_and_libraries_are_not_throttled(
    classifier: UserAgentClassifier, ua: str, rate: float
) -> None:
    detector, state = CrawlerPace(classifier=classifier), SubjectState()
    events = crawl(ua, rate)
    feed([detector], state, events, "ip:x")
    assert judge(detector, state, "ip:x", events[-1].ts_ms / 1000) is None
    if ua != MJ12:
        assert state.memo is None


def test_crawler_pace_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError):
        CrawlerPace(max_rate=0.0)
    with pytest.raises(ValueError):
        CrawlerPace(min_requests=0)


def test_through_the_processor(classifier: UserAgentClassifier) -> None:
    """The workers' detection step: a scanner is blocked, a stealth bot challenged, people and
    SDK consumers left alone."""
    from detectors import Fusion
    from pipeline.worker.processor import Processor, StateStore

    processor = Processor(
        detectors=[
            ScannerAgent(classifier=classifier),
            BrowserMimicry(classifier=classifier),
            CrawlerPace(classifier=classifier),
        ],
        fusion=Fusion(),
        mode="enforce",
        event_clock=True,
    )
    rng = random.Random(12)
    scanner = browsing(5, [0.3], ua="sqlmap/1.7.11#stable (https://sqlmap.org)", ip="198.51.100.1")
    stealth = browsing(60, [1.0 + rng.uniform(-0.02, 0.02) for _ in range(60)], ip="198.51.100.2")
    person = browsing(80, human_gaps(rng, 80), headers=BROWSER_HEADERS, ip="192.0.2.3")
    sdk = browsing(80, [5.0], ua="Go-http-client/2.0", ip="192.0.2.4", consumer="partner-7")
    events = sorted([*scanner, *stealth, *person, *sdk], key=lambda e: e.ts_ms)
    store = StateStore(max_subjects=1000)
    decisions = []
    for i in range(0, len(events), 16):  # envelope-sized batches, as a worker gets them
        decisions.extend(processor.process(events[i : i + 16], store))
    final = {d.subject: d for d in sorted(decisions, key=lambda d: d.updated_at)}
    assert final["ip:198.51.100.1"].action == "block"
    assert final["ip:198.51.100.2"].action in ("challenge", "block")
    assert (
        "bot_behaviour: browser UA without accept-language" in final["ip:198.51.100.2"].reasons[0]
    )
    assert not {"ip:192.0.2.3", "ip:192.0.2.4", "consumer:partner-7"} & set(final)


def test_authenticated_integrations_are_not_judged_as_bots(classifier: UserAgentClassifier) -> None:
    """A consumer's script that sends Chrome's user agent and polls every second, and a Zapier
    workflow at 3 requests/s: customers' integrations, judged by their own baselines elsewhere."""
    mimicry, pace = BrowserMimicry(classifier=classifier), CrawlerPace(classifier=classifier)
    script = browsing(80, [1.0], consumer="acme", ip="192.0.2.40")
    zapier = crawl("Zapier", 3.0)
    for e in zapier:
        e.consumer, e.client_ip = "zap-user", "192.0.2.41"
    for events in (script, zapier):
        for subject in (f"consumer:{events[0].consumer}", f"ip:{events[0].client_ip}"):
            state = SubjectState()
            feed([mimicry, pace], state, events, subject)
            now = events[-1].ts_ms / 1000
            assert judge(mimicry, state, subject, now) is None
            assert judge(pace, state, subject, now) is None
            assert state.memo is None
    assert classifier.classify("Zapier").kind == BULK_CRAWLER  # anonymous, it would be judged


def test_one_shot_addresses_cost_no_bot_memory(classifier: UserAgentClassifier) -> None:
    """A campaign spread over a million addresses spends one request each: none gets a memo."""
    detector = BrowserMimicry(classifier=classifier)
    states = []
    for i in range(1_000):
        state = SubjectState()
        feed([detector], state, browsing(1, [1.0], ip=f"10.{i // 250}.{i % 250}.1"), "ip:x")
        states.append(state)
    assert all(s.memo is None for s in states)
    again = states[0]
    feed([detector], again, browsing(1, [2.0], ip="10.0.0.1"), "ip:x")
    assert again.memo is not None  # the second request from the same address does


def test_a_few_random_gaps_do_not_look_regular(classifier: UserAgentClassifier) -> None:
    """Judged after every request from the first, random arrivals must never pass for a clock:
    a browser UA without accept-language (a privacy proxy), each request a new page, at a
    Poisson pace or a person's: of 400 such clients none is challenged, and nearly all stay at
    the missing header's 0.25 (a few runs of gaps within ±15% by chance score some timing)."""
    worst = []
    for seed in range(400):
        rng = random.Random(seed)
        gaps = [rng.expovariate(0.2) for _ in range(16)] if seed % 2 else human_gaps(rng, 16)
        events = browsing(16, gaps, ip="203.0.113.9")
        detector, state = BrowserMimicry(classifier=classifier), SubjectState()
        scores = [0.0]
        for event in events:
            feed([detector], state, [event], "ip:203.0.113.9")
            signal = judge(detector, state, "ip:203.0.113.9", event.ts_ms / 1000)
            scores.append(signal.score if signal else 0.0)
        worst.append(max(scores))
    worst.sort()
    assert worst[-1] < 0.6
    assert worst[-20] < 0.3
