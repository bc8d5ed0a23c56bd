"""Redactor: keyed fingerprints, PII masks, secret parameter names, DLQ scrubbing."""

from __future__ import annotations

import re

import pytest

from pipeline.ingest.redaction import Redactor


def test_fingerprint_is_deterministic_per_key() -> None:
    assert Redactor(b"k1").fingerprint("api-key-1") == Redactor(b"k1").fingerprint("api-key-1")


def test_fingerprint_shape() -> None:
    assert re.fullmatch(r"hmac:[0-9a-f]{16}", Redactor(b"k1").fingerprint("api-key-1"))


def test_fingerprint_differs_across_keys_and_secrets() -> None:
    a, b = Redactor(b"k1"), Redactor(b"k2")
    assert a.fingerprint("api-key-1") != b.fingerprint("api-key-1")
    assert a.fingerprint("api-key-1") != a.fingerprint("api-key-2")


def test_fingerprint_does_not_contain_the_secret() -> None:
    assert "abc" not in Redactor(b"k").fingerprint("abc")


def test_fingerprint_accepts_lone_surrogates() -> None:
    # JSON "\ud800" may reach us; it must fingerprint, not raise UnicodeEncodeError.
    assert Redactor(b"k").fingerprint("\ud800").startswith("hmac:")


def test_empty_key_raises() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        Redactor(b"")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"apikey": "secret"}',
        b'{"apikey":"secret"}',
        b'{"APIKEY" :  "secret"}',
        b'{"x-api-key": "secret"}',
        b'{"authorization": "Bearer secret"}',
        b'{"cookie": "sid=secret"}',
        b'{"password": "secret"}',
        b'{"token": "se\\"cret"}',  # an escaped quote does not end the value early
    ],
)
def test_scrub_raw_removes_secret_values(raw: bytes) -> None:
    scrubbed = Redactor.scrub_raw(raw)
    assert b"secret" not in scrubbed and b"cret" not in scrubbed
    assert b'"[redacted]"' in scrubbed


def test_scrub_raw_keeps_everything_else() -> None:
    raw = b'{"request": {"headers": {"apikey": "secret", "host": "api.example"}, "method": "GET"'
    assert Redactor.scrub_raw(raw) == (
        b'{"request": {"headers": {"apikey": "[redacted]", "host": "api.example"}, "method": "GET"'
    )


def test_scrub_raw_scrubs_every_occurrence() -> None:
    raw = b'[{"apikey": "one"}, {"apikey": "two"}]'
    assert Redactor.scrub_raw(raw) == b'[{"apikey": "[redacted]"}, {"apikey": "[redacted]"}]'


@pytest.mark.parametrize(
    "name",
    [
        "apikey",
        "api_key",
        "api-key",
        "API_KEY",
        "key",
        "token",
        "access_token",
        "access-token",
        "refresh_token",
        "id_token",
        "password",
        "pwd",
        "client_secret",
        "signature",
        "sig",
        "session",
        "jwt",
        "code",
    ],
)
def test_secret_param_names(name: str) -> None:
    assert Redactor.is_secret_param(name)


@pytest.mark.parametrize(
    "name", ["page", "q", "keyword", "monkey", "tokens_used", "sort", "", "my_token", "codec"]
)
def test_ordinary_param_names(name: str) -> None:
    assert not Redactor.is_secret_param(name)


@pytest.mark.parametrize(
    ("text", "masked", "kinds"),
    [
        ("/users/bob@example.com", "/users/[email]", ["email"]),
        ("/users/bob%40example.com", "/users/[email]", ["email"]),
        ("/pay/4111 1111 1111 1111", "/pay/[card]", ["card"]),
        ("/pay/4111-1111-1111-1111", "/pay/[card]", ["card"]),
        ("/people/123-45-6789", "/people/[ssn]", ["ssn"]),
        ("/orders/4111111111111112", "/orders/4111111111111112", []),  # fails Luhn
        ("/orders/12345", "/orders/12345", []),
        ("/v1/products", "/v1/products", []),
    ],
)
def test_mask_pii(text: str, masked: str, kinds: list[str]) -> None:
    assert Redactor.mask_pii(text) == (masked, kinds)
