"""An Elasticsearch/OpenSearch `_bulk` endpoint for tests, following the documented contract.

- `POST /_bulk`: NDJSON, an action line then a source line per document, the body ending with a
  newline (else 400 `illegal_argument_exception`), `Content-Type: application/x-ndjson`, gzip when
  `Content-Encoding: gzip`; 401 `security_exception` without valid credentials (`ApiKey` or
  `Basic`); 413 over `max_bytes`.
- The answer is 200 even when items fail: `{"took", "errors", "items": [{"create": {"_index",
  "_id", "status", "result" | "error": {"type", "reason"}}}]}` in request order.
- Data streams take only `create` (any other op on one: 400 `illegal_argument_exception`); a
  document needs `@timestamp` (400 `document_parsing_exception`); fields are checked against a
  small mapping (ip, long, float, date: 400 `document_parsing_exception`); an `_id` already in the
  stream is 409 `version_conflict_engine_exception`.

What a test can make it do: answer the next requests from a script (`script`), push back on some
documents with 429 `es_rejected_execution_exception` (`busy`: id -> times), refuse some as
unmappable (`poison`), index a request and then answer 502 as if the answer got lost
(`lose_answers`).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import ipaddress
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

__all__ = ["BulkServer"]

# The subset of the ECS mapping whose types a wrong value would break.
MAPPING = {
    "@timestamp": "date",
    "event.created": "date",
    "event.severity": "long",
    "event.risk_score": "float",
    "event.risk_score_norm": "float",
    "source.ip": "ip",
    "related.ip": "ip",
}


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _fits(kind: str, value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    for v in values:
        try:
            if kind == "ip":
                ipaddress.ip_address(v)
            elif kind == "long" and (isinstance(v, bool) or not isinstance(v, int)):
                return False
            elif kind == "float" and not isinstance(v, int | float):
                return False
            elif kind == "date":
                datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        except ValueError:
            return False
    return True


@dataclass
class BulkServer:
    api_key: str = base64.b64encode(b"key-id:key-secret").decode()
    basic: tuple[str, str] = ("gatewatch", "es-password")
    data_stream_prefix: str = "logs-"
    max_bytes: int = 100 * 1024 * 1024
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)  # per _id, every time it was sent
    script: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    busy: dict[str, int] = field(default_factory=dict)
    poison: set[str] = field(default_factory=set)
    lose_answers: int = 0
    requests: int = 0
    gzipped: int = 0
    indexed: asyncio.Event = field(default_factory=asyncio.Event)
    expect: int = 0
    check_documents: bool = True  # False: ids and statuses only (a fast receiver for the bench)
    first_at: float = 0.0  # monotonic time of the first and the latest indexing
    last_at: float = 0.0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_bytes * 2)
        app.router.add_post("/_bulk", self._bulk)
        app.router.add_post("/{index}/_bulk", self._bulk)
        return app

    def _error(self, status: int, kind: str, reason: str) -> web.Response:
        body = {"error": {"type": kind, "reason": reason}, "status": status}
        return web.json_response(body, status=status)

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme == "ApiKey":
            return value == self.api_key
        if scheme == "Basic":
            return base64.b64decode(value).decode() == ":".join(self.basic)
        return False

    async def _bulk(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not self._authorized(request.headers.get("Authorization", "")):
            answer = self._error(
                401, "security_exception", "missing authentication credentials for REST request"
            )
            answer.headers["WWW-Authenticate"] = 'ApiKey, Basic realm="security"'
            return answer
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            self.gzipped += 1
            # aiohttp inflates gzip request bodies itself (and answers 400 on a broken one).
            if body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
        if len(body) > self.max_bytes:
            return self._error(413, "content_too_long_exception", "request too large")
        if self.script:
            status, answer = self.script.pop(0)
            return web.json_response(answer, status=status)
        if request.headers.get("Content-Type", "").split(";")[0] != "application/x-ndjson":
            return self._error(406, "media_type_header_exception", "invalid media-type")
        if not body.endswith(b"\n"):
            return self._error(
                400,
                "illegal_argument_exception",
                "The bulk request must be terminated by a newline [\\n]",
            )
        lines = body.decode().split("\n")[:-1]
        if len(lines) % 2:
            return self._error(400, "illegal_argument_exception", "Malformed action/metadata")
        self.last_at = time.monotonic()
        self.first_at = self.first_at or self.last_at
        items = [
            self._item(orjson.loads(a), orjson.loads(d) if self.check_documents else {"raw": d})
            for a, d in zip(lines[::2], lines[1::2], strict=True)
        ]
        if self.expect and len(self.docs) >= self.expect:
            self.indexed.set()
        if self.lose_answers > 0:
            self.lose_answers -= 1
            return self._error(502, "bad_gateway", "the answer was lost on the way back")
        errors = any(next(iter(i.values()))["status"] >= 300 for i in items)
        return web.Response(
            body=orjson.dumps({"took": 3, "errors": errors, "items": items}),
            content_type="application/json",
        )

    def _item(self, action: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
        op, meta = next(iter(action.items()))
        index, doc_id = meta.get("_index", ""), meta.get("_id", "")
        self.attempts[doc_id] = self.attempts.get(doc_id, 0) + 1
        head = {"_index": f".ds-{index}-2026.12.06-000001", "_id": doc_id}

        def error(status: int, kind: str, reason: str) -> dict[str, Any]:
            return {op: {**head, "status": status, "error": {"type": kind, "reason": reason}}}

        if index.startswith(self.data_stream_prefix) and op != "create":
            return error(
                400,
                "illegal_argument_exception",
                "only write ops with an op_type of create are allowed in data streams",
            )
        if self.busy.get(doc_id, 0) > 0:
            self.busy[doc_id] -= 1
            return error(
                429,
                "es_rejected_execution_exception",
                "rejected execution of coordinating operation",
            )
        if self.check_documents and "@timestamp" not in doc:
            return error(
                400,
                "document_parsing_exception",
                "data stream timestamp field [@timestamp] is missing",
            )
        flat = _flatten(doc) if self.check_documents else {}
        for name, kind in MAPPING.items():
            if name in flat and not _fits(kind, flat[name]):
                return error(
                    400,
                    "document_parsing_exception",
                    f"failed to parse field [{name}] of type [{kind}]",
                )
        if doc_id in self.poison:
            return error(
                400,
                "document_parsing_exception",
                "failed to parse field [event.original] of type [keyword]",
            )
        if doc_id in self.docs:
            return error(
                409,
                "version_conflict_engine_exception",
                f"[{doc_id}]: version conflict, document already exists",
            )
        self.docs[doc_id] = doc
        return {op: {**head, "_version": 1, "result": "created", "status": 201}}
