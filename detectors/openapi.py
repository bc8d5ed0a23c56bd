"""Reading OpenAPI 3.x documents: what each documented operation accepts, flattened.

Only what request matching needs is read: paths and their server base paths, methods, path
parameter schemas, query parameter names (path-item and operation level, `$ref`s followed),
`deprecated`. Anything malformed in those parts is a `SpecError` naming the place; parts this
module does not read (schemas of bodies, responses) may be anything.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog

__all__ = ["DocumentedOperation", "SpecError", "load_spec", "read_document"]

log = structlog.get_logger(__name__)

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# A server URL's variables multiply into base paths; a document cannot make that explode.
MAX_BASE_PATHS = 64
VAR = re.compile(r"\{([^{}/]*)\}")


class SpecError(ValueError):
    """An OpenAPI document that cannot be used; the message says which and where."""


@dataclass(frozen=True, slots=True)
class DocumentedOperation:
    spec: str
    method: str  # upper case
    path: str  # the template as documented, without a base path
    bases: tuple[str, ...]  # '' or '/v1'
    operation_id: str
    deprecated: bool
    path_schemas: Mapping[str, Any]  # path parameter name -> its (resolved) schema
    query: frozenset[str]
    # deepObject parameters (`filter[color]=red`) by prefix; `open_query` takes any name.
    query_prefixes: tuple[str, ...]
    open_query: bool


def read_document(
    spec: Any,
    number: int = 1,
    *,
    base_paths: Iterable[str] | None = None,
    ignored_params: Iterable[str] = (),
) -> tuple[str, list[DocumentedOperation]]:
    """The title of an OpenAPI 3.x document and its operations, in document order.

    >>> title, ops = read_document({"openapi": "3.1.0", "info": {"title": "shop"},
    ...     "servers": [{"url": "https://{region}.example.com/{v}",
    ...                  "variables": {"region": {"default": "eu"}, "v": {"default": "v2"}}}],
    ...     "paths": {"/items/{id}": {
    ...         "parameters": [{"name": "id", "in": "path", "schema": {"type": "integer"}}],
    ...         "get": {"operationId": "getItem", "deprecated": True,
    ...                 "parameters": [{"name": "fields", "in": "query"}]}}}})
    >>> op = ops[0]
    >>> title, op.method, op.bases, op.path, op.deprecated, sorted(op.query)
    ('shop', 'GET', ('/v2',), '/items/{id}', True, ['fields'])
    >>> read_document({"swagger": "2.0"})
    Traceback (most recent call last):
    ...
    detectors.openapi.SpecError: document #1: Swagger 2.0 is not supported; convert it to OpenAPI 3
    """
    if not isinstance(spec, Mapping):
        raise SpecError(f"document #{number}: expected an object, got {type(spec).__name__}")
    info = spec.get("info")
    named = info.get("title") if isinstance(info, Mapping) else None
    title = str(named) if named else f"document #{number}"
    version = spec.get("openapi")
    if not isinstance(version, str) or not version.startswith("3."):
        if "swagger" in spec:
            raise SpecError(f"{title}: Swagger 2.0 is not supported; convert it to OpenAPI 3")
        raise SpecError(f"{title}: not an OpenAPI 3.x document (no 'openapi: 3.x' field)")
    paths = spec.get("paths")
    paths = {} if paths is None else paths
    if not isinstance(paths, Mapping):
        raise SpecError(f"{title}: 'paths' must be an object")
    refs = _Refs(spec)
    fixed = tuple(_clean_base(b) for b in base_paths) if base_paths is not None else None

    def bases(servers: Any, where: str, inherited: tuple[str, ...]) -> tuple[str, ...]:
        if fixed is not None:
            return fixed or ("",)
        return _server_bases(servers, where) if servers else inherited

    top = bases(spec.get("servers"), title, ("",))
    always = frozenset(ignored_params) | _api_key_params(spec, refs)
    out: list[DocumentedOperation] = []
    for template, raw_item in paths.items():
        where = f"{title}: paths[{template!r}]"
        if not isinstance(template, str) or not template.startswith("/"):
            raise SpecError(f"{where}: a path must start with '/'")
        item = refs.resolve(raw_item, where)
        if item is None:
            log.warning("openapi.path_ref_not_followed", spec=title, path=template)
            continue
        if not isinstance(item, Mapping):
            raise SpecError(f"{where}: expected an object")
        item_params, item_opaque = _parameters(item.get("parameters"), refs, where)
        item_bases = bases(item.get("servers"), where, top)
        for method in METHODS:
            raw_op = item.get(method)
            if raw_op is None:
                continue
            op_where = f"{where}.{method}"
            if not isinstance(raw_op, Mapping):
                raise SpecError(f"{op_where}: expected an object")
            op_params, op_opaque = _parameters(raw_op.get("parameters"), refs, op_where)
            params = {**item_params, **op_params}
            query, prefixes, open_query = _query(params)
            out.append(
                DocumentedOperation(
                    spec=title,
                    method=method.upper(),
                    path=template,
                    bases=bases(raw_op.get("servers"), op_where, item_bases),
                    operation_id=str(raw_op.get("operationId") or ""),
                    deprecated=raw_op.get("deprecated") is True,
                    path_schemas={
                        name: p.get("schema")
                        for (name, where_), p in params.items()
                        if where_ == "path"
                    },
                    query=frozenset(query) | always,
                    query_prefixes=tuple(prefixes),
                    open_query=open_query or item_opaque or op_opaque,
                )
            )
    return title, out


class _Refs:
    """Local `$ref`s (`#/components/...`) of one document; references to other files are not
    followed (their parameters are then unknown, and any query name is accepted)."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc

    def resolve(self, obj: Any, where: str) -> Any:
        """`obj` with its `$ref` chain followed; None for a reference to another document."""
        for _ in range(32):
            if not isinstance(obj, Mapping) or "$ref" not in obj:
                return obj
            ref = obj["$ref"]
            if not isinstance(ref, str):
                raise SpecError(f"{where}: $ref must be a string")
            if not ref.startswith("#"):
                return None
            obj = self._pointer(ref, where)
        raise SpecError(f"{where}: $ref chain too long (a cycle?)")

    def _pointer(self, ref: str, where: str) -> Any:
        node: Any = self.doc
        for raw in ref[1:].split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise SpecError(f"{where}: $ref {ref!r} does not resolve")
        return node


