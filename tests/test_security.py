"""Security headers on every kind of response, the brake on guessing API keys, and keys
revoked from the command line while the server runs (CONTRACT.md: Headers, Auth)."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any

import pytest

from appliance.ratelimit import FailureLimiter
from tests import images
from tests.api_helpers import assert_error, pictor, random_image_id, uploaded
from tests.conftest import Response, Server

IMAGE_CSP = "default-src 'none'; sandbox"


def directives(csp: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            assert words[0] not in out, f"directive {words[0]} given twice: {csp}"
            out[words[0]] = words[1:]
    return out


def every_kind_of_response(server: Server) -> dict[str, Response]:
    """One response of each kind the appliance gives, by a name that says what it is."""
    image = uploaded(server, images.png(40, 30))
    gone = uploaded(server, images.png(41, 30))
    assert server.request("DELETE", f"/v3/images/{gone['id']}").status == 204
    path = f"/i/{image['id']}"
    etag = server.request("GET", path).headers["ETag"]  # also warms the fast lane
    r = server.request
    return {
        "v3 list": r("GET", "/v3/images"),
        "v3 image": r("GET", f"/v3/images/{image['id']}"),
        "v3 upload 201": server.upload(images.png(12, 12)),
        "v3 delete 204": r("DELETE", f"/v3/images/{uploaded(server, images.png(13, 13))['id']}"),
        "v3 openapi": r("GET", "/v3/openapi.json"),
        "v3 400": r("GET", "/v3/images?page=0"),
        "v3 401": r("GET", "/v3/images", key=None),
        "v3 404": r("GET", f"/v3/images/{random_image_id()}"),
        "v3 405": r("PUT", "/v3/images", body=b"{}"),
        "v3 route 404": r("GET", "/v3/nothing"),
        "v3 413": r("PATCH", f"/v3/images/{image['id']}", body=b"{" * 70_000),
        "i 200": r("GET", path),
        "i 200 again (fast lane)": r("GET", path),
        "i HEAD": r("HEAD", path),
        "i 206": r("GET", path, headers={"Range": "bytes=0-9"}),
        "i 304": r("GET", path, headers={"If-None-Match": etag}),
        "i 412": r("GET", path, headers={"If-Match": '"other"'}),
        "i 416": r("GET", path, headers={"Range": "bytes=99999-"}),
        "i thumbnail": r("GET", path + "?variant=thumbnail"),
        "i 400 variant": r("GET", path + "?variant=huge"),
        "i 404": r("GET", f"/i/{random_image_id()}"),
        "i 405": r("POST", path, body=b""),
        "i 410": r("GET", f"/i/{gone['id']}"),
        "gallery": r("GET", "/"),
        "static app.js": r("GET", "/static/app.js"),
        "static 404": r("GET", "/static/nothing.js"),
        "unknown path 404": r("GET", "/no/such/page"),
        "unknown path 405": r("DELETE", "/"),
    }


@pytest.fixture(params=["fast", "handler"])
def any_server(request: pytest.FixtureRequest, server_factory: Any) -> Server:
    """Headers must not depend on which lane answered (appliance/fastpath.py)."""
    srv: Server = server_factory(fast_path=request.param == "fast")
    return srv


def test_every_response_kind_has_the_expected_statuses(any_server: Server) -> None:
    statuses = {name: resp.status for name, resp in every_kind_of_response(any_server).items()}
    assert statuses == {
        "v3 list": 200,
        "v3 image": 200,
        "v3 upload 201": 201,
        "v3 delete 204": 204,
        "v3 openapi": 200,
        "v3 400": 400,
        "v3 401": 401,
        "v3 404": 404,
        "v3 405": 405,
        "v3 route 404": 404,
        "v3 413": 413,
        "i 200": 200,
        "i 200 again (fast lane)": 200,
        "i HEAD": 200,
        "i 206": 206,
        "i 304": 304,
        "i 412": 412,
        "i 416": 416,
        "i thumbnail": 200,
        "i 400 variant": 400,
        "i 404": 404,
        "i 405": 405,
        "i 410": 410,
        "gallery": 200,
        "static app.js": 200,
        "static 404": 404,
        "unknown path 404": 404,
        "unknown path 405": 405,
    }


def test_nosniff_referrer_policy_and_no_server_header_everywhere(any_server: Server) -> None:
    for name, resp in every_kind_of_response(any_server).items():
        assert resp.headers.get_all("X-Content-Type-Options") == ["nosniff"], name
        assert resp.headers.get_all("Referrer-Policy") == ["no-referrer"], name
        assert "Server" not in resp.headers, name
        assert "X-Powered-By" not in resp.headers, name


def test_image_responses_are_sandboxed_and_embeddable_cross_origin(any_server: Server) -> None:
    for name, resp in every_kind_of_response(any_server).items():
        if not name.startswith("i "):
            continue
        assert resp.headers.get_all("Content-Security-Policy") == [IMAGE_CSP], name
        assert resp.headers.get_all("Cross-Origin-Resource-Policy") == ["cross-origin"], name
        if resp.status in (200, 206):
            assert resp.headers["Content-Type"] == "image/png", name
        elif resp.status != 304:
            assert resp.headers["Content-Type"].startswith("application/json"), name


def test_v3_responses_are_never_stored_nor_readable_cross_origin(any_server: Server) -> None:
    for name, resp in every_kind_of_response(any_server).items():
        if name.startswith("v3 "):
            assert resp.headers.get_all("Cache-Control") == ["no-store"], name
            assert "Access-Control-Allow-Origin" not in resp.headers, name
    preflight = any_server.request(
        "OPTIONS",
        "/v3/images",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert preflight.status in (401, 405)


def test_gallery_and_its_files_carry_a_strict_csp(server: Server) -> None:
    for path in ("/", "/static/app.js", "/static/app.css"):
        resp = server.request("GET", path)
        assert resp.status == 200, path
        [csp] = resp.headers.get_all("Content-Security-Policy")
        d = directives(csp)
        assert d["default-src"] == ["'self'"], csp
        assert d["script-src"] == ["'self'"], csp  # no inline script, no eval
        assert d["object-src"] == ["'none'"], csp
        assert d["base-uri"] == ["'none'"], csp
        assert d["frame-ancestors"] == ["'none'"], csp  # no clickjacking of the gallery
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, csp
        assert "*" not in csp, csp


def test_the_gallery_page_runs_no_inline_script(server: Server) -> None:
    html = server.request("GET", "/").body.decode()
    for tag in re.findall(r"<script\b[^>]*>", html, flags=re.IGNORECASE):
        assert "src=" in tag, tag  # every script is a file the CSP allows
    inline = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.IGNORECASE | re.DOTALL)
    assert [body for body in inline if body.strip()] == []
    assert re.search(r"\son[a-z]+\s*=", html, flags=re.IGNORECASE) is None  # no onclick=...


@pytest.mark.parametrize(
    "path",
    [
        "/static/../pictor.db",
        "/static/%2e%2e/pictor.db",
        "/static/..%2fpictor.db",
        "/static/%2e%2e%2f%2e%2e%2fpictor.db",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/i/..%2fpictor.db",
        "/i/%2e%2e",
    ],
)
def test_paths_cannot_reach_outside_their_directories(server: Server, path: str) -> None:
    resp = server.request("GET", path)
    assert resp.status in (400, 403, 404), (path, resp.status)
    assert b"SQLite" not in resp.body
    assert b"root:" not in resp.body


def test_openapi_document_needs_a_key(server: Server) -> None:
    assert_error(server.request("GET", "/v3/openapi.json", key=None), 401, "missing_api_key")
    assert_error(server.request("GET", "/v3/openapi.json", key="pk_nope"), 401)
    assert server.request("GET", "/v3/openapi.json").status == 200


# -- failed authentication is slowed down ---------------------------------------------------


def request_from(
    server: Server,
    source: str,
    key: str | None,
    path: str = "/v3/images",
    headers: dict[str, str] | None = None,
) -> Response:
    """A request from a given loopback address (127.0.0.x), as another client would."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=10, source_address=(source, 0)
    )
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    try:
        conn.request("GET", path, headers=hdrs)
        raw = conn.getresponse()
        return Response(raw.status, raw.reason, raw.headers, raw.read())
    finally:
        conn.close()


