"""Incidents: grouping per key, open/update/resolve, determinism, idempotence, summaries."""

from __future__ import annotations

import doctest
import random

import pytest

from pipeline.alerts import AlertReason, OperatorAction
from pipeline.incidents import IncidentBuilder, MemoryIncidentStore, keys, model, summarize, summary
from pipeline.incidents.testing import make_alert

T0 = 1_700_000_000_000
MIN = 60_000
QUIET_S = 900


async def build(alerts, *, batch=50, quiet_s=QUIET_S):
    store = MemoryIncidentStore()
    builder = IncidentBuilder(store, quiet_s=quiet_s)
    for i in range(0, len(alerts), batch):
        await builder.add(alerts[i : i + batch])
    return store, await store.recent()


def summaries(incidents, now_ms=T0 + 60 * MIN):
    return [summarize(i, now_ms=now_ms, quiet_s=QUIET_S).as_dict() for i in incidents]


def stuffing(n=6, mode="shadow", t=T0, route="/v1/login"):
    """n addresses of one /24 failing logins, plus the campaign detector naming their UA."""
    out = [
        make_alert(
            subject=f"ip:203.0.113.{10 + i}",
            mode=mode,
            t=t + i * 5_000,
            route=route,
            feature="failed_logins",
            value=20 + i,
            evidence=[f"req-{i}"],
        )
        for i in range(n)
    ]
    out.append(
        make_alert(
            subject="ip:198.51.100.7",
            mode=mode,
            t=t + 40_000,
            route=route,
            detector="distributed_stuffing",
            code="distributed_credential_stuffing",
            text="failed login in a campaign on /v1/login: 80 of 90 logins failing from 7 "
            "addresses, UA 'python-requests/2.31'",
        )
    )
    return out


def flood(consumer="consumer:partner-7", t=T0, mode="enforce", route="/v1/orders"):
    return [
        make_alert(
            subject=consumer,
            detector="rate",
            code="flood",
            t=t,
            mode=mode,
            route=route,
            feature="requests_per_s",
            value=480,
            limit=60,
            attack=["T1499.003"],
        ),
        make_alert(
            subject="ip:192.0.2.55",
            detector="rate",
            code="flood",
            t=t + 2_000,
            mode=mode,
            route=route,
            feature="requests_per_s",
            value=470,
            limit=60,
        ),
    ]


def test_module_doctests_pass():
    for module in (keys, model, summary):
        assert doctest.testmod(module).failed == 0


async def test_one_subject_is_one_incident_and_tags_before_the_block_join_it():
    alerts = [
        make_alert(
            subject="ip:198.51.100.1",
            action="tag",
            t=T0,
            route="/v1/search",
            detector="injection",
            code="sqli",
        ),
        make_alert(
            subject="ip:198.51.100.1",
            action="block",
            t=T0 + MIN,
            route="/v1/search",
            detector="injection",
            code="sqli",
        ),
        make_alert(
            subject="ip:198.51.100.1",
            action="allow",
            t=T0 + 5 * MIN,
            route=None,
            detector="injection",
            code="sqli",
        ),
    ]
    _, incidents = await build(alerts)
    assert len(incidents) == 1
    assert incidents[0].alerts == 3
    assert incidents[0].first_ms == T0 and incidents[0].opened_ms == T0 + MIN


async def test_range_groups_addresses_of_one_24():
    alerts = [make_alert(subject=f"ip:203.0.113.{i}", route=None, t=T0 + i * 1000) for i in (1, 2)]
    alerts.append(make_alert(subject="ip:203.0.114.1", route=None, t=T0 + 3000))
    _, incidents = await build(alerts)
    assert sorted(sorted(i.subjects) for i in incidents) == [
        ["ip:203.0.113.1", "ip:203.0.113.2"],
        ["ip:203.0.114.1"],
    ]


async def test_route_under_attack_from_many_subjects_is_one_incident_per_family():
    alerts = [
        *flood(),
        make_alert(
            subject="consumer:other", detector="rate", code="flood", route="/v1/orders", t=T0 + 3000
        ),
        # Another family on the same route is another incident.
        make_alert(
            subject="ip:198.18.0.99",
            detector="injection",
            code="sqli",
            route="/v1/orders",
            t=T0 + 3000,
        ),
    ]
    _, incidents = await build(alerts)
    groups = sorted(sorted(i.subjects) for i in incidents)
    assert groups == [["consumer:other", "consumer:partner-7", "ip:192.0.2.55"], ["ip:198.18.0.99"]]


async def test_campaign_trait_links_routes_through_the_named_user_agent():
    ua_text = "failed login in a campaign on {r}: 9 of 9 failing from 6 addresses, UA 'evil/1.0'"
    alerts = [
        make_alert(
            subject=f"ip:{i}.0.2.1",
            detector="distributed_stuffing",
            route=route,
            code="distributed_credential_stuffing",
            text=ua_text.format(r=route),
            t=T0 + i,
        )
        for i, route in ((10, "/v1/login"), (20, "/v2/session"))
    ]
    _, incidents = await build(alerts)
    assert len(incidents) == 1
    assert incidents[0].counts["ua"] == {"evil/1.0": 2}


