"""`gatewatch recommend`: baselines learned by replaying a log become per-consumer limits, each
citing its baseline; the decK output passes the checks the shipped Kong examples pass plus Kong's
rate-limiting schema, the Apigee output is well-formed (apigeelint: tests/integration)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import Settings
from pipeline.recommend.apigee import BUNDLE, write_apigee
from pipeline.recommend.baselines import from_replay
from pipeline.recommend.deck import TAG, render_deck

from .recommend_traffic import apigee_log, kong_log

# Kong's rate-limiting plugin (3.x schema): the fields a config may hold and their rules.
RATE_LIMITING_FIELDS = {
    "second", "minute", "hour", "day", "month", "year", "limit_by", "header_name", "path",
    "policy", "fault_tolerant", "redis", "hide_client_headers", "error_code", "error_message",
    "sync_rate",
}  # fmt: skip
PERIODS = ("second", "minute", "hour", "day", "month", "year")
KONG_STEADY = {"partner-a": 8, "mobile-app": 3, "batch": 1}
ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def kong_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kong_log(tmp_path_factory.mktemp("rec") / "traffic.ndjson", KONG_STEADY)


def check_deck(text: str) -> list[dict]:
    """What decK and Kong would check of a rate-limiting plugin file."""
    doc = yaml.safe_load(text)
    assert doc["_format_version"] == "3.0"
    assert set(doc) == {"_format_version", "plugins"}
    for plugin in doc["plugins"]:
        assert set(plugin) == {"name", "consumer", "config", "tags"}
        assert plugin["name"] == "rate-limiting" and plugin["tags"] == [TAG]
        assert isinstance(plugin["consumer"], str) and plugin["consumer"]
        config = plugin["config"]
        assert set(config) <= RATE_LIMITING_FIELDS
        assert config["limit_by"] in ("consumer", "credential", "ip", "service", "header", "path")
        assert config["policy"] in ("local", "cluster", "redis")
        limits = [config[p] for p in PERIODS if p in config]
        assert limits and all(isinstance(x, int) and x > 0 for x in limits)
        assert limits == sorted(limits)  # a longer period never allows less (Kong refuses it)
    return doc["plugins"]


def test_replay_learns_a_limit_per_consumer_from_its_own_baseline(kong_file: Path) -> None:
    found, replayed = from_replay(kong_file, "kong", Settings())
    assert replayed.events == 120 * sum(KONG_STEADY.values()) and not replayed.rejects
    by_consumer = {r.consumer: r for r in found}
    assert set(by_consumer) == set(KONG_STEADY)
    for consumer, rate in KONG_STEADY.items():
        r = by_consumer[consumer]
        assert r.gateway == "kong"
        assert r.rate_mean == pytest.approx(rate, rel=0.05)
        assert r.windows >= 100
        # Steady traffic: p99 ~ mean, so p99 x 3 per second (floor 5) and mean x 180 per minute.
        assert r.per_second == max(5, round(3 * rate))
        assert r.per_minute == pytest.approx(180 * rate, rel=0.05)
        assert r.last_seen_ms >= 1_700_000_000_000 + 119_000
    assert [r.consumer for r in found] == ["partner-a", "mobile-app", "batch"]  # busiest first


def test_deck_output(kong_file: Path) -> None:
    found, _ = from_replay(kong_file, "kong", Settings())
    text = render_deck(found, source="replay of traffic.ndjson")
    plugins = check_deck(text)
    assert [(p["consumer"], p["config"]["second"]) for p in plugins] == [
        ("partner-a", 24), ("mobile-app", 9), ("batch", 5)
    ]
    # Each entry is preceded by the baseline it came from.
    lines = text.splitlines()
    for plugin in plugins:
        at = lines.index(f'    consumer: "{plugin["consumer"]}"')
        assert lines[at - 2].startswith(f"  # baseline of consumer:{plugin['consumer']}: ")
        assert "windows learned, last seen 2023-11-14T" in lines[at - 2]


def test_deck_output_quotes_any_consumer_id() -> None:
    from pipeline.recommend.baselines import Recommendation

    odd = Recommendation("a: b # c\n- d", "kong", 5, 60, 1.0, 0.0, 1.0, 1.0, 40, 0, 2)
    (plugin,) = check_deck(render_deck([odd], source="x"))
    assert plugin["consumer"] == "a: b # c\n- d"
    assert check_deck(render_deck([], source="x")) == []


def test_apigee_output_is_one_spike_arrest_and_quota_per_app(tmp_path: Path) -> None:
    log = apigee_log(tmp_path / "apigee.log", {"Shop App": 4, 'Say "hi"': 2, "partner--x": 2})
    found, _ = from_replay(log, "apigee-syslog", Settings())
    root = write_apigee(found, tmp_path / "out", source="replay of apigee.log")
    assert root == tmp_path / "out" / BUNDLE / "sharedflowbundle"
    policies = {p.name: ET.parse(p).getroot() for p in (root / "policies").glob("*.xml")}
    spikes = [p for p in policies.values() if p.tag == "SpikeArrest"]
    quotas = [p for p in policies.values() if p.tag == "Quota"]
    assert len(spikes) == len(quotas) == 2  # the app with a quote cannot be in a condition
    flow = ET.parse(root / "sharedflows" / "default.xml").getroot()
    conditions = {s.findtext("Name"): s.findtext("Condition") for s in flow.iter("Step")}
    assert set(conditions) == {p.get("name") for p in policies.values()}
    shop = {r.consumer: r for r in found}["Shop App"]
    (spike,) = [p for p in spikes if conditions[p.get("name")] == 'developer.app.name = "Shop App"']
    assert spike.findtext("Rate") == f"{shop.per_second}ps"
    (quota,) = [p for p in quotas if conditions[p.get("name")] == 'developer.app.name = "Shop App"']
    assert quota.find("Allow").get("count") == str(shop.per_minute)  # type: ignore[union-attr]
    assert (quota.findtext("TimeUnit"), quota.findtext("Distributed")) == ("minute", "true")
    # Comments cite the baseline; none holds "--" (Apigee refuses such XML).
    for path in (root / "policies").glob("*.xml"):
        text = path.read_text()
        comment = text.split("<!--", 1)[1].split("-->", 1)[0]
        assert comment.startswith(" baseline of consumer:") and "--" not in comment
    assert 'Say "hi"' in (root / "sharedflows" / "default.xml").read_text().replace("&quot;", '"')


def recommend(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in its own process: it configures logging for its own stderr."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "recommend", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def test_each_gateway_gets_its_own_consumers(kong_file: Path, tmp_path: Path) -> None:
    done = recommend("--from", str(kong_file), "--format", "apigee", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "no consumer seen on apigee" in done.stderr
    assert list((tmp_path / BUNDLE / "sharedflowbundle" / "policies").glob("*.xml")) == []


def test_cli_json_and_refusals(kong_file: Path, tmp_path: Path) -> None:
    done = recommend("--from", str(kong_file), "--format", "json", "--top", "2",
                     "--out", str(tmp_path / "r.json"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = orjson.loads((tmp_path / "r.json").read_bytes())
    assert data["source"].startswith("replay of traffic.ndjson")
    assert [r["consumer"] for r in data["recommendations"]] == ["partner-a", "mobile-app"]
    assert data["recommendations"][0]["baseline"]["windows"] >= 100
    # Refused before anything runs (in-process is fine: no logging is configured by then).
    runner = CliRunner()
    for args, message in [
        (["--format", "xml"], "--format must be one of"),
        (["--format", "apigee"], "give --out DIR"),
        ([], "give --from"),
    ]:
        done = runner.invoke(app, ["recommend", *args])
        assert done.exit_code == 2 and message in done.output, done.output
