"""ApigeeParser: MessageLogging payloads (flow-variable keys, string values) -> GatewayEvent."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline import envelopes
from pipeline.ingest.apigee import MAX_ATTRIBUTE_CHARS, MAX_ATTRIBUTES, ApigeeParser
from pipeline.ingest.redaction import Redactor
from tests.unit.conftest import REDACTION_KEY

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "apigee"
OK = json.loads((FIXTURES / "messagelogging-200.json").read_text())
FAULT = json.loads((FIXTURES / "messagelogging-401-invalid-key.json").read_text())
CLIENT_ID = OK["client_id"]
TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.sig"
MINIMAL = {
    "client.ip": "192.0.2.1",
    "request.verb": "GET",
    "request.path": "/v1/ping",
    "message.status.code": "204",
}


@pytest.fixture
def apigee(redactor: Redactor) -> ApigeeParser:
    return ApigeeParser(redactor)


def record(base: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A copy of `base` (MINIMAL by default); keyword `x__y` stands for the variable `x.y`."""
    out = copy.deepcopy(base if base is not None else MINIMAL)
    for key, value in changes.items():
        out[key.replace("__", ".")] = value
    return out


def one(parser: ApigeeParser, doc: Any) -> Any:
    result = parser.parse_payload(orjson.dumps(doc))
    assert result.rejects == [], result.rejects
    assert len(result.events) == 1
    return result.events[0]


def reason(parser: ApigeeParser, doc: Any) -> str:
    result = parser.parse_payload(doc if isinstance(doc, bytes) else orjson.dumps(doc))
    assert result.events == []
    assert len(result.rejects) == 1
    assert result.rejects[0].source == "apigee"
    return result.rejects[0].reason


def test_verified_call_maps_every_field(apigee: ApigeeParser, redactor: Redactor) -> None:
    e = one(apigee, OK)
    assert e.request_id == "rrt-0c5f1e8a9b2d3c4e5-b-ea-2741-18092631-1"
    assert e.ts_ms == 1_700_000_000_000  # client.received.start.timestamp: when the request began
    assert (e.gateway, e.node, e.service) == (
        "apigee",
        "e49cd3a9-4b5c-4f6a-9d7e-0123456789ab",
        "gatewatch-example",
    )
    assert e.consumer == "shop-web"
    assert e.credential == redactor.fingerprint(CLIENT_ID)
    assert e.client_ip == "203.0.113.24"
    assert (e.method, e.path, e.route) == (
        "GET",
        "/gatewatch-example/v1/users/12345/orders",
        "/gatewatch-example/v1/users/{id}/orders",
    )
    assert e.query == {"page": "2", "contact": "[email]", "token": redactor.fingerprint(TOKEN)}
    assert e.pii == ["email"]
    assert (e.status, e.upstream_status) == (200, None)
    assert (e.request_size, e.response_size) == (0, 1843)
    # 245 ms end to end, of which the target took 230 - 12 = 218 ms.
    assert (e.latency_ms, e.upstream_latency_ms, e.gateway_latency_ms) == (245.0, 218.0, 27.0)
    assert e.user_agent.startswith("Mozilla/5.0 (X11; Linux x86_64")
    assert e.headers == {
        "accept-language": "en-US,en;q=0.9",
        "referer": "https://shop.example.com/account",
        "origin": "https://shop.example.com",
    }
    names = "accept,accept-language,host,origin,referer,user-agent,x-api-key,x-forwarded-for"
    assert e.header_fingerprint == hashlib.blake2b(names.encode(), digest_size=6).hexdigest()
    assert e.attributes["apiproduct.name"] == "shop-standard"
    assert e.attributes["environment.name"] == "prod"
    assert e.attributes["developer.email"] == redactor.fingerprint("jane.doe@example.com")
    assert e.attributes["request.header.X-Forwarded-For"] == "203.0.113.24"
    assert e.subjects() == ["consumer:shop-web", f"key:{e.credential}", "ip:203.0.113.24"]


def test_fault_before_the_target_uses_message_status_code(apigee: ApigeeParser) -> None:
    e = one(apigee, FAULT)
    assert e.status == 401  # response.status.code is unset: only message.status.code knows
    assert (e.consumer, e.credential) == (None, None)
    assert e.upstream_latency_ms is None  # Apigee answered itself
    assert (e.latency_ms, e.gateway_latency_ms) == (3.0, 3.0)
    assert (e.method, e.route, e.request_size) == ("POST", "/gatewatch-example/v1/login", 52)
    assert e.headers == {"content-type": "application/json"}
    assert e.attributes["fault.name"] == "InvalidApiKey"
    assert e.attributes["error.state"] == "PROXY_REQ_FLOW"
    assert "developer.email" not in e.attributes  # unset variables say nothing