def wrong_key(n: int) -> str:
    return f"pk_{'A' * 16}_{'x' * 40}{n:03d}"


def test_repeated_failed_authentication_is_429_while_good_keys_still_work(
    server: Server,
) -> None:
    for n in range(10):  # the burst: ten failures are plain 401s
        assert_error(request_from(server, "127.0.0.1", wrong_key(n)), 401, "invalid_api_key")
    for key in (wrong_key(10), None, "garbage"):
        resp = request_from(server, "127.0.0.1", key)
        error = assert_error(resp, 429, "too_many_requests")
        retry = resp.headers["Retry-After"]
        assert re.fullmatch(r"[1-9][0-9]*", retry), retry  # whole seconds (RFC 9110 10.2.3)
        assert 1 <= int(retry) <= 6, retry  # one attempt more every 6 s
        assert f"{retry} seconds" in error["message"]
        assert "WWW-Authenticate" not in resp.headers
    # A good key from the same address is never slowed down, on any route.
    assert request_from(server, "127.0.0.1", server.api_key).status == 200
    assert request_from(server, "127.0.0.1", server.api_key, "/v3/images/folders").status == 200
    # Nor are other addresses, nor the public image routes.
    assert_error(request_from(server, "127.0.0.2", wrong_key(0)), 401, "invalid_api_key")
    image = uploaded(server, images.png())
    assert server.request("GET", f"/i/{image['id']}").status == 200


