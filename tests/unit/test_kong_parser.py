"""KongParser against real Kong log entries (1.2.1 - 3.9) and hand-made edge cases."""

from __future__ import annotations

import orjson
import pytest

from pipeline import envelopes
from pipeline.events import GatewayEvent
from pipeline.ingest.kong import KongParser, ParseResult
from pipeline.ingest.redaction import Redactor
from tests.unit.conftest import KONG_FILES, body, kong_bytes, kong_entry

APIKEY_3_9 = "my-secret-key-not-redacted"


def only_event(result: ParseResult) -> GatewayEvent:
    assert result.rejects == [], [r.reason for r in result.rejects]
    assert len(result.events) == 1
    return result.events[0]


# --- the four real entries ------------------------------------------------------------------


@pytest.mark.parametrize("version", sorted(KONG_FILES))
def test_each_fixture_is_one_event_without_rejects(parser: KongParser, version: str) -> None:
    event = only_event(parser.parse_body(kong_bytes(version)))
    assert event.gateway == "kong"
    # Every fixture's top-level keys are ones the parser maps or knowingly drops.
    assert event.attributes == {}


def test_kong_1_2_1_sizes_as_strings(parser: KongParser) -> None:
    event = only_event(parser.parse_body(kong_bytes("1.2.1")))
    assert event.request_size == 46  # "46" in the log
    assert event.response_size == 298  # "298" in the log
    assert event.upstream_status is None  # the key is absent in 1.x
    assert event.request_id is None  # neither request.id nor x-kong-request-id
    assert event.method == "POST"
    assert event.path == event.route == "/hello.HelloService/SayHello"
    assert event.service == "grpc"
    assert event.client_ip == "127.0.0.1"
    assert event.ts_ms == 1564527732516
    assert (event.latency_ms, event.upstream_latency_ms, event.gateway_latency_ms) == (
        8.0,
        3.0,
        5.0,
    )
    assert event.headers == {"content-type": "application/grpc"}
    assert event.user_agent == "grpc-go/1.20.0-dev"
    assert event.consumer is None and event.credential is None


def test_kong_2_2_1_consumer_and_credential(parser: KongParser, redactor: Redactor) -> None:
    event = only_event(parser.parse_body(kong_bytes("2.2.1")))
    assert event.consumer == "ae974d6c-0f8a-4dc5-b701-fa0aa38592bd"
    assert event.credential is not None and event.credential.startswith("hmac:")
    # No key in the request: the credential is Kong's authenticated_entity row.
    assert event.credential == redactor.fingerprint(
        "kong-credential:c62c1455-9b1d-4f2d-8797-509ba83b8ae8"
    )
    assert event.request_id is None
    assert event.service == "167290ee-c682-4ebf-bdea-e49a3ac5e260"  # no name: the id stands in
    assert event.method == "GET"
    assert (event.status, event.request_size, event.response_size) == (200, 138, 827)
    assert event.partition_subject() == "consumer:ae974d6c-0f8a-4dc5-b701-fa0aa38592bd"


def test_kong_3_8_request_id_and_upstream_status(parser: KongParser) -> None:
    event = only_event(parser.parse_body(kong_bytes("3.8")))
    assert event.request_id == "2f6946328ffc4946b8c9120704a4a155"
    assert event.upstream_status == 200  # "200" in the log
    assert event.service == "example_service"
    assert event.path == "/example-route"
    assert event.upstream_latency_ms == 171.0


def test_kong_3_9_gateway_answered_429(parser: KongParser, redactor: Redactor) -> None:
    event = only_event(parser.parse_body(kong_bytes("3.9")))
    assert event.status == 429
    assert event.upstream_latency_ms is None  # latencies.proxy == -1: Kong answered itself
    assert event.upstream_status is None  # ""
    assert event.gateway_latency_ms == 2.0
    assert event.tls_version == "TLSv1.3"
    assert event.request_id == "9c3b1e0f6a2d4e7b8f01c2d3e4f5a6b7"
    assert event.path == "/orders/v1/list"  # query string stripped from the uri
    assert event.query == {"page": "2"}
    assert event.credential == redactor.fingerprint(APIKEY_3_9)
    assert APIKEY_3_9 not in event.model_dump_json()


