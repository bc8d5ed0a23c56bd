"""The OpenAPI 3.0 document of the simulated API: every documented endpoint of the catalogue, with
its parameters, responses, security and deprecation. Shadow endpoints are left out: that is what
makes them shadow endpoints."""

from __future__ import annotations

from typing import Any

from pipeline.simulator.catalogue import HOST, PATH_KINDS, Catalogue, Endpoint, Param

__all__ = ["openapi_document"]

_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad request",
    401: "Missing or invalid credentials",
    402: "Payment declined",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    410: "Link expired",
    422: "Unprocessable entity",
    429: "Rate limit exceeded",
    500: "Server error",
}
_TAGS = {
    "catalog": "catalog",
    "identity": "auth",
    "storefront": "storefront",
    "commerce": "commerce",
    "commerce-v2": "commerce",
    "backoffice": "backoffice",
    "ops": "operations",
    "web": "web",
}


def _schema(param: Param) -> dict[str, Any]:
    kinds: dict[str, dict[str, Any]] = {
        "string": {"type": "string"},
        "integer": {"type": "integer", "minimum": 1},
        "number": {"type": "number"},
        "boolean": {"type": "boolean"},
        "date": {"type": "string", "format": "date"},
        "date-time": {"type": "string", "format": "date-time"},
        "email": {"type": "string", "format": "email"},
        "uri": {"type": "string", "format": "uri"},
        "enum": {"type": "string", "enum": list(param.enum)},
    }
    schema = dict(kinds[param.kind])
    if param.array:
        return {"type": "array", "items": schema}
    return schema


def _path_param(name: str) -> dict[str, Any]:
    kind = PATH_KINDS[name][0]
    schema: dict[str, Any] = (
        {"type": "integer", "minimum": 1}
        if kind == "integer"
        else {"type": "string", "format": "uuid"}
        if kind == "uuid"
        else {"type": "string", "pattern": "^[a-z0-9-]+$"}
    )
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _operation(e: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": _operation_id(e),
        "summary": e.summary,
        "tags": [_TAGS.get(e.route.service, e.route.service)],
    }
    params = [_path_param(n) for n in _names(e.template)]
    for p in e.params:
        q: dict[str, Any] = {"name": p.name, "in": "query", "schema": _schema(p)}
        if p.required:
            q["required"] = True
        if p.description:
            q["description"] = p.description
        if p.array:
            q["explode"] = True
        params.append(q)
    if params:
        op["parameters"] = params
    if e.has_body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    codes = sorted({e.ok, *e.responses, *(c for c, _ in e.errors if c < 500)})
    if e.route.key_auth:
        codes = sorted({*codes, 401, 429} | ({403} if e.route.acl_group else set()))
        op["security"] = [{"apiKey": []}]
    responses: dict[str, Any] = {}
    for code in codes:
        resp: dict[str, Any] = {"description": _REASONS.get(code, "Response")}
        if code != 204:
            resp["content"] = {"application/json": {"schema": {"type": "object"}}}
        responses[str(code)] = resp
    responses["default"] = {"description": "Unexpected error"}
    op["responses"] = responses
    if e.deprecated:
        op["deprecated"] = True
    return op


def _names(template: str) -> list[str]:
    return [seg[1:-1] for seg in template.split("/") if seg.startswith("{")]


def _operation_id(e: Endpoint) -> str:
    words = [w for w in e.template.replace("{", "by-").replace("}", "").split("/") if w]
    camel = "".join(w.replace(".", "-").replace("-", " ").title().replace(" ", "") for w in words)
    return e.method.lower() + camel


def openapi_document(catalogue: Catalogue) -> dict[str, Any]:
    """The document, as a JSON-able dict."""
    paths: dict[str, dict[str, Any]] = {}
    for e in catalogue.endpoints:
        if e.documented:
            paths.setdefault(e.template, {})[e.method.lower()] = _operation(e)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Shop API",
            "version": "2023.11.1",
            "description": "The public, storefront and partner API of shop.example (simulated).",
        },
        "servers": [{"url": f"https://{HOST}"}],
        "tags": [{"name": t} for t in sorted(set(_TAGS.values()))],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "apikey"},
            },
        },
    }
