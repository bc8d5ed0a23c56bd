"""Envelopes: msgpack batches of events, and the partition each subject lives on."""

from __future__ import annotations

import msgpack
import pytest

from pipeline import envelopes
from pipeline.envelopes import EnvelopeError, decode, encode, partition_for
from pipeline.ingest.kong import KongParser
from tests.unit.conftest import KONG_FILES, kong_bytes, make_event


def test_roundtrip_of_real_events(parser: KongParser) -> None:
    events = [parser.parse_body(kong_bytes(v)).events[0] for v in sorted(KONG_FILES)]
    decoded = decode(encode(events))
    assert [e.model_dump() for e in decoded] == [e.model_dump() for e in events]


def test_roundtrip_keeps_every_field_type() -> None:
    event = make_event(
        request_id="r1",
        consumer="c1",
        credential="hmac:0123456789abcdef",
        query={"page": "2"},
        upstream_status=None,
        upstream_latency_ms=12.5,
        headers={"referer": "https://example.test/"},
        pii=["email"],
        attributes={"tenant": "acme", "shard": 7, "ratio": 0.25, "flag": True, "none": None},
    )
    [decoded] = decode(encode([event]))
    assert decoded.model_dump() == event.model_dump()
    assert decoded.subjects() == event.subjects()


def test_roundtrip_of_an_empty_envelope() -> None:
    assert decode(encode([])) == []


def test_partition_for_is_stable_and_in_range() -> None:
    for n in (1, 2, 4, 7, 32):
        for i in range(200):
            subject = f"ip:10.0.{i // 256}.{i % 256}"
            p = partition_for(subject, n)
            assert 0 <= p < n
            assert p == partition_for(subject, n)


def test_partition_for_known_values() -> None:
    # Pinned (CRC-32): a change here moves every subject's state to another worker on upgrade.
    assert partition_for("ip:10.0.0.1", 4) == 3
    assert partition_for("ip:203.0.113.9", 4) == 2
    assert partition_for("consumer:c1", 12) == 11


def test_partition_for_spreads_subjects() -> None:
    counts = [0, 0, 0, 0]
    for i in range(1000):
        counts[partition_for(f"consumer:user-{i}", 4)] += 1
    assert all(c > 0 for c in counts)
    assert max(counts) < 2 * min(counts)  # roughly even, not merely non-empty


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"not msgpack at all",
        msgpack.packb({"v": 1, "events": []})[:-1],  # truncated
    ],
)
def test_decode_garbage_raises(payload: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode(payload)


@pytest.mark.parametrize(
    "doc",
    [
        {"v": 2, "events": []},
        {"v": "1", "events": []},
        {"events": []},
        [1, []],
        42,
        None,
    ],
)
def test_decode_wrong_version_raises(doc: object) -> None:
    with pytest.raises(EnvelopeError, match="version"):
        decode(msgpack.packb(doc))


@pytest.mark.parametrize(
    "events",
    [
        None,
        {"client_ip": "10.0.0.1", "ts_ms": 1},
        [1, 2, 3],
        ["event"],
        [{"ts_ms": 1}],  # no client_ip
        [{"client_ip": "10.0.0.1"}],  # no ts_ms
        [{1: "x", "client_ip": "10.0.0.1", "ts_ms": 1}],  # a key that is not a field name
        [{b"bytes": "x", "client_ip": "10.0.0.1", "ts_ms": 1}],
    ],
)
def test_decode_non_events_raises(events: object) -> None:
    with pytest.raises(EnvelopeError):
        decode(msgpack.packb({"v": envelopes.VERSION, "events": events}))


def test_envelope_error_is_a_value_error() -> None:
    assert issubclass(EnvelopeError, ValueError)