def test_array_body_of_all_fixtures(parser: KongParser) -> None:
    entries = [kong_entry(v) for v in sorted(KONG_FILES)]
    result = parser.parse_body(orjson.dumps(entries))
    assert result.rejects == []
    assert [e.status for e in result.events] == [200, 200, 200, 429]
    assert [e.client_ip for e in result.events] == [e["client_ip"] for e in entries]


# --- rejects --------------------------------------------------------------------------------


def test_mixed_array_keeps_the_good_and_names_the_bad_field(parser: KongParser) -> None:
    bad_status = kong_entry("1.2.1")
    bad_status["response"]["status"] = "abc"
    result = parser.parse_body(body(kong_entry("3.8"), 42, {"request": "x"}, bad_status))

    assert [e.request_id for e in result.events] == ["2f6946328ffc4946b8c9120704a4a155"]
    assert len(result.rejects) == 3
    reasons = [r.reason for r in result.rejects]
    assert reasons[0].startswith("entry: expected an object, got int")
    assert reasons[1].startswith("request: expected an object, got str")
    assert reasons[2].startswith("response.status: ")
    assert all(r.source == "kong" and r.raw for r in result.rejects)


def test_malformed_json_is_one_reject(parser: KongParser) -> None:
    raw = b'{"request": {"method": "GET"'
    result = parser.parse_body(raw)
    assert result.events == []
    assert len(result.rejects) == 1
    assert result.rejects[0].reason.startswith("malformed JSON")
    assert result.rejects[0].raw == raw


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("method", None, "request.method: "),
        ("method", "", "request.method: "),
        ("uri", 5, "request.uri: "),
        ("headers", ["host"], "request.headers: "),
        ("querystring", "a=1", "request.querystring: "),
    ],
)
def test_bad_request_fields_are_rejected_by_name(
    parser: KongParser, field: str, value: object, reason: str
) -> None:
    entry = kong_entry("3.8")
    entry["request"][field] = value
    entry["request"].pop("url")  # so "uri" has no fallback
    result = parser.parse_body(body(entry))
    assert result.events == []
    assert [r.reason.startswith(reason) for r in result.rejects] == [True]


def test_missing_client_ip_is_rejected(parser: KongParser) -> None:
    entry = kong_entry("3.8")
    del entry["client_ip"]
    result = parser.parse_body(body(entry))
    assert result.events == []
    assert result.rejects[0].reason.startswith("client_ip: ")


# --- field shapes across Kong versions ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("500, 200 : 200, 200", 200),  # retries: the last try is what the client got
        ("502, 503", 503),
        ("200", 200),
        (504, 504),
        ("", None),
        ("-", None),
        (None, None),
    ],
)
def test_upstream_status_shapes(parser: KongParser, raw: object, expected: int | None) -> None:
    entry = kong_entry("3.8")
    entry["upstream_status"] = raw
    assert only_event(parser.parse_body(body(entry))).upstream_status == expected


def test_repeated_headers_and_query_flags(parser: KongParser, redactor: Redactor) -> None:
    entry = kong_entry("3.8")
    entry["request"]["headers"].update(
        {
            "user-agent": ["curl/8.4.0", "other/1.0"],
            "accept-language": ["en-GB", "fr"],
            "apikey": ["key-one", "key-two"],
        }
    )
    entry["request"]["querystring"] = {"debug": True, "tag": ["a", "b"], "empty": []}
    event = only_event(parser.parse_body(body(entry)))
    assert event.user_agent == "curl/8.4.0"
    assert event.headers["accept-language"] == "en-GB"
    assert event.credential == redactor.fingerprint("key-one")
    assert event.query == {"debug": "", "tag": "a", "empty": ""}


