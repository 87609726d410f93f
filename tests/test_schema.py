"""The API against its own OpenAPI document (/v3/openapi.json), fuzzed with schemathesis.

Positive cases (valid by the document, on real ids and real image files) must be accepted
with exactly the documented success; negative cases (invalid by the document) must be
refused with a documented 4xx. Every answer must match its documented schema and status,
and nothing is ever a 5xx.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
import tornado.web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from appliance.handlers.api import ApiNotFoundHandler, OpenApiHandler
from tests import images
from tests.api_helpers import assert_error, uploaded
from tests.conftest import Server

MAX_EXAMPLES = int(os.environ.get("SCHEMA_EXAMPLES", "30"))  # more for a deeper run
# Not `negative_data_rejection`: schemathesis counts an unknown query parameter as invalid
# data, and the API ignores unknown parameters on purpose (cache busters, tracking tags).
# Bad values of the known parameters are refused; tests/test_api.py checks them one by one.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SUCCESS = {"listImages": 200, "uploadImage": 201, "listFolders": 200, "getImage": 200}
SUCCESS |= {"updateImage": 200, "deleteImage": 204, "getImageStats": 200}
SUCCESS |= {"listFolderCounts": 200, "createFolder": 201, "renameFolder": 200, "deleteFolder": 204}
OPERATIONS = list(SUCCESS)


def load(server: Server) -> Any:
    resp = server.request("GET", "/v3/openapi.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    return schemathesis.openapi.from_dict(resp.json())


def operations(schema: Any) -> dict[str, Any]:
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # an invalid operation raises here
        found[operation.definition.raw["operationId"]] = operation
    return found


def fuzz(server: Server, operation_id: str, mode: GenerationMode) -> Counter[int]:
    """Run MAX_EXAMPLES generated requests of one operation; returns the statuses seen."""
    operation = operations(load(server))[operation_id]
    # Real ids, so that get/patch/delete reach their success path, not only 404.
    ids = [uploaded(server, images.png(8 + n, 8), folder="seed")["id"] for n in range(4)]
    session = requests.Session()
    auth = {"Authorization": f"Bearer {server.api_key}"}
    seen: Counter[int] = Counter()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), real=st.sampled_from(ids))
    def run(case: Any, real: str) -> None:
        if mode is GenerationMode.POSITIVE:
            if "image_id" in (case.path_parameters or {}):
                case.path_parameters["image_id"] = real
            if "folder_name" in (case.path_parameters or {}):
                # A real folder, made again before each example (renames and deletes end it).
                server.request("POST", "/v3/folders", json_body={"name": "fuzzed"})
                case.path_parameters["folder_name"] = "fuzzed"
            if isinstance(case.body, dict) and "file" in case.body:
                case.body["file"] = images.png(9, 7)  # a real image: valid data, not just bytes
        # The key is always sent: schemathesis may also drop or mangle Authorization.
        response = case.call(base_url=server.base_url, session=session, headers=auth)
        seen[response.status_code] += 1
        checks = list(CHECKS)
        if mode is GenerationMode.POSITIVE:
            checks.append(positive_data_acceptance)
            expected = {SUCCESS[operation_id]}
            if operation_id == "deleteImage":
                expected.add(404)  # the same real id may be drawn twice
            if operation_id == "createFolder":
                expected.add(409)  # the same name may be drawn twice
            assert response.status_code in expected, (response.status_code, response.text[:300])
        case.validate_response(response, checks=checks)

    run()
    session.close()
    return seen


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_valid_requests_get_the_documented_success(server: Server, operation_id: str) -> None:
    seen = fuzz(server, operation_id, GenerationMode.POSITIVE)
    assert sum(seen.values()) >= MAX_EXAMPLES // 2


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_invalid_requests_get_a_documented_4xx(server: Server, operation_id: str) -> None:
    seen = fuzz(server, operation_id, GenerationMode.NEGATIVE)
    assert any(400 <= status < 500 for status in seen), seen  # it did send invalid requests


def test_the_document_is_valid_openapi_3_1(server: Server) -> None:
    document = server.request("GET", "/v3/openapi.json").json()
    assert document["openapi"].startswith("3.1.")
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    found = operations(schema)
    assert sorted(found) == sorted(OPERATIONS)
    assert document["security"] == [{"bearer": []}]
    # Every documented error answer uses the one error shape.
    for path in document["paths"].values():
        for method, op in path.items():
            if method == "parameters":
                continue
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")):
                    content = answer["content"]["application/json"]["schema"]
                    assert content == {"$ref": "#/components/schemas/Error"}, (method, status)


def app_routes(server: Server) -> list[tuple[str, set[str]]]:
    """(path regex, methods) for every /v3 route the running application serves, in the
    router's order (the first match wins)."""
    app = server.app.server.request_callback
    app = getattr(app, "app", app)  # the fast lane wraps the application
    assert isinstance(app, tornado.web.Application)
    served = []
    for rule in app.wildcard_router.rules:
        pattern = rule.matcher.regex.pattern
        handler = rule.target
        if not pattern.startswith("/v3"):
            continue
        methods = {
            method
            for method in handler.SUPPORTED_METHODS
            # HEAD is GET without its body wherever GET is (RFC 9110 9.3.2), not an operation
            if method != "HEAD"
            and getattr(handler, method.lower())
            is not getattr(tornado.web.RequestHandler, method.lower())
        }
        if handler in (ApiNotFoundHandler, OpenApiHandler):
            methods = set()  # served, but not part of the documented API
        served.append((pattern, methods))
    return served


def test_the_document_lists_exactly_the_routes_the_app_serves(server: Server) -> None:
    """Every documented operation is routed to a handler that implements it, and every
    method of every /v3 handler is documented. (/v3/openapi.json itself and the JSON 404
    for unknown /v3 paths are left out.)"""
    document = server.request("GET", "/v3/openapi.json").json()
    routes = app_routes(server)
    documented: set[tuple[str, str]] = set()
    for path, item in document["paths"].items():
        concrete = path.replace("{image_id}", "img_" + "A" * 22).replace("{folder_name}", "x")
        pattern, methods = next(r for r in routes if re.fullmatch(r[0], concrete))
        for method in set(item) - {"parameters"}:
            assert method.upper() in methods, (method, path, pattern)
            documented.add((method.upper(), pattern))
    assert documented == {(m, p) for p, methods in routes for m in methods}
    # And each documented operation answers on its documented path (not 404 or 405).
    image = uploaded(server, images.png())
    assert server.request("POST", "/v3/folders", json_body={"name": "seed"}).status == 201
    for path, item in document["paths"].items():
        for method in item:
            if method == "parameters":
                continue
            concrete = path.replace("{image_id}", image["id"]).replace("{folder_name}", "seed")
            resp = server.request(method.upper(), concrete, body=b"{}")
            assert resp.status not in (404, 405), (method, path, resp.status)
            if method == "delete":
                image = uploaded(server, images.png())


def test_the_document_needs_a_key(server: Server) -> None:
    assert_error(server.request("GET", "/v3/openapi.json", key=None), 401)
