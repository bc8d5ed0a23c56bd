"""to_environment: a child process started with these variables gets the very same settings."""

from __future__ import annotations

import os

import pytest

from pipeline.config import Settings, TopicNames, to_environment


def test_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        kafka="k1:9092,k2:9092",
        redis_url="redis://:pw@127.0.0.1:6390/2",
        redis_prefix="gwx:",
        topics=TopicNames(events="e.events", dlq="e.dlq"),
        partitions=8,
        ingest_token="tok",
        mode="enforce",
        syslog_allow=["10.0.0.0/8", "::1/128"],
        syslog_tls_require_client_cert=True,
        fetch_max_wait_ms=20,
        operator_tokens={"alice": "t1", "soc bot": "t2"},
    )
    env = to_environment(original)
    assert env["GATEWATCH_TOPIC_EVENTS"] == "e.events"
    assert env["GATEWATCH_INGEST_TOKEN"] == "tok"  # secrets in clear: the child needs them
    assert "GATEWATCH_SYSLOG_TLS_CERT" not in env  # None stays unset

    for name in list(os.environ):
        if name.startswith("GATEWATCH_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings()

    def revealed(s: Settings) -> dict[str, object]:
        dump = s.model_dump()
        for key in (
            "redis_url",
            "ingest_token",
            "ingest_hmac_secret",
            "redaction_key",
            "decision_api_token",
            "apigee_ingest_token",
        ):
            dump[key] = getattr(s, key).get_secret_value()
        dump["operator_tokens"] = {k: v.get_secret_value() for k, v in s.operator_tokens.items()}
        return dump

    assert revealed(rebuilt) == revealed(original)
