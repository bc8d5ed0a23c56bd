"""Acceptance: the OWASP CRS regression tests whose payload is in the query string, replayed as the
Kong log entries Kong would write, through the real parser, into a fresh `InjectionDetector`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.evaluation.crs import (
    CORE,
    CrsCase,
    crs_report,
    extract_cases,
    extract_moved_cases,
    held_out,
    kong_entry,
    kong_querystring,
    load_cases,
    reconcile,
)
from pipeline.ingest.kong import KongParser
from pipeline.ingest.redaction import Redactor

# Negative tests ("this rule must not fire") that the detector flags, each reviewed. CRS negatives
# are per rule: these payloads are caught by another CRS rule at paranoia level 1 (ModSecurity with
# the Debian CRS 3.3 blocks 934110/7 with 931100 and 941140/14 with 941170), or target a cloud
# metadata service. Any flagged negative not listed here fails the test below.
ATTACKS_AMONG_NEGATIVES = {
    (934110, 7): "http://169.254.169.254/latest: the AWS metadata service's root",
    (934110, 8): "http://metadata.google.internal: the GCP metadata service",
    (941110, 10): "script … alert(1); … /script in a parameter name, its '<' sent as invalid bytes",
    (941140, 14): "url(javascript:alert(1)): a script URL",
}

# Negative tests whose request is byte for byte an attack test of another rule (`reconcile`).
NEGATIVES_ALSO_ATTACKS = 16


@pytest.fixture(scope="module")
def report() -> dict:
    return crs_report()


def test_the_pinned_corpus_is_complete() -> None:
    cases = load_cases()
    observable = [c for c in cases if c.observable]
    assert len(observable) == 1347  # every test with its payload in the query string
    assert sum(not c.observable for c in cases) == 2872  # payload only in a POST body
    assert sum(c.polarity == "attack" and c.family in CORE for c in observable) == 509


def test_recall_over_sqli_xss_lfi_rce_meets_the_bar(report: dict) -> None:
    assert report["core_attacks"] == 509
    assert report["combined_recall"] >= 0.90
    for family in ("942 sqli", "941 xss", "932 rce"):
        assert report["categories"][family]["recall"] >= 0.85, family
    assert report["categories"]["930 lfi"]["recall"] >= 0.6  # 6 of its 19 hide in ?code=


def test_the_held_out_half_is_close_to_the_whole(report: dict) -> None:
    halves = report["halves"]
    assert halves["dev"]["core_attacks"] + halves["held_out"]["core_attacks"] == 509
    assert halves["held_out"]["combined_recall"] >= 0.85


def test_negatives_flagged_are_reviewed_and_within_the_bar(report: dict) -> None:
    flagged = {(n["rule_id"], n["test_id"]) for n in report["flagged_negatives"]}
    unexplained = flagged - ATTACKS_AMONG_NEGATIVES.keys()
    assert not unexplained, f"negative tests flagged: {sorted(unexplained)}"
    assert report["negatives"] == 301 - NEGATIVES_ALSO_ATTACKS
    assert report["negative_rate"] <= 0.02  # the bar counts every flag, reviewed or not


def test_a_negative_that_is_another_rules_attack_is_in_neither_figure(report: dict) -> None:
    cases = {(c.rule_id, c.test_id): c for c in load_cases()}
    # "time curl coreruleset.org" must not fire 932260 and must fire 932236 (paranoia level 2)
    assert cases[932260, 14].polarity == "both"
    assert cases[932236, 41].polarity == "attack"
    assert cases[932260, 13].polarity == "negative"  # "time warner": no attack test sends it
    assert sum(c.polarity == "both" for c in cases.values()) == NEGATIVES_ALSO_ATTACKS
    assert report["negatives_also_attacks"] == NEGATIVES_ALSO_ATTACKS
    # Every flag counted, these included, stays well under the previous 14 of 301.
    flags = len(report["flagged_negatives"]) + len(report["flagged_also_attacks"])
    assert flags / 301 <= 0.035


def test_reconciling_needs_the_same_request_not_only_the_same_payload() -> None:
    uri = "/get?sessionid=abc123"
    attack = CrsCase(943110, 31, "attack", True, uri=uri, headers={"referer": "https://evil.test/"})
    same = CrsCase(943110, 30, "negative", True, uri=uri, headers={"referer": "https://evil.test/"})
    other = CrsCase(943110, 32, "negative", True, uri=uri, headers={"referer": "https://app.test/"})
    renamed = CrsCase(932260, 1, "negative", True, uri="/get?932260-1=bash%20-c%20x")
    named = CrsCase(932236, 39, "attack", True, uri="/get?932236-1=bash+-c+x")
    body = CrsCase(932230, 3, "negative", False)
    out = reconcile([attack, same, other, renamed, named, body])
    assert [c.polarity for c in out] == ["attack", "both", "negative", "both", "attack", "negative"]


def test_body_only_tests_are_reported_not_observable(report: dict) -> None:
    assert report["not_observable"] == 2872
    assert report["rejected_by_parser"] == 0
    assert report["payload_redacted"] > 0  # ?code= and friends are fingerprinted by ingest


def test_the_split_is_by_rule_and_stable() -> None:
    cases = [c for c in load_cases() if c.observable]
    by_rule: dict[int, set[bool]] = {}
    for case in cases:
        by_rule.setdefault(case.rule_id, set()).add(held_out(case))
    assert all(len(sides) == 1 for sides in by_rule.values())
    assert 0.3 < sum(held_out(c) for c in cases) / len(cases) < 0.7


def test_a_case_becomes_the_event_kong_would_log() -> None:
    case = CrsCase(942100, 1, "attack", True, "GET", "/get?id=1%27+OR+1%3D1&a=1&a=2&flag",
                   {"user-agent": "OWASP CRS test agent", "host": "localhost"})  # fmt: skip
    entry = kong_entry(case)
    assert entry["request"]["uri"] == case.uri  # raw, as nginx's $request_uri
    assert entry["request"]["querystring"] == {"id": "1' OR 1=1", "a": ["1", "2"], "flag": True}
    event = KongParser(Redactor(b"k")).parse_entry(entry)
    assert event.path == "/get"
    assert event.query == {"id": "1' OR 1=1", "a": "1", "flag": ""}
    assert event.user_agent == "OWASP CRS test agent"


def test_query_decoding_follows_nginx() -> None:
    assert kong_querystring("a=%41%zz+b&=x&b") == {"a": "A%zz b", "b": True}
    assert kong_querystring("") == {}


def test_extraction_reads_a_crs_data_folder(tmp_path: Path) -> None:
    rule = tmp_path / "regression-tests" / "REQUEST-942-APPLICATION-ATTACK-SQLI"
    rule.mkdir(parents=True)
    (rule / "942999.yaml").write_text(
        """
