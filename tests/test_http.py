"""HTTP everywhere (RFC 9110 9.3.2 and 15.5.6): every route that answers GET answers HEAD with
exactly GET's headers and no body, and every 405 says in `Allow` what the route accepts."""

from __future__ import annotations

from typing import Any

import pytest

from tests import images
from tests.conftest import Response, Server


@pytest.fixture(params=["handler", "fast"])
def any_server(request: pytest.FixtureRequest, server_factory: Any) -> Server:
    srv: Server = server_factory(fast_path=request.param == "fast")
    return srv


def parity(server: Server, path: str, **headers: str) -> Response:
    got = server.request("GET", path, headers=headers)
    head = server.request("HEAD", path, headers=headers)
    assert (head.status, head.header_dict(), head.body) == (got.status, got.header_dict(), b"")
    return got


def test_head_on_every_get_route_of_the_application(any_server: Server) -> None:
    server = any_server
    image = server.upload(images.png(40, 30)).json()
    jpeg = server.upload(images.jpeg(900, 600), "p.jpg").json()
    cases = {
        "/": (200, "text/html; charset=UTF-8"),
        "/static/app.js": (200, "text/javascript"),
        "/v3/images": (200, "application/json; charset=UTF-8"),
        "/v3/images/": (200, "application/json; charset=UTF-8"),
        "/v3/images?folder=none&page=2": (200, "application/json; charset=UTF-8"),
        "/v3/images/folders": (200, "application/json; charset=UTF-8"),
        "/v3/folders": (200, "application/json; charset=UTF-8"),
        f"/v3/images/{image['id']}": (200, "application/json; charset=UTF-8"),
        f"/v3/images/{image['id']}/stats": (200, "application/json; charset=UTF-8"),
        "/healthz": (200, "text/plain; charset=UTF-8"),
        "/readyz": (200, "text/plain; charset=UTF-8"),
        "/v3/openapi.json": (200, "application/json; charset=UTF-8"),
        f"/i/{image['id']}": (200, "image/png"),
        f"/i/{image['id']}?variant=thumbnail": (200, "image/png"),
        f"/i/{jpeg['id']}?w=600": (200, "image/jpeg"),
        f"/i/{jpeg['id']}/w600.webp": (200, "image/webp"),
        f"/i/{jpeg['id']}.png": (200, "image/png"),
        f"/i/{jpeg['id']}/thumbnail.jpg": (200, "image/jpeg"),
        # errors, too, are answered to HEAD as to GET
        "/v3/images?page=0": (400, "application/json; charset=UTF-8"),
        "/v3/images/img_nope": (404, "application/json; charset=UTF-8"),
        "/v3/nothing": (404, "application/json; charset=UTF-8"),
        "/no/such/page": (404, "application/json; charset=UTF-8"),
        "/i/img_nope": (404, "application/json; charset=UTF-8"),
    }
    for path, (status, ctype) in cases.items():
        got = parity(server, path)
        assert (got.status, got.headers["Content-Type"]) == (status, ctype), path
        assert got.headers["Content-Length"] == str(len(got.body)), path
        assert got.body, path
    # Without a key, HEAD of /v3 is the same 401 as GET.
    for path in ("/v3/images", "/v3/openapi.json"):
        got = server.request("GET", path, key=None)
        head = server.request("HEAD", path, key=None)
        assert (head.status, head.header_dict(), head.body) == (401, got.header_dict(), b"")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
        ("PUT", "/v3/images", "GET, HEAD, POST"),
        ("DELETE", "/v3/images/", "GET, HEAD, POST"),
        ("POST", "/v3/images/folders", "GET, HEAD"),
        ("POST", "/v3/images/{id}", "GET, HEAD, DELETE, PATCH"),
        ("PUT", "/v3/images/{id}", "GET, HEAD, DELETE, PATCH"),
        ("POST", "/v3/openapi.json", "GET, HEAD"),
        ("POST", "/i/{id}", "GET, HEAD"),
        ("DELETE", "/i/{id}/w600.jpg", "GET, HEAD"),
        ("OPTIONS", "/i/{id}", "GET, HEAD"),
        ("POST", "/static/app.js", "GET, HEAD"),
    ],
)
def test_every_405_carries_allow(any_server: Server, method: str, path: str, allow: str) -> None:
    image = any_server.upload(images.png(40, 30)).json()
    resp = any_server.request(method, path.format(id=image["id"]), body=b"{}")
    assert resp.status == 405
    assert resp.headers["Allow"] == allow
    if not path.startswith("/static/"):
        assert resp.json()["error"]["code"] == "method_not_allowed"


def test_an_unknown_method_is_405_with_allow(any_server: Server) -> None:
    image = any_server.upload(images.png(40, 30)).json()
    resp = any_server.request("PROPFIND", f"/i/{image['id']}")
    assert (resp.status, resp.headers["Allow"]) == (405, "GET, HEAD")
