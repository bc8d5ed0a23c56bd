"""Kong's log serializer JSON decoded straight into typed structs: the collector's fast path.

`orjson.loads` builds a dict for every object of an entry (some 70 Python objects for a 1 KB
entry), all tracked by the garbage collector, and a parser reading them must check each value's
type in Python. msgspec decodes the same bytes about as fast into slotted structs that the
garbage collector does not track, with the types the parser relies on checked in C: building events
from them costs 15-25% less CPU than the same code over orjson's dicts (bench/ingest_cpu.py's
bodies and the Kong 3.8/3.9 fixtures).

This module only answers "is this body the common shape, and what does it hold?". Whatever is not
(an unknown key inside `request` or `response`, a size sent as a float, JSON that msgspec refuses)
makes `decode` return None, and the reference parser (orjson + `GatewayEvent`) alone decides: the
fast path never accepts what the reference would reject, it only skips work on inputs the
reference would accept.

Nothing in an entry is skipped unread: keys the parser drops (`route`, `tries`, ...) are still
decoded, because msgspec does not check the numbers or the UTF-8 of values it skips, and orjson
refuses a whole body for a bad one (`1e400`, bytes that are not UTF-8). Top-level keys outside the
serializer's own (Kong's `custom_fields_by_lua`) are read a second time as raw JSON and decoded by
orjson, exactly as the reference does.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from msgspec import UNSET, UnsetType

__all__ = [
    "KNOWN_KEYS",
    "READ_EXTRAS",
    "KongEntry",
    "KongRequest",
    "KongResponse",
    "decode",
]

# Top-level serializer keys the parser maps or knowingly drops; anything else came from
# custom_fields_by_lua and is kept as an event attribute.
KNOWN_KEYS = frozenset(
    {
        "request",
        "response",
        "latencies",
        "tries",
        "client_ip",
        "started_at",
        "route",
        "service",
        "consumer",
        "authenticated_entity",
        "upstream_uri",
        "upstream_status",
        "source",
        "workspace",
        "workspace_name",
        "api",
    }
)
# Custom fields the parser also reads (they stay attributes as well).
READ_EXTRAS = frozenset({"node", "credential_id"})


class KongRequest(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """`request` as every Kong from 1.x to 3.10 serializes it."""

    method: str | None = None
    uri: str | None = None
    url: str | None = None
    id: str | None = None
    querystring: dict[str, Any] | None = None
    headers: dict[str, str | list[str]] | None = None
    size: int | str | None = None  # a string in Kong 1.x
    tls: dict[str, Any] | None = None


class KongResponse(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    status: int | str | None = None
    size: int | str | None = None
    headers: dict[str, Any] | None = None


class KongEntry(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One serializer entry; `extras` is filled in by `decode`, never from the JSON."""

    request: KongRequest
    response: KongResponse
    latencies: dict[str, Any] | None = None
    client_ip: str | None = None
    started_at: int | None = None
    upstream_status: str | int | None = None
    service: dict[str, Any] | None = None
    consumer: dict[str, Any] | None = None
    authenticated_entity: dict[str, Any] | None = None
    # Custom fields the parser reads; UNSET when absent, since only a present key is an attribute.
    node: str | UnsetType | None = UNSET
    credential_id: str | UnsetType | None = UNSET
    # Dropped, but decoded all the same (see the module docstring).
    tries: Any = None
    route: Any = None
    upstream_uri: Any = None
    source: Any = None
    workspace: Any = None
    workspace_name: Any = None
    api: Any = None


class _OpenKongEntry(KongEntry, forbid_unknown_fields=False):
    """The same entry when custom fields are present: they are read from `_TOP_LEVEL`."""


_ENTRIES = msgspec.json.Decoder(list[KongEntry] | KongEntry)
_OPEN_ENTRIES = msgspec.json.Decoder(list[_OpenKongEntry] | _OpenKongEntry)
_TOP_LEVEL = msgspec.json.Decoder(list[dict[str, msgspec.Raw]] | dict[str, msgspec.Raw])
_EXTRA_KEYS = KNOWN_KEYS
_NO_EXTRAS: dict[str, Any] = {}


def decode(body: bytes) -> tuple[list[KongEntry], list[dict[str, Any]]] | None:
    """The entries of one http-log body and each entry's custom top-level fields (decoded as
    orjson decodes them), or None when the body is not the common shape.

    >>> entries, extras = decode(b'{"request": {"method": "GET"}, "response": {"status": 200}}')
    >>> entries[0].request.method, entries[0].response.status, extras
    ('GET', 200, [{}])
    >>> decode(b'{"request": {"method": "GET", "new_key": 1}, "response": {}}') is None
    True
    """
    try:
        doc = _ENTRIES.decode(body)
        entries = doc if isinstance(doc, list) else [doc]
        extras: list[dict[str, Any]] = []
        for entry in entries:
            if entry.node is UNSET and entry.credential_id is UNSET:
                extras.append(_NO_EXTRAS)
            else:
                extras.append(_read_extras(entry))
        return entries, extras
    except msgspec.ValidationError as exc:
        if "unknown field" not in str(exc):
            return None
    except ValueError:  # msgspec.DecodeError, and UnicodeDecodeError for invalid UTF-8
        return None
    return _decode_with_custom_fields(body)


def _read_extras(entry: KongEntry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if entry.node is not UNSET:
        out["node"] = entry.node
    if entry.credential_id is not UNSET:
        out["credential_id"] = entry.credential_id
    return out


def _decode_with_custom_fields(body: bytes) -> tuple[list[KongEntry], list[dict[str, Any]]] | None:
    try:
        doc = _OPEN_ENTRIES.decode(body)
        top = _TOP_LEVEL.decode(body)
        entries: list[KongEntry] = doc if isinstance(doc, list) else [doc]
        tops = top if isinstance(top, list) else [top]
        extras = [
            {key: orjson.loads(bytes(raw)) for key, raw in fields.items() if key not in _EXTRA_KEYS}
            for fields in tops
        ]
    except ValueError:  # msgspec's errors, orjson's, invalid UTF-8
        return None
    if len(extras) != len(entries):  # cannot happen for one body; refuse rather than misalign
        return None
    return entries, extras
