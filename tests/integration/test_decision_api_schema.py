"""The running decision API (real Redis behind it) against its OpenAPI document, with
schemathesis generating subjects, tokens and malformed requests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import settings
from redis.asyncio import Redis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from pipeline.decisions import Decision, RedisDecisions
from pipeline.stack import free_port, stop_process, wait_for_port

from .conftest import PYTHON, ROOT, Services

SCHEMA = schemathesis.openapi.from_path(ROOT / "pipeline" / "openapi.yaml")
TOKEN = "schema-test-token"
PREFIX = "gwschema:"
KNOWN = "ip:198.51.100.7"  # the document's example subject


async def _store_known_decision(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    now = int(time.time() * 1000)
    await RedisDecisions(redis, PREFIX).write(
        [
            Decision(
                subject=KNOWN,
                score=0.97,
                action="block",
                reasons=["bruteforce: 40 failed logins"],
                detector="bruteforce",
                model_version="test",
                mode="enforce",
                updated_at=now,
                expires_at=now + 3_600_000,
            )
        ]
    )
    await redis.aclose()


@pytest.fixture(scope="module")
def api_url(services: Services) -> Iterator[str]:
    asyncio.run(_store_known_decision(services.redis_url))
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, "-m", "pipeline", "api", "--port", str(port)],
        env={
            **os.environ,
            "GATEWATCH_REDIS_URL": services.redis_url,
            "GATEWATCH_REDIS_PREFIX": PREFIX,
            "GATEWATCH_DECISION_API_TOKEN": TOKEN,
            # The same token as an operator's, so that feedback is exercised past the 401/403;
            # its audit alerts go to the session's broker.
            "GATEWATCH_OPERATOR_TOKENS": json.dumps({"schemathesis": TOKEN}),
            "GATEWATCH_KAFKA": services.kafka,
        },
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, None, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc, timeout_s=20)


def test_the_document_example_is_a_real_decision(api_url: str) -> None:
    answer = requests.get(
        f"{api_url}/v1/decisions/{KNOWN}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ).json()
    assert answer["action"] == "block" and answer["decision"]["detector"] == "bruteforce"


@SCHEMA.parametrize()
@settings(max_examples=150, deadline=None)
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, api_url: str) -> None:
    # A feedback subject's pattern is its shape only: "an address or range a gateway can match"
    # (ip:999.1.1.1, ip:10.0.0.0/8 are refused with 400) and "a reason that is not blank" are
    # beyond what the document can say, so schema-valid feedback may be refused there. Everything
    # the document forbids must still be refused, and every answer must match it.
    excluded = [positive_data_acceptance] if case.operation.path == "/v1/feedback" else []
    case.call_and_validate(
        base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=excluded
    )
