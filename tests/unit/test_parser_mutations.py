"""100,000 malformed or mutated Kong inputs: the parser never raises, every input is accounted
for (one event or one reject per entry), every reject carries a reason, and whatever it accepts
fits an envelope; the collector's fast path gives the very same answer to every input. Seeded,
so a failure reproduces exactly."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import orjson

from pipeline import envelopes
from pipeline.ingest.kong import KongParser
from pipeline.ingest.redaction import Redactor
from tests.unit.agreement import FIXED_CLOCK, same_answer

SEED = 20261122
SECRET = b"my-secret-key-not-redacted"
SECRET_FIELD = b'"apikey":"' + SECRET + b'"'
INPUTS = 100_000
KONG = Path(__file__).parent.parent / "fixtures" / "kong"
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(2**64),
    1e308,
    -1e-300,
    "",
    " ",
    "-1",
    "²",
    "١٢٣",
    "9" * 30,
    "\x00",
    "\ud800",
    "💥" * 50,
    "REDACTED",
    [],
    [1, [2]],
    {},
    {"a": {"b": None}},
    "a" * 5000,
    "500, 200 : 200",
    "http://x/?apikey=secret",
    "/users/bob@example.com",
]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out.extend(_paths(value, (*prefix, i)))
    return out


def _mutate(rng: random.Random, entry: dict[str, Any]) -> Any:
    doc: Any = copy.deepcopy(entry)
    for _ in range(rng.randint(1, 4)):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            return copy.deepcopy(rng.choice(ODD_VALUES))
        path = rng.choice(paths)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        op = rng.random()
        if op < 0.3 and isinstance(parent, dict):
            del parent[path[-1]]
        elif op < 0.85:
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif isinstance(parent, dict):
            key = rng.choice(["extra", "x-custom", "request", "response"])
            parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
    return doc


def _dumps(doc: Any) -> bytes:
    # The stdlib writes what orjson refuses to (integers beyond 64 bits, lone surrogates as
    # escapes): exactly the kind of input a sender might produce.
    return json.dumps(doc).encode()


def _corrupt_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        if not data:
            break
        i = rng.randrange(len(data))
        choice = rng.random()
        if choice < 0.4:
            data[i] = rng.randrange(256)
        elif choice < 0.7:
            del data[i : i + rng.randint(1, 20)]
        else:
            data[i:i] = rng.choice([b"{", b"}", b"[", b"]", b'"', b",", b"\\u0000", b"\xff"])
    return bytes(data)


def test_one_hundred_thousand_mutated_inputs() -> None:
    rng = random.Random(SEED)
    parser = KongParser(Redactor(b"fuzz-key"), clock=lambda: FIXED_CLOCK)
    seeds = [orjson.loads(p.read_bytes()) for p in sorted(KONG.glob("*.json"))]
    kinds = {"entry": 0, "array": 0, "bytes": 0, "random": 0}
    accepted = rejected = fast_events = 0
    for _ in range(INPUTS):
        roll = rng.random()
        if roll < 0.55:
            kinds["entry"] += 1
            body, expected = _dumps(_mutate(rng, rng.choice(seeds))), 1
        elif roll < 0.75:
            kinds["array"] += 1
            batch = [_mutate(rng, rng.choice(seeds)) for _ in range(rng.randint(1, 5))]
            body, expected = _dumps(batch), len(batch)
        elif roll < 0.95:
            kinds["bytes"] += 1
            body, expected = _corrupt_bytes(rng, orjson.dumps(rng.choice(seeds))), None
        else:
            kinds["random"] += 1
            body, expected = rng.randbytes(rng.randint(0, 300)), None

        result = parser.parse_body(body)  # must never raise
        fast = same_answer(parser, body)
        fast_events += len(fast.records) if fast.fast else 0

        total = len(result.events) + len(result.rejects)
        unreadable = len(result.rejects) == 1 and result.rejects[0].reason.startswith("malformed")
        if expected is not None and not unreadable:
            assert total == expected, body[:200]
        else:
            assert total >= 1 or body.strip() in (b"[]",), body[:200]
        # A secret under an intact key name must never reach the dead-letter topic; bytes that
        # garbled the key name itself ("a\xeeikey") cannot be recognised by anyone.
        must_scrub = expected is not None or SECRET_FIELD in body
        for reject in result.rejects:
            assert reject.reason and isinstance(reject.raw, bytes)
            if must_scrub:
                assert SECRET not in reject.raw, reject.raw
        if result.events:
            envelopes.decode(envelopes.encode(result.events))
        accepted += len(result.events)
        rejected += len(result.rejects)

    assert sum(kinds.values()) == INPUTS
    assert min(kinds.values()) > 1000  # every kind of damage was really exercised
    assert accepted > 1000 and rejected > 1000  # and both outcomes happened
    print(f"fast path events: {fast_events}")
    assert fast_events > 1000  # the fast path was really held against the reference