async def test_a_tag_on_a_neighbour_does_not_join_the_attackers_incident():
    alerts = [
        make_alert(subject="ip:203.0.113.1", t=T0),
        make_alert(subject="ip:203.0.113.2", action="tag", t=T0 + 1000),
    ]
    store, incidents = await build(alerts)
    assert [sorted(i.subjects) for i in incidents] == [["ip:203.0.113.1"]]
    # The tag is kept as a dormant incident of its own: a later block on it opens that one.
    await IncidentBuilder(store, quiet_s=QUIET_S).add(
        [make_alert(subject="ip:203.0.113.2", t=T0 + 2000)]
    )
    incidents = await store.recent()
    assert sorted(sorted(i.subjects) for i in incidents) == [["ip:203.0.113.1", "ip:203.0.113.2"]]


async def test_opens_updates_and_resolves_after_the_quiet_window():
    store = MemoryIncidentStore()
    builder = IncidentBuilder(store, quiet_s=QUIET_S)
    await builder.add([make_alert(subject="ip:198.51.100.1", action="tag", t=T0)])
    assert await store.recent() == []  # a tag alone opens nothing
    [opened] = await builder.add([make_alert(subject="ip:198.51.100.1", t=T0 + MIN)])
    [updated] = await builder.add(
        [make_alert(subject="ip:198.51.100.1", t=T0 + 10 * MIN, evidence=["r-9"])]
    )
    assert opened == updated
    incident = await store.get(opened)
    assert incident is not None and incident.alerts == 3 and incident.evidence == ["r-9"]
    assert summarize(incident, now_ms=T0 + 20 * MIN, quiet_s=QUIET_S).status == "open"
    assert summarize(incident, now_ms=T0 + 26 * MIN, quiet_s=QUIET_S).status == "resolved"
    # After the quiet window the same subject starts a new incident.
    [later] = await builder.add([make_alert(subject="ip:198.51.100.1", t=T0 + 26 * MIN)])
    assert later != opened
    assert len(await store.recent()) == 2


async def test_a_bridging_alert_merges_incidents_and_the_old_id_stays_resolvable():
    store = MemoryIncidentStore()
    builder = IncidentBuilder(store, quiet_s=QUIET_S)
    a = make_alert(subject="ip:203.0.113.1", route=None, t=T0)
    b = make_alert(
        subject="ip:192.0.2.1", route="/v1/orders", detector="rate", code="flood", t=T0 + 1000
    )
    [ida] = await builder.add([a])
    [idb] = await builder.add([b])
    assert ida != idb
    # Same /24 as a, same route and family as b: one incident now, named after the earliest.
    bridge = make_alert(
        subject="ip:203.0.113.2", route="/v1/orders", detector="rate", code="flood", t=T0 + 2000
    )
    [merged] = await builder.add([bridge])
    assert merged == ida
    assert (await store.get(idb)).id == ida  # type: ignore[union-attr]
    assert [i.alerts for i in await store.recent()] == [3]


async def test_same_alerts_in_any_order_and_batching_give_the_same_incidents_and_summaries():
    alerts = (
        stuffing()
        + flood(t=T0 + 30_000)
        + [make_alert(subject="ip:203.0.113.10", action="tag", t=T0 - 20_000)]
        + [
            make_alert(
                subject=f"ip:10.9.{i}.1",
                detector="injection",
                code="xss",
                route="/v1/search",
                t=T0 + i * 200_000,
            )
            for i in range(8)
        ]
    )
    _, reference = await build(alerts)
    expected = summaries(reference)
    assert len(expected) >= 3
    rng = random.Random(5)
    for batch in (1, 3, 100):
        shuffled = alerts[:]
        rng.shuffle(shuffled)
        _, incidents = await build(shuffled, batch=batch)
        assert summaries(incidents) == expected


async def test_redelivered_alerts_change_nothing():
    alerts = stuffing() + flood()
    store = MemoryIncidentStore()
    builder = IncidentBuilder(store, quiet_s=QUIET_S)
    await builder.add(alerts)
    before = summaries(await store.recent())
    assert await builder.add(alerts) == []
    assert await builder.add(alerts[:3] + alerts[:3]) == []
    assert summaries(await store.recent()) == before
    assert sum(i.alerts for i in await store.recent()) == len(alerts)


async def test_stuffing_in_shadow_reads_as_what_who_how_much_done_and_next_step():
    _, [incident] = await build(stuffing(mode="shadow"))
    s = summarize(incident, now_ms=T0 + MIN, quiet_s=QUIET_S)
    assert s.status == "open"
    assert s.title == "credential attack on /v1/login from 7 addresses"
    assert "T1110.004" in s.what and "credential_stuffing x6" in s.what
    assert "6 addresses in one range" not in s.who and "203.0.113.0/24" in s.who
    assert "'python-requests/2.31'" in s.who
    assert "135 failed logins" in s.how_much  # 20+21+...+25, each address at its peak
    assert s.done == "would have blocked 7 addresses in shadow"
    assert s.next_step.startswith("move /v1/login from shadow to challenge")
    assert any("step-up" in step for step in s.steps)  # two ranges: a campaign