def test_fetch_mode_is_kept_for_the_bot_detector(parser: KongParser) -> None:
    """A browser's Sec-Fetch-Mode tells it from a script with its user agent; the other fetch
    metadata and client hints add nothing the bots detector reads, so they are not carried."""
    entry = kong_entry("3.8")
    entry["request"]["headers"].update(
        {"sec-fetch-mode": "cors", "sec-fetch-site": "same-site", "sec-ch-ua-mobile": "?0"}
    )
    event = only_event(parser.parse_body(body(entry)))
    assert event.headers["sec-fetch-mode"] == "cors"
    assert not {"sec-fetch-site", "sec-ch-ua-mobile"} & set(event.headers)


def test_unknown_top_level_keys_are_kept_as_attributes(parser: KongParser) -> None:
    entry = kong_entry("3.8")
    entry["tenant"] = "acme"  # custom_fields_by_lua
    entry["shard"] = 7
    entry["geo"] = {"country": "NL"}
    event = only_event(parser.parse_body(body(entry)))
    assert event.attributes == {"tenant": "acme", "shard": 7, "geo": '{"country":"NL"}'}


def test_full_url_in_uri_is_reduced_to_the_path(parser: KongParser) -> None:
    entry = kong_entry("3.8")
    entry["request"]["uri"] = "https://api.example.test:8443/v1/users/42?x=1"
    event = only_event(parser.parse_body(body(entry)))
    assert (event.path, event.route) == ("/v1/users/42", "/v1/users/{id}")


# --- secrets and PII ------------------------------------------------------------------------

TOKEN = "tok-SECRET-0123456789"


def entry_with_query_token() -> dict:
    """3.8 with an access token in the query string, everywhere Kong repeats it."""
    entry = kong_entry("3.8")
    entry["request"]["uri"] = f"/example-route?access_token={TOKEN}&page=2"
    entry["request"]["url"] = f"http://localhost:8000/example-route?access_token={TOKEN}&page=2"
    entry["request"]["querystring"] = {"access_token": TOKEN, "page": "2"}
    entry["upstream_uri"] = f"/?access_token={TOKEN}&page=2"
    return entry


def test_secret_query_param_is_fingerprinted(parser: KongParser, redactor: Redactor) -> None:
    event = only_event(parser.parse_body(body(entry_with_query_token())))
    assert event.query == {"access_token": redactor.fingerprint(TOKEN), "page": "2"}
    assert event.credential == redactor.fingerprint(TOKEN)  # no key header: the query secret
    assert TOKEN not in event.model_dump_json()


def test_dlq_raw_does_not_hold_the_apikey(parser: KongParser) -> None:
    entry = kong_entry("3.9")
    entry["response"]["status"] = "not-a-status"
    result = parser.parse_body(body(entry))
    assert result.events == []
    [reject] = result.rejects
    assert reject.reason.startswith("response.status: ")
    assert APIKEY_3_9.encode() not in reject.raw
    # The rest of the entry is still there for whoever replays it.
    assert orjson.loads(reject.raw)["request"]["headers"]["apikey"] == "[redacted]"


def test_dlq_raw_does_not_hold_a_query_token(parser: KongParser) -> None:
    entry = entry_with_query_token()
    entry["response"]["status"] = "not-a-status"
    [reject] = parser.parse_body(body(entry)).rejects
    # Kong repeats the query string in request.uri, request.url and upstream_uri.
    assert TOKEN.encode() not in reject.raw


def test_malformed_body_is_scrubbed_of_string_secrets(parser: KongParser) -> None:
    raw = b'{"request": {"headers": {"apikey": "sekrit-value", "host": "a"}'
    [reject] = parser.parse_body(raw).rejects
    assert b"sekrit-value" not in reject.raw
    assert b'"host": "a"' in reject.raw


