"""Apigee limits for review, as a shared flow: a SpikeArrest and a Quota per developer app.

`gatewatch-limits/sharedflowbundle/` holds, per app (the `consumer:` subjects Apigee traffic
carries are developer app names), `SA-gatewatch-<app>` (the per-second limit as a rate, counted
per app with `UseEffectiveCount`, so short bursts within the rate pass as Kong's would) and
`Q-gatewatch-<app>` (the per-minute limit, distributed and synchronous, counted per app), each
step conditioned on the app's name, each policy's comment citing its baseline. Call it from a
proxy's PreFlow after VerifyAPIKey or OAuthV2 (which set `developer.app.name`), with a
FlowCallout to `gatewatch-limits`. Apps whose names cannot be written into a condition (a double
quote, a backslash) are left out and listed in the flow's comment.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from pipeline.recommend.baselines import Recommendation

__all__ = ["BUNDLE", "write_apigee"]

BUNDLE = "gatewatch-limits"
_SLUG = re.compile(r"[^a-z0-9]+")
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')


def write_apigee(recommendations: list[Recommendation], out: Path, *, source: str) -> Path:
    """Write the shared flow bundle under `out`; returns the bundle directory."""
    root = out / BUNDLE / "sharedflowbundle"
    (root / "policies").mkdir(parents=True, exist_ok=True)
    (root / "sharedflows").mkdir(exist_ok=True)
    for old in (root / "policies").glob("*.xml"):
        old.unlink()  # a re-run replaces the previous recommendation entirely
    kept = [r for r in recommendations if not _UNSAFE.search(r.consumer)]
    skipped = [r.consumer for r in recommendations if _UNSAFE.search(r.consumer)]
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    steps = []
    for r in kept:
        name = _policy_suffix(r.consumer)
        cite = _comment(r.citation())
        (root / "policies" / f"SA-{name}.xml").write_text(_spike_arrest(f"SA-{name}", r, cite))
        (root / "policies" / f"Q-{name}.xml").write_text(_quota(f"Q-{name}", r, cite))
        condition = escape(f'developer.app.name = "{r.consumer}"')
        for policy in (f"SA-{name}", f"Q-{name}"):
            steps.append(
                f"  <Step>\n    <Name>{policy}</Name>\n"
                f"    <Condition>{condition}</Condition>\n  </Step>"
            )
    note = (
        f"\n  Left out (name not usable in a condition): {_comment(', '.join(skipped))}"
        if skipped
        else ""
    )
    (root / "sharedflows" / "default.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f"<!--\n  gatewatch recommend: per-app limits learned from traffic, FOR REVIEW.\n"
        f"  Source: {_comment(source)}; generated {when}.\n"
        "  Call from a proxy's PreFlow after VerifyAPIKey/OAuthV2 (FlowCallout gatewatch-limits)."
        f"{note}\n-->\n"
        '<SharedFlow name="default">\n' + "\n".join(steps) + "\n</SharedFlow>\n"
    )
    (root / f"{BUNDLE}.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<SharedFlowBundle revision="1" name="{BUNDLE}">\n'
        "  <DisplayName>gatewatch-limits</DisplayName>\n"
        "  <Description>Per-app SpikeArrest and Quota recommended by gatewatch from learned "
        "baselines</Description>\n"
        "  <SharedFlows>\n    <SharedFlow>default</SharedFlow>\n  </SharedFlows>\n"
        "</SharedFlowBundle>\n"
    )
    return root


def _spike_arrest(name: str, r: Recommendation, cite: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f"<!-- {cite} -->\n"
        f'<SpikeArrest continueOnError="false" enabled="true" name={quoteattr(name)}>\n'
        f"  <DisplayName>{escape(name)}</DisplayName>\n"
        f"  <Rate>{r.per_second}ps</Rate>\n"
        '  <Identifier ref="developer.app.name"/>\n'
        "  <UseEffectiveCount>true</UseEffectiveCount>\n"
        "</SpikeArrest>\n"
    )


def _quota(name: str, r: Recommendation, cite: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f"<!-- {cite} -->\n"
        f'<Quota continueOnError="false" enabled="true" name={quoteattr(name)}>\n'
        f"  <DisplayName>{escape(name)}</DisplayName>\n"
        f'  <Allow count="{r.per_minute}"/>\n'
        "  <Interval>1</Interval>\n"
        "  <TimeUnit>minute</TimeUnit>\n"
        '  <Identifier ref="developer.app.name"/>\n'
        "  <Distributed>true</Distributed>\n"
        "  <Synchronous>true</Synchronous>\n"
        "</Quota>\n"
    )


def _policy_suffix(app: str) -> str:
    """`gatewatch-<slug>-<hash>`: readable, unique per app, within Apigee's name rules."""
    slug = _SLUG.sub("-", app.lower()).strip("-")[:40] or "app"
    return f"gatewatch-{slug}-{hashlib.sha256(app.encode()).hexdigest()[:6]}"


def _comment(text: str) -> str:
    """Text safe inside an XML comment (no "--", one line)."""
    text = " ".join(text.split())
    while "--" in text:
        text = text.replace("--", "- -")
    return escape(text.rstrip("-"))
