"""Shared helpers for the unit tests: the pinned Kong fixtures, a parser, an event factory."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.events import GatewayEvent
from pipeline.ingest.kong import KongParser
from pipeline.ingest.redaction import Redactor

KONG_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kong"
KONG_FILES = {
    "1.2.1": "kong-1.2.1-docs-grpc-file-log.json",
    "2.2.1": "kong-2.2.1-ee-docs-consumer.json",
    "3.8": "kong-3.8-docs-200.json",
    "3.9": "kong-3.9-serializer-constructed-429.json",
}
REDACTION_KEY = b"unit-test-redaction-key"

# 2023-11-14T22:13:20Z, a whole second: window arithmetic in the detectors stays exact.
T0_MS = 1_700_000_000_000


def kong_bytes(version: str) -> bytes:
    return (KONG_FIXTURES / KONG_FILES[version]).read_bytes()


def kong_entry(version: str) -> dict[str, Any]:
    """A fresh (deep) copy of one fixture entry, safe to mutate."""
    return copy.deepcopy(json.loads(kong_bytes(version)))


def body(*entries: Any) -> bytes:
    """An http-log body: one entry as an object, several as an array."""
    return orjson.dumps(entries[0] if len(entries) == 1 else list(entries))


def make_event(**overrides: Any) -> GatewayEvent:
    """A valid GatewayEvent with boring defaults; any field can be overridden."""
    fields: dict[str, Any] = {
        "ts_ms": T0_MS,
        "gateway": "kong",
        "client_ip": "192.0.2.10",
        "method": "GET",
        "path": "/v1/products",
        "route": "/v1/products",
        "status": 200,
    }
    fields.update(overrides)
    return GatewayEvent(**fields)


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(REDACTION_KEY)


@pytest.fixture
def parser(redactor: Redactor) -> KongParser:
    return KongParser(redactor)
