"""The Kong configs we ship must match what the collector and bridge actually accept."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import yaml

from pipeline.config import Settings
from pipeline.ingest.collector import KONG_PATHS

EXAMPLES = Path(__file__).parent.parent.parent / "kong-http-log" / "examples"


def plugin(file: str, name: str) -> dict:
    doc = yaml.safe_load((EXAMPLES / file).read_text())
    (found,) = [p for p in doc["plugins"] if p["name"] == name]
    return found["config"]


def test_http_log_example_matches_the_collector() -> None:
    config = plugin("http-log.kong.yml", "http-log")
    assert urlparse(config["http_endpoint"]).path in KONG_PATHS
    assert config["headers"]["Authorization"].startswith("Bearer ")
    queue = config["queue"]
    # Arrays (batch > 1), within the collector's per-request entry limit.
    assert queue["max_batch_size"] > 1
    assert queue["max_batch_size"] <= Settings().max_entries_per_request
    assert queue["max_retry_time"] >= 60
    assert set(config["custom_fields_by_lua"]) >= {"node", "credential_id"}


def test_kafka_log_example_writes_the_bridged_topic() -> None:
    config = plugin("kafka-log.kong.yml", "kafka-log")
    assert config["topic"] == Settings().topics.raw_kong
    assert config["producer_request_acks"] == -1