def test_pii_in_path_is_masked_and_listed(parser: KongParser) -> None:
    entry = kong_entry("3.8")
    entry["request"]["uri"] = "/users/bob@example.com/cards/4111111111111111/ssn/123-45-6789"
    event = only_event(parser.parse_body(body(entry)))
    assert event.path == "/users/[email]/cards/[card]/ssn/[ssn]"
    assert event.route == event.path
    assert event.pii == ["email", "card", "ssn"]
    dump = event.model_dump_json()
    for clear in ("bob@example.com", "4111111111111111", "123-45-6789"):
        assert clear not in dump


def test_pii_in_query_is_masked_and_listed_once(parser: KongParser) -> None:
    entry = kong_entry("3.8")
    entry["request"]["uri"] = "/users/bob@example.com"
    entry["request"]["querystring"] = {"cc": "alice@example.org"}
    event = only_event(parser.parse_body(body(entry)))
    assert event.query == {"cc": "[email]"}
    assert event.pii == ["email"]


def test_non_luhn_number_is_not_a_card(parser: KongParser) -> None:
    entry = kong_entry("3.8")
    entry["request"]["uri"] = "/orders/4111111111111112"
    event = only_event(parser.parse_body(body(entry)))
    assert event.path == "/orders/4111111111111112"
    assert event.route == "/orders/{id}"
    assert event.pii == []


# --- inputs that must be rejected, never raised (bugs found while writing these tests) -------


def test_non_object_response_headers_do_not_crash(parser: KongParser) -> None:
    entry = kong_entry("1.2.1")  # no request.id, so response.headers is looked at
    entry["response"]["headers"] = "content-type: text/plain"
    result = parser.parse_body(body(entry))
    assert len(result.events) + len(result.rejects) == 1


@pytest.mark.parametrize("value", ["--5", "\u00b2", "9" * 5000])
def test_odd_numeric_strings_are_rejected_not_raised(parser: KongParser, value: str) -> None:
    entry = kong_entry("1.2.1")
    entry["request"]["size"] = value
    result = parser.parse_body(body(entry))
    assert result.events == []
    assert [r.reason.split(":")[0] for r in result.rejects] == ["request.size"]


def test_superscript_digit_upstream_status_is_ignored(parser: KongParser) -> None:
    entry = kong_entry("3.8")
    entry["upstream_status"] = "\u00b2"
    assert only_event(parser.parse_body(body(entry))).upstream_status is None


def test_huge_latency_is_rejected_not_raised(parser: KongParser) -> None:
    entry = kong_entry("3.8")
    entry["latencies"]["request"] = "9" * 400
    result = parser.parse_body(body(entry))
    assert result.events == []
    assert [r.reason.split(":")[0] for r in result.rejects] == ["latencies.request"]


@pytest.mark.parametrize(
    ("key", "value"),
    [("started_at", 1e30), ("size", "99999999999999999999999")],
)
def test_accepted_events_always_fit_an_envelope(
    parser: KongParser, key: str, value: object
) -> None:
    entry = kong_entry("3.8")
    if key == "size":
        entry["request"]["size"] = value
    else:
        entry[key] = value
    result = parser.parse_body(body(entry))
    assert len(result.events) + len(result.rejects) == 1
    # The collector hands accepted events to msgpack: one out of range poisons the whole envelope.
    assert envelopes.decode(envelopes.encode(result.events)) is not None


def test_credential_id_custom_field_identifies_the_key(parser: KongParser) -> None:
    entry = kong_entry("3.8")
    entry["credential_id"] = "5a1d0c1e-credential"
    event = parser.parse_entry(entry)
    assert event.credential == parser.redactor.fingerprint("kong-credential:5a1d0c1e-credential")
    assert "credential_id" in event.attributes  # kept as sent, it is an id, not a secret


def test_a_url_in_the_query_string_is_not_the_request_path(parser: KongParser) -> None:
    entry = kong_entry("3.8")
    entry["request"]["uri"] = "/v1/search?q=http://evil.example/webshell&page=1"
    [event] = parser.parse_body(orjson.dumps(entry)).events
    assert (event.path, event.route) == ("/v1/search", "/v1/search")
