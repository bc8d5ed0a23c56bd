"""The plugin's busted specs (kong-http-log/spec), run as part of the Python suite."""

from __future__ import annotations

import json
import shutil
import subprocess

from .harness import KONG_DIR

SPEC_FILES = sorted((KONG_DIR / "spec").rglob("*_spec.lua"))


def test_busted_specs_pass() -> None:
    busted = shutil.which("busted")
    assert busted, "busted not found: install lua-busted"
    proc = subprocess.run(
        [busted, "--output=json"], cwd=KONG_DIR, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert (report["failures"], report["errors"], report["pendings"]) == ([], [], [])
    assert len(report["successes"]) > 0
    # Every spec file ran: a file that fails to load would not show up as a failure.
    ran = {s["trace"]["source"].removeprefix("@") for s in report["successes"]}
    assert {str(p.relative_to(KONG_DIR)) for p in SPEC_FILES} <= ran
