"""The behavioural detector families through the processor: what they catch, what they leave alone."""

from __future__ import annotations

from collections.abc import Iterable

from detectors import BruteForce, Fusion, Policy, RoutePolicy, default_detectors
from pipeline.decisions import Decision
from pipeline.events import GatewayEvent
from pipeline.worker.processor import Processor, StateStore
from tests.unit.conftest import T0_MS, make_event

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"


def run(events: Iterable[GatewayEvent], processor: Processor | None = None,
        batch: int = 50) -> list[Decision]:
    processor = processor or Processor(default_detectors(), Fusion(), mode="enforce",
                                       event_clock=True)
    store = StateStore(100_000)
    ordered = sorted(events, key=lambda e: e.ts_ms)
    out: list[Decision] = []
    for i in range(0, len(ordered), batch):
        out += processor.process(ordered[i : i + batch], store)
    return out


def acting(decisions: list[Decision]) -> dict[str, str]:
    return {d.subject: d.action for d in decisions if d.action in ("challenge", "block")}


def login(ip: str, at_s: float, status: int, ua: str = CHROME, fp: str = "h1") -> GatewayEvent:
    return make_event(ts_ms=T0_MS + int(at_s * 1000), client_ip=ip, method="POST", path="/login",
                      route="/login", status=status, user_agent=ua, header_fingerprint=fp)