async def test_enforced_stuffing_from_one_range_suggests_denying_the_range():
    _, [incident] = await build(stuffing(mode="enforce")[:-1])
    s = summarize(incident, now_ms=T0 + MIN, quiet_s=QUIET_S)
    assert s.done == "blocked 6 addresses (enforce)"
    assert s.next_step == "deny the range: gatewatch override deny ip:203.0.113.0/24"


async def test_a_partner_flood_suggests_allow_listing_it_with_a_limit():
    _, [incident] = await build(flood())
    s = summarize(incident, now_ms=T0 + MIN, quiet_s=QUIET_S)
    assert s.title == "flood on /v1/orders from 2 subjects"
    assert "480 requests/s (peak)" in s.how_much
    assert s.next_step == (
        "allow-list partner consumer:partner-7 if this is its batch job (gatewatch feedback "
        "consumer:partner-7 --false-positive --reason ...) or give it a limit near 60/s"
    )


async def test_an_operator_allow_override_marks_a_false_positive():
    op = OperatorAction(action="override_allow", actor="alice", reason="nightly sync")
    alerts = [
        flood()[0],
        make_alert(
            subject="consumer:partner-7",
            kind="operator",
            action="allow",
            t=T0 + MIN,
            operator=op,
            detector="operator",
        ),
    ]
    _, [incident] = await build(alerts)
    s = summarize(incident, now_ms=T0 + MIN, quiet_s=QUIET_S)
    assert s.operator == "override_allow consumer:partner-7 by alice: 'nightly sync'"
    assert "override_allow" not in s.what and s.families == ["flood"]
    assert s.next_step.startswith("consumer:partner-7 allow-listed by an operator")
    assert s.done == "blocked 1 consumer (enforce)"


@pytest.mark.parametrize(
    ("detector", "code", "mode", "expected"),
    [
        ("injection", "sqli", "shadow", "move /v1/search from shadow to enforce"),
        ("injection", "sqli", "enforce", "check input validation on /v1/search"),
        ("probing", "secret_file", "enforce", "make sure the probed files are not served"),
        ("spec_drift", "shadow_endpoint", "enforce", "document /v1/search in the OpenAPI spec"),
        ("key_sharing", "key_sharing", "enforce", "rotate key:ab12 and tell its owner"),
        ("anomaly", "behaviour_anomaly", "enforce", "confirm or dismiss: gatewatch feedback"),
    ],
)
async def test_each_family_gets_its_next_step(detector, code, mode, expected):
    subject = "key:ab12" if detector == "key_sharing" else "ip:198.51.100.3"
    alert = make_alert(
        subject=subject,
        detector=detector,
        code=code,
        mode=mode,
        route="/v1/search",
        kind="finding" if detector == "spec_drift" else "decision",
        evidence=["req-1"],
    )
    _, [incident] = await build([alert])
    assert summarize(incident, now_ms=T0, quiet_s=QUIET_S).next_step.startswith(expected)


async def test_low_findings_and_tags_alone_open_nothing():
    alerts = [
        make_alert(kind="finding", severity="low", detector="spec_drift", code="unknown_param"),
        make_alert(
            subject="consumer:c1", action="tag", detector="anomaly", code="behaviour_anomaly"
        ),
    ]
    _, incidents = await build(alerts)
    assert incidents == []


async def test_structured_reasons_without_a_known_detector_still_have_a_family():
    alert = make_alert(
        reasons=[AlertReason(detector="new_thing", code="flood", text="x", score=0.9)]
    )
    assert keys.families_of(alert) == ["flood"]


async def test_a_finding_window_coming_back_with_a_higher_count_only_recounts():
    opening = make_alert(
        detector="injection", code="sqli", kind="finding", count=3, evidence=["r1"]
    )
    closing = opening.model_copy(
        update={"count": 40, "last_seen": T0 + 50_000, "evidence": ["r1", "r2"]}
    )
    for order in ([opening], [closing]), ([closing], [opening]), ([opening, closing],):
        store = MemoryIncidentStore()
        builder = IncidentBuilder(store, quiet_s=QUIET_S)
        for batch in order:
            await builder.add(batch)
        [incident] = await store.recent()
        assert (incident.alerts, incident.requests, incident.last_ms) == (1, 40, T0 + 50_000)
        assert incident.evidence == ["r1", "r2"]


async def test_a_credential_attack_already_blocked_asks_to_check_for_a_takeover():
    _, [incident] = await build([make_alert(subject="ip:198.51.100.9")])
    s = summarize(incident, now_ms=T0, quiet_s=QUIET_S)
    assert s.next_step == (
        "look for a successful login on /v1/login from ip:198.51.100.9 after the failures "
        "(a taken over account) and reset what it reached"
    )
