"""Fetch statistics: every GET form of /i/ counted by client family, in memory, written in
batches (counted here with triggers on the table: one row write per image, day and client,
never one per fetch), surviving restarts, adding up across nodes, 404 once deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from appliance.fetchstats import client_family
from tests import images
from tests.api_helpers import TIMESTAMP_RE, assert_error, db_query, running, uploaded, wait_until
from tests.conftest import Server

GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)"
APPLE_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
APPLE_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)
ZEROS = {"gmail": 0, "yahoo": 0, "outlook": 0, "apple": 0, "other": 0}


@pytest.mark.embedded_only  # no storage involved: once is enough
@pytest.mark.parametrize(
    ("user_agent", "family"),
    [
        (GMAIL, "gmail"),
        (
            "Mozilla/5.0 (compatible; YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html)",
            "yahoo",
        ),
        (YAHOO, "yahoo"),
        (OUTLOOK, "outlook"),
        ("Microsoft Office/16.0 (Microsoft Outlook Mail 16.0.4266; Pro)", "outlook"),
        ("Outlook-iOS/709.2226530.prod.iphone (4.2226.0)", "outlook"),
        ("Outlook-Android/2.0", "outlook"),
        ("MacOutlook/16.85.24051214 (Intelx64 Mac OS X 14.5.0 (Build 23F79))", "outlook"),
        ("Mozilla/4.0 (compatible; ms-office; MSOffice 16)", "outlook"),
        (APPLE_MAC, "apple"),
        (APPLE_IOS, "apple"),
        (
            "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Mobile/15E148",
            "apple",
        ),
        (SAFARI, "other"),  # the browser, not Mail
        (APPLE_IOS + " [FBAN/FBIOS;FBAV/466.0]", "other"),  # an in-app web view
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Safari/537.36",
            "other",
        ),
        ("curl/8.5.0", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_client_families_from_real_user_agents(user_agent: str | None, family: str) -> None:
    assert client_family(user_agent) == family


def stats(server: Server, image_id: str, key: Any = None) -> dict[str, Any]:
    resp = server.request(
        "GET", f"/v3/images/{image_id}/stats", **({} if key is None else {"key": key})
    )
    assert resp.status == 200, resp.body
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"
    body: dict[str, Any] = resp.json()
    return body


def fetch(
    server: Server, path: str, user_agent: str | None, status: int = 200, **headers: str
) -> None:
    hdrs = dict(headers)
    if user_agent is not None:
        hdrs["User-Agent"] = user_agent
    got = server.request("GET", path, headers=hdrs)
    assert got.status == status, (path, got.status, got.body[:200])


def install_write_counter(server: Server) -> None:
    """Triggers that count every row written to the fetch counts (insert or update)."""
    for sql in (
        "CREATE TABLE test_fetch_writes (n INTEGER)",
        "CREATE TRIGGER test_fetch_insert AFTER INSERT ON image_fetches "
        "BEGIN INSERT INTO test_fetch_writes VALUES (1); END",
        "CREATE TRIGGER test_fetch_update AFTER UPDATE ON image_fetches "
        "BEGIN INSERT INTO test_fetch_writes VALUES (1); END",
    ):
        db_query(server.data_dir, sql)


def writes(server: Server) -> int:
    return int(db_query(server.data_dir, "SELECT count(*) FROM test_fetch_writes")[0][0])


@pytest.mark.embedded_only  # counts the row writes with triggers on the SQLite file
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-lane", "handler"])
def test_every_get_form_is_counted_in_batches_and_survives_a_restart(
    server_factory: Any, fast_path: bool
) -> None:
    server = server_factory(flush_interval=3600, fast_path=fast_path)
    data = images.png(400, 300)
    a = uploaded(server, data, "a.png")
    b = uploaded(server, images.jpeg(40, 30), "b.jpg")
    assert stats(server, a["id"]) == {
        "id": a["id"],
        "fetches": {"total": 0, "last_30_days": 0, "last_fetched_at": None, "by_client": ZEROS},
    }
    install_write_counter(server)
    # Fetches are stamped by a timer that ticks each second: at most a second early.
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    path = f"/i/{a['id']}"
    for _ in range(20):
        fetch(server, path, GMAIL)
    for _ in range(2):
        fetch(server, path + "?variant=thumbnail", OUTLOOK)
    fetch(server, path, APPLE_MAC, 206, Range="bytes=0-9")
    fetch(server, path, YAHOO, 304, **{"If-None-Match": f'"{a["sha256"]}"'})
    fetch(server, path, None)
    # Not fetches: HEAD, an unsatisfiable range, a failed precondition, an unknown variant.
    assert server.request("HEAD", path, headers={"User-Agent": GMAIL}).status == 200
    fetch(server, path, GMAIL, 416, Range="bytes=999999-")
    fetch(server, path, GMAIL, 412, **{"If-Match": '"nope"'})
    fetch(server, path + "?variant=huge", GMAIL, 400)
    fetch(server, f"/i/{b['id']}", APPLE_IOS)
    expected = {
        "total": 25,
        "last_30_days": 25,
        "by_client": {"gmail": 20, "yahoo": 1, "outlook": 2, "apple": 1, "other": 1},
    }

    def check(body: dict[str, Any]) -> None:
        last = body["fetches"].pop("last_fetched_at")
        assert body == {"id": a["id"], "fetches": expected}
        assert TIMESTAMP_RE.match(last), last
        seen = datetime.strptime(last, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert started <= seen <= datetime.now(UTC)

    check(stats(server, a["id"]))  # from memory: nothing was written yet
    assert writes(server) == 0
    assert server.call(server.app.fetch_stats.flush()) == 6  # a: five families, b: one
    assert writes(server) == 6  # one row write per (image, day, client), not 26
    check(stats(server, a["id"]))
    assert stats(server, b["id"])["fetches"]["by_client"] == {**ZEROS, "apple": 1}
    server.stop()

    with running(server.data_dir) as again:
        check(stats(again, a["id"], key=again.api_key))
        fetch(again, path, GMAIL)  # counted after the restart, written when it stops
    with running(server.data_dir) as third:
        body = stats(third, a["id"], key=third.api_key)
        assert body["fetches"]["total"] == 26
        assert body["fetches"]["by_client"]["gmail"] == 21


def test_counts_are_flushed_on_their_own_and_add_up_across_nodes(server_factory: Any) -> None:
    one = server_factory(flush_interval=0.2)
    a = uploaded(one, images.png(30, 30), "a.png")
    two = server_factory(data_dir=one.data_dir, flush_interval=0.2)  # a second node
    for _ in range(5):
        fetch(one, f"/i/{a['id']}", GMAIL)
    for _ in range(7):
        fetch(two, f"/i/{a['id']}", GMAIL)
    # A node answers with the stored counts plus its own unwritten ones: each sees the
    # other's only once that node wrote them, without being asked to.
    for node in (one, two):
        assert wait_until(lambda n=node: stats(n, a["id"])["fetches"]["total"] == 12, timeout=10)
        body = stats(node, a["id"])["fetches"]
        assert (body["total"], body["by_client"]["gmail"]) == (12, 12)
    for node in (one, two):
        assert node.app.fetch_stats.pending() == []  # all of it written


@pytest.mark.embedded_only  # writes old buckets straight into the SQLite file
def test_last_30_days_come_from_daily_buckets(server: Server) -> None:
    a = uploaded(server, images.png(30, 30), "a.png")
    today = datetime.now(UTC)

    def day(ago: int) -> str:
        return (today - timedelta(days=ago)).strftime("%Y-%m-%d")

    rows = [
        (day(30), "gmail", 10, day(30) + "T08:00:00Z"),  # one day outside the window
        (day(29), "apple", 4, day(29) + "T09:30:00Z"),  # the window's first day
        (day(0), "yahoo", 2, day(0) + "T00:00:01Z"),
    ]
    for d, client, n, last in rows:
        db_query(
            server.data_dir,
            "INSERT INTO image_fetches (image_id, day, client, fetches, last_fetched_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (a["id"], d, client, n, last),
        )
    assert stats(server, a["id"]) == {
        "id": a["id"],
        "fetches": {
            "total": 16,
            "last_30_days": 6,
            "last_fetched_at": day(0) + "T00:00:01Z",
            "by_client": {**ZEROS, "gmail": 10, "apple": 4, "yahoo": 2},
        },
    }


def test_stats_are_404_for_deleted_unknown_and_other_tenants_images(server: Server) -> None:
    a = uploaded(server, images.png(30, 30), "a.png")
    other = server.new_key("other")
    for key in (other,):
        assert_error(
            server.request("GET", f"/v3/images/{a['id']}/stats", key=key), 404, "image_not_found"
        )
    assert_error(server.request("GET", "/v3/images/img_nothing/stats"), 404, "image_not_found")
    assert server.request("DELETE", f"/v3/images/{a['id']}").status == 204
    assert_error(server.request("GET", f"/v3/images/{a['id']}/stats"), 404, "image_not_found")
    assert_error(
        server.request("GET", f"/v3/images/{a['id']}/stats", key=None), 401, "missing_api_key"
    )
