"""Apigee enforcement contracts: the pusher, the decision-ingest proxy and the enforcement shared
flow agree with each other and with the pipeline.

Apigee cannot run here, so the bundles are checked as XML (xml.etree), the message templates are
rendered the way Apigee renders them, the validation conditions' regexes are applied with Python
(they use only syntax Java and Python read alike), and the two JavaScript resources run under
node with a stand-in for Apigee's `context` and `properties` objects.

The chain under test:
    ApigeeDecisionPusher._deliver (JSON body)
      -> gatewatch-decisions: EV-gatewatch-decision, RF-gatewatch-invalid, AM-gatewatch-cache-value,
         IC/PC-gatewatch-decision (cache gatewatch-decisions, key gatewatch + subject)
      -> gatewatch-enforce: JS-gatewatch-subjects, LC-gatewatch-*, JS-gatewatch-verdict,
         RF-gatewatch-block (403) / RF-gatewatch-challenge (429) / AM-gatewatch-tag
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pipeline.ingest.apigee import ApigeeParser
from pipeline.ingest.redaction import Redactor
from sinks.apigee import ApigeeDecisionPusher

ROOT = Path(__file__).resolve().parent.parent.parent
BUNDLES = ROOT / "apigee-messagelogging"
INGEST = BUNDLES / "gatewatch-decisions" / "apiproxy"
ENFORCE = BUNDLES / "gatewatch-enforce" / "sharedflowbundle"
JSC = ENFORCE / "resources" / "jsc"
SLOTS = ("consumer", "key", "ip", "net")  # the enforcer's subjects, most specific first
NOW_MS = 1_700_000_000_000
KEY = "unit-test-redaction-key"
# Apigee template reference: {variable} in templates, or @variable# with variablePrefix="@".
TEMPLATE_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")


# ---------------------------------------------------------------------------------------------
# Reading the bundles


def xml(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def policies(bundle: Path) -> dict[str, ET.Element]:
    return {p.stem: xml(p) for p in sorted((bundle / "policies").glob("*.xml"))}


def of_type(bundle: Path, kind: str) -> dict[str, ET.Element]:
    return {name: el for name, el in policies(bundle).items() if el.tag == kind}


def steps(flow: ET.Element) -> list[tuple[str, str]]:
    """(policy name, condition) of every Step under `flow`, in document order."""
    return [
        (s.findtext("Name", "").strip(), " ".join(s.findtext("Condition", "").split()))
        for s in flow.iter("Step")
    ]


def enforce_steps() -> list[tuple[str, str]]:
    return steps(xml(ENFORCE / "sharedflows" / "default.xml"))


def ingest_steps() -> list[tuple[str, str]]:
    return steps(xml(INGEST / "proxies" / "default.xml"))


def condition_of(all_steps: list[tuple[str, str]], name: str) -> str:
    found = [c for n, c in all_steps if n == name]
    assert len(found) == 1, f"{name} is attached {len(found)} times"
    return found[0]


def render(template: str, variables: dict[str, str], prefix: str = "{", suffix: str = "}") -> str:
    """An Apigee message template: a reference becomes the variable's value, "" when unset
    (IgnoreUnresolvedVariables)."""
    pattern = re.escape(prefix) + r"([A-Za-z_][A-Za-z0-9_.\-]*)" + re.escape(suffix)
    return re.sub(pattern, lambda m: variables.get(m.group(1), ""), template)


def payload(policy: ET.Element, variables: dict[str, str]) -> Any:
    """The JSON body a RaiseFault/AssignMessage Payload renders to."""
    node = policy.find(".//Set/Payload")
    assert node is not None and node.text
    assert node.get("contentType") == "application/json"
    text = render(
        node.text, variables, node.get("variablePrefix", "{"), node.get("variableSuffix", "}")
    )
    return json.loads(text)


def validations() -> dict[str, str]:
    """field -> the regex RF-gatewatch-invalid's step conditions require of gatewatch.in.<field>."""
    out: dict[str, str] = {}
    for name, cond in ingest_steps():
        if name != "RF-gatewatch-invalid":
            continue
        match = re.fullmatch(r'!\(gatewatch\.in\.(\w+) ~~ "(.*)"\)', cond)
        assert match, f"unexpected validation condition: {cond}"
        out[match.group(1)] = match.group(2)
    return out


def valid(body: dict[str, str]) -> bool:
    """Whether the ingest proxy accepts these extracted values (a missing one is null: a regex
    match on null is false in Apigee, so the negated condition raises the 400)."""
    return all(
        field in body and re.fullmatch(regex, body[field]) is not None
        for field, regex in validations().items()
    )


# ---------------------------------------------------------------------------------------------
# What the pusher sends


