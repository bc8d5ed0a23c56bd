"""`GatewayEvent`: one API request as seen by any gateway, after redaction.

The model is flat on purpose: it travels in msgpack envelopes thousands of times a second as its
plain field dict, and a worker validates a whole envelope's list in one pydantic-core call.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GatewayEvent", "Reject"]


class GatewayEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str | None = None
    ts_ms: int = Field(description="When the request started, epoch milliseconds")
    gateway: str = Field(description="kong | apigee")
    node: str | None = None
    service: str | None = None

    # Subjects
    consumer: str | None = Field(None, description="Consumer / developer app id")
    credential: str | None = Field(None, description="Keyed fingerprint of the credential used")
    client_ip: str

    method: str
    path: str = Field(description="Raw path, PII masked")
    route: str = Field(description="Route template, e.g. /users/{id}")
    query: dict[str, str] = Field(default_factory=dict, description="Secrets fingerprinted")
    status: int
    upstream_status: int | None = None
    request_size: int = 0
    response_size: int = 0
    latency_ms: float = 0.0
    upstream_latency_ms: float | None = Field(None, description="None when the gateway answered")
    gateway_latency_ms: float = 0.0

    user_agent: str = ""
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="accept-language, referer, origin, content-type, sec-fetch-mode",
    )
    header_fingerprint: str = Field("", description="Hash of the sorted request header names")
    tls_version: str | None = None
    pii: list[str] = Field(default_factory=list, description="Kinds of PII masked in the URL")
    attributes: dict[str, Any] = Field(default_factory=dict, description="Extra gateway fields")

    def subjects(self) -> list[str]:
        """Every subject this request is evidence about, most specific first."""
        out = []
        if self.consumer:
            out.append(f"consumer:{self.consumer}")
        if self.credential:
            out.append(f"key:{self.credential}")
        out.append(f"ip:{self.client_ip}")
        return out

    def partition_subject(self) -> str:
        """The subject whose state owns this event: the consumer when known, else the client IP.

        Routing all of a consumer's traffic to one partition keeps its baseline in one worker; an
        unauthenticated client is only known by its address.
        """
        return f"consumer:{self.consumer}" if self.consumer else f"ip:{self.client_ip}"


class Reject(BaseModel):
    """An input that could not become an event, with the reason and the (redacted) raw bytes."""

    source: str
    reason: str
    raw: bytes
