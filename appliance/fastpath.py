"""A fast lane for hot public images, in front of the Tornado application.

A newsletter send asks for the same few images thousands of times. Once an image's
representation is in memory (headers prepared, body cached), answering it needs no handler
object, no coroutine and no database: this delegate answers such requests straight from
`headers_received`, with the same planning code and the same headers as the handler.
Everything else (first requests, large files, errors, every other route) goes to the
application unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

import tornado.web
from tornado import httputil

from appliance import variants
from appliance.errors import ApiError
from appliance.fetchstats import FetchCounter
from appliance.handlers.base import SECURITY_HEADERS
from appliance.handlers.public import (
    GONE_BODY,
    GONE_CACHE_CONTROL,
    PUBLIC_HEADERS,
    RepresentationCache,
    plan_response,
    representation_headers,
)
from appliance.library import Library
from appliance.metrics import HttpMetrics

log = logging.getLogger("pictor.http")
_FIXED_HEADERS = SECURITY_HEADERS + PUBLIC_HEADERS
_REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified"}
_GONE_HEADERS = (
    ("Content-Type", "application/json; charset=UTF-8"),
    ("Cache-Control", GONE_CACHE_CONTROL),
    ("Content-Length", str(len(GONE_BODY))),
)
_Answer = tuple[httputil.ResponseStartLine, httputil.HTTPHeaders, bytes]
ROUTE = "/i/{id}"  # the route label of the fast lane's answers in the metrics


def _ask(rest: str, query: str) -> tuple[str, variants.Ask] | None:
    """The image id and what a request asks for, read exactly as the handler reads them;
    None when only the handler can say (percent-encoding, or an answer of 400 or 404)."""
    if "%" in rest or "%" in query or "+" in query:
        return None
    try:
        image_id, ask = variants.split_path(rest)
        if ask is None:
            ask = variants.ORIGINAL
            if query:
                args: dict[str, list[str]] = {}
                for part in query.split("&"):
                    if part:
                        name, _, value = part.partition("=")
                        args.setdefault(name, []).append(value)
                ask = variants.from_query(args)
    except ApiError:
        return None
    return image_id, ask


class _Clock:
    """The Date header, formatted once a second rather than once a request."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def date(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, httputil.format_timestamp(now)
        return self._value


class FastPublicRouter(httputil.HTTPServerConnectionDelegate):
    def __init__(
        self,
        app: tornado.web.Application,
        library: Library,
        cache: RepresentationCache,
        fetch_stats: FetchCounter,
        http_metrics: HttpMetrics | None = None,
    ) -> None:
        self.app = app
        self.library = library
        self.cache = cache
        self.clock = _Clock()
        self.fetch_stats = fetch_stats
        self.route_metrics = http_metrics.route(ROUTE) if http_metrics is not None else None

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return _Delegate(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)

    def answer(
        self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders
    ) -> _Answer | None:
        """The answer to a GET/HEAD of any form of /i/ whose representation is in memory, or
        whose image is known to be deleted (410); None to let the application handle the
        request."""
        if start_line.method not in ("GET", "HEAD") or not start_line.path.startswith("/i/"):
            return None
        rest, _, query = start_line.path[3:].partition("?")
        asked = _ask(rest, query)
        if asked is None:
            return None
        image_id, ask = asked
        record = self.library.cached_public(image_id)
        if record is None:
            return None  # unknown here: the handler answers (and caches) it
        if record.deleted_at is not None:
            return self._gone(start_line)
        rep = self.cache.get((image_id, ask.key))
        if rep is None or rep.body is None:
            return None
        try:
            plan = plan_response(rep, headers)
        except ApiError:
            return None  # 412 and 416 are rare: the handler renders their JSON
        out = httputil.HTTPHeaders()
        out["Date"] = self.clock.date()
        for name, value in _FIXED_HEADERS:
            out[name] = value
        for name, value in representation_headers(rep, plan):
            out[name] = value
        body = b""
        if plan.status != 304 and start_line.method == "GET":
            body = rep.body[plan.start : plan.start + plan.length]
        # Counted like the handler counts: from memory; a GET (200, 206, 304) is a fetch.
        self.cache.hits += 1
        if start_line.method == "GET":
            self.fetch_stats.count(image_id, headers.get("User-Agent"))
        return httputil.ResponseStartLine("HTTP/1.1", plan.status, _REASONS[plan.status]), out, body

    def _gone(self, start_line: httputil.RequestStartLine) -> _Answer:
        """What the handler answers for a deleted image, whatever the form, conditionals or
        range: old newsletters keep being opened, and their 410s cost no more than a hit."""
        out = httputil.HTTPHeaders()
        out["Date"] = self.clock.date()
        for name, value in _FIXED_HEADERS + _GONE_HEADERS:
            out[name] = value
        body = GONE_BODY if start_line.method == "GET" else b""
        return httputil.ResponseStartLine("HTTP/1.1", 410, "Gone"), out, body


class _Delegate(httputil.HTTPMessageDelegate):
    def __init__(
        self, router: FastPublicRouter, server_conn: object, conn: httputil.HTTPConnection
    ) -> None:
        self.router = router
        self.server_conn = server_conn
        self.conn = conn
        self.inner: httputil.HTTPMessageDelegate | None = None
        self.ready: _Answer | None = None
        self.started = 0.0
        self.method = ""

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.started = time.perf_counter()
        try:
            self.ready = self.router.answer(start_line, headers)
        except Exception:  # a bug: logged once, with the request line; the handler answers
            log.exception("%s %s: the fast lane failed", start_line.method, start_line.path)
            self.ready = None
        if self.ready is not None:
            self.method = start_line.method
            return None
        self.inner = self.router.app.start_request(self.server_conn, self.conn)
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return None if self.inner is None else self.inner.data_received(chunk)

    def finish(self) -> None:
        # The answer is written once the request is read in full (a body, if any, was
        # dropped): answering earlier would make Tornado close a keep-alive connection.
        if self.ready is not None:
            self.conn.write_headers(*self.ready)
            self.conn.finish()
            metrics = self.router.route_metrics
            if metrics is not None:
                seconds = time.perf_counter() - self.started
                metrics.observe(self.method, self.ready[0].code, seconds)
        elif self.inner is not None:
            self.inner.finish()

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()
