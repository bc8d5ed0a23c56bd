"""Alerts to Splunk's HTTP Event Collector (`gatewatch sink splunk`).

One `POST /services/collector/event` per batch: the events back to back (not an array), each
`{"time", "host", "source", "sourcetype", "index", "event": <the alert>}`, gzip-compressed, with
`Authorization: Splunk <token>`. With indexer acknowledgement on, the request carries the channel
(`X-Splunk-Request-Channel`), the answer an `ackId`, and the batch counts as delivered only once
`POST /services/collector/ack` says so; not acknowledged within the timeout, it is sent again (the
ids are stable: a search can dedup on `event.id`).

What each answer means (Splunk's documented codes):
- 200 / code 0: delivered.
- 500 / code 8 (internal error), 503 / code 9 (server busy), other 5xx but 501, 408, 429, no
  answer at all: retried with backoff (Retry-After honoured).
- Configuration the operator must fix, the same for every alert: 401/403 / codes 1-4 (token
  disabled, required, invalid authorization, invalid token), code 7 (incorrect index), codes 10,
  11, 14 (channel missing or invalid, ack disabled), 404: held and retried, logged as errors. Splunk
  says never to retry a 4xx, and we do not resend as-is in a tight loop; but dead-lettering every
  alert because a token was rotated would turn a configuration slip into a replay job, so the
  cursor waits instead (the backlog shows in `gatewatch_sink_lag`).
- What is wrong with the data (codes 5, 6, 12, 13; 413 too large; any other 400): Splunk
  rejects the whole request for one bad event. When it names it (`invalid-event-number`) that
  alert is dead-lettered and the others are sent again; otherwise the batch is split in halves
  until the bad alert is alone, then dead-lettered with Splunk's answer as the reason.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import structlog

from pipeline.alerts import Alert
from pipeline.config import Settings
from sinks import http
from sinks.base import Delivery, SinkConfigError
from sinks.registry import require

__all__ = ["SplunkHecSink", "build"]

log = structlog.get_logger(__name__)

CONFIG_CODES = frozenset({1, 2, 3, 4, 7, 10, 11, 14})
DATA_CODES = frozenset({5, 6, 12, 13})
ACK_POLL_S = 0.5


class SplunkHecSink:
    name = "splunk"

    def __init__(
        self,
        *,
        url: str,
        token: str,
        index: str = "",
        source: str = "gatewatch",
        sourcetype: str = "gatewatch:alert",
        host: str = "",
        gzip: bool = True,
        ack: bool = False,
        channel: str = "",
        ack_timeout_s: float = 60.0,
        ca_file: str | None = None,
        timeout_s: float = 30.0,
        ack_poll_s: float = ACK_POLL_S,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.host = host
        self.gzip = gzip
        self.ack = ack
        self.channel = channel or str(uuid.uuid4())
        self.ack_timeout_s = ack_timeout_s
        self.ack_poll_s = ack_poll_s
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        # The fields every event shares, encoded once.
        shared: dict[str, Any] = {"source": source, "sourcetype": sourcetype}
        if index:
            shared["index"] = index
        self._shared = orjson.dumps(shared)[1:-1]
        self._session: Any = None
        self._warned_no_ack = False

    async def start(self) -> None:
        headers = {"Authorization": f"Splunk {self.token}"}
        if self.ack:
            headers["X-Splunk-Request-Channel"] = self.channel
        self._session = http.client_session(
            ca_file=self.ca_file, timeout_s=self.timeout_s, headers=headers
        )
        await self.health()

    async def health(self) -> bool:
        """Ask HEC's health endpoint (200 healthy, 503 queues full) and log the answer; sending
        starts either way, since the runner retries a busy HEC anyway."""
        try:
            async with self._session.get(f"{self.url}/services/collector/health") as resp:
                answer = _json(await resp.read())
                healthy = resp.status == 200
        except http.CONNECTION_ERRORS as exc:
            log.warning("splunk.unreachable", url=self.url, error=repr(exc))
            return False
        if healthy:
            log.info("splunk.healthy", url=self.url, ack=self.ack)
        else:
            log.warning("splunk.unhealthy", url=self.url, answer=answer.get("text"))
        return healthy

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def encode(self, alert: Alert) -> bytes:
        """One HEC event: the envelope fields, then the alert as `event` (JSON from pydantic's
        serializer, spliced in rather than re-parsed)."""
        host = self.host or alert.node or alert.gateway or "gatewatch"
        head = orjson.dumps({"time": alert.event_time / 1000, "host": host})[:-1]
        return b'%s,%s,"event":%s}\n' % (head, self._shared, alert.model_dump_json().encode())

    async def send(self, alerts: list[Alert]) -> Delivery:
        delivery = Delivery()
        await self._post(alerts, [self.encode(a) for a in alerts], delivery)
        return delivery

    async def _post(self, alerts: list[Alert], events: list[bytes], delivery: Delivery) -> None:
        body = b"".join(events)
        headers = {"Content-Type": "application/json"}
        if self.gzip:
            body = http.gzip(body)
            headers["Content-Encoding"] = "gzip"
        try:
            async with self._session.post(
                f"{self.url}/services/collector/event", data=body, headers=headers
            ) as resp:
                status = resp.status
                answer = _json(await resp.read())
                wait = http.retry_after(resp.headers)
        except http.CONNECTION_ERRORS as exc:
            _retry(delivery, alerts, f"splunk: {exc!r}")
            return
        code = answer.get("code")
        text = f"splunk: HTTP {status} code {code}: {answer.get('text', '')}"
        if status == 200 and code in (0, None):
            if self.ack and "ackId" not in answer and not self._warned_no_ack:
                # The token has acknowledgement off: HEC's 200 is all the confirmation there is.
                log.warning("splunk.ack_not_enabled_on_token", url=self.url)
                self._warned_no_ack = True
            if self.ack and "ackId" in answer:
                if not await self._acknowledged(int(answer["ackId"])):
                    _retry(delivery, alerts, f"splunk: ack {answer['ackId']} not given in time")
            return
        if code in CONFIG_CODES or status in (401, 403, 404):
            log.error("splunk.misconfigured", status=status, code=code, text=answer.get("text"))
            _retry(delivery, alerts, text, wait)
            return
        if http.classify(status) == "retry" and status != 413:
            _retry(delivery, alerts, text, wait)
            return
        await self._isolate(alerts, events, answer, text, delivery)

    async def _isolate(
        self,
        alerts: list[Alert],
        events: list[bytes],
        answer: dict[str, Any],
        text: str,
        delivery: Delivery,
    ) -> None:
        """The whole request was refused for its content: find the bad alert(s)."""
        if len(alerts) == 1:
            delivery.rejected[alerts[0].id] = text
            return
        bad = answer.get("invalid-event-number")
        if isinstance(bad, int) and 0 <= bad < len(alerts):
            delivery.rejected[alerts[bad].id] = text
            rest = [i for i in range(len(alerts)) if i != bad]
            await self._post([alerts[i] for i in rest], [events[i] for i in rest], delivery)
            return
        half = len(alerts) // 2
        await self._post(alerts[:half], events[:half], delivery)
        await self._post(alerts[half:], events[half:], delivery)

    async def _acknowledged(self, ack_id: int) -> bool:
        """Poll the ack endpoint until the indexers confirm `ack_id` or the timeout passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_timeout_s
        url = f"{self.url}/services/collector/ack?channel={self.channel}"
        while loop.time() < deadline:
            await asyncio.sleep(self.ack_poll_s)  # indexing takes time; nothing to await here
            try:
                async with self._session.post(url, json={"acks": [ack_id]}) as resp:
                    answer = _json(await resp.read()) if resp.status == 200 else {}
            except http.CONNECTION_ERRORS:
                continue
            if answer.get("acks", {}).get(str(ack_id)) is True:
                return True
        return False