def test_numbers_arrive_as_strings_or_as_numbers(apigee: ApigeeParser) -> None:
    as_strings = one(apigee, OK)
    as_numbers = record(OK)
    for key in (
        "message.status.code",
        "response.header.Content-Length",
        "client.received.start.timestamp",
        "client.sent.end.timestamp",
        "target.sent.start.timestamp",
        "target.received.end.timestamp",
        "system.timestamp",
    ):
        as_numbers[key] = int(as_numbers[key])
    assert one(apigee, as_numbers).model_dump() == as_strings.model_dump()
    assert one(apigee, record(message__status__code=" 503 ")).status == 503


def test_unset_variables_are_empty_strings(apigee: ApigeeParser) -> None:
    unset = {key: "" for key in OK} | MINIMAL
    e = one(apigee, unset)
    assert (e.consumer, e.credential, e.request_id, e.service, e.node) == (None,) * 5
    assert (e.latency_ms, e.upstream_latency_ms, e.request_size, e.response_size) == (
        0.0,
        None,
        0,
        0,
    )
    assert (e.query, e.headers, e.user_agent, e.header_fingerprint) == ({}, {}, "", "")
    assert e.attributes == {}


def test_unknown_variables_become_bounded_attributes(apigee: ApigeeParser) -> None:
    doc = record(
        **{
            "organization.name": "acme",
            "custom.flag": True,
            "custom.count": 7,
            "custom.nested": {"a": [1, 2]},
            "custom.long": "x" * 5000,
        }
    )
    for i in range(100):
        doc[f"custom.k{i:03}"] = str(i)
    e = one(apigee, doc)
    assert len(e.attributes) == MAX_ATTRIBUTES
    assert e.attributes["organization.name"] == "acme"  # known context comes first
    assert e.attributes["custom.flag"] is True and e.attributes["custom.count"] == 7
    assert e.attributes["custom.nested"] == '{"a":[1,2]}'
    assert e.attributes["custom.long"] == "x" * MAX_ATTRIBUTE_CHARS
    assert "custom.k099" not in e.attributes


def test_secret_and_pii_attributes_are_fingerprinted_or_masked(
    apigee: ApigeeParser, redactor: Redactor
) -> None:
    doc = record(
        **{
            "request.header.Authorization": "Bearer abc.def.ghi",
            "request.queryparam.apikey": "k-123",
            "verifyapikey.VA-verify-api-key.client_secret": "s3cr3t",
            "client.email.address": "ops@example.org",
            "custom.note": "call bob@example.net about card 4111 1111 1111 1111",
            "target.url": "https://backend.internal/v1/x?sig=abcdef",
        }
    )
    e = one(apigee, doc)
    a = e.attributes
    assert a["request.header.Authorization"] == redactor.fingerprint("Bearer abc.def.ghi")
    assert a["request.queryparam.apikey"] == redactor.fingerprint("k-123")
    assert a["verifyapikey.VA-verify-api-key.client_secret"] == redactor.fingerprint("s3cr3t")
    assert a["client.email.address"] == redactor.fingerprint("ops@example.org")
    assert a["custom.note"] == "call [email] about card [card]"
    assert a["target.url"] == "https://backend.internal/v1/x"
    dumped = e.model_dump_json()
    for secret in ("abc.def.ghi", "k-123", "s3cr3t", "ops@example.org", "bob@", "abcdef"):
        assert secret not in dumped


def test_nothing_secret_or_personal_survives(apigee: ApigeeParser) -> None:
    for doc in (OK, FAULT, record(OK, developer__app__name="")):
        dumped = one(apigee, doc).model_dump_json()
        for clear in (CLIENT_ID, TOKEN, "jane.doe", "%40example", "session=7f3a9c", "7f3a9c"):
            assert clear not in dumped


def test_consumer_falls_back_to_the_fingerprinted_client_id(
    apigee: ApigeeParser, redactor: Redactor
) -> None:
    e = one(apigee, record(OK, developer__app__name=""))
    # client_id is the consumer key itself: an identity, but also a credential.
    assert e.consumer == e.credential == redactor.fingerprint(CLIENT_ID)


@pytest.mark.parametrize(
    ("changes", "secret"),
    [
        ({"request.header.x-api-key": "hdr-key"}, "hdr-key"),
        ({"request.header.apikey": "hdr-key-2"}, "hdr-key-2"),
        ({"request.querystring": "q=1&apikey=query-key"}, "query-key"),
        ({"request.uri": "/v1/ping?api_key=uri-key"}, "uri-key"),
        ({"request.header.Authorization": "Basic dXNlcjpwYXNz"}, "Basic dXNlcjpwYXNz"),
    ],
)
def test_credential_without_a_verified_key(
    apigee: ApigeeParser, redactor: Redactor, changes: dict[str, str], secret: str
) -> None:
    e = one(apigee, record(**changes))
    # The same key gives the same fingerprint as on the Kong side (one Redactor, one key).
    assert e.credential == Redactor(REDACTION_KEY).fingerprint(secret)
    assert secret not in e.model_dump_json()


