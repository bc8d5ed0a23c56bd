"""The CEF, webhook and OCSF sinks' settings: each missing or wrong one stops `gatewatch sink` with
one line naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import Settings
from sinks.base import SinkConfigError
from sinks.cef import CefSink
from sinks.ocsf import OcsfSink
from sinks.registry import build_sink
from sinks.syslog_out import SyslogDatagram, SyslogStream
from sinks.webhook import WebhookSink


@pytest.mark.parametrize(
    ("name", "env", "message"),
    [
        ("cef", {}, "set GATEWATCH_SINK_CEF_HOST"),
        ("cef", {"sink_cef_host": "h", "sink_cef_max_bytes": 100}, "at least 480"),
        ("cef", {"sink_cef_host": "h", "sink_cef_tls_cert": "c.pem"}, "_TLS_CERT and "),
        ("cef", {"sink_cef_host": "h", "sink_cef_tls_ca": "/nonexistent.pem"}, "TLS files"),
        ("cef", {"sink_cef_host": "h", "sink_cef_hostname": "a b"}, "printable ASCII"),
        ("webhook", {}, "set GATEWATCH_SINK_WEBHOOK_URL"),
        ("webhook", {"sink_webhook_url": "http://hooks.example.com/x"}, "must be https://"),
        (
            "webhook",
            {"sink_webhook_url": "https://h/x", "sink_webhook_format": "template"},
            "set GATEWATCH_SINK_WEBHOOK_TEMPLATE",
        ),
        (
            "webhook",
            {
                "sink_webhook_url": "https://h/x",
                "sink_webhook_format": "template",
                "sink_webhook_template": "t.json",
            },
            "set GATEWATCH_SINK_WEBHOOK_SECRET",
        ),
        ("ocsf", {}, "GATEWATCH_SINK_OCSF_PATH"),
        ("ocsf", {"sink_ocsf_path": "x", "sink_ocsf_url": "https://c"}, "exactly one"),
    ],
)
def test_bad_settings_name_their_variable(name: str, env: dict[str, object], message: str) -> None:
    with pytest.raises(SinkConfigError, match=message):
        build_sink(name, Settings.model_validate(env))


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('{"t": "$titel"}', r"unknown placeholders \['titel'\]"),
        ('{"price": "5$"}', "write `\\$\\$`"),
        ('{"t": $title}', "unexpected character"),  # a text placeholder outside quotes
    ],
)
def test_a_broken_template_is_refused_at_start(tmp_path: Path, template: str, message: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(template)
    env = {"sink_webhook_url": "https://h/x", "sink_webhook_format": "template",
           "sink_webhook_template": str(path), "sink_webhook_secret": "s"}  # fmt: skip
    with pytest.raises(SinkConfigError, match=message):
        build_sink("webhook", Settings.model_validate(env))


def test_defaults_are_the_safe_ones() -> None:
    cef = build_sink("cef", Settings.model_validate({"sink_cef_host": "siem.example"}))
    assert isinstance(cef, CefSink) and isinstance(cef.transport, SyslogStream)
    assert cef.transport.tls is not None and cef.transport.port == 6514  # TLS, verified
    assert cef.transport.framing == "octet" and cef.formatter.max_bytes == 8096
    udp = build_sink(
        "cef", Settings.model_validate({"sink_cef_host": "h", "sink_cef_transport": "udp"})
    )
    assert isinstance(udp, CefSink) and isinstance(udp.transport, SyslogDatagram)
    assert udp.transport.port == 514 and udp.formatter.max_bytes == 2048
    hook = build_sink("webhook", Settings.model_validate({"sink_webhook_url": "https://h/x"}))
    assert isinstance(hook, WebhookSink) and hook.per_message == 10
    ocsf = build_sink("ocsf", Settings.model_validate({"sink_ocsf_path": "/tmp/x.jsonl"}))
    assert isinstance(ocsf, OcsfSink) and ocsf.file is not None


def test_the_command_stops_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "sink", "cef"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "gatewatch sink: set GATEWATCH_SINK_CEF_HOST (the syslog receiver's host name or address)"
    ]