class _Response:
    status = 200

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Capture:
    """Stands in for aiohttp.ClientSession: records what ApigeeDecisionPusher posts."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    def post(
        self, url: str, *, json: dict[str, Any], headers: dict[str, str], timeout: Any
    ) -> _Response:
        self.bodies.append(json)
        self.headers.append(headers)
        return _Response()


async def pushed(changes: list[dict[str, str]], now_ms: int = NOW_MS) -> list[dict[str, Any]]:
    capture = _Capture()
    pusher = ApigeeDecisionPusher(
        None,  # type: ignore[arg-type]  # Redis is not used by _deliver
        capture,  # type: ignore[arg-type]
        url="https://example.test/gatewatch/decisions",
        token="t0ken",
        stream="gw:decisions",
        cursor_key="gw:sink:apigee",
    )
    for change in changes:
        await pusher._deliver(change, now_ms)
    assert capture.headers == [{"Authorization": "Bearer t0ken"}] * len(changes)
    return capture.bodies


def change(
    subject: str,
    action: str = "block",
    mode: str = "enforce",
    score: str = "0.9",
    detector: str = "rate",
    ttl_ms: int = 600_000,
) -> dict[str, str]:
    """A stream entry as RedisDecisions.write adds it (every field a string)."""
    return {
        "subject": subject,
        "action": action,
        "score": score,
        "detector": detector,
        "expires_at": str(NOW_MS + ttl_ms),
        "mode": mode,
    }


def as_apigee_strings(body: dict[str, Any]) -> dict[str, str]:
    """ExtractVariables JSONPath results are strings; numbers as Java prints them or as sent."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}


# ---------------------------------------------------------------------------------------------
# Running the JavaScript resources

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node runs the Apigee JavaScript resources")

RUNNER = r"""
const fs = require("fs"), vm = require("vm");
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
const out = cases.map((c) => {
  const vars = Object.assign({}, c.variables);
  const set = {};
  const context = {
    getVariable: (n) => (Object.prototype.hasOwnProperty.call(vars, n) ? vars[n] : null),
    setVariable: (n, v) => { vars[n] = v; set[n] = v; },
  };
  const sandbox = { context, properties: c.properties, Date: { now: () => c.now } };
  vm.runInNewContext(fs.readFileSync(c.script, "utf8"), sandbox, { filename: c.script });
  return set;
});
process.stdout.write(JSON.stringify(out));
"""


