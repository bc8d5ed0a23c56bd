"""Every Apigee bundle under apigee-messagelogging/ passes apigeelint (errors and warnings), and is
well-formed XML; a broken copy fails, so the lint really looks at our bundles."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import ROOT

BUNDLES_ROOT = ROOT / "apigee-messagelogging"
BUNDLES = sorted(
    p for p in BUNDLES_ROOT.glob("*/*") if p.is_dir() and p.name in ("apiproxy", "sharedflowbundle")
)
# Pinned: a new apigeelint release may add rules; upgrading is a deliberate change.
APIGEELINT_VERSION = "2.85.1"
INSTALL_DIR = ROOT / ".venv" / "apigeelint"


@pytest.fixture(scope="session")
def apigeelint() -> Path:
    """apigeelint from npm, installed once into .venv/apigeelint and reused."""
    binary = INSTALL_DIR / "node_modules" / ".bin" / "apigeelint"
    package = INSTALL_DIR / "node_modules" / "apigeelint" / "package.json"
    if not (binary.exists() and json.loads(package.read_text())["version"] == APIGEELINT_VERSION):
        npm = shutil.which("npm")
        assert npm, "npm is needed to install apigeelint (Debian: apt-get install npm)"
        INSTALL_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(INSTALL_DIR), "--no-audit", "--no-fund",
             f"apigeelint@{APIGEELINT_VERSION}"],
            check=True,
            capture_output=True,
            timeout=600,
        )  # fmt: skip
    return binary


def lint(apigeelint: Path, bundle: Path, profile: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(apigeelint), "-s", str(bundle), "-f", "table.js", "--profile", profile,
         "--maxWarnings", "0", "--norc"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def test_the_bundles_are_the_ones_we_ship() -> None:
    assert [str(b.relative_to(BUNDLES_ROOT)) for b in BUNDLES] == [
        "gatewatch-decisions/apiproxy",
        "gatewatch-enforce/sharedflowbundle",
        "gatewatch-example/apiproxy",
        "gatewatch-logging/sharedflowbundle",
    ]


@pytest.mark.parametrize("profile", ["apigee", "apigeex"])
@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.parent.name)
def test_bundle_passes_apigeelint(apigeelint: Path, bundle: Path, profile: str) -> None:
    result = lint(apigeelint, bundle, profile)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 Errors" in result.stdout and "0 Warnings" in result.stdout


def test_a_request_step_in_post_client_flow_fails_the_lint(
    apigeelint: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "apiproxy"
    shutil.copytree(BUNDLES_ROOT / "gatewatch-example" / "apiproxy", broken)
    endpoint = broken / "proxies" / "default.xml"
    text = endpoint.read_text()
    step = "<Step>\n        <Name>FC-gatewatch-logging</Name>\n      </Step>"
    endpoint.write_text(
        text.replace(
            '<PostClientFlow name="PostClientFlow">',
            f'<PostClientFlow name="PostClientFlow">\n    <Request>\n      {step}\n    </Request>',
        )
    )
    result = lint(apigeelint, broken, "apigee")
    assert result.returncode != 0
    assert "PD006" in result.stdout  # "Request is not supported here."


def test_every_xml_file_is_well_formed() -> None:
    # apigeelint's parser tolerates some malformed XML (e.g. "--" inside a comment); Apigee's
    # bundle import does not.
    files = sorted(BUNDLES_ROOT.rglob("*.xml"))
    assert len(files) >= 8
    for path in files:
        ET.parse(path)


def test_the_proxy_calls_the_shared_flow_after_responding() -> None:
    shared = ET.parse(
        BUNDLES_ROOT / "gatewatch-logging" / "sharedflowbundle" / "gatewatch-logging.xml"
    ).getroot()
    callout = ET.parse(
        BUNDLES_ROOT / "gatewatch-example" / "apiproxy" / "policies" / "FC-gatewatch-logging.xml"
    ).getroot()
    endpoint = ET.parse(
        BUNDLES_ROOT / "gatewatch-example" / "apiproxy" / "proxies" / "default.xml"
    ).getroot()
    assert callout.findtext("SharedFlowBundle") == shared.get("name")
    steps = [s.findtext("Name") for s in endpoint.findall("./PostClientFlow/Response/Step")]
    assert steps == [callout.get("name")]
    assert callout.get("continueOnError") == "true"  # logging never fails the API call


@pytest.mark.parametrize("profile", ["apigee", "apigeex"])
def test_recommended_limits_pass_apigeelint(
    apigeelint: Path, tmp_path: Path, profile: str
) -> None:
    """`gatewatch recommend --format apigee`: its SpikeArrest/Quota shared flow, from baselines
    learned by replaying Apigee traffic, lints clean like the bundles we ship."""
    from pipeline.config import Settings
    from pipeline.recommend.apigee import write_apigee
    from pipeline.recommend.baselines import from_replay
    from tests.unit.recommend_traffic import apigee_log

    log = apigee_log(tmp_path / "apigee.log", {"Shop App": 4, "partner-b": 2, "Zoë's app": 1})
    found, _ = from_replay(log, "apigee-syslog", Settings())
    assert len(found) == 3
    bundle = write_apigee(found, tmp_path / "out", source="replay of apigee.log")
    assert len(list((bundle / "policies").glob("*.xml"))) == 6
    for path in bundle.rglob("*.xml"):
        ET.parse(path)  # well formed (a "--" in a comment would not be)
    result = lint(apigeelint, bundle, profile)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 Errors" in result.stdout and "0 Warnings" in result.stdout
