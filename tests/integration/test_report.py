"""`gatewatch report` for real: read by time from the broker, rendered by headless Chromium,
mailed through a real SMTP server (aiosmtpd: STARTTLS, AUTH) and POSTed to a webhook."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import sys
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from PIL import Image

from pipeline.config import Settings, to_environment
from pipeline.kafka import ensure_topics
from pipeline.stack import free_port
from sinks.incidents import build
from tests.integration.conftest import serve
from tests.reportlib import sample_alerts

NOW = int(time.time() * 1000)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags the machine notes give for root in a closed network (see scripts/test).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip


def alerts_file(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b"".join(a.to_json() + b"\n" for a in sample_alerts(NOW - 3_000_000)))
    return path


async def gatewatch(env: dict[str, str], *args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", *args, env=os.environ | env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err


def offline(settings: Settings) -> dict[str, str]:
    """Settings for a report on a file: no Redis is reachable, none is needed."""
    return to_environment(settings) | {"GATEWATCH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}


async def test_the_html_report_renders_in_headless_chromium_with_its_charts(
    settings: Settings, tmp_path: Path
) -> None:
    assert CHROMIUM, "chromium is installed by scripts/test"
    out = tmp_path / "report.html"
    code, _, err = await gatewatch(
        offline(settings),
        "report",
        "--since",
        "2h",
        "--alerts",
        str(alerts_file(tmp_path)),
        "--out",
        str(out),
    )
    assert code == 0, err
    base = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = await asyncio.to_thread(
        subprocess.run, [*base, "--dump-dom", out.as_uri()], capture_output=True, timeout=120,
        check=True,
    )  # fmt: skip
    page = dom.stdout.decode()
    # The browser parsed three charts, each an SVG whose series groups hold drawn paths.
    figures = re.findall(r'<figure class="chart" data-chart="([^"]+)"[^>]*>\s*<svg', page)
    assert figures == ["by-family", "by-action", "would-block"]
    for series in (
        "family-credential-attack",
        "family-flood",
        "family-injection-probing",
        "action-would-block",
        "action-block",
        "would-block-bar",
    ):
        drawn = re.findall(rf'<g id="{series}-\d+">\s*<path d="M [^"]+"', page)
        assert drawn, series
    assert "credential attack on /v1/login from 15 addresses" in page
    # And it painted them: the screenshot holds the charts' first two palette colours.
    shot = tmp_path / "report.png"
    await asyncio.to_thread(
        subprocess.run, [*base, "--window-size=1200,3000", f"--screenshot={shot}", out.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    colours = {rgb for _, rgb in Image.open(shot).convert("RGB").getcolors(1 << 20) or []}
    assert (0x00, 0x72, 0xB2) in colours and (0xD5, 0x5E, 0x00) in colours


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # the name aiosmtpd calls
        msg = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
        return "250 OK"


def _authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"reporter", b"s3cret")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp(tmp_path: Path):
    cert, key = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = _Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=free_port(), tls_context=context,
        require_starttls=True, authenticator=_authenticator, auth_required=True,
        auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    yield inbox, controller.port, cert
    controller.stop()


async def test_the_report_is_mailed_with_starttls_and_login_to_a_real_smtp_server(
    settings: Settings, tmp_path: Path, smtp
) -> None:
    inbox, port, cert = smtp
    env = offline(settings) | {
        "GATEWATCH_SMTP_HOST": "127.0.0.1", "GATEWATCH_SMTP_PORT": str(port),
        "GATEWATCH_SMTP_CA_FILE": str(cert), "GATEWATCH_SMTP_USERNAME": "reporter",
        "GATEWATCH_SMTP_PASSWORD": "s3cret", "GATEWATCH_REPORT_EMAIL_FROM": "gw@example.test",
        "GATEWATCH_REPORT_EMAIL_TO": '["soc@example.test", "lead@example.test"]',
    }  # fmt: skip
    args = ["report", "--since", "2h", "--alerts", str(alerts_file(tmp_path)), "--email",
            "--format", "md", "--json"]  # fmt: skip
    code, out, err = await gatewatch(env, *args)
    assert code == 0, err
    assert orjson.loads(out)["emailed"] == ["soc@example.test", "lead@example.test"]
    [(sender, rcpts, msg)] = inbox.messages
    assert sender == "gw@example.test" and rcpts == ["soc@example.test", "lead@example.test"]
    assert msg["Subject"] == "gatewatch posture report: 3 incidents (2h)"
    body = msg.get_body(("plain",))
    assert body is not None and "- /v1/login: 15 subjects" in body.get_content()
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "gatewatch-report.md"
    assert "## Would have blocked in shadow" in attachment.get_content()

    # A wrong password is one clear line and a failing exit code, nothing delivered.
    code, _, err = await gatewatch(env | {"GATEWATCH_SMTP_PASSWORD": "nope"}, *args)
    assert code == 1 and b"report not delivered: email via 127.0.0.1" in err
    assert b"Traceback" not in err and len(inbox.messages) == 1


async def test_the_report_is_posted_to_a_webhook_signed(settings: Settings, tmp_path: Path):
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/reports", hook)
    runner, url = await serve(app)
    try:
        env = offline(settings) | {
            "GATEWATCH_REPORT_WEBHOOK_URL": f"{url}/reports",
            "GATEWATCH_REPORT_WEBHOOK_TOKEN": "hook-token",
        }
        code, out, err = await gatewatch(env, "report", "--since", "2h", "--format", "json",
                                         "--alerts", str(alerts_file(tmp_path)), "--webhook",
                                         "--json")  # fmt: skip
    finally:
        await runner.cleanup()
    assert code == 0, err
    assert orjson.loads(out)["webhook_status"] == 202
    [(headers, body)] = received
    assert headers["Authorization"] == "Bearer hook-token"
    expected = hmac.new(b"hook-token", body, hashlib.sha256).hexdigest()
    assert headers["X-Gatewatch-Signature"] == f"sha256={expected}"
    assert headers["Content-Type"].startswith("application/json")
    assert orjson.loads(body)["totals"]["incidents"] == 3


async def test_the_report_reads_the_alerts_topic_by_time_and_the_incident_store(
    settings: Settings, redis, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    alerts = sample_alerts(NOW - 3_000_000)
    old = sample_alerts(NOW - 30 * 86_400_000)[:3]  # a month ago: outside --since 24h
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
    await producer.start()
    try:
        # Written a month ago. Kafka's offsets_for_times skips them; Tansu answers a lookup by
        # time with the log's start, so here the window's event-time filter drops them.
        for a in old:
            await producer.send_and_wait(
                settings.topics.alerts, a.to_json(), timestamp_ms=a.emit_time
            )
        await producer.send_and_wait(settings.topics.alerts, b"not an alert")
        for a in alerts:
            await producer.send_and_wait(
                settings.topics.alerts, a.to_json(), timestamp_ms=a.emit_time
            )
    finally:
        await producer.stop()
    sink = build(settings)  # the incident sink, fed the same alerts: the report reads its store
    assert (await sink.send(alerts)).ok
    await sink.close()

    out = tmp_path / "report.json"
    code, _, err = await gatewatch(to_environment(settings), "report", "--since", "24h",
                                   "--format", "json", "--out", str(out))  # fmt: skip
    assert code == 0, err
    data = orjson.loads(out.read_bytes())
    assert data["totals"]["alerts"] == len(alerts)  # the month-old ones were never read
    assert data["sources"] == {
        "alerts": f"alerts topic {settings.topics.alerts} (read by time)",
        "incidents": "incident store (Redis)",
        "skipped": "1 records that were not alerts",
    }
    assert data["incidents"][0]["title"] == ("credential attack on /v1/login from 15 addresses")
