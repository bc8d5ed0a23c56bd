"""The posture report's data and its Markdown / JSON / HTML forms (rendering in a real browser and
delivery are in tests/integration/test_report.py)."""

from __future__ import annotations

import doctest
import re

import orjson

from pipeline.incidents import IncidentBuilder, MemoryIncidentStore
from pipeline.report import data as report_data
from pipeline.report.cli import text_digest
from pipeline.report.data import collect
from pipeline.report.render import render
from pipeline.report.sources import unique
from tests.reportlib import sample_alerts

T0 = 1_700_000_000_000
UNTIL = T0 + 3_600_000


async def report() -> dict:
    alerts = sample_alerts(T0)
    store = MemoryIncidentStore()
    await IncidentBuilder(store, quiet_s=900).add(alerts)
    return collect(
        alerts,
        await store.recent(),
        since_ms=T0 - 1,
        until_ms=UNTIL,
        quiet_s=900,
        rate_limits={"consumer:partner-7": 120},
        sources={"alerts": "test"},
    )


def test_doctests():
    assert doctest.testmod(report_data).failed == 0


async def test_sections_say_what_a_security_team_acts_on():
    data = await report()
    t = data["totals"]
    assert (t["alerts"], t["decisions"], t["findings"], t["operator"]) == (24, 22, 1, 1)
    assert t["incidents"] == 3  # stuffing, flood, injection; the tag and the low finding open none
    top = data["incidents"][0]
    assert top["title"] == "credential attack on /v1/login from 15 addresses"
    assert top["done"] == "would have blocked 15 addresses in shadow"
    assert [r["route"] for r in data["would_block"]] == ["/v1/login"]
    assert data["would_block"][0]["would_block"] == 15
    [fp] = data["false_positive_candidates"]
    assert (fp["subject"], fp["actor"], fp["alerts_before"], fp["families"]) == (
        "consumer:partner-7",
        "alice",
        1,
        ["flood"],
    )
    [limit] = data["recommended_limits"]
    assert limit == {
        "subject": "consumer:partner-7",
        "routes": ["/v1/orders"],
        "peak_per_s": 480,
        "baseline_per_s": 40,
        "crossed_limit_per_s": 60,
        "recommended_per_s": 120,
    }
    [surface] = data["api_surface"]
    assert (surface["route"], surface["code"]) == ("/v1/internal/debug", "shadow_endpoint")
    ts = data["timeseries"]
    assert sum(map(sum, ts["by_family"].values())) == 23  # every detection, counted once
    assert sum(ts["by_action"]["would block"]) == 15 and sum(ts["by_action"]["block"]) == 6
    assert len(ts["buckets"]) <= 41 and ts["bucket_ms"] == 60_000


async def test_json_is_the_data_and_every_format_is_deterministic():
    data = await report()
    assert orjson.loads(render(data, "json")) == orjson.loads(orjson.dumps(data))
    for fmt in ("json", "md", "html"):
        assert render(data, fmt) == render(await report(), fmt)


async def test_markdown_has_every_section_with_escaped_cells():
    md = render(await report(), "md").decode()
    for heading in (
        "## Top incidents",
        "## Detections by family",
        "## Decisions by action",
        "## Top subjects",
        "## Top routes",
        "## Would have blocked in shadow",
        "## False-positive candidates",
        "## Recommended limits",
        "## API-surface findings",
    ):
        assert heading in md
    assert "### credential attack on /v1/login from 15 addresses" in md
    assert "- **next**: move /v1/login from shadow to challenge" in md
    assert "| /v1/login | 15 | 0 | 0 | shadow | credential |" in md
    assert "nightly \\| sync" in md  # a pipe in an operator's reason does not break the table
    assert "| credential attack | 15 |" in md


async def test_html_is_one_self_contained_file_with_its_charts():
    html = render(await report(), "html").decode()
    assert "<script" not in html and "<link" not in html and not re.search(r"src=|url\(http", html)
    assert html.count("<svg") == 3
    for chart in ("by-family", "by-action", "would-block"):
        assert f'data-chart="{chart}"' in html
    assert 'id="family-credential-attack-0"' in html and 'id="action-would-block-0"' in html
    assert "move /v1/login from shadow to challenge" in html
    assert "nightly | sync" in html  # escaped for HTML, not mangled


async def test_an_empty_window_still_renders():
    data = collect([], [], since_ms=T0, until_ms=UNTIL, quiet_s=900)
    assert "No incident in this window" in render(data, "html").decode()
    assert "_No incident in this window._" in render(data, "md").decode()


async def test_digest_and_window():
    data = await report()
    digest = text_digest(data)
    assert digest.startswith("3 incidents, 24 alerts")
    assert "- /v1/login: 15 subjects" in digest
    alerts = sample_alerts(T0)
    assert len(unique(alerts + alerts, T0 + 600_000, T0 + 1_000_000)) == 5
