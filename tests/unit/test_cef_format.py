"""CEF escaping and truncation, checked against liblognorm's `%cef%` parser (the one rsyslog's
mmnormalize uses) modelled in tests/liblognorm_cef.py: every string must come back exactly as it
went in, except control characters CEF cannot carry. tests/integration/test_cef_sink.py checks
the same against the real rsyslogd."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.alerts import AlertReason
from sinks.cef import ELLIPSIS, CefFormatter, escape_header, escape_value
from tests.alert_samples import HOSTILE, alert, operator_alert
from tests.liblognorm_cef import CONTROL, carried, cef_part, lognorm_cef

BIG = CefFormatter(hostname="test-host", max_bytes=1 << 20)


def test_a_typical_alert() -> None:
    record = BIG.record(alert())
    assert record.startswith(b"<131>1 2024-05-01T10:00:00.250Z test-host gatewatch - decision - ")
    parsed = lognorm_cef(cef_part(record))
    assert parsed["SignatureID"] == "credential_stuffing" and parsed["Severity"] == "8"
    assert parsed["Name"] == "would block ip:203.0.113.9: credential stuffing"
    assert parsed["Extensions"] == {
        "rt": "1714557600250",
        "start": "1714557600000",
        "externalId": "gw-test-000000",
        "cat": "decision",
        "act": "would-block",
        "cs2Label": "mode",
        "cs2": "shadow",
        "cfp1Label": "score",
        "cfp1": "0.93",
        "src": "203.0.113.9",
        "cs1Label": "subject",
        "cs1": "ip:203.0.113.9",
        "cs4Label": "attack",
        "cs4": "T1110.004,T1110",
        "request": "/v1/login",
        "destinationServiceName": "shop",
        "deviceExternalId": "kong",
        "dvchost": "kong-eu-1",
        "cs6Label": "tenant",
        "cs6": "default",
        "flexString1Label": "detector",
        "flexString1": "bruteforce",
        "deviceCustomDate1Label": "expires",
        "deviceCustomDate1": "1714557900000",
        "cfp2Label": "auth_failures",
        "cfp2": "42",
        "cfp3Label": "baseline",
        "cfp3": "1.5",
        "cfp4Label": "limit",
        "cfp4": "20",
        "cs3Label": "reasons",
        "cs3": "credential_stuffing,flood",
        "cnt": "3",
        "cs5Label": "evidence",
        "cs5": "req-1,req-2,req-3",
        "msg": "bruteforce: 42 failed logins in 60 s; rate: rate 8x baseline",
    }


def test_enforced_ipv6_consumer_and_operator_alerts() -> None:
    enforced = lognorm_cef(cef_part(BIG.record(alert(mode="enforce", enforced=True))))
    assert enforced["Extensions"]["act"] == "block"
    v6 = lognorm_cef(cef_part(BIG.record(alert(subject="ip:2001:db8::7"))))["Extensions"]
    assert v6["c6a2"] == "2001:db8::7" and "src" not in v6
    consumer = alert(subject="consumer:shop-web", scope="consumer")
    assert lognorm_cef(cef_part(BIG.record(consumer)))["Extensions"]["suser"] == "shop-web"
    op = lognorm_cef(cef_part(BIG.record(operator_alert())))
    assert op["SignatureID"] == "override_allow" and op["Severity"] == "1"
    assert op["Extensions"]["suser"] == "alice" and op["Extensions"]["act"] == "override_allow"
    assert BIG.record(operator_alert()).startswith(b"<134>1 ")  # local0.info


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_values_come_back_exactly(text: str) -> None:
    a = alert(
        title=text,
        route=text,
        subject=f"consumer:{text}",
        scope="consumer",
        reasons=[AlertReason(detector="injection", code="sqli", text=text, score=0.9)],
    )
    parsed = lognorm_cef(cef_part(BIG.record(a)))
    ext = parsed["Extensions"]
    header_text = CONTROL.sub("\ufffd", text).replace("\r", " ").replace("\n", " ")
    assert parsed["Name"] == header_text
    assert ext["request"] == ext["suser"] == carried(text)
    assert ext["cs1"] == carried(f"consumer:{text}")
    assert ext["msg"] == carried(f"injection: {text}")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_value_round_trips(text: str) -> None:
    a = alert(
        route=text,
        reasons=[AlertReason(detector="d", code="c", text=text, score=0.5)],
        tenant=text,
    )
    ext = lognorm_cef(cef_part(BIG.record(a)))["Extensions"]
    for key in ("request", "cs6"):
        assert ext.get(key, "") == carried(text)
    assert ext["msg"] == carried(f"d: {text}")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_any_title_round_trips_in_the_header(text: str) -> None:
    parsed = lognorm_cef(cef_part(BIG.record(alert(title=text))))
    cut = text[:511] + ELLIPSIS if len(text) > 512 else text
    expected = CONTROL.sub("\ufffd", cut).replace("\r", " ").replace("\n", " ")
    assert parsed["Name"] == (expected or "-")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=3000), min_size=1, max_size=4),
    st.integers(min_value=480, max_value=9000),
)
def test_a_record_never_exceeds_the_limit_and_always_parses(texts: list[str], limit: int) -> None:
    reasons = [AlertReason(detector="d", code="c", text=t, score=0.5) for t in texts]
    a = alert(title=texts[0], route=texts[-1], reasons=reasons, evidence=texts)
    record = CefFormatter(hostname="h", max_bytes=limit).record(a)
    assert len(record) <= limit
    parsed = lognorm_cef(cef_part(record))
    ext = parsed["Extensions"]
    assert ext["externalId"] == a.id and ext["rt"] == str(a.emit_time)
    full = lognorm_cef(cef_part(BIG.record(a)))["Extensions"]
    for key, value in ext.items():
        cut = value.endswith(ELLIPSIS) and full[key].startswith(value[: -len(ELLIPSIS)])
        assert value == full[key] or cut, key


def test_escaping_rules() -> None:
    assert escape_header("a|b\\c\r\nd\te") == "a\\|b\\\\c  d\ufffde"
    assert escape_value("a=b\\c\r\nd|e\x00") == "a\\=b\\\\c\\r\\nd|e\ufffd"


def test_a_hostname_with_spaces_is_refused() -> None:
    from sinks.base import SinkConfigError

    with pytest.raises(SinkConfigError, match="printable ASCII"):
        CefFormatter(hostname="my host")
