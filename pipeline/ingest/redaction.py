"""Secrets become keyed fingerprints and PII in URLs is masked, before anything reaches Kafka.

A fingerprint is `hmac:` + the first 16 hex digits of HMAC-SHA256(key, secret): the same API key
always maps to the same fingerprint (so one credential can be followed across IPs), but without the
key nobody can test a guess against it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re

__all__ = ["SECRET_HEADERS", "Redactor"]

FINGERPRINT_CACHE = 50_000
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "apikey", "x-api-key"}
)
# Query parameter names that carry credentials often enough to never store in clear.
_SECRET_PARAM = re.compile(
    r"^(api[_-]?key|apikey|key|token|access[_-]?token|refresh[_-]?token|id[_-]?token|auth|"
    r"password|passwd|pwd|secret|client[_-]?secret|signature|sig|session|sessionid|jwt|code)$",
    re.IGNORECASE,
)
# Every match of a PII pattern below contains a match of this one: an "@" (or its escape), or a
# digit, a space or dash and a digit (SSNs, spaced cards), or 13 digits in a row (other cards).
# Most paths and query values, numeric ids included, have none and skip the full patterns.
_PII_HINT = re.compile(r"@|%40|\d[ -]\d|\d{13}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
# A raw entry that failed to parse is still scrubbed of obvious secrets before the DLQ.
_RAW_SECRET = re.compile(
    rb'("(?:authorization|proxy-authorization|cookie|apikey|x-api-key|api_key|password|token)"'
    rb'\s*:\s*)"(?:[^"\\]|\\.)*"',
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=4096)
def _is_secret_param(name: str) -> bool:
    # The same few parameter names come back on every request.
    return _SECRET_PARAM.match(name) is not None


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


class Redactor:
    """Fingerprints secrets and masks PII with one secret key.

    >>> r = Redactor(b"k")
    >>> r.fingerprint("my-api-key") == r.fingerprint("my-api-key")
    True
    >>> r.mask_pii("/users/bob@example.com/cards/4111111111111111")
    ('/users/[email]/cards/[card]', ['email', 'card'])
    """

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the redaction key must not be empty")
        self.key = key
        # The same few credentials sign most requests: remember their fingerprints (bounded).
        self._fingerprints: dict[str, str] = {}

    def fingerprint(self, secret: str) -> str:
        known = self._fingerprints.get(secret)
        if known is not None:
            return known
        digest = hmac.new(self.key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256)
        fp = "hmac:" + digest.hexdigest()[:16]
        if len(self._fingerprints) >= FINGERPRINT_CACHE:
            self._fingerprints.clear()
        self._fingerprints[secret] = fp
        return fp

    @staticmethod
    def is_secret_param(name: str) -> bool:
        return _is_secret_param(name)

    @staticmethod
    def mask_pii(text: str) -> tuple[str, list[str]]:
        """Mask emails, Luhn-valid card numbers and SSNs; return the text and the kinds found."""
        if _PII_HINT.search(text) is None:
            return text, []
        return _mask_all(text)

    @staticmethod
    def scrub_raw(raw: bytes) -> bytes:
        """Best-effort removal of secret values from bytes that could not be parsed."""
        return _RAW_SECRET.sub(rb'\1"[redacted]"', raw)


def _mask_all(text: str) -> tuple[str, list[str]]:
    """Every PII pattern over `text` (`Redactor.mask_pii` once the hint says one may match)."""
    found: list[str] = []
    if "@" in text or "%40" in text:
        text, n = _EMAIL.subn("[email]", text)
        if n:
            found.append("email")

    def card(m: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", m.group(0))
        return "[card]" if _luhn_ok(digits) else m.group(0)

    masked = _CARD.sub(card, text)
    if masked != text:
        found.append("card")
        text = masked
    text, n = _SSN.subn("[ssn]", text)
    if n:
        found.append("ssn")
    return text, found
