"""Where a rendered report goes: a file, a webhook (HTTP POST) or email (SMTP).

Email: one message with a short text body (the report's headline figures and top incidents) and
the report attached, over SMTP with STARTTLS (default), implicit TLS or neither, logging in when a
user name is set. The server's certificate is verified (against `GATEWATCH_SMTP_CA_FILE` when
given); credentials are never sent before TLS unless TLS is switched off outright. smtplib runs in
a thread: a report is sent once, not on any hot path.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path

import aiohttp

from pipeline.config import Settings

__all__ = ["DeliveryError", "send_email", "send_webhook", "write_file"]

CONTENT_TYPES = {"html": "text/html", "md": "text/markdown", "json": "application/json"}


class DeliveryError(RuntimeError):
    """The report could not be delivered; the message says where and why, in one line."""


def write_file(body: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(body)
    tmp.replace(path)  # a reader never sees half a report


async def send_webhook(body: bytes, fmt: str, filename: str, settings: Settings) -> int:
    """POST the report; its HMAC-SHA256 (keyed by the bearer token) in X-Gatewatch-Signature."""
    url = settings.report_webhook_url
    if not url:
        raise DeliveryError("set GATEWATCH_REPORT_WEBHOOK_URL to deliver by webhook")
    headers = {
        "Content-Type": f"{CONTENT_TYPES[fmt]}; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    token = settings.report_webhook_token.get_secret_value()
    if token:
        headers["Authorization"] = f"Bearer {token}"
        digest = hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Gatewatch-Signature"] = f"sha256={digest}"
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(url, data=body, headers=headers) as resp,
        ):
            if resp.status >= 300:
                raise DeliveryError(f"webhook {url} answered {resp.status}")
            return resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryError(f"webhook {url}: {exc or type(exc).__name__}") from exc


def _message(
    body: bytes, fmt: str, filename: str, subject: str, text: str, settings: Settings
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.report_email_from
    msg["To"] = ", ".join(settings.report_email_to)
    msg["Subject"] = subject
    msg.set_content(text)
    maintype, subtype = CONTENT_TYPES[fmt].split("/")
    msg.add_attachment(body, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def _smtp_send(msg: EmailMessage, settings: Settings) -> None:
    context = ssl.create_default_context(cafile=settings.smtp_ca_file)
    host, port = settings.smtp_host, settings.smtp_port
    smtp: smtplib.SMTP
    if settings.smtp_ssl:
        smtp = smtplib.SMTP_SSL(host, port, timeout=30, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=30)
    with smtp:
        smtp.ehlo()
        if settings.smtp_starttls and not settings.smtp_ssl:
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        smtp.send_message(msg)


async def send_email(
    body: bytes, fmt: str, filename: str, *, subject: str, text: str, settings: Settings
) -> None:
    if not settings.smtp_host or not settings.report_email_to:
        raise DeliveryError("set GATEWATCH_SMTP_HOST and GATEWATCH_REPORT_EMAIL_TO to email it")
    msg = _message(body, fmt, filename, subject, text, settings)
    try:
        await asyncio.to_thread(_smtp_send, msg, settings)
    except (smtplib.SMTPException, OSError) as exc:
        where = f"{settings.smtp_host}:{settings.smtp_port}"
        raise DeliveryError(f"email via {where}: {exc or type(exc).__name__}") from exc
