"""README command 1 in small: `gatewatch demo --json` on the embedded stack blocks both attackers
and nobody else. (The full-length demo is the acceptance run; this one shortens the phases.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson

from .conftest import PYTHON, ROOT


def test_demo_blocks_both_attacks_and_nobody_else() -> None:
    out = subprocess.run(
        [PYTHON, "-m", "pipeline", "demo", "--json", "--baseline-s", "15", "--attack-s", "8"],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    result = orjson.loads(out.stdout.splitlines()[-1])
    assert len(result["attack_subjects"]) == 2
    assert set(result["attack_subjects"]) <= set(result["blocked_subjects"])
    assert result["false_blocks"] == 0
    assert result["events_processed"] == result["events_sent"] > 1000
    # Blocked after its attack started (how fast is the acceptance run's figure, not a test's).
    assert all(result["time_to_block_s"][s] >= 0 for s in result["attack_subjects"])
    # The incident sink ran over the worker's alerts: an incident per attack, none benign.
    assert result["alerts"] > 0
    for attacker in result["attack_subjects"]:
        assert any(attacker in i["subjects"] for i in result["incidents"]), attacker
    assert all(i["attack_subjects"] for i in result["incidents"])
    families = {f for i in result["incidents"] for f in i["families"]}
    assert {"credential", "flood"} <= families
    assert all(i["next_step"] and i["done"] for i in result["incidents"])
    report = Path(result["report"]).read_text()
    assert 'data-chart="by-family"' in report and result["incidents"][0]["title"] in report
