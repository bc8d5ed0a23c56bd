"""Settings for every gatewatch process, read from `GATEWATCH_*` environment variables.

One `Settings` object is built at the edge (the CLI) and handed down by constructor arguments;
nothing below reads the environment itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Mode = Literal["shadow", "log", "challenge", "enforce"]

__all__ = ["Mode", "Settings", "TopicNames", "to_environment"]


class TopicNames(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWATCH_TOPIC_", extra="ignore")

    events: str = "gatewatch.events"
    raw_kong: str = "gatewatch.raw.kong"
    decisions: str = "gatewatch.decisions"
    alerts: str = "gatewatch.alerts"
    dlq: str = "gatewatch.dlq"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWATCH_", extra="ignore")

    kafka: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]"
    )
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis URL; credentials go in the URL (redis://user:password@host:port/db)",
    )
    redis_prefix: str = Field("gw:", description="Prefix of every Redis key gatewatch writes")
    topics: TopicNames = Field(default_factory=TopicNames)
    partitions: int = Field(4, gt=0, description="Partitions of the events topic when created")

    # Collector
    ingest_token: SecretStr = Field(
        SecretStr(""), description="Bearer token senders must present; empty refuses every sender"
    )
    ingest_hmac_secret: SecretStr = Field(
        SecretStr(""), description="Secret for X-Gatewatch-Signature HMAC-signed bodies"
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_entries_per_request: int = Field(10_000, gt=0, description="413 above this many entries")
    source_rate_limit: float = Field(
        200_000, ge=0, description="Entries/s one source address may send (0 = unlimited)"
    )
    source_burst: float = Field(400_000, gt=0, description="Entries one source may send at once")
    dedupe_window_s: float = Field(300, ge=0, description="Remember request ids this long")
    dedupe_max_ids: int = Field(200_000, ge=0, description="...and at most this many")
    envelope_max_events: int = Field(500, gt=0, description="Flush an envelope at this many events")
    envelope_linger_ms: int = Field(20, ge=0, description="Flush an envelope after this long")
    kafka_timeout_s: float = Field(10.0, gt=0, description="Answer 503 when Kafka takes longer")

    # Ingest under faults (collector, syslog, tcp-log): the disk spool, in-flight bodies, and
    # what counts as an implausible entry.
    spool_dir: str = Field(
        default_factory=lambda: _default_spool_dir(),
        description="Root of the listeners' disk spools (one subdirectory per listener, e.g. "
        "collector-8080); 'off' answers 503 when Kafka is slow instead",
    )
    spool_max_bytes: int = Field(
        1024**3, gt=0, description="Disk a listener's spool may use; 503 (or TCP push-back) past it"
    )
    spool_after_s: float = Field(
        1.0, gt=0, description="How long a batch waits for Kafka before it is spooled"
    )
    max_inflight_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Request bodies the collector holds at once; 503 past"
    )
    event_max_future_s: float = Field(
        86_400, ge=0, description="Reject entries timestamped further ahead (0 = no limit)"
    )
    event_max_age_s: float = Field(
        30 * 86_400, ge=0, description="Reject entries timestamped longer ago (0 = no limit)"
    )

    # Redaction: secrets become HMAC-SHA256 fingerprints under this key, so a credential can be
    # tracked across requests without ever being stored.
    redaction_key: SecretStr = Field(SecretStr("change-me-redaction-key"))

    # Decisions
    mode: Mode = Field("shadow", description="Rollout mode stamped on every decision")
    decision_api_token: SecretStr = Field(SecretStr(""), description="Bearer token for the API")
    decision_stream_maxlen: int = Field(100_000, gt=0)
    auth_route_patterns: list[str] = Field(
        default_factory=lambda: ["login", "signin", "sign-in", "auth", "token", "session"],
        description="Path fragments that mark an authentication route",
    )
    openapi_specs: list[str] = Field(
        default_factory=list,
        description="OpenAPI documents (JSON or YAML paths) the API-spec drift detector checks "
        "traffic against (a JSON list in the environment); none turns it off",
    )
    policy_file: str | None = Field(
        None, description="TOML per-route policy: modes, canary %, thresholds (detectors/policy.py)"
    )
    max_subjects: int = Field(
        500_000, gt=0, description="Subjects kept in one worker's memory before the oldest go"
    )

    # Syslog receiver (Apigee MessageLogging): `gatewatch syslog`
    syslog_allow: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Source networks allowed to send syslog (a JSON list in the environment); "
        "empty refuses every sender",
    )
    syslog_max_frame_bytes: int = Field(
        64 * 1024, gt=0, description="Largest syslog message; larger ones go to the DLQ"
    )
    syslog_max_connections: int = Field(512, gt=0, description="Concurrent TCP/TLS senders")
    syslog_tls_cert: str | None = Field(None, description="PEM certificate of the TLS port")
    syslog_tls_key: str | None = Field(None, description="PEM private key of the TLS port")
    syslog_tls_client_ca: str | None = Field(
        None, description="PEM CA that signs the senders' client certificates"
    )
    syslog_tls_require_client_cert: bool = Field(
        False, description="Refuse TLS senders without a certificate from syslog_tls_client_ca"
    )

    # Apigee enforcement: where `gatewatch push-apigee` sends decision changes.
    apigee_ingest_url: str = Field(
        "",
        description="The gatewatch decision-ingest proxy, e.g. https://org-env.apigee.net/gatewatch/decisions",
    )
    apigee_ingest_token: SecretStr = Field(SecretStr(""), description="Bearer token it expects")

    # Incidents and the posture report (`gatewatch sink incidents`, `incidents`, `report`)
    incident_quiet_s: float = Field(
        900, gt=0, description="An incident resolves after this long without a new alert; alerts "
        "sharing a key closer than this in time join one incident"
    )
    incident_retention_s: float = Field(
        7 * 86400, gt=0, description="Incidents, their keys and consumed alert ids expire after it"
    )
    report_webhook_url: str = Field("", description="`gatewatch report --webhook` POSTs here")
    report_webhook_token: SecretStr = Field(
        SecretStr(""), description="Bearer token for the report webhook (none sent when empty)"
    )
    smtp_host: str = Field("", description="SMTP server for `gatewatch report --email`")
    smtp_port: int = Field(587, gt=0, lt=65536)
    smtp_starttls: bool = Field(True, description="Upgrade the SMTP connection with STARTTLS")
    smtp_ssl: bool = Field(False, description="Implicit TLS (port 465) instead of STARTTLS")
    smtp_ca_file: str | None = Field(None, description="PEM CA to verify the SMTP server with")
    smtp_username: str = Field("", description="SMTP login (none when empty)")
    smtp_password: SecretStr = Field(SecretStr(""))
    report_email_from: str = Field("gatewatch@localhost", description="Sender of the report")
    report_email_to: list[str] = Field(
        default_factory=list, description="Report recipients (a JSON list in the environment)"
    )

    # Sinks (`gatewatch sink NAME`, sinks/runner.py): how every sink reads gatewatch.alerts.
    # Each sink's own settings are GATEWATCH_SINK_<NAME>_*, grouped below by sink.
    sink_batch_max_alerts: int = Field(500, gt=0, description="A batch ends at this many alerts")
    sink_batch_max_bytes: int = Field(
        4 * 1024 * 1024, gt=0, description="...or at this many bytes of alert JSON"
    )
    sink_batch_linger_ms: int = Field(
        200, ge=0, description="...or this long after its first alert arrived"
    )
    sink_max_in_flight: int = Field(
        1, gt=0, le=64, description="Batches sent at once (order across batches is then lost)"
    )
    sink_backoff_initial_s: float = Field(0.2, gt=0, description="First retry wait")
    sink_backoff_max_s: float = Field(30.0, gt=0, description="Longest retry wait (jittered)")
    sink_start: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a sink with no cursor yet starts on the alerts topic"
    )

    # Sink `kafka`: alerts re-published to another topic or cluster for SOAR consumers.
    sink_kafka_topic: str = Field("", description="Topic the alerts are published to")
    sink_kafka_bootstrap: str = Field("", description="Bootstrap servers; empty = GATEWATCH_KAFKA")
    sink_kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = (
        "PLAINTEXT"
    )
    sink_kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sink_kafka_username: str = ""
    sink_kafka_password: SecretStr = SecretStr("")
    sink_kafka_ca_file: str | None = Field(None, description="PEM CA of the cluster (SSL)")
    sink_kafka_idempotent: bool = Field(
        True, description="Idempotent producer (the broker must grant producer ids)"
    )

    # Sink `splunk`: Splunk HTTP Event Collector.
    sink_splunk_url: str = Field("", description="HEC base URL, e.g. https://splunk:8088")
    sink_splunk_token: SecretStr = Field(SecretStr(""), description="HEC token (required)")
    sink_splunk_index: str = Field("", description="Index; empty = the token's default index")
    sink_splunk_source: str = "gatewatch"
    sink_splunk_sourcetype: str = "gatewatch:alert"
    sink_splunk_host: str = Field("", description="host field; empty = the alert's node/gateway")
    sink_splunk_gzip: bool = True
    sink_splunk_ack: bool = Field(False, description="Indexer acknowledgement (token has it on)")
    sink_splunk_channel: str = Field("", description="Ack channel GUID; empty = a new one per run")
    sink_splunk_ack_timeout_s: float = Field(
        60.0, gt=0, description="A batch not acknowledged by then is sent again"
    )
    sink_splunk_ca_file: str | None = Field(None, description="PEM CA of the HEC endpoint")
    sink_splunk_timeout_s: float = Field(30.0, gt=0, description="One request's timeout")

    # Sink `elastic`: Elasticsearch / OpenSearch `_bulk` into a data stream, ECS documents.
    sink_elastic_url: str = Field("", description="Cluster URL, e.g. https://es:9200")
    sink_elastic_data_stream: str = Field(
        "logs-gatewatch.alerts-default", description="Data stream (index template must exist)"
    )
    sink_elastic_api_key: SecretStr = Field(
        SecretStr(""), description="API key (base64 id:key, as Elasticsearch returns it `encoded`)"
    )
    sink_elastic_username: str = Field("", description="Basic auth user, when no API key")
    sink_elastic_password: SecretStr = SecretStr("")
    sink_elastic_gzip: bool = True
    sink_elastic_ca_file: str | None = Field(None, description="PEM CA of the cluster")
    sink_elastic_timeout_s: float = Field(30.0, gt=0, description="One request's timeout")

    # Sink `cef`: CEF over syslog (RFC 5424) over TLS, TCP or UDP (sinks/cef.py).
    sink_cef_host: str = Field("", description="the syslog receiver's host name or address")
    sink_cef_port: int = Field(0, ge=0, lt=65536, description="0 = 6514 for tls, 514 otherwise")
    sink_cef_transport: Literal["tls", "tcp", "udp"] = "tls"
    sink_cef_framing: Literal["octet", "newline"] = Field(
        "octet", description="TCP/TLS framing: RFC 6587 octet counting or LF-terminated lines"
    )
    sink_cef_tls_ca: str | None = Field(
        None, description="PEM CA that signs the receiver's certificate; none = the system's CAs"
    )
    sink_cef_tls_cert: str | None = Field(None, description="PEM client certificate, if asked")
    sink_cef_tls_key: str | None = Field(None, description="Its PEM private key")
    sink_cef_tls_server_name: str | None = Field(
        None, description="Name the receiver's certificate must carry; none = the host"
    )
    sink_cef_max_bytes: int = Field(
        0, ge=0, description="Largest message; 0 = 8096 (rsyslog's default), 2048 over UDP"
    )
    sink_cef_hostname: str = Field("", description="Syslog HOSTNAME; empty = this machine's")
    sink_cef_facility: int = Field(16, ge=0, le=23, description="Syslog facility (16 = local0)")
    sink_cef_timeout_s: float = Field(10.0, gt=0, description="Connect and write timeout")

    # Sink `webhook`: Slack, Teams or a templated JSON body, HMAC-signed (sinks/webhook.py).
    sink_webhook_url: SecretStr = Field(
        SecretStr(""), description="the webhook's URL; Slack's and Teams' URLs are secrets"
    )
    sink_webhook_format: Literal["slack", "teams", "template"] = "slack"
    sink_webhook_template: str | None = Field(
        None, description="a string.Template file rendering one alert as JSON"
    )
    sink_webhook_secret: SecretStr = Field(
        SecretStr(""),
        description="HMAC-SHA256 key signing each body (X-Gatewatch-Signature); required for "
        "format=template",
    )
    sink_webhook_per_message: int = Field(
        10, ge=1, le=20, description="Alerts in one Slack/Teams message"
    )
    sink_webhook_ca_file: str | None = Field(None, description="PEM CA of the receiver")
    sink_webhook_timeout_s: float = Field(10.0, gt=0, description="One request's timeout")

    # Sink `ocsf`: OCSF 1.8.0 Detection Findings as JSON lines, to a file or an HTTP endpoint.
    sink_ocsf_path: str = Field("", description="JSON-lines file to append to (or the URL)")
    sink_ocsf_url: SecretStr = Field(
        SecretStr(""), description="Endpoint taking NDJSON POSTs (instead of the file)"
    )
    sink_ocsf_token: SecretStr = Field(SecretStr(""), description="Bearer token for the URL")
    sink_ocsf_rotate_bytes: int = Field(
        100 * 1024 * 1024, gt=0, description="Rotate the file once it is this large"
    )
    sink_ocsf_keep: int = Field(5, ge=1, description="Rotated files kept (path.1 ... path.N)")
    sink_ocsf_ca_file: str | None = Field(None, description="PEM CA of the URL's server")
    sink_ocsf_timeout_s: float = Field(30.0, gt=0, description="One request's timeout")

    # Operator actions: overrides, feedback and their audit alerts (pipeline/operator/)
    override_ttl_s: float = Field(
        7 * 86400, ge=0, description="How long an override or a false positive's allow lasts "
        "unless --ttl says otherwise (0 = until cleared)"
    )
    tuning_step: float = Field(
        0.05, gt=0, le=0.5, description="Least a false positive raises its key's adjustment"
    )
    tuning_max: float = Field(
        0.3, ge=0, le=0.5, description="Largest adjustment one key (route, detector) can reach"
    )
    tuning_half_life_s: float = Field(
        7 * 86400, gt=0, description="Feedback's threshold adjustments halve in this time"
    )
    operator_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Who may send feedback over HTTP: a JSON object {operator name: bearer "
        "token}; the name is the actor audited (none: POST /v1/feedback answers 403)",
    )

    # Checkpoints: subject states and learned models in Redis (pipeline/worker/checkpoints.py)
    checkpoints: bool = Field(
        True, description="Checkpoint state to Redis; off, a restart or a rebalance starts cold"
    )
    checkpoint_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often changed subject states are written"
    )
    checkpoint_model_interval_s: float = Field(
        10.0, gt=0, le=3600, description="How often the learned models are written"
    )
    checkpoint_ttl_s: float = Field(
        3 * 86_400, ge=60, description="A checkpoint not written for this long expires"
    )

    # Worker
    worker_id: str = "gatewatch-worker"
    web_port: int = Field(6066, gt=0, lt=65536, description="Faust's web port; one per worker")
    fetch_max_wait_ms: int = Field(
        100, ge=0, le=10_000, description="Longest a worker's fetch waits for new envelopes"
    )

    # Alerts and worker metrics: what a worker writes to the alerts topic, where /metrics listens.
    alerts_enabled: bool = Field(
        True, description="Write alerts (decision changes, findings) to the alerts topic"
    )
    alerts_retention_ms: int = Field(
        7 * 24 * 3600 * 1000, gt=0, description="retention.ms of the alerts topic when created"
    )
    alert_window_s: float = Field(
        60.0, gt=0, le=3600, description="Findings of one subject and reason code in this much "
        "event time become one alert with a count"
    )
    web_bind: str = Field(
        "127.0.0.1", description="Address the worker's web server (/metrics) listens on"
    )


def _default_spool_dir() -> str:
    """Where a service keeps state: systemd's StateDirectory= when it runs as a unit, else the
    XDG state directory of the user running it."""
    if state := os.environ.get("STATE_DIRECTORY"):
        return str(Path(state.split(":")[0]) / "spool")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(xdg) / "gatewatch" / "spool")


def to_environment(settings: Settings) -> dict[str, str]:
    """The GATEWATCH_* variables that give a child process (`python -m pipeline ...`) exactly
    these settings: secrets revealed, lists and mappings as JSON, topics as GATEWATCH_TOPIC_*, None left out."""
    env: dict[str, str] = {}

    def put(prefix: str, model: BaseSettings) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, TopicNames):
                put("GATEWATCH_TOPIC_", value)
                continue
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list):
                text = json.dumps(value)
            elif isinstance(value, dict):
                text = json.dumps(
                    {k: v.get_secret_value() if isinstance(v, SecretStr) else v
                     for k, v in value.items()}
                )  # fmt: skip
            else:
                text = str(value)
            env[f"{prefix}{name.upper()}"] = text

    put("GATEWATCH_", settings)
    return env
