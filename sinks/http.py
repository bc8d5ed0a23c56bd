"""What the HTTP sinks share: one `classify(status)`, Retry-After, the client session, gzip.

The status rule is Vector's and elasticsearch-py's: 408, 429 and 5xx (but 501) mean "not now";
other 4xx mean "never" for the request as sent. A sink may know better for its receiver (Splunk's
codes, Elasticsearch's per-item statuses) and refine it.
"""

from __future__ import annotations

import email.utils
import ssl
import time
import zlib
from collections.abc import Mapping
from typing import Literal

import aiohttp

__all__ = [
    "CONNECTION_ERRORS",
    "Verdict",
    "classify",
    "client_session",
    "gzip",
    "retry_after",
]

Verdict = Literal["ok", "retry", "reject"]
# What a request that never got an answer raises (TimeoutError also covers aiohttp's timeouts).
CONNECTION_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
# Level 1 compresses alert JSON about 6x at a fraction of level 6's CPU: the sink's CPU matters
# more than the last 20% of bytes on a LAN.
GZIP_LEVEL = 1


def classify(status: int) -> Verdict:
    """What an HTTP status means for the request as sent.

    >>> [classify(s) for s in (200, 204, 408, 429, 500, 501, 503, 400, 404)]
    ['ok', 'ok', 'retry', 'retry', 'retry', 'reject', 'retry', 'reject', 'reject']
    """
    if 200 <= status < 300:
        return "ok"
    if status in (408, 429) or (status >= 500 and status != 501):
        return "retry"
    return "reject"


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds an answer's Retry-After asks for (delta-seconds or an HTTP date), if any.

    >>> retry_after({"Retry-After": "3"}), retry_after({}), retry_after({"Retry-After": "soon"})
    (3.0, None, None)
    >>> retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:39 GMT"}, now=784111770.0)
    9.0
    """
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def client_session(
    *, ca_file: str | None, timeout_s: float, headers: Mapping[str, str]
) -> aiohttp.ClientSession:
    """A session with the receiver's CA (TLS verified always), one timeout per request, and the
    auth headers set once. Call it with the loop running (in a sink's `start`)."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    return aiohttp.ClientSession(
        headers=dict(headers),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        connector=aiohttp.TCPConnector(ssl=context if context is not None else True, limit=16),
        raise_for_status=False,
    )


def gzip(data: bytes) -> bytes:
    """gzip framing (what `Content-Encoding: gzip` means) at GZIP_LEVEL."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()