def _parameters(raw: Any, refs: _Refs, where: str) -> tuple[dict[tuple[str, str], Any], bool]:
    """Parameters by (name, in), and whether some could not be read (an external $ref)."""
    if raw is None:
        return {}, False
    if not isinstance(raw, list):
        raise SpecError(f"{where}.parameters: expected a list")
    out: dict[tuple[str, str], Any] = {}
    opaque = False
    for i, item in enumerate(raw):
        p_where = f"{where}.parameters[{i}]"
        param = refs.resolve(item, p_where)
        if param is None:
            opaque = True
            continue
        if not (
            isinstance(param, Mapping)
            and isinstance(param.get("name"), str)
            and isinstance(param.get("in"), str)
        ):
            raise SpecError(f"{p_where}: a parameter needs a string 'name' and 'in'")
        schema = refs.resolve(param.get("schema"), f"{p_where}.schema")
        out[(param["name"], param["in"])] = {**param, "schema": schema}
    return out, opaque


def _query(params: Mapping[tuple[str, str], Any]) -> tuple[set[str], list[str], bool]:
    """Documented query names, deepObject prefixes, and whether any name is acceptable."""
    names: set[str] = set()
    prefixes: list[str] = []
    open_query = False
    for (name, location), param in params.items():
        if location == "querystring":  # OpenAPI 3.2: the whole query string is one parameter
            open_query = True
        if location != "query":
            continue
        names.add(name)
        schema = param.get("schema")
        if not isinstance(schema, Mapping) or schema.get("type") != "object":
            continue
        style = param.get("style", "form")
        if style == "deepObject":
            prefixes.append(name + "[")
        elif style == "form" and param.get("explode", True):
            # An exploded object's properties are the query names (`?color=red&size=L`).
            props = schema.get("properties")
            if isinstance(props, Mapping):
                names.update(str(k) for k in props)
            extra = schema.get("additionalProperties")
            if not isinstance(props, Mapping) or (extra is not None and extra is not False):
                open_query = True
    return names, prefixes, open_query


