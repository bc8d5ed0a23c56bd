"""Alerts to Elasticsearch or OpenSearch as ECS documents, through `_bulk` into a data stream
(`gatewatch sink elastic`).

One NDJSON `_bulk` request per batch: a `create` action (the only one data streams take) with the
alert id as `_id`, then the ECS document (`sinks/ecs.py`), gzip-compressed. Authentication is an
API key (`Authorization: ApiKey ...`) or basic auth.

`_bulk` answers 200 even when items fail, so each item's status decides:
- 2xx, and 409 (a document with this id is already there: an earlier attempt made it): delivered.
- 429 (the cluster is pushing back) and 5xx: that item alone is sent again after the backoff.
- 400 (a mapping error: the document does not fit the index's mapping): dead-lettered with
  Elasticsearch's error type and reason; resending it cannot succeed.
- 401/403/404 (no privilege on the stream, the stream or its template missing): configuration,
  the same for every alert: held and retried, logged as errors.
A whole request refused with 413 is split in halves; 429/5xx/connection errors retry the batch;
401/403 hold it, as above.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import structlog

from pipeline.alerts import Alert
from pipeline.config import Settings
from sinks import http
from sinks.base import Delivery, SinkConfigError
from sinks.ecs import ecs_document
from sinks.registry import require

__all__ = ["ElasticBulkSink", "build"]

log = structlog.get_logger(__name__)
CONFIG_STATUSES = frozenset({401, 403, 404})
# Only what the sink reads from the answer: the rest of each item is wasted bytes and parsing.
FILTER_PATH = "errors,items.*.status,items.*.error.type,items.*.error.reason"


class ElasticBulkSink:
    name = "elastic"

    def __init__(
        self,
        *,
        url: str,
        data_stream: str,
        authorization: str,
        gzip: bool = True,
        ca_file: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = f"{url.rstrip('/')}/_bulk?filter_path={FILTER_PATH}"
        self.data_stream = data_stream
        self.authorization = authorization
        self.gzip = gzip
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self._session: Any = None

    async def start(self) -> None:
        self._session = http.client_session(
            ca_file=self.ca_file,
            timeout_s=self.timeout_s,
            headers={"Authorization": self.authorization},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def encode(self, alert: Alert) -> bytes:
        """The action line and the document line of one alert."""
        action = orjson.dumps({"create": {"_index": self.data_stream, "_id": alert.id}})
        document = orjson.dumps(ecs_document(alert, data_stream=self.data_stream))
        return b"%s\n%s\n" % (action, document)

    async def send(self, alerts: list[Alert]) -> Delivery:
        delivery = Delivery()
        await self._bulk(alerts, [self.encode(a) for a in alerts], delivery)
        return delivery

    async def _bulk(self, alerts: list[Alert], lines: list[bytes], delivery: Delivery) -> None:
        body = b"".join(lines)  # each pair ends with "\n": so does the body, as _bulk requires
        headers = {"Content-Type": "application/x-ndjson"}
        if self.gzip:
            body = http.gzip(body)
            headers["Content-Encoding"] = "gzip"
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                status = resp.status
                raw = await resp.read()
                wait = http.retry_after(resp.headers)
        except http.CONNECTION_ERRORS as exc:
            _retry(delivery, alerts, f"elastic: {exc!r}")
            return
        if status == 200:
            self._items(alerts, raw, delivery, wait)
            return
        reason = f"elastic: HTTP {status}: {_error(raw)}"
        if status in CONFIG_STATUSES:
            log.error("elastic.misconfigured", status=status, error=_error(raw))
            _retry(delivery, alerts, reason, wait)
        elif status == 413 and len(alerts) > 1:
            half = len(alerts) // 2
            await self._bulk(alerts[:half], lines[:half], delivery)
            await self._bulk(alerts[half:], lines[half:], delivery)
        elif http.classify(status) == "retry":
            _retry(delivery, alerts, reason, wait)
        elif len(alerts) > 1:  # a request-level 400: one document made the whole body invalid
            half = len(alerts) // 2
            await self._bulk(alerts[:half], lines[:half], delivery)
            await self._bulk(alerts[half:], lines[half:], delivery)
        else:
            delivery.rejected[alerts[0].id] = reason

    def _items(
        self, alerts: list[Alert], raw: bytes, delivery: Delivery, wait: float | None
    ) -> None:
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            _retry(delivery, alerts, "elastic: 200 with an unreadable body")
            return
        if not answer.get("errors"):
            return
        items = answer.get("items") or []
        if len(items) != len(alerts):
            _retry(delivery, alerts, f"elastic: {len(items)} items for {len(alerts)} actions")
            return
        config = None
        for alert, item in zip(alerts, items, strict=True):
            result: dict[str, Any] = next(iter(item.values()), {})
            status = int(result.get("status", 500))
            if 200 <= status < 300 or status == 409:
                continue
            error = result.get("error") or {}
            reason = f"elastic: {status} {error.get('type', '')}: {error.get('reason', '')}"
            if status == 400:
                delivery.rejected[alert.id] = reason
                continue
            if status in CONFIG_STATUSES:
                config = reason
            delivery.retry.append(alert.id)
            delivery.retry_reason = reason
        if config is not None:
            log.error("elastic.misconfigured", error=config)
        if delivery.retry and wait is not None:
            delivery.retry_after = wait


def _retry(delivery: Delivery, alerts: list[Alert], reason: str, wait: float | None = None) -> None:
    delivery.retry.extend(a.id for a in alerts)
    delivery.retry_reason = reason
    if wait is not None:
        delivery.retry_after = max(wait, delivery.retry_after or 0.0)


def _error(raw: bytes) -> str:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace")
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        return f"{error.get('type', '')}: {error.get('reason', '')}"
    return str(error or answer)[:200]


def build(settings: Settings) -> ElasticBulkSink:
    url = require(settings, "sink_elastic_url")
    api_key = settings.sink_elastic_api_key.get_secret_value()
    if api_key:
        authorization = f"ApiKey {api_key}"
    elif settings.sink_elastic_username:
        password = settings.sink_elastic_password.get_secret_value()
        pair = f"{settings.sink_elastic_username}:{password}".encode()
        authorization = f"Basic {base64.b64encode(pair).decode()}"
    else:
        raise SinkConfigError(
            "set GATEWATCH_SINK_ELASTIC_API_KEY, or GATEWATCH_SINK_ELASTIC_USERNAME and _PASSWORD"
        )
    if not settings.sink_elastic_data_stream:
        raise SinkConfigError("set GATEWATCH_SINK_ELASTIC_DATA_STREAM")
    return ElasticBulkSink(
        url=url,
        data_stream=settings.sink_elastic_data_stream,
        authorization=authorization,
        gzip=settings.sink_elastic_gzip,
        ca_file=settings.sink_elastic_ca_file,
        timeout_s=settings.sink_elastic_timeout_s,
    )
