"""OpenAPI documents read and compiled for request matching: base paths, templates, parameters at
path-item and operation level, implicit methods, the cache, and clear errors for bad documents."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.openapi import SpecError, load_spec, read_document
from detectors.spec_index import SpecIndex
from pipeline.ingest.normalize import route_template

SHOP = Path(__file__).parent.parent / "fixtures" / "openapi" / "shop.yaml"


@pytest.fixture(scope="module")
def shop() -> dict[str, Any]:
    return load_spec(SHOP)


@pytest.fixture
def index(shop: dict[str, Any]) -> SpecIndex:
    return SpecIndex([shop])


def doc(paths: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths, **extra}


def template(index: SpecIndex, path: str) -> str | None:
    entry = index.match(path, route_template(path))
    return entry.template if entry is not None else None


# --- templates and base paths ---------------------------------------------------------------


def test_server_variables_give_every_base_path(index: SpecIndex) -> None:
    assert template(index, "/v1/products") == "/v1/products"
    assert template(index, "/v2/products") == "/v2/products"
    assert template(index, "/products") is None  # the base path is part of the public path
    assert template(index, "/v3/products") is None


def test_a_path_item_server_overrides_the_documents(index: SpecIndex) -> None:
    assert template(index, "/old/legacy/items") == "/old/legacy/items"
    assert template(index, "/v1/legacy/items") is None


def test_concrete_segments_win_over_templates(index: SpecIndex) -> None:
    assert template(index, "/v1/products/featured") == "/v1/products/featured"
    assert template(index, "/v1/products/42") == "/v1/products/{productId}"


def test_typed_path_parameters_take_only_what_their_schema_allows(index: SpecIndex) -> None:
    assert template(index, "/v1/products/admin") is None  # productId is an integer
    assert template(index, "/v1/products/-3") == "/v1/products/{productId}"
    assert template(index, "/v1/reports/daily") == "/v1/reports/{kind}"
    assert template(index, "/v1/reports/hourly") is None  # not in the enum
    order = "9f1b6c1e-3a2b-4c5d-9e6f-0a1b2c3d4e5f"
    assert template(index, f"/v1/orders/{order}") == "/v1/orders/{orderId}"  # a string takes it


def test_a_masked_value_still_fills_a_typed_parameter(index: SpecIndex) -> None:
    # The ingest masks a card number in a path as [card]: it was a number, not a probe.
    assert template(index, "/v1/products/[card]") == "/v1/products/{productId}"


def test_mixed_segments(index: SpecIndex) -> None:
    assert template(index, "/v1/files/report.pdf") == "/v1/files/{name}.{ext}"
    assert template(index, "/v1/files/report") is None


def test_trailing_and_doubled_slashes_are_the_same_path(index: SpecIndex) -> None:
    assert template(index, "/v1/products/") == "/v1/products"
    assert template(index, "//v1//products") == "/v1/products"


def test_base_paths_given_by_the_operator_replace_the_servers(shop: dict[str, Any]) -> None:
    index = SpecIndex([shop], base_paths=["/shop/api"])
    assert template(index, "/shop/api/products/7") == "/shop/api/products/{productId}"
    assert template(index, "/shop/api/legacy/items") == "/shop/api/legacy/items"
    assert template(index, "/v1/products/7") is None


def test_relative_and_root_servers() -> None:
    spec = doc({"/ping": {"get": {}}}, servers=[{"url": "/api/"}, {"url": "https://x.example"}])
    index = SpecIndex([spec])
    assert template(index, "/api/ping") == "/api/ping"
    assert template(index, "/ping") == "/ping"
    assert template(SpecIndex([doc({"/": {"get": {}}})]), "/") == "/"


def test_several_documents_share_one_index() -> None:
    a = doc({"/a": {"get": {}}}, servers=[{"url": "/one"}])
    b = doc({"/b": {"post": {}}}, servers=[{"url": "/two"}])
    index = SpecIndex([a, b])
    assert template(index, "/one/a") == "/one/a" and template(index, "/two/b") == "/two/b"
    assert len(index.operations) == 2 and index.titles == ["t", "t"]


def test_operations_typing_a_parameter_differently_share_the_loosest_reading() -> None:
    spec = doc(
        {
            "/things/{id}": {
                "get": {
                    "parameters": [{"name": "id", "in": "path", "schema": {"type": "integer"}}]
                },
                "delete": {
                    "parameters": [{"name": "id", "in": "path", "schema": {"type": "string"}}]
                },
            }
        }
    )
    entry = SpecIndex([spec]).match("/things/abc")
    assert entry is not None and {"GET", "DELETE"} <= set(entry.operations)


# --- parameters -----------------------------------------------------------------------------


def test_query_parameters_from_both_levels_and_refs(index: SpecIndex) -> None:
    entry = index.match("/v1/products")
    assert entry is not None
    get, post = entry.operations["GET"], entry.operations["POST"]
    # page comes from the path item (a $ref), q and filter from the operation, apikey from the
    # apiKey security scheme.
    assert get.unknown_params(["page", "q", "apikey", "filter[color]", "debug"]) == ["debug"]
    assert post.unknown_params(["page", "q"]) == ["q"]


def test_an_exploded_object_documents_its_properties(index: SpecIndex) -> None:
    op = index.match("/v1/orders").operations["GET"]  # type: ignore[union-attr]
    assert op.unknown_params(["from", "to", "range", "sort"]) == ["sort"]


def test_a_free_form_object_or_an_external_ref_accepts_any_name() -> None:
    spec = doc(
        {
            "/search": {
                "get": {
                    "parameters": [
                        {"name": "f", "in": "query", "schema": {"type": "object"}},
                    ]
                }
            },
            "/remote": {"get": {"parameters": [{"$ref": "common.yaml#/parameters/Q"}]}},
        }
    )
    index = SpecIndex([spec])
    for path in ("/search", "/remote"):
        assert index.match(path).operations["GET"].unknown_params(["x", "y"]) == []  # type: ignore[union-attr]


def test_operation_parameters_override_path_item_ones() -> None:
    spec = doc(
        {
            "/p/{id}": {
                "parameters": [{"name": "id", "in": "path", "schema": {"type": "integer"}}],
                "get": {"parameters": [{"name": "id", "in": "path", "schema": {"type": "string"}}]},
            }
        }
    )
    assert template(SpecIndex([spec]), "/p/abc") == "/p/{id}"


def test_ignored_params_are_documented_everywhere(shop: dict[str, Any]) -> None:
    index = SpecIndex([shop], ignored_params=["_"])
    op = index.match("/v1/products/1").operations["GET"]  # type: ignore[union-attr]
    assert op.unknown_params(["_", "x"]) == ["x"]


# --- methods --------------------------------------------------------------------------------


def test_head_beside_get_and_options_everywhere(index: SpecIndex) -> None:
    entry = index.match("/v1/products/1")
    assert entry is not None
    assert set(entry.operations) == {"GET", "DELETE", "HEAD", "OPTIONS"}
    assert (
        entry.operations["HEAD"].implicit and entry.operations["HEAD"].operation_id == "getProduct"
    )
    products = index.match("/v1/products")
    assert products is not None and set(products.operations) == {"GET", "POST", "HEAD", "OPTIONS"}
    # Implicit ones are not counted as documented operations.
    assert all(not op.implicit for op in index.operations)


def test_implicit_methods_can_be_switched_off(shop: dict[str, Any]) -> None:
    entry = SpecIndex([shop], implicit_head=False, implicit_options=False).match("/v1/products/1")
    assert entry is not None and set(entry.operations) == {"GET", "DELETE"}


def test_a_documented_head_wins_over_the_implicit_one() -> None:
    spec = doc({"/f": {"get": {"operationId": "g"}, "head": {"operationId": "h"}}})
    op = SpecIndex([spec]).match("/f").operations["HEAD"]  # type: ignore[union-attr]
    assert (op.operation_id, op.implicit) == ("h", False)


# --- the cache ------------------------------------------------------------------------------


def test_lookups_are_cached_by_route_template(index: SpecIndex) -> None:
    for i in range(500):
        assert template(index, f"/v1/products/{i}") == "/v1/products/{productId}"
    assert index.cached() == 1


def test_numeric_literals_make_the_cache_key_the_path() -> None:
    # /rest/api/2/... and /rest/api/3/... share the route template /rest/api/{id}/...: only the
    # documented version may match, whichever is looked up first.
    index = SpecIndex([doc({"/rest/api/2/issue": {"get": {}}})])
    assert template(index, "/rest/api/3/issue") is None
    assert template(index, "/rest/api/2/issue") == "/rest/api/2/issue"
    assert template(index, "/rest/api/3/issue") is None


def test_a_route_that_is_not_the_paths_template_is_not_a_cache_key(index: SpecIndex) -> None:
    # A gateway route prefix in `route` must not stand for every path under it.
    assert index.match("/v1/products/7", "/v1/products") is not None
    assert index.match("/v1/products/admin", "/v1/products") is None
    assert index.match("/v1/products/8", "/v1/products") is not None
    # A path with literal braces must not stand for the real ids of its look-alike template.
    assert index.match("/v1/products/{productId}", "/v1/products/{productId}") is None
    assert index.match("/v1/products/9", "/v1/products/{id}") is not None
    assert index.match("/v1/products/{id}", "/v1/products/{id}") is None


def test_the_cache_is_bounded_under_a_flood_of_random_paths(shop: dict[str, Any]) -> None:
    index = SpecIndex([shop], cache_size=1000)
    rng = random.Random(3)
    for _ in range(20_000):
        path = "/" + "/".join(f"{rng.getrandbits(40):x}z" for _ in range(rng.randint(1, 6)))
        assert index.match(path, route_template(path)) is None
        assert index.cached() <= 1000


def test_absurd_paths_match_nothing() -> None:
    index = SpecIndex([doc({"/a/{x}": {"get": {}}})])
    assert index.match("/a/" + "b" * 10_000) is None
    assert index.match("/a" * 100) is None


# --- documents ------------------------------------------------------------------------------


def test_json_and_yaml_documents(shop: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "shop.json"
    path.write_bytes(orjson.dumps(shop))
    assert load_spec(path) == shop
    assert load_spec(SHOP.read_bytes()) == shop


def test_json_works_without_pyyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` now raises ImportError
    assert load_spec(b'{"openapi": "3.0.0", "paths": {}}')["openapi"] == "3.0.0"
    with pytest.raises(SpecError, match="YAML documents need PyYAML"):
        load_spec(SHOP.read_bytes())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"swagger": "2.0", "paths": {}}, "Swagger 2.0 is not supported"),
        ({"paths": {}}, "not an OpenAPI 3.x document"),
        ([1, 2], "expected an object, got list"),
        (doc({"nope": {}}), r"paths\['nope'\]: a path must start with '/'"),
        (doc([]), "'paths' must be an object"),
        (doc({"/a": {"get": "x"}}), r"paths\['/a'\].get: expected an object"),
        (doc({"/a": {"get": {"parameters": {}}}}), "parameters: expected a list"),
        (doc({"/a": {"get": {"parameters": [{"in": "query"}]}}}), "needs a string 'name'"),
        (
            doc({"/a": {"parameters": [{"$ref": "#/components/parameters/Nope"}], "get": {}}}),
            "does not resolve",
        ),
        (doc({"/a": {"get": {}}}, servers=[{"url": "/{v}"}]), r"variable \{v\} has no default"),
        (doc({"/a": {"get": {}}}, servers="https://x"), "'servers' must be a list"),
        (doc({"/a": {"get": {}}}, servers=[{"uri": "/"}]), "needs a string 'url'"),
    ],
)
def test_bad_documents_are_clear_errors(spec: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        SpecIndex([spec])


def test_a_ref_cycle_is_an_error_not_a_hang() -> None:
    spec = doc(
        {"/a": {"get": {"parameters": [{"$ref": "#/components/parameters/A"}]}}},
        components={
            "parameters": {
                "A": {"$ref": "#/components/parameters/B"},
                "B": {"$ref": "#/components/parameters/A"},
            }
        },
    )
    with pytest.raises(SpecError, match="cycle"):
        SpecIndex([spec])


def test_no_document_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no OpenAPI document"):
        SpecIndex([])
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_bytes(b"openapi: [3\n  - x: {")
    with pytest.raises(SpecError, match="not JSON, and not YAML"):
        load_spec(tmp_path / "bad.yaml")
    (tmp_path / "list.json").write_bytes(b"[]")
    with pytest.raises(SpecError, match="expected an OpenAPI object, got list"):
        load_spec(tmp_path / "list.json")


def test_the_projects_own_decision_api_document() -> None:
    own = Path(__file__).parents[2] / "pipeline" / "openapi.yaml"
    title, ops = read_document(load_spec(own))
    assert title == "gatewatch decision API"
    assert [(op.method, op.path) for op in ops][:1] == [("GET", "/v1/decisions/{subject}")]
    index = SpecIndex([load_spec(own)])
    assert template(index, "/v1/decisions/ip:198.51.100.7") == "/v1/decisions/{subject}"


def test_a_document_without_a_title_is_named_by_its_place() -> None:
    untitled = {"openapi": "3.0.0", "paths": {"/a": {"get": {}}}}
    assert SpecIndex([doc({}), untitled]).titles == ["t", "document #2"]