def benign_logins(seconds: int) -> list[GatewayEvent]:
    """People logging in from everywhere, each with their own browser; one in eight mistypes once."""
    out = []
    for i in range(seconds // 2):
        ip = f"10.{i % 200}.{i % 7}.{i % 250}"
        ua = f"{CHROME} build/{i % 40}"
        if i % 8 == 0:
            out.append(login(ip, 2 * i, 401, ua, fp=f"f{i % 5}"))
        out.append(login(ip, 2 * i + 1, 200, ua, fp=f"f{i % 5}"))
    return out


def test_distributed_stuffing_is_caught_by_its_shared_trait_and_ranges() -> None:
    attack = [
        login(f"203.0.{113 + i % 10}.{i // 10}", 120 + i * 0.25, 401 if i % 30 else 200,
              ua="python-httpx/0.27", fp="tool")
        for i in range(400)  # 400 addresses in ten /24s, one attempt each, 100 s
    ]
    decisions = run(benign_logins(400) + attack)
    hit = acting(decisions)
    ranges = {s for s in hit if s.endswith("/24")}
    assert ranges and all(s.startswith("ip:203.0.") for s in ranges)
    assert all(s.startswith("ip:203.0.") for s in hit)  # no benign address or range
    first = min(d.updated_at for d in decisions if d.subject in hit)
    assert first - (T0_MS + 120_000) < 10_000  # within 10 s of the campaign's start
    assert any("campaign" in r or "range" in r for d in decisions for r in d.reasons)


def test_one_stuffing_address_does_not_condemn_its_range() -> None:
    hit = acting(run(login("198.51.100.7", i * 0.3, 401) for i in range(40)))
    assert hit == {"ip:198.51.100.7": "block"}


def walk(ip: str, start_s: float, n: int, every_s: float, status: int, *, sequential: bool,
         ua: str = "python-requests/2.31.0", consumer: str | None = None) -> list[GatewayEvent]:
    return [
        make_event(ts_ms=T0_MS + int((start_s + i * every_s) * 1000), client_ip=ip,
                   consumer=consumer, path=f"/accounts/{(1000 + i) if sequential else (i * 7919) % 100_003}",
                   route="/accounts/{id}", status=status, user_agent=ua)
        for i in range(n)
    ]


def test_bola_enumeration_is_blocked_and_reasoned() -> None:
    decisions = run(walk("203.0.113.9", 0, 80, 0.2, 403, sequential=True))
    [d] = [d for d in decisions if d.action == "block" and "/" not in d.subject]
    assert d.subject == "ip:203.0.113.9" and "403/404" in d.reasons[0]


def test_scraping_by_an_anonymous_client_is_challenged_within_seconds() -> None:
    decisions = run(walk("203.0.113.10", 0, 300, 1 / 15, 200, sequential=False))
    first = min(d.updated_at for d in decisions if d.action in ("challenge", "block"))
    assert first - T0_MS <= 15_000
    assert any("distinct objects" in r for d in decisions for r in d.reasons)


def test_a_carrier_nat_reading_many_objects_is_not_scraping() -> None:
    events = []
    for i in range(300):  # 3 requests/s from one address, many phones behind it
        e = walk("100.64.0.1", i / 3, 1, 1, 200, sequential=False,
                 ua=f"MyShop/5.{i % 9} (iPhone; iOS 17.{i % 5})")[0]
        events.append(e.model_copy(update={"path": f"/accounts/{i * 31}"}))
    assert acting(run(events)) == {}


def test_an_authenticated_sync_job_is_judged_on_its_consumer_not_its_address() -> None:
    events = walk("192.0.2.50", 0, 300, 0.25, 200, sequential=True, consumer="sync-job")
    assert acting(run(events)) == {}


def shared_key(owner_s: int, sharers: int) -> list[GatewayEvent]:
    owner = [make_event(ts_ms=T0_MS + t * 1000, client_ip=f"192.0.2.{t % 3}", consumer="c7")
             for t in range(0, owner_s, 4)]
    leak = [make_event(ts_ms=T0_MS + (owner_s + i) * 1000, consumer="c7",
                       client_ip=f"{30 + i}.{(i * 37) % 250}.{i % 200}.{i}")
            for i in range(sharers)]
    return owner + leak


def test_key_sharing_is_caught_against_the_owners_usual_spread() -> None:
    hit = acting(run(shared_key(900, 30)))
    assert hit.get("consumer:c7") in ("challenge", "block")


def test_a_credential_with_a_few_addresses_is_not_shared() -> None:
    assert acting(run(shared_key(900, 3))) == {}


def steady(consumer: str, start_s: int, seconds: int, rate: float) -> list[GatewayEvent]:
    out = []
    for s in range(start_s, start_s + seconds):
        n = int(rate * (1 + (s % 3 - 1) * 0.2))
        out += [make_event(ts_ms=T0_MS + s * 1000 + i * (900 // max(n, 1)), consumer=consumer,
                           client_ip="192.0.2.60", path=f"/orders/{i % 4}", route="/orders/{id}")
                for i in range(n)]
    return out


def test_a_slow_ramp_does_not_teach_the_baseline_its_flood() -> None:
    """Ten minutes at ~5/s, then +1.5% a second to ~240/s: each step looks like the last one to a
    fast baseline, so only the slow one and the no-learning-when-flagged rule catch it."""
    events = steady("c1", 0, 600, 5)
    rate = 5.0
    for s in range(600, 860):
        rate *= 1.015
        n = int(rate)
        events += [make_event(ts_ms=T0_MS + s * 1000 + i * (900 // n), consumer="c1",
                              client_ip="192.0.2.60", path="/orders/1", route="/orders/{id}")
                   for i in range(n)]
    processor = Processor(default_detectors(), Fusion(), mode="enforce", event_clock=True)
    store = StateStore(1000)
    decisions = []
    for i in range(0, len(events), 200):
        decisions += processor.process(events[i : i + 200], store)
    flagged = [d for d in decisions if d.subject == "consumer:c1"]
    assert flagged, "the ramp was never flagged"
    # Caught below 100/s (reached at t≈801 s), with the long-run baseline as the reason.
    assert min(d.updated_at for d in flagged) < T0_MS + 800_000
    assert "long-run baseline" in flagged[0].reasons[0]
    # And nothing of the ramp was learned once it was flagged: the baselines stayed low.
    baseline = store.peek("consumer:c1").baseline
    assert baseline is not None
    assert baseline.rate_slow < 10 and baseline.rate_mean < 60


def test_a_warm_consumer_gets_a_recommended_rate_limit_with_its_decision() -> None:
    events = steady("c2", 0, 120, 5) + [
        make_event(ts_ms=T0_MS + 120_000 + i * 5, consumer="c2", client_ip="192.0.2.61",
                   path="/orders/1", route="/orders/{id}")
        for i in range(190)
    ]
    [d] = [d for d in run(events) if d.subject == "consumer:c2" and d.action == "block"][:1]
    assert d.rate_limit is not None and 10 <= d.rate_limit <= 40


def test_policy_canary_critical_routes_and_allow_overrides() -> None:
    stuffing = [login("198.51.100.8", i * 0.5, 401) for i in range(9)]
    lenient = Processor([BruteForce()], Fusion(), mode="enforce", event_clock=True)
    strict = Processor([BruteForce()], Fusion(), mode="enforce", event_clock=True,
                       policy=Policy(routes={"/login": RoutePolicy(critical=True)}))
    assert acting(run(stuffing, lenient)) == {}  # nine failures: a tag on an ordinary route
    assert acting(run(stuffing, strict)) == {"ip:198.51.100.8": "challenge"}

    canary = Processor(default_detectors(), Fusion(), mode="enforce", event_clock=True,
                       policy=Policy(default=RoutePolicy(canary_percent=0)))
    assert {d.mode for d in run(stuffing, canary)} == {"shadow"}

    allowed = Processor(default_detectors(), Fusion(), mode="enforce", event_clock=True,
                        allowed=frozenset({"ip:198.51.100.8"}))
    assert run(stuffing, allowed) == []


def test_the_anomaly_model_learns_only_windows_nobody_flagged() -> None:
    from detectors import BehaviourAnomaly
    from detectors.base import SubjectContext
    from detectors.state import SubjectState

    model = BehaviourAnomaly(warmup=10, min_windows=5)
    state = SubjectState()
    def second(s: int, flagged: bool) -> None:
        for i in range(5):
            e = make_event(ts_ms=T0_MS + s * 1000 + i, consumer="c3", path="/a", route="/a")
            model.update(state, e, SubjectContext("consumer:c3", "consumer", e.ts_ms / 1000))
            state.observe(e, auth_route=False, baseline_after=2, fading_factor=0.05)
            state.flagged = state.flagged or flagged

    for s in range(40):
        second(s, flagged=False)
    second(40, flagged=True)  # its first event closes (and learns) the last unflagged window
    learned = model.learned
    assert learned > 20
    for s in range(41, 80):  # a detector flags every one of these windows
        second(s, flagged=True)
    assert model.learned == learned


def test_a_quiet_consumer_turned_busy_is_a_flood_below_the_per_second_limits() -> None:
    """0.5 requests/s for ten minutes, then 12/s over its two routes: never 30 in one second,
    but 24x its habit."""
    events = [make_event(ts_ms=T0_MS + i * 2000, consumer="c5", client_ip="192.0.2.70")
              for i in range(300)]
    start = T0_MS + 600_000
    events += [make_event(ts_ms=start + i * 83, consumer="c5", client_ip="192.0.2.70",
                          route=("/orders", "/inventory")[i % 2])
               for i in range(1200)]
    decisions = [d for d in run(events) if d.subject == "consumer:c5"]
    acted = [d for d in decisions if d.action in ("challenge", "block")]
    assert acted and acted[0].updated_at - start <= 10_000
    assert "held over" in acted[0].reasons[0]


def test_a_consumer_bursting_now_and_then_is_not_a_flood() -> None:
    """A batch job: 20 requests in two seconds every minute, otherwise idle."""
    events = [make_event(ts_ms=T0_MS + m * 60_000 + i * 100, consumer="c6", client_ip="192.0.2.71")
              for m in range(30) for i in range(20)]
    assert acting(run(events)) == {}


def test_a_scraper_spread_over_its_subnet_is_caught_on_the_range() -> None:
    events = []
    for i in range(400):  # 12 requests/s over five hosts of one /24: ~2.4/s each
        e = walk(f"203.0.113.{10 + i % 5}", i / 12, 1, 1, 200, sequential=False, ua="Scrapy/2.11.0")[0]
        events.append(e.model_copy(update={"path": f"/accounts/{i * 7919 % 100_003}"}))
    hit = acting(run(events))
    assert hit.get("ip:203.0.113.0/24") in ("challenge", "block")
    assert not any(s.endswith((".10", ".11", ".12")) for s in hit)  # no host alone is enough


def test_a_scraper_on_one_host_is_judged_on_its_address_not_its_neighbours() -> None:
    hit = acting(run(walk("203.0.113.10", 0, 300, 1 / 15, 200, sequential=False)))
    assert hit.get("ip:203.0.113.10") in ("challenge", "block")
    assert "ip:203.0.113.0/24" not in hit


def test_enumeration_of_a_sub_resource_reads_the_id_not_the_last_segment() -> None:
    """`/accounts/{id}/invoices`: the walked object is the account, the last segment is a name."""
    events = [
        e.model_copy(update={"path": f"{e.path}/invoices", "route": "/accounts/{id}/invoices"})
        for e in walk("203.0.113.9", 0, 80, 0.2, 403, sequential=True)
    ]
    decisions = run(events)
    [d] = [d for d in decisions if d.action == "block" and "/" not in d.subject]
    assert d.subject == "ip:203.0.113.9" and "in id order" in d.reasons[0]


def strangers(owner_s: int, n: int, ua: str) -> list[GatewayEvent]:
    owner = [make_event(ts_ms=T0_MS + t * 1000, client_ip=f"192.0.2.{t % 3}", consumer="c7",
                        user_agent="partner-sync/3.1")
             for t in range(0, owner_s, 4)]
    return owner + [make_event(ts_ms=T0_MS + (owner_s + i) * 1000, consumer="c7",
                               client_ip=f"{30 + i}.{(i * 37) % 250}.{i % 200}.{i}", user_agent=ua)
                    for i in range(n)]


def test_a_key_reached_from_new_networks_by_new_clients_is_shared_after_three() -> None:
    hit = acting(run(strangers(900, 3, "curl/8.4.0")))
    assert hit.get("consumer:c7") in ("challenge", "block")
    assert acting(run(strangers(900, 2, "curl/8.4.0"))) == {}


def test_the_owner_moving_to_new_networks_with_its_own_client_is_not_sharing() -> None:
    assert acting(run(strangers(900, 5, "partner-sync/3.1"))) == {}


def quiet_then_busy(routes: list[str]) -> tuple[list[GatewayEvent], int]:
    """0.5 requests/s for ten minutes, then 8/s for a minute: 16x its habit, below 10/s."""
    events = [make_event(ts_ms=T0_MS + i * 2000, consumer="c8", client_ip="192.0.2.72",
                         route=routes[i % len(routes)]) for i in range(300)]
    start = T0_MS + 600_000
    events += [make_event(ts_ms=start + i * 125, consumer="c8", client_ip="192.0.2.72",
                          route=routes[(i * 7) % len(routes)]) for i in range(480)]
    return events, start


def test_a_modest_flood_over_the_clients_routes_is_challenged() -> None:
    events, start = quiet_then_busy(["/orders", "/orders/{id}", "/inventory"])
    acted = [d for d in run(events) if d.subject == "consumer:c8" and d.action == "challenge"]
    assert acted and acted[0].updated_at - start <= 10_000
    assert acted[0].reasons[0].endswith("across its routes")


def test_a_modest_held_rate_on_one_collection_is_only_tagged() -> None:
    """The same pace walking one collection is what a first batch run looks like."""
    events, _ = quiet_then_busy(["/orders"])
    decided = {d.action for d in run(events) if d.subject == "consumer:c8"}
    assert decided == {"tag"}


def test_one_loud_guesser_among_typos_with_its_user_agent_is_no_campaign() -> None:
    """Partners' scripts share `python-requests` and a header shape with a stuffer; their few typos
    must not be read as the stuffer's campaign."""
    typos = [login(f"192.0.2.{i % 7}", i * 1.5, 401 if i % 2 else 200,
                   ua="python-requests/2.31.0", fp="py") for i in range(80)]
    stuffer = [login("198.51.100.9", 30 + i * 0.2, 401, ua="python-requests/2.31.0", fp="py")
               for i in range(300)]
    hit = acting(run(typos + stuffer))
    assert hit == {"ip:198.51.100.9": "block"}


def app_logins(stuffer_attempts: int) -> list[GatewayEvent]:
    """A phone app's client id: users log in from everywhere, one address fails through it."""
    users = [login(f"100.{64 + i % 50}.{i % 9}.{i % 200}", i * 2.0, 401 if i % 10 == 0 else 200,
                   ua="okhttp/4.12.0", fp="app").model_copy(update={"consumer": "myshop-android"})
             for i in range(300)]
    stuffer = [login("198.51.100.10", 300 + i * 0.5, 401, ua="okhttp/4.12.0", fp="app")
               .model_copy(update={"consumer": "myshop-android"}) for i in range(stuffer_attempts)]
    return users + stuffer


def test_guessing_through_an_apps_credential_blocks_the_guesser_not_the_app() -> None:
    hit = acting(run(app_logins(120)))
    assert hit.get("ip:198.51.100.10") == "block"
    assert "consumer:myshop-android" not in hit


def test_guessing_through_a_partners_own_credential_is_brute_force_on_it() -> None:
    owner = [login("192.0.2.80", i * 10.0, 200, ua="partner/1", fp="p")
             .model_copy(update={"consumer": "partner-9"}) for i in range(30)]
    guesser = [login("198.51.100.11", 300 + i * 0.5, 401, ua="curl/8.4.0", fp="c")
               .model_copy(update={"consumer": "partner-9"}) for i in range(60)]
    hit = acting(run(owner + guesser))
    assert hit.get("consumer:partner-9") in ("challenge", "block")


def test_a_spike_on_an_apps_key_is_told_to_the_upstream_not_blocked() -> None:
    """A push notification: the app key's users, from a hundred networks, at ten times the
    usual rate for a few seconds."""
    events = []
    for s in range(300):
        n = 100 if 280 <= s < 284 else 10
        events += [make_event(ts_ms=T0_MS + s * 1000 + i * (900 // n), consumer="myshop-ios",
                              client_ip=f"100.{64 + (s * n + i) % 100}.{i % 7}.{s % 250}")
                   for i in range(n)]
    decided = {d.action for d in run(events) if d.subject == "consumer:myshop-ios"}
    assert decided == {"tag"}


def test_a_walk_naming_no_client_at_all_meets_the_strictest_limit() -> None:
    """6 distinct objects/s: a partner's sync sending its key (unchecked on a public route) may;
    an address that names nothing may not."""
    unnamed = walk("203.0.113.20", 0, 360, 1 / 6, 200, sequential=True)
    keyed = [e.model_copy(update={"credential": "hmac:partner"}) for e in unnamed]
    assert acting(run(unnamed)).get("ip:203.0.113.20") == "challenge"
    assert "ip:203.0.113.20" not in acting(run(keyed))