rule_id: 942999
tests:
  - test_id: 1
    stages:
      - input:
          headers: {User-Agent: "agent", Host: localhost}
          method: GET
          uri: "/get?var=1%27%20or%201%3D1"
        output: {log: {expect_ids: [942999]}}
  - test_id: 2
    stages:
      - input:
          method: POST
          uri: "/post"
          data: "var=1' or 1=1"
        output: {log: {expect_ids: [942999]}}
""",
        encoding="utf-8",
    )
    (tmp_path / "tests_index.csv").write_text(
        "file,category,rule_id,test_id,polarity,uri,has_body\n"
        "REQUEST-942-APPLICATION-ATTACK-SQLI/942999.yaml,REQUEST-942,942999,1,attack,"
        "/get?var=1%27%20or%201%3D1,0\n"
        "REQUEST-942-APPLICATION-ATTACK-SQLI/942999.yaml,REQUEST-942,942999,2,attack,/post,1\n",
        encoding="utf-8",
    )
    query_case, body_case = extract_cases(tmp_path)
    assert query_case == CrsCase(942999, 1, "attack", True, "GET", "/get?var=1%27%20or%201%3D1",
                                 {"user-agent": "agent", "host": "localhost"})  # fmt: skip
    assert body_case == CrsCase(942999, 2, "attack", False)
    assert crs_report([query_case, body_case])["combined_recall"] == 1.0


def test_a_folder_without_the_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tests_index\.csv"):
        extract_cases(tmp_path)


def test_form_bodies_are_moved_into_the_query_string_and_others_are_not(tmp_path: Path) -> None:
    rule = tmp_path / "regression-tests" / "REQUEST-932-APPLICATION-ATTACK-RCE"
    rule.mkdir(parents=True)
    (rule / "932999.yaml").write_text(
        """
rule_id: 932999
tests:
  - test_id: 1
    stages:
      - input:
          headers: {Host: localhost, Content-Type: application/x-www-form-urlencoded}
          method: POST
          uri: /post
          data: "cmd=;cat /etc/passwd #x&name=Zoë"
        output: {log: {expect_ids: [932999]}}
  - test_id: 2
    stages:
      - input:
          headers: {Host: localhost, Content-Type: application/json}
          method: POST
          uri: /post
          data: '{"cmd": ";cat /etc/passwd"}'
        output: {log: {expect_ids: [932999]}}
""",
        encoding="utf-8",
    )
    (tmp_path / "tests_index.csv").write_text(
        "file,category,rule_id,test_id,polarity,uri,has_body\n"
        "REQUEST-932-APPLICATION-ATTACK-RCE/932999.yaml,REQUEST-932,932999,1,attack,/post,1\n"
        "REQUEST-932-APPLICATION-ATTACK-RCE/932999.yaml,REQUEST-932,932999,2,attack,/post,1\n",
        encoding="utf-8",
    )
    form, json_body = extract_moved_cases(tmp_path)
    assert form.moved and form.observable and form.method == "POST"
    assert form.uri == "/post?cmd=;cat%20/etc/passwd%20%23x&name=Zo%C3%AB"
    assert "content-type" not in form.headers
    assert kong_querystring(form.uri.partition("?")[2]) == {
        "cmd": ";cat /etc/passwd #x",
        "name": "Zoë",
    }
    assert json_body == CrsCase(932999, 2, "attack", False)  # not a form: stays not observable
    assert crs_report([form, json_body])["combined_recall"] == 1.0
