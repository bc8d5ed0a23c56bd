"""A Splunk HTTP Event Collector for tests, following Splunk's documented contract.

- `POST /services/collector/event`: `Authorization: Splunk <token>`; the body (gzip when
  `Content-Encoding: gzip`) is JSON event objects back to back; answers `{"text", "code"}` from
  the documented table: 0 success; 1 token disabled (403); 2 token required (401); 3 invalid
  authorization (401); 4 invalid token (403); 5 no data (400); 6 invalid data format (400);
  7 incorrect index (400); 8 internal server error (500); 9 server busy (503); 10 data channel
  missing (400); 11 invalid data channel (400); 12 event field required (400); 13 event field
  blank (400); 14 ACK disabled (400). Errors about one event name it (`invalid-event-number`).
  A request with an error indexes nothing (Splunk makes no promise about the events before the bad
  one: a sender must resend them, as gatewatch does).
- With indexer acknowledgement on (per token), requests need `X-Splunk-Request-Channel: <GUID>`,
  the answer carries `ackId`, and events count as indexed once acknowledged:
  `POST /services/collector/ack?channel=<GUID>` with `{"acks": [ids]}` answers
  `{"acks": {"<id>": true|false}}`.
- `GET /services/collector/health`: 200 healthy, 503 unhealthy.

What a test can make it do: answer the next requests from a script (`script`), find some alerts'
events invalid (`poison`, code 6), lose acknowledgements (`lose_acks`), hold requests until a gate
opens (`gate`).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = ["HecServer"]


@dataclass
class HecServer:
    token: str = "hec-token"
    disabled: bool = False
    ack: bool = False
    indexes: frozenset[str] = frozenset({"main", "gatewatch"})
    name_invalid_event: bool = True  # answer with invalid-event-number (Splunk does, for 6/12/13)
    healthy: bool = True
    events: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, int, dict[str, str]]] = field(default_factory=list)
    poison: set[str] = field(default_factory=set)
    lose_acks: int = 0  # this many ackIds are never acknowledged (their events lost)
    gate: asyncio.Event | None = None
    gate_after: int = 0  # hold requests once this many events are indexed, until `gate` is set
    held: asyncio.Event = field(default_factory=asyncio.Event)  # a request is being held
    requests: int = 0
    gzipped: int = 0
    channels: set[str] = field(default_factory=set)
    _acks: dict[int, list[dict[str, Any]] | None] = field(default_factory=dict)
    _next_ack: int = 0
    indexed: asyncio.Event = field(default_factory=asyncio.Event)
    expect: int = 0  # `indexed` is set once this many distinct ids are in
    first_at: float = 0.0  # monotonic time of the first and the latest indexing
    last_at: float = 0.0
    refused: asyncio.Event = field(default_factory=asyncio.Event)
    refused_after: int = 1  # `refused` is set after this many requests were refused for auth
    _refusals: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/services/collector/event", self._event)
        app.router.add_post("/services/collector/ack", self._ack)
        app.router.add_get("/services/collector/health", self._health)
        return app

    def ids(self) -> list[str]:
        return [e["event"]["id"] for e in self.events]

    def _answer(self, status: int, code: int, text: str, **extra: Any) -> web.Response:
        return web.json_response({"text": text, "code": code, **extra}, status=status)

    def _auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        if not header:
            return self._answer(401, 2, "Token is required")
        scheme, _, token = header.partition(" ")
        if scheme != "Splunk" or not token:
            return self._answer(401, 3, "Invalid authorization")
        if token != self.token:
            return self._answer(403, 4, "Invalid token")
        if self.disabled:
            return self._answer(403, 1, "Token disabled")
        return None

    def _channel(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        channel = request.headers.get("X-Splunk-Request-Channel") or request.query.get("channel")
        if not channel:
            return None, self._answer(400, 10, "Data channel is missing")
        try:
            uuid.UUID(channel)
        except ValueError:
            return None, self._answer(400, 11, "Invalid data channel")
        return channel, None

    async def _event(self, request: web.Request) -> web.Response:
        self.requests += 1
        refused = self._auth(request)
        if refused is not None:
            self._refusals += 1
            if self._refusals >= self.refused_after:
                self.refused.set()
            return refused
        if self.ack:
            channel, refused = self._channel(request)
            if refused is not None:
                return refused
            self.channels.add(str(channel))
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            self.gzipped += 1
            # aiohttp inflates gzip request bodies itself (and answers 400 on a broken one).
            if body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
        if self.script:
            status, code, headers = self.script.pop(0)
            texts = {8: "Internal server error", 9: "Server is busy"}
            answer = self._answer(status, code, texts.get(code, "scripted"))
            answer.headers.update(headers)
            return answer
        if self.gate is not None and not self.gate.is_set() and len(self.events) >= self.gate_after:
            self.held.set()
            await self.gate.wait()
        events, error = self._parse(body)
        if error is not None:
            return error
        if self.ack:
            ack_id = self._next_ack
            self._next_ack += 1
            if self.lose_acks > 0:
                self.lose_acks -= 1
                self._acks[ack_id] = None  # never acknowledged, never indexed
            else:
                self._acks[ack_id] = events
            return self._answer(200, 0, "Success", ackId=ack_id)
        self._index(events)
        return self._answer(200, 0, "Success")

    @staticmethod
    def _decode(body: bytes) -> tuple[list[Any], int | None]:
        """The JSON values back to back in `body`, and the index of an undecodable one."""
        try:  # the common layout, one object per line, at orjson's speed
            return [orjson.loads(line) for line in body.splitlines() if line.strip()], None
        except orjson.JSONDecodeError:
            pass
        text, decoder, values, i = body.decode(errors="replace"), json.JSONDecoder(), [], 0
        while True:
            while i < len(text) and text[i].isspace():
                i += 1
            if i == len(text):
                return values, None
            try:
                value, i = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                return values, len(values)
            values.append(value)

    def _parse(self, body: bytes) -> tuple[list[dict[str, Any]], web.Response | None]:
        values, undecodable = self._decode(body)
        for n, event in enumerate(values):
            where = {"invalid-event-number": n}
            if not isinstance(event, dict) or "event" not in event:
                return [], self._answer(400, 12, "Event field is required", **where)
            if event["event"] in ("", None, {}):
                return [], self._answer(400, 13, "Event field cannot be blank", **where)
            if "index" in event and event["index"] not in self.indexes:
                return [], self._answer(400, 7, "Incorrect index", **where)
            if isinstance(event["event"], dict) and event["event"].get("id") in self.poison:
                return [], self._answer(
                    400, 6, "Invalid data format", **(where if self.name_invalid_event else {})
                )
        if undecodable is not None:
            where = {"invalid-event-number": undecodable}
            return [], self._answer(400, 6, "Invalid data format", **where)
        if not values:
            return [], self._answer(400, 5, "No data")
        return values, None

    def _index(self, events: list[dict[str, Any]]) -> None:
        self.last_at = time.monotonic()
        self.first_at = self.first_at or self.last_at
        self.events.extend(events)
        if self.expect and len(set(self.ids())) >= self.expect:
            self.indexed.set()

    async def _ack(self, request: web.Request) -> web.Response:
        refused = self._auth(request)
        if refused is not None:
            return refused
        if not self.ack:
            return self._answer(400, 14, "ACK is disabled")
        _, refused = self._channel(request)
        if refused is not None:
            return refused
        asked = (await request.json()).get("acks", [])
        answer: dict[str, bool] = {}
        for ack_id in asked:
            events = self._acks.get(ack_id)
            if events is not None:
                self._index(events)
                self._acks[ack_id] = []  # indexed once; later polls still say true
            answer[str(ack_id)] = ack_id in self._acks and self._acks[ack_id] is not None
        return web.json_response({"acks": answer})

    async def _health(self, _: web.Request) -> web.Response:
        if self.healthy:
            return self._answer(200, 17, "HEC is healthy")
        return self._answer(503, 18, "HEC is unhealthy, queues are full")