def _api_key_params(spec: Mapping[str, Any], refs: _Refs) -> frozenset[str]:
    """Query names of apiKey security schemes: documented, though not as parameters."""
    components = spec.get("components")
    schemes = components.get("securitySchemes") if isinstance(components, Mapping) else None
    if not isinstance(schemes, Mapping):
        return frozenset()
    names = set()
    for key, raw in schemes.items():
        scheme = refs.resolve(raw, f"components.securitySchemes.{key}")
        if (
            isinstance(scheme, Mapping)
            and scheme.get("type") == "apiKey"
            and scheme.get("in") == "query"
            and isinstance(scheme.get("name"), str)
        ):
            names.add(scheme["name"])
    return frozenset(names)


def _server_bases(servers: Any, where: str) -> tuple[str, ...]:
    """The path part of each server URL, its variables expanded (defaults and enums)."""
    if not isinstance(servers, list):
        raise SpecError(f"{where}: 'servers' must be a list")
    bases: list[str] = []
    for i, server in enumerate(servers):
        s_where = f"{where}: servers[{i}]"
        if not isinstance(server, Mapping) or not isinstance(server.get("url"), str):
            raise SpecError(f"{s_where}: needs a string 'url'")
        url, variables = server["url"], server.get("variables") or {}
        if not isinstance(variables, Mapping):
            raise SpecError(f"{s_where}.variables: expected an object")
        choices = []
        for name in VAR.findall(url):
            var = variables.get(name)
            if not isinstance(var, Mapping) or "default" not in var:
                raise SpecError(f"{s_where}: variable {{{name}}} has no default")
            enum = var.get("enum")
            values = [str(v) for v in enum] if isinstance(enum, list) and enum else []
            choices.append(values or [str(var["default"])])
        for combo in itertools.product(*choices):
            base = _clean_base(_url_path(_fill(url, combo)))
            if base not in bases:
                bases.append(base)
            if len(bases) > MAX_BASE_PATHS:
                raise SpecError(f"{s_where}: more than {MAX_BASE_PATHS} base paths")
    return tuple(bases) or ("",)


def _fill(url: str, values: tuple[str, ...]) -> str:
    """`url` with its `{variables}` replaced by `values`, in order."""
    picks = iter(values)
    return VAR.sub(lambda _: next(picks), url)


def _url_path(url: str) -> str:
    if "://" in url or url.startswith("//"):
        return urlsplit(url).path
    return url.partition("?")[0]


def _clean_base(base: str) -> str:
    """'/v1/' and 'v1' -> '/v1'; '/' and '' -> ''."""
    parts = [s for s in base.split("/") if s and s != "."]
    return "/" + "/".join(parts) if parts else ""


def load_spec(source: str | Path | bytes) -> dict[str, Any]:
    """An OpenAPI document from a file path or its bytes: JSON, or YAML when PyYAML is installed.

    >>> load_spec(b'{"openapi": "3.1.0", "paths": {}}')["openapi"]
    '3.1.0'
    >>> load_spec(b"[1, 2")
    Traceback (most recent call last):
    ...
    detectors.openapi.SpecError: document: not JSON, and not YAML: ...
    """
    if isinstance(source, bytes):
        name, data = "document", source
    else:
        name = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise SpecError(f"{name}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as json_error:
        try:
            import yaml
        except ImportError:
            raise SpecError(
                f"{name}: not JSON ({json_error}); YAML documents need PyYAML (pip install pyyaml)"
            ) from None
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            doc = yaml.load(data, Loader=loader)  # a safe loader: no arbitrary objects
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SpecError(f"{name}: not JSON, and not YAML: {first}") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{name}: expected an OpenAPI object, got {type(doc).__name__}")
    return doc