def test_client_controlled_oddities_never_reject(apigee: ApigeeParser) -> None:
    e = one(
        apigee,
        record(
            **{
                "request.header.Content-Length": "lots",
                "request.querystring": "%zz=%&&=&a=1&a=2&" + "p=1&" * 500,
                "request.headers.names": "no brackets, Host",
            }
        ),
    )
    assert e.request_size == 0
    assert e.query["a"] == "1"  # repeated args: the first stands for them
    assert e.header_fingerprint == hashlib.blake2b(b"host,no brackets", digest_size=6).hexdigest()


def test_client_ip_falls_back_to_proxy_client_ip(apigee: ApigeeParser) -> None:
    e = one(apigee, record(client__ip="", proxy__client__ip="2001:DB8::1, 10.0.0.1"))
    assert e.client_ip == "2001:db8::1"


def test_timestamps_fall_back_to_system_then_syslog_header(apigee: ApigeeParser) -> None:
    assert one(apigee, record(system__timestamp="1700000000999")).ts_ms == 1_700_000_000_999
    result = apigee.parse_payload(orjson.dumps(MINIMAL), host="mp-7", ts_ms=1_690_000_000_000)
    assert (result.events[0].ts_ms, result.events[0].node) == (1_690_000_000_000, "mp-7")


def test_array_payload_is_a_batch(apigee: ApigeeParser) -> None:
    result = apigee.parse_payload(orjson.dumps([OK, record(request__verb=""), FAULT]))
    assert [e.status for e in result.events] == [200, 401]
    assert [r.reason for r in result.rejects] == ["request.verb: missing"]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (record(client__ip=""), "client.ip: missing"),
        ({k: v for k, v in MINIMAL.items() if k != "client.ip"}, "client.ip: missing"),
        (record(client__ip="localhost"), "client.ip: not an IP address"),
        (record(client__ip=["192.0.2.1"]), "client.ip: expected a string, got list"),
        (record(request__verb=""), "request.verb: missing"),
        (record(request__verb="GET /x"), "request.verb: not an HTTP method"),
        (record(message__status__code="OK"), "message.status.code: expected an integer, got str"),
        (record(message__status__code=""), "message.status.code: missing"),
        (
            record(message__status__code="42"),
            "message.status.code: 42 is not an HTTP status (100-599)",
        ),
        (
            record(message__status__code=True),
            "message.status.code: expected an integer, got a boolean",
        ),
        (
            record(client__received__start__timestamp="soon"),
            "client.received.start.timestamp: expected an integer, got str",
        ),
        (
            record(system__timestamp="-5"),
            "system.timestamp: expected a positive epoch-millisecond timestamp",
        ),
        (b"", "payload: empty"),
        (b"[1]", "payload: expected an object, got int"),
        (b'"text"', "payload: expected an object, got str"),
    ],
)
def test_invalid_payloads_are_rejected_with_the_field(
    apigee: ApigeeParser, doc: Any, expected: str
) -> None:
    assert reason(apigee, doc) == expected


def test_status_falls_back_to_response_status_code(apigee: ApigeeParser) -> None:
    assert one(apigee, record(message__status__code="", response__status__code="503")).status == 503


def test_malformed_json_is_rejected_and_scrubbed(apigee: ApigeeParser) -> None:
    raw = b'{"client_id":"' + CLIENT_ID.encode() + b'","developer.email":"jane@example.com",'
    result = apigee.parse_payload(raw)
    assert result.rejects[0].reason.startswith("payload: malformed JSON (")
    assert CLIENT_ID.encode() not in result.rejects[0].raw
    assert b"jane@example.com" not in result.rejects[0].raw


def test_rejected_record_reaches_the_dlq_redacted(apigee: ApigeeParser) -> None:
    bad = record(
        OK,
        message__status__code="teapot",
        **{"custom.note": "mail jane@example.com", "custom.nested": {"password": "hunter2"}},
    )
    result = apigee.parse_payload(orjson.dumps(bad))
    raw = result.rejects[0].raw
    assert result.rejects[0].reason == "message.status.code: expected an integer, got str"
    for clear in (CLIENT_ID, TOKEN, "jane.doe", "jane@example.com", "7f3a9c", "hunter2"):
        assert clear.encode() not in raw
    kept = orjson.loads(raw)
    assert kept["request.verb"] == "GET"  # still useful to whoever replays it
    assert kept["request.querystring"] == "page=2&contact=[email]&token=[redacted]"


def test_accepted_events_fit_an_envelope(apigee: ApigeeParser) -> None:
    events = apigee.parse_payload(orjson.dumps([OK, FAULT])).events
    decoded = envelopes.decode(envelopes.encode(events))
    assert [e.model_dump() for e in decoded] == [e.model_dump() for e in events]