def _retry(delivery: Delivery, alerts: list[Alert], reason: str, wait: float | None = None) -> None:
    delivery.retry.extend(a.id for a in alerts)
    delivery.retry_reason = reason
    if wait is not None:
        delivery.retry_after = max(wait, delivery.retry_after or 0.0)


def _json(data: bytes) -> dict[str, Any]:
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {"text": data[:200].decode(errors="replace")}
    return answer if isinstance(answer, dict) else {}


def build(settings: Settings) -> SplunkHecSink:
    channel = settings.sink_splunk_channel
    if channel:
        try:
            uuid.UUID(channel)
        except ValueError:
            raise SinkConfigError(
                f"GATEWATCH_SINK_SPLUNK_CHANNEL must be a GUID, not {channel!r}"
            ) from None
    return SplunkHecSink(
        url=require(settings, "sink_splunk_url"),
        token=require(settings, "sink_splunk_token"),
        index=settings.sink_splunk_index,
        source=settings.sink_splunk_source,
        sourcetype=settings.sink_splunk_sourcetype,
        host=settings.sink_splunk_host,
        gzip=settings.sink_splunk_gzip,
        ack=settings.sink_splunk_ack,
        channel=settings.sink_splunk_channel,
        ack_timeout_s=settings.sink_splunk_ack_timeout_s,
        ca_file=settings.sink_splunk_ca_file,
        timeout_s=settings.sink_splunk_timeout_s,
    )