def test_a_forged_forwarded_for_does_not_escape_the_brake(server: Server) -> None:
    """The appliance trusts no proxy headers: the peer address is the identity."""
    for n in range(10):
        forged = {"X-Forwarded-For": f"10.0.0.{n}", "X-Real-Ip": f"10.0.1.{n}"}
        assert request_from(server, "127.0.0.1", wrong_key(n), headers=forged).status == 401
    forged = {"X-Forwarded-For": "10.9.9.9", "X-Real-Ip": "10.9.9.9", "Forwarded": "for=1.2.3.4"}
    assert request_from(server, "127.0.0.1", wrong_key(99), headers=forged).status == 429


def test_the_brake_releases_one_attempt_every_six_seconds() -> None:
    """The limiter with a fake clock (the running server's would take a minute)."""
    now = [1000.0]
    brake = FailureLimiter(clock=lambda: now[0])
    for _ in range(10):
        assert brake.retry_after("a") == 0
        brake.record_failure("a")
    assert brake.retry_after("a") == 6
    now[0] += 4.5
    assert brake.retry_after("a") == 2  # whole seconds, rounded up
    now[0] += 1.6
    assert brake.retry_after("a") == 0  # one more attempt after 6 s
    brake.record_failure("a")
    assert brake.retry_after("a") == 6
    assert brake.retry_after("b") == 0  # per address


def test_the_brake_forgets_the_oldest_addresses_first() -> None:
    brake = FailureLimiter(burst=1, max_clients=3, clock=lambda: 0.0)
    for client in ("a", "b", "c", "d"):
        brake.record_failure(client)
    assert [brake.retry_after(c) for c in ("a", "b", "c", "d")] == [0, 6, 6, 6]


# -- keys revoked from the command line -------------------------------------------------------


def keep_alive_get(conn: http.client.HTTPConnection, key: str) -> Response:
    conn.request("GET", "/v3/images", headers={"Authorization": f"Bearer {key}"})
    raw = conn.getresponse()
    return Response(raw.status, raw.reason, raw.headers, raw.read())


def test_a_key_revoked_with_the_cli_stops_working_at_once(server: Server) -> None:
    key = server.new_key("acme")
    key_id = key[3:19]
    image = uploaded(server, images.png(), key=key)
    conn = server.connection()
    try:
        # Used (and so remembered, were there a cache) on an open keep-alive connection.
        for _ in range(3):
            assert keep_alive_get(conn, key).status == 200
        done = pictor("keys", "revoke", key_id, "--data-dir", str(server.data_dir))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"Revoked key {key_id}."
        # The very next request, on the same connection, is refused.
        resp = keep_alive_get(conn, key)
        assert_error(resp, 401, "invalid_api_key")
    finally:
        conn.close()
    for method, path in (
        ("GET", f"/v3/images/{image['id']}"),
        ("PATCH", f"/v3/images/{image['id']}"),
        ("DELETE", f"/v3/images/{image['id']}"),
        ("GET", "/v3/images/folders"),
    ):
        resp = server.request(method, path, key=key, body=json.dumps({"alt_text": "x"}))
        assert_error(resp, 401, "invalid_api_key")
    assert_error(server.upload(images.png(), key=key), 401, "invalid_api_key")
    # The image itself is untouched and public; the tenant's data is not gone.
    assert server.request("GET", f"/i/{image['id']}").status == 200
    # Another tenant's key is unaffected.
    assert server.request("GET", "/v3/images").status == 200