def run_js(
    script: str,
    cases: list[dict[str, Any]],
    properties: dict[str, str] | None = None,
    now_ms: int = NOW_MS,
) -> list[dict[str, str]]:
    """Run a resource once per case of flow variables; returns the variables each run set."""
    assert NODE is not None
    props = properties if properties is not None else js_properties(script)
    batch = [
        {"script": str(JSC / script), "variables": c, "properties": props, "now": now_ms}
        for c in cases
    ]
    result = subprocess.run(
        [NODE, "-e", RUNNER], input=json.dumps(batch), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out: list[dict[str, str]] = json.loads(result.stdout)
    return out


def js_policy(script: str) -> ET.Element:
    found = [
        el
        for el in of_type(ENFORCE, "Javascript").values()
        if el.findtext("ResourceURL") == f"jsc://{script}"
    ]
    assert len(found) == 1
    return found[0]


def js_properties(script: str) -> dict[str, str]:
    """The <Properties> of the Javascript policy running `script`, as the script sees them."""
    return {p.get("name", ""): p.text or "" for p in js_policy(script).iter("Property")}


# ---------------------------------------------------------------------------------------------
# 1. The ingest proxy reads exactly what the pusher sends


async def test_ingest_extracts_exactly_the_fields_the_pusher_sends() -> None:
    (body,) = await pushed([change("ip:203.0.113.5")])
    ev = policies(INGEST)["EV-gatewatch-decision"]
    assert ev.findtext("Source") == "request"
    variables = {v.get("name"): v.findtext("JSONPath") for v in ev.iter("Variable")}
    assert variables == {field: f"$.{field}" for field in body}
    assert ev.findtext("VariablePrefix") == "gatewatch.in"
    # ...and every extracted field is validated before anything is cached.
    assert set(validations()) == set(body)


async def test_what_the_pusher_sends_passes_validation() -> None:
    bodies = await pushed(
        [
            change("ip:203.0.113.5", "block", "enforce", "0.9"),
            change("ip:198.51.100.0/24", "challenge", "challenge", "1.0", ttl_ms=1),
            change("ip:2001:db8::/64", "tag", "log", "0.0", detector=""),
            change("consumer:Shop App (EU) v2.1", "allow", "shadow", "1e-05"),
            change("consumer:hmac:0123456789abcdef", "tag", "enforce", "0.5", "bruteforce"),
            change("key:hmac:0123456789abcdef", "block", "enforce", "0.75", ttl_ms=86_400_000),
        ]
    )
    assert [b["ttl_s"] for b in bodies] == [600, 1, 600, 600, 600, 86_400]
    for body in bodies:
        strings = as_apigee_strings(body)
        assert valid(strings), strings
        if isinstance(body["score"], float):  # Java prints 1e-05 as 1.0E-5
            assert valid({**strings, "score": repr(body["score"]).replace("e-05", "E-5")})


@pytest.mark.parametrize(
    "field, bad",
    [
        ("subject", "user:alice"),
        ("subject", "ip:"),
        ("subject", "ip:1.2.3.4\nX-Injected: 1"),
        ("action", "deny"),
        ("action", "BLOCK"),
        ("mode", "monitor"),
        ("score", "high"),
        ("score", "0.9|block"),
        ("ttl_s", "0"),
        ("ttl_s", "-5"),
        ("ttl_s", "1.5"),
        ("ttl_s", "99999999"),
        ("detector", "rate|enforce"),
        ("detector", "x" * 65),
    ],
)
async def test_invalid_decisions_are_refused(field: str, bad: str) -> None:
    (body,) = await pushed([change("ip:203.0.113.5")])
    strings = as_apigee_strings(body)
    assert valid(strings)
    assert not valid({**strings, field: bad})
    missing = dict(strings)
    del missing[field]
    assert not valid(missing)


def test_the_refusal_is_a_400_json_and_non_post_is_a_405() -> None:
    found = policies(INGEST)
    invalid, method = found["RF-gatewatch-invalid"], found["RF-gatewatch-method"]
    assert invalid.findtext(".//StatusCode") == "400"
    assert "error" in payload(invalid, {})
    assert method.findtext(".//StatusCode") == "405"
    assert method.find(".//Headers/Header[@name='Allow']").text == "POST"  # type: ignore[union-attr]
    assert condition_of(ingest_steps(), "RF-gatewatch-method") == 'request.verb != "POST"'


def test_ingest_authenticates_the_bearer_token_before_anything_else() -> None:
    found = policies(INGEST)
    bearer, verify = found["EV-gatewatch-bearer"], found["VA-gatewatch-pusher"]
    header = bearer.find("Header")
    assert header is not None and header.get("name") == "Authorization"
    pattern = header.findtext("Pattern", "")
    (token_var,) = re.findall(r"\{(\w+)\}", pattern)
    assert pattern == "Bearer {" + token_var + "}"  # what the pusher sends: "Bearer <token>"
    api_key = verify.find("APIKey")
    assert api_key is not None
    assert api_key.get("ref") == f"{bearer.findtext('VariablePrefix')}.{token_var}"
    assert verify.get("continueOnError") == "false"  # a bad token stops the request
    names = [n for n, _ in ingest_steps()]
    assert names[:2] == ["EV-gatewatch-bearer", "VA-gatewatch-pusher"]
    assert all(c == "" for n, c in ingest_steps()[:2])


def test_ingest_proxy_has_no_target_and_answers_json() -> None:
    endpoint = xml(INGEST / "proxies" / "default.xml")
    rules = endpoint.findall("RouteRule")
    assert len(rules) == 1 and rules[0].find("TargetEndpoint") is None
    assert not (INGEST / "targets").exists()
    assert xml(INGEST / "gatewatch-decisions.xml").find("TargetEndpoints/TargetEndpoint") is None
    stored = policies(INGEST)["AM-gatewatch-stored"]
    assert stored.findtext(".//StatusCode") == "200"
    answer = {"action": "block", "mode": "enforce", "ttl_s": "600"}
    assert payload(stored, {f"gatewatch.in.{k}": v for k, v in answer.items()}) == {
        "ok": True,
        "action": "block",
        "mode": "enforce",
        "ttl_s": 600,
    }
    response = endpoint.find("PostFlow/Response")
    assert response is not None
    assert [n for n, _ in steps(response)] == ["AM-gatewatch-stored"]


# ---------------------------------------------------------------------------------------------
# 2. One cache, one key: where the proxy writes is where the shared flow reads


def cache_key(policy: ET.Element) -> tuple[str | None, str | None, str | None, list[Any]]:
    fragments = [(f.get("ref"), (f.text or "").strip()) for f in policy.iter("KeyFragment")]
    return (
        policy.findtext("CacheResource"),
        policy.findtext("Scope"),
        policy.findtext("CacheKey/Prefix"),
        fragments,
    )


def test_populate_invalidate_and_every_lookup_use_the_same_cache_and_key() -> None:
    writers = {**of_type(INGEST, "PopulateCache"), **of_type(INGEST, "InvalidateCache")}
    lookups = of_type(ENFORCE, "LookupCache")
    assert sorted(writers) == ["IC-gatewatch-decision", "PC-gatewatch-decision"]
    assert sorted(lookups) == sorted(f"LC-gatewatch-{slot}" for slot in SLOTS)
    assert of_type(ENFORCE, "PopulateCache") == {} and of_type(INGEST, "LookupCache") == {}

    expected = ("gatewatch-decisions", "Global", "gatewatch", [("gatewatch.in.subject", "")])
    for name, policy in writers.items():
        assert cache_key(policy) == expected, name
    for slot in SLOTS:
        policy = lookups[f"LC-gatewatch-{slot}"]
        resource, scope, prefix, fragments = cache_key(policy)
        # Same cache and prefix; the one fragment is the subject, built for this slot.
        assert (resource, scope, prefix) == expected[:3]
        assert fragments == [(f"gatewatch.subject.{slot}", "")]
        assert policy.findtext("AssignTo") == f"gatewatch.cached.{slot}"


def test_populate_caches_the_value_for_the_decisions_ttl() -> None:
    populate = policies(INGEST)["PC-gatewatch-decision"]
    value = policies(INGEST)["AM-gatewatch-cache-value"]
    assert populate.findtext("Source") == value.findtext("AssignVariable/Name")
    timeout = populate.find("ExpirySettings/TimeoutInSeconds")
    assert timeout is not None and timeout.get("ref") == "gatewatch.in.ttl_s"
    # Old entry dropped first, value built before it is stored; allow only clears, except an
    # operator's allow override, which is stored (it must beat the other subjects' decisions).
    names = [n for n, _ in ingest_steps()]
    assert names.index("RF-gatewatch-invalid") < names.index("IC-gatewatch-decision")
    assert names.index("IC-gatewatch-decision") < names.index("AM-gatewatch-cache-value")
    assert names.index("AM-gatewatch-cache-value") < names.index("PC-gatewatch-decision")
    assert condition_of(ingest_steps(), "IC-gatewatch-decision") == ""
    for name in ("AM-gatewatch-cache-value", "PC-gatewatch-decision"):
        assert condition_of(ingest_steps(), name) == (
            '(gatewatch.in.action != "allow") or (gatewatch.in.detector = "override")'
        )


def cache_value(body: dict[str, Any], timestamp_ms: int = NOW_MS) -> str:
    """What AM-gatewatch-cache-value renders for the body the pusher sent."""
    template = policies(INGEST)["AM-gatewatch-cache-value"].findtext("AssignVariable/Template")
    assert template
    variables = {f"gatewatch.in.{k}": v for k, v in as_apigee_strings(body).items()}
    variables["system.timestamp"] = str(timestamp_ms)
    assert set(TEMPLATE_VAR.findall(template)) <= set(variables)
    return render(template, variables)


@needs_node
async def test_the_value_written_is_the_value_the_enforcer_reads() -> None:
    bodies = await pushed(
        [
            change("ip:203.0.113.5", "block", "enforce", "0.93", "bruteforce", ttl_ms=600_000),
            change("consumer:shop", "challenge", "enforce", "0.7", "rate", ttl_ms=30_000),
            change("key:hmac:0123456789abcdef", "tag", "challenge", "0.5", "", ttl_ms=5_000),
            change("ip:198.51.100.0/24", "block", "shadow", "1.0", "rate", ttl_ms=5_000),
        ]
    )
    slots = ("ip", "consumer", "key", "net")
    cases = [
        {
            f"gatewatch.cached.{slot}": cache_value(body),
            f"gatewatch.subject.{slot}": body["subject"],
        }
        for slot, body in zip(slots, bodies, strict=True)
    ]
    verdicts = run_js("gatewatch-verdict.js", cases, now_ms=NOW_MS + 2_000)
    got = [
        (
            v["gatewatch.action"],
            v["gatewatch.enforced"],
            v["gatewatch.mode"],
            v["gatewatch.subject"],
            v["gatewatch.score"],
            v["gatewatch.detector"],
            v["gatewatch.retry_after"],
        )
        for v in verdicts
    ]
    assert got == [
        ("block", "block", "enforce", "ip:203.0.113.5", "0.93", "bruteforce", "60"),
        ("challenge", "challenge", "enforce", "consumer:shop", "0.7", "rate", "28"),
        ("tag", "tag", "challenge", "key:hmac:0123456789abcdef", "0.5", "", "3"),
        ("block", "allow", "shadow", "ip:198.51.100.0/24", "1.0", "rate", "3"),
    ]


# ---------------------------------------------------------------------------------------------
# 3. The verdict: strongest action wins, the mode caps it, anything unreadable is ignored


def cached(
    action: str,
    mode: str,
    score: str = "0.8",
    stored_ms: int = NOW_MS,
    ttl_s: int = 600,
    detector: str = "rate",
) -> str:
    return f"gw1|{action}|{mode}|{score}|{stored_ms}|{ttl_s}|{detector}"


@needs_node
def test_strongest_action_across_subjects_wins_and_the_mode_caps_it() -> None:
    subjects = {f"gatewatch.subject.{s}": f"{s}-subject" for s in SLOTS}
    cases: list[tuple[dict[str, str], tuple[str, str, str] | None]] = [
        ({}, None),
        (
            {"ip": cached("tag", "enforce"), "consumer": cached("block", "enforce")},
            ("block", "block", "consumer-subject"),
        ),
        (
            {"net": cached("block", "enforce"), "key": cached("challenge", "enforce")},
            ("block", "block", "net-subject"),
        ),
        # challenge mode never goes further than a 429
        ({"ip": cached("block", "challenge")}, ("block", "challenge", "ip-subject")),
        # shadow and log only record what would happen
        ({"ip": cached("block", "shadow")}, ("block", "allow", "ip-subject")),
        ({"ip": cached("challenge", "log")}, ("challenge", "allow", "ip-subject")),
        # what is applied ranks first: an enforced tag beats a shadowed block
        (
            {"consumer": cached("block", "shadow"), "ip": cached("tag", "enforce")},
            ("tag", "tag", "ip-subject"),
        ),
        # a tie goes to the most specific subject
        (
            {"net": cached("challenge", "enforce"), "key": cached("challenge", "enforce")},
            ("challenge", "challenge", "key-subject"),
        ),
        # unreadable entries are ignored (fail open), readable ones still count
        (
            {
                "consumer": "block",
                "key": "gw2|block|enforce|1|0|60|x",
                "ip": cached("kill", "enforce"),
                "net": cached("block", "always"),
            },
            None,
        ),
        (
            {"consumer": "garbage", "ip": cached("challenge", "enforce")},
            ("challenge", "challenge", "ip-subject"),
        ),
        ({"ip": cached("allow", "enforce")}, ("allow", "allow", "ip-subject")),
    ]
    runs = run_js(
        "gatewatch-verdict.js",
        [
            {**subjects, **{f"gatewatch.cached.{s}": v for s, v in found.items()}}
            for found, _ in cases
        ],
    )
    for (found, expected), out in zip(cases, runs, strict=True):
        got = (
            (out["gatewatch.action"], out["gatewatch.enforced"], out["gatewatch.subject"])
            if out
            else None
        )
        assert got == expected, found


@needs_node
def test_mode_override_and_retry_after() -> None:
    subjects = {f"gatewatch.subject.{s}": f"{s}-subject" for s in SLOTS}
    runs = run_js(
        "gatewatch-verdict.js",
        [
            # a route in shadow mode: nothing enforced even for an enforce decision
            {
                **subjects,
                "gatewatch.cached.ip": cached("block", "enforce"),
                "gatewatch.mode_override": "shadow",
            },
            # a route in enforce mode: a decision made in shadow mode is applied
            {
                **subjects,
                "gatewatch.cached.ip": cached("block", "shadow"),
                "gatewatch.mode_override": "enforce",
            },
            # an unknown override is ignored
            {
                **subjects,
                "gatewatch.cached.ip": cached("block", "enforce"),
                "gatewatch.mode_override": "bogus",
            },
            # Retry-After: seconds left, rounded up, at least 1, at most retry_after_max
            {
                **subjects,
                "gatewatch.cached.ip": cached(
                    "challenge", "enforce", ttl_s=10, stored_ms=NOW_MS - 500
                ),
            },
            {
                **subjects,
                "gatewatch.cached.ip": cached(
                    "challenge", "enforce", ttl_s=10, stored_ms=NOW_MS - 60_000
                ),
            },
            {**subjects, "gatewatch.cached.ip": cached("challenge", "enforce", ttl_s=86_400)},
        ],
    )
    assert [(r["gatewatch.enforced"], r["gatewatch.mode"]) for r in runs[:3]] == [
        ("allow", "shadow"),
        ("block", "enforce"),
        ("block", "enforce"),
    ]
    assert js_properties("gatewatch-verdict.js") == {"retry_after_max": "60"}
    assert [r["gatewatch.retry_after"] for r in runs[3:]] == ["10", "1", "60"]


@needs_node
def test_the_flow_reads_what_the_verdict_sets() -> None:
    flow = {"gatewatch.cached.ip": cached("block", "enforce"), "gatewatch.subject.ip": "ip:1.2.3.4"}
    (out,) = run_js("gatewatch-verdict.js", [flow])
    referenced: set[str] = set()
    for name, cond in enforce_steps():
        if name.startswith(("RF-", "AM-gatewatch-tag")):
            referenced |= set(re.findall(r"\b(gatewatch\.[a-z_.]+)\s*=", cond))
    for name in ("RF-gatewatch-block", "RF-gatewatch-challenge", "AM-gatewatch-tag"):
        text = ET.tostring(policies(ENFORCE)[name], encoding="unicode")
        referenced |= set(re.findall(r"[{@](gatewatch\.[a-z_.]+)[}#]", text))
    assert referenced == {
        "gatewatch.enforced",
        "gatewatch.mode",
        "gatewatch.retry_after",
        "gatewatch.score",
        "gatewatch.detector",
    }
    assert referenced <= set(out)


# ---------------------------------------------------------------------------------------------
# 4. The enforcement flow: order, conditions, responses, fail-open


def test_enforcement_order() -> None:
    names = [n for n, _ in enforce_steps()]
    assert names == [
        "AM-gatewatch-strip-headers",
        "KVM-gatewatch-redaction-key",
        "JS-gatewatch-subjects",
        *(f"LC-gatewatch-{slot}" for slot in SLOTS),
        "JS-gatewatch-verdict",
        # strongest first: a RaiseFault ends the flow, so a block is never downgraded
        "RF-gatewatch-block",
        "RF-gatewatch-challenge",
        "AM-gatewatch-tag",
    ]
    conds = dict(enforce_steps())
    for slot in SLOTS:
        assert conds[f"LC-gatewatch-{slot}"] == f"gatewatch.subject.{slot} != null"
    assert all(
        f"gatewatch.cached.{slot} != null" in conds["JS-gatewatch-verdict"] for slot in SLOTS
    )


def terms(condition: str) -> set[str]:
    return set(re.findall(r'gatewatch\.\w+ = "\w+"', condition))


def test_conditions_reference_the_rollout_mode() -> None:
    conds = dict(enforce_steps())
    # Only enforce mode blocks; challenge mode at most challenges (or tags); shadow/log never act.
    assert terms(conds["RF-gatewatch-block"]) == {
        'gatewatch.enforced = "block"',
        'gatewatch.mode = "enforce"',
    }
    assert " or " not in conds["RF-gatewatch-block"]
    for name, action in (("RF-gatewatch-challenge", "challenge"), ("AM-gatewatch-tag", "tag")):
        assert terms(conds[name]) == {
            f'gatewatch.enforced = "{action}"',
            'gatewatch.mode = "enforce"',
            'gatewatch.mode = "challenge"',
        }, name
        assert conds[name].startswith(f'(gatewatch.enforced = "{action}") and (')
    for name, cond in enforce_steps():
        assert "shadow" not in cond and '"log"' not in cond, name


def test_block_is_a_403_and_challenge_a_429_with_retry_after() -> None:
    found = policies(ENFORCE)
    block, challenge = found["RF-gatewatch-block"], found["RF-gatewatch-challenge"]
    assert block.findtext(".//StatusCode") == "403"
    assert payload(block, {}) == {"message": "Forbidden"}
    assert challenge.findtext(".//StatusCode") == "429"
    retry = challenge.find(".//Headers/Header[@name='Retry-After']")
    assert retry is not None and retry.text == "{gatewatch.retry_after}"
    assert payload(challenge, {"gatewatch.retry_after": "17"}) == {
        "message": "Too Many Requests",
        "retry_after": 17,
    }


def test_tag_forwards_score_and_reason_and_clients_cannot_forge_them() -> None:
    found = policies(ENFORCE)
    tag = {h.get("name"): h.text for h in found["AM-gatewatch-tag"].iter("Header")}
    assert tag == {"X-Risk-Score": "{gatewatch.score}", "X-Risk-Reason": "{gatewatch.detector}"}
    stripped = {h.get("name") for h in found["AM-gatewatch-strip-headers"].iter("Header")}
    assert stripped == set(tag)
    assert found["AM-gatewatch-strip-headers"].find("Remove") is not None
    assert dict(enforce_steps())["AM-gatewatch-strip-headers"] == ""  # always, before any tag


def test_fail_open() -> None:
    """Nothing before the verdict can fail a request; without a verdict nothing is enforced."""
    for name, policy in policies(ENFORCE).items():
        if policy.tag == "RaiseFault":
            continue
        assert policy.get("continueOnError") == "true", name
    for name, policy in of_type(ENFORCE, "LookupCache").items():
        assert policy.findtext("CacheLookupTimeoutInSeconds") == "1", name
    conds = dict(enforce_steps())
    for name in ("RF-gatewatch-block", "RF-gatewatch-challenge", "AM-gatewatch-tag"):
        # each needs gatewatch.enforced, which only the verdict script sets, after a cache hit
        assert "gatewatch.enforced = " in conds[name]


# ---------------------------------------------------------------------------------------------
# 5. Subjects: the shared flow looks up the keys the pipeline writes


def apigee_record(**variables: str) -> dict[str, str]:
    record = {
        "client.ip": "203.0.113.24",
        "request.verb": "GET",
        "request.path": "/v1/orders/42",
        "message.status.code": "200",
        "client.received.start.timestamp": str(NOW_MS),
    }
    record.update(variables)
    return {k: v for k, v in record.items() if v is not None}


def python_range(ip_subject: str) -> str:
    addr = ipaddress.ip_address(ip_subject.removeprefix("ip:").split("%")[0])
    prefix = 24 if addr.version == 4 else 64
    return f"ip:{ipaddress.ip_network((addr, prefix), strict=False)}"


SUBJECT_CASES = [
    # (flow variables at enforcement time; the same call's logged variables if different)
    {"developer.app.name": "shop-app", "client_id": "k-123"},
    {"developer.app.name": "  Shop App (EU)  ", "client_id": "k-123"},
    {"developer.app.name": "x" * 300, "client_id": "k-123"},
    {"client_id": "k-123"},  # no app name: the consumer is the key's fingerprint
    {"client_id": "clé-ünicode-🔑"},
    {},
    {"request.querystring": "q=1&apikey=from-query"},
    {"request.querystring": "Token=a%2Bb+c&key=second"},
    {"request.querystring": "key=&key=dup&code=x%zz"},
    {"request.querystring": "a=1&" + "&".join(f"p{i}=v" for i in range(120)) + "&apikey=late"},
    {"request.querystring": "apikey=%ff%fe"},
    {"request.querystring": "apikey=%E2%82%AC+sign"},
    {"request.querystring": "apikey=%E0%80%ED%A0%80%F4%90%80%80%E2%82"},
    {"request.querystring": "ключ=1&apikey=é%C3%A9%C3"},
    {"request.querystring": "x=%&apikey=100%25+%2"},
    {"client.ip": "2001:DB8:0:0:0:0:0:1"},
    {"client.ip": "2001:db8:0:0:1:0:0:1"},
    {"client.ip": "2001:0:0:1:0:0:0:1"},
    {"client.ip": "::ffff:192.0.2.1"},
    {"client.ip": "::"},
    {"client.ip": "fe80::1%eth0"},
    {"client.ip": "1:2:3:4:5:6:7::"},
    {"client.ip": "::2:3:4:5:6:7:8"},
    {"client.ip": "198.51.100.7, 10.0.0.1"},
    {"client.ip": "", "proxy.client.ip": "192.0.2.9, 10.1.1.1"},
    {"client.ip": "not-an-ip", "proxy.client.ip": "2001:db8::7"},
    {"client.ip": "010.1.1.1", "proxy.client.ip": "192.0.2.10"},
    {"client.ip": "1.2.3.256", "proxy.client.ip": "192.0.2.11"},
    {"client.ip": "1:2:3:4:5:6:7:8:9", "proxy.client.ip": "192.0.2.12"},
    {"client.ip": "1::2::3", "proxy.client.ip": "192.0.2.13"},
    {"client.ip": ":1:2:3:4:5:6:7", "proxy.client.ip": "192.0.2.14"},
    {"client.ip": "12345::1", "proxy.client.ip": "192.0.2.15"},
    {"client.ip": "fe80::1%", "proxy.client.ip": "192.0.2.16"},
]


@needs_node
@pytest.mark.parametrize("redaction_key", [KEY, "k" * 100])  # > 64 bytes: HMAC hashes the key
def test_subjects_are_the_ones_the_pipeline_derives(redaction_key: str) -> None:
    kvm = policies(ENFORCE)["KVM-gatewatch-redaction-key"].find("Get")
    assert kvm is not None
    key_var = kvm.get("assignTo", "")
    parser = ApigeeParser(Redactor(redaction_key.encode()))
    flows = [{**apigee_record(**case), key_var: redaction_key} for case in SUBJECT_CASES]
    runs = run_js("gatewatch-subjects.js", flows)
    for case, out in zip(SUBJECT_CASES, runs, strict=True):
        event = parser.parse_record(apigee_record(**case))
        expected = {s.partition(":")[0]: s for s in event.subjects()}
        got = {slot: out.get(f"gatewatch.subject.{slot}") for slot in SLOTS}
        assert got["consumer"] == expected.get("consumer"), case
        assert got["key"] == expected.get("key"), case
        assert got["ip"] == expected["ip"], case
        assert got["net"] == python_range(expected["ip"]), case
        assert set(out) <= {f"gatewatch.subject.{slot}" for slot in SLOTS}


@needs_node
def test_in_a_flow_hook_the_key_subject_is_found_before_the_key_is_verified() -> None:
    """At the Pre-proxy flow hook VerifyAPIKey has not run: client_id is unset and the key is only
    the header or query argument the client sent. For a valid key that is the same string, so the
    key subject is the one the pipeline writes from the logged client_id."""
    parser = ApigeeParser(Redactor(KEY.encode()))
    logged = parser.parse_record(apigee_record(**{"developer.app.name": "shop", "client_id": "K1"}))
    at_hook = [
        {"request.header.x-api-key": "K1"},
        {"request.header.apikey": " K1 "},
        {"request.querystring": "apikey=K1"},
    ]
    flows = [{**apigee_record(**c), "private.gatewatch.redaction_key": KEY} for c in at_hook]
    runs = run_js("gatewatch-subjects.js", flows)
    for out in runs:
        assert out["gatewatch.subject.key"] == f"key:{logged.credential}"
        assert "gatewatch.subject.consumer" not in out  # the app is only known after VerifyAPIKey


@needs_node
def test_without_the_redaction_key_only_key_subjects_are_skipped() -> None:
    record = apigee_record(**{"client_id": "k-1", "developer.app.name": "shop"})
    (out,) = run_js("gatewatch-subjects.js", [record])
    assert out == {
        "gatewatch.subject.consumer": "consumer:shop",
        "gatewatch.subject.ip": "ip:203.0.113.24",
        "gatewatch.subject.net": "ip:203.0.113.0/24",
    }
    (out,) = run_js("gatewatch-subjects.js", [apigee_record(client_id="k-1")])
    assert "gatewatch.subject.consumer" not in out and "gatewatch.subject.key" not in out


@needs_node
def test_the_ingest_proxy_itself_is_never_enforced() -> None:
    ingest_name = xml(INGEST / "gatewatch-decisions.xml").get("name")
    assert js_properties("gatewatch-subjects.js")["skip_proxies"] == ingest_name
    (skipped, other) = run_js(
        "gatewatch-subjects.js",
        [apigee_record(**{"apiproxy.name": ingest_name}), apigee_record(**{"apiproxy.name": "x"})],
    )
    assert skipped == {} and other["gatewatch.subject.ip"] == "ip:203.0.113.24"


# ---------------------------------------------------------------------------------------------
# 6. Bundle hygiene the linter cannot see across files


@pytest.mark.parametrize("bundle", [INGEST, ENFORCE], ids=lambda b: b.parent.name)
def test_flows_attach_policies_that_exist(bundle: Path) -> None:
    manifest = xml(next(p for p in bundle.glob("*.xml")))
    listed = [p.text for p in manifest.findall("Policies/Policy")]
    on_disk = policies(bundle)
    assert sorted(listed) == sorted(on_disk)  # type: ignore[type-var]
    for name, policy in on_disk.items():
        assert policy.get("name") == name
        assert policy.findtext("DisplayName") == name
    flow_files = [*bundle.glob("proxies/*.xml"), *bundle.glob("sharedflows/*.xml")]
    attached = {n for f in flow_files for n, _ in steps(xml(f))}
    assert attached == set(on_disk)  # every step names a policy, every policy is attached
    resources = [r.text or "" for r in manifest.findall("Resources/Resource")]
    for url in resources:
        kind, _, name = url.partition("://")
        assert (bundle / "resources" / kind / name).is_file(), url
    for policy in of_type(bundle, "Javascript").values():
        assert policy.findtext("ResourceURL") in resources


def test_lint_directives_only_silence_what_is_explained() -> None:
    """BN003 wants LookupCache and PopulateCache in one bundle (here they are two, by design: the
    tests above check they agree); CC004 counts four flat null checks as complex. Nothing else
    is silenced."""
    found: list[tuple[str, str]] = []
    for path in sorted(BUNDLES.rglob("*.xml")):
        for rules in re.findall(r"<!--\s*apigeelint\s+disable\s?=(.+?)-->", path.read_text()):
            found.append((path.relative_to(BUNDLES).as_posix(), rules.strip()))
    lookups = {
        f"gatewatch-enforce/sharedflowbundle/policies/LC-gatewatch-{slot}.xml" for slot in SLOTS
    }
    assert sorted(found) == sorted(
        [(path, "BN003") for path in lookups]
        + [("gatewatch-enforce/sharedflowbundle/sharedflows/default.xml", "CC004")]
    )


# ---------------------------------------------------------------------------------------------
# Operator overrides: pushed as entries with detector "override" (sinks/apigee_overrides.py)


@needs_node
async def test_overrides_pushed_are_stored_and_an_allow_override_wins() -> None:
    from pipeline.operator.overrides import Override
    from sinks.apigee_overrides import _change

    allow = Override(subject="consumer:partner", kind="allow", actor="a", created_at=NOW_MS,
                     expires_at=NOW_MS + 3_600_000)  # fmt: skip
    deny = Override(subject="ip:203.0.113.9", kind="deny", actor="a", created_at=NOW_MS)
    bodies = await pushed([_change(allow, NOW_MS), _change(deny, NOW_MS)])
    assert [(b["action"], b["detector"], b["mode"]) for b in bodies] == [
        ("allow", "override", "enforce"), ("block", "override", "enforce")
    ]
    assert bodies[0]["ttl_s"] == 3600 and bodies[1]["ttl_s"] == 9_999_999  # no expiry: longest
    for body in bodies:
        assert valid(as_apigee_strings(body))
    allow_value, deny_value = (cache_value(b) for b in bodies)
    subjects = {f"gatewatch.subject.{s}": f"{s}-subject" for s in SLOTS}
    cases = [
        # The allow override on the consumer beats a block on its address and a deny on its range.
        {**subjects, "gatewatch.cached.consumer": allow_value,
         "gatewatch.cached.ip": cached("block", "enforce"), "gatewatch.cached.net": deny_value},
        # A deny override blocks on its own, with no decision.
        {**subjects, "gatewatch.cached.ip": deny_value},
        # A decision's plain allow is not an override: the block still wins.
        {**subjects, "gatewatch.cached.consumer": cached("allow", "enforce"),
         "gatewatch.cached.ip": cached("block", "enforce")},
    ]  # fmt: skip
    runs = run_js("gatewatch-verdict.js", cases)
    got = [
        (r["gatewatch.action"], r["gatewatch.enforced"], r["gatewatch.subject"],
         r.get("gatewatch.override"))
        for r in runs
    ]  # fmt: skip
    assert got == [
        ("allow", "allow", "consumer-subject", "allow"),
        ("block", "block", "ip-subject", "deny"),
        ("block", "block", "ip-subject", None),
    ]

