"""make_app(): routes and handler dependencies; start_appliance(): the running service."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.log import access_log
from tornado.netutil import bind_sockets

from appliance import fetchstats, imaging, uploads
from appliance.backends import open_blobs, open_metadata
from appliance.config import Settings, static_dir
from appliance.fastpath import FastPublicRouter
from appliance.handlers.api import (
    ApiNotFoundHandler,
    FolderCountsHandler,
    FolderHandler,
    FoldersHandler,
    ImageHandler,
    ImagesHandler,
    OpenApiHandler,
)
from appliance.handlers.base import NotFoundHandler, Services
from appliance.handlers.gallery import GalleryHandler, StaticHandler
from appliance.handlers.ops import HealthHandler, ImageStatsHandler, ReadyHandler
from appliance.handlers.public import PublicImageHandler, RepresentationCache
from appliance.health import Readiness
from appliance.library import Library
from appliance.metrics import Metrics, Sources, make_metrics_app, method_label
from appliance.store import KeyStore, Metadata

log = logging.getLogger("pictor")

SWEEP_EVERY = 6 * 3600.0  # seconds between a scaled-out node's sweeps (jittered)
SWEEP_GRACE = 3600.0  # objects younger than this are never swept


Route = tuple[str, type[tornado.web.RequestHandler], dict[str, Any], str]
OTHER_ROUTE = "other"  # the metrics' route label of requests no route claims
QUIET_WHEN_OK = ("/i/{id}", "/healthz", "/readyz")  # routes not access-logged below 400


def make_app(
    services: Services, cache: RepresentationCache, metrics: Metrics | None = None
) -> tornado.web.Application:
    deps = {"services": services}
    # (pattern, handler, its arguments, the route's label in the metrics: never the path)
    routes: list[Route] = [
        (r"/v3/images/?", ImagesHandler, deps, "/v3/images"),
        (r"/v3/images/folders/?", FoldersHandler, deps, "/v3/images/folders"),
        (r"/v3/images/([^/]+)/stats/?", ImageStatsHandler, deps, "/v3/images/{id}/stats"),
        (r"/v3/images/([^/]+)/?", ImageHandler, deps, "/v3/images/{id}"),
        (r"/v3/folders/?", FolderCountsHandler, deps, "/v3/folders"),
        (r"/v3/folders/([^/]+)/?", FolderHandler, deps, "/v3/folders/{name}"),
        (r"/v3/openapi.json", OpenApiHandler, deps, "/v3/openapi.json"),
        (r"/v3(?:/.*)?", ApiNotFoundHandler, deps, "/v3/*"),
        (r"/i/(.*)", PublicImageHandler, {**deps, "cache": cache}, "/i/{id}"),
        (r"/healthz", HealthHandler, deps, "/healthz"),
        (r"/readyz", ReadyHandler, deps, "/readyz"),
        (r"/", GalleryHandler, deps, "/"),
        (r"/static/(.+)", StaticHandler, {"path": str(static_dir())}, "/static/*"),
    ]
    labels = {handler: label for _, handler, _, label in routes}
    return tornado.web.Application(
        [(pattern, handler, kwargs) for pattern, handler, kwargs, _ in routes],
        default_handler_class=NotFoundHandler,
        default_handler_args=deps,
        compress_response=False,
        xheaders=False,
        log_function=partial(_log_request, labels, metrics),
    )


def _log_request(
    labels: dict[type[tornado.web.RequestHandler], str],
    metrics: Metrics | None,
    handler: tornado.web.RequestHandler,
) -> None:
    """Every answer is counted. Errors and API calls are logged; successful public image hits
    and health probes are not (a newsletter burst would otherwise write a line per mail
    client, a load balancer one every few seconds)."""
    status = handler.get_status()
    route = labels.get(type(handler), OTHER_ROUTE)
    request = handler.request
    if metrics is not None:
        method = method_label(request.method or "")
        metrics.http.observe(route, method, status, request.request_time())
        if route == "/v3/images" and method == "POST":
            metrics.upload_answered(status, getattr(handler, "error_code", None))
    if status < 400 and route in QUIET_WHEN_OK:
        return
    summary = handler._request_summary()
    duration_ms = round(1000.0 * request.request_time(), 2)
    access_log.log(
        logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR,
        "%d %s %.2fms",
        status,
        summary,
        duration_ms,
        extra={
            "status": status,
            "method": request.method,
            "path": request.uri,
            "remote_ip": request.remote_ip,
            "duration_ms": duration_ms,
        },
    )


@dataclass
class Appliance:
    """The running service: what `serve` starts and tests drive."""

    settings: Settings
    metadata: Metadata
    library: Library
    server: HTTPServer
    port: int
    fetch_stats: fetchstats.FetchCounter
    readiness: Readiness
    metrics: Metrics | None = None
    metrics_server: HTTPServer | None = None
    metrics_port: int | None = None
    pools: list[ThreadPoolExecutor] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def keys(self) -> KeyStore:
        return self.metadata.keys

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (briefly), write the last fetch
        counts, close the backends."""
        self.server.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        try:
            await asyncio.wait_for(self.server.close_all_connections(), timeout=10)
        except TimeoutError:
            log.warning("requests still running after 10 s were aborted")
        await self.fetch_stats.stop()
        if self.metrics_server is not None:
            await self.metrics_server.close_all_connections()
        self.readiness.close()
        await close_services(self.metadata, self.library, self.pools, self.tasks)


async def close_services(
    metadata: Metadata,
    library: Library,
    pools: list[ThreadPoolExecutor],
    tasks: list[asyncio.Task[None]] | None = None,
) -> None:
    tasks = tasks or []
    library.cancel_removals()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await metadata.close()
    await library.blobs.close()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


async def open_services(settings: Settings) -> tuple[Metadata, Library, list[ThreadPoolExecutor]]:
    io_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pictor-io")
    imaging_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pictor-imaging")
    pools = [io_pool, imaging_pool]
    try:
        # The blob store first: a data directory that cannot be made fails before the
        # database is opened.
        blobs = open_blobs(settings, io_pool)
        metadata = await open_metadata(settings)
    except BaseException:
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    library = Library(
        metadata.images,
        blobs,
        io_pool=io_pool,
        imaging_pool=imaging_pool,
        render_concurrency=settings.render_concurrency,
        render_queue=settings.render_queue,
    )
    return metadata, library, pools


async def start_appliance(
    settings: Settings,
    *,
    announce: bool = True,
    sockets: list[socket.socket] | None = None,
    fast_path: bool = True,
    count_fetches: bool = True,
    flush_interval: float = fetchstats.FLUSH_INTERVAL,
) -> Appliance:
    """Open the data directory, sweep a crash's leftovers, and listen. (`fast_path=False`
    lets the tests hold the plain handler to the same answers as the fast lane;
    `count_fetches=False` is the benchmark's baseline; tests shorten `flush_interval`.)"""
    vips = imaging.init_pyvips()
    metadata, library, pools = await open_services(settings)
    tasks: list[asyncio.Task[None]] = []
    readiness = Readiness(
        database=metadata.ping,
        blobs=library.blobs.ping,
        data_dir=settings.data_dir,
        min_free_bytes=settings.min_free_space,
    )
    metrics: Metrics | None = None
    try:
        temps, orphans = await library.sweep()
        created = await metadata.keys.create_first_key("default")
        first_key = None if created is None else created.key
        cache = RepresentationCache()
        library.on_delete.append(cache.forget)
        library.on_reset.append(cache.clear)
        tasks.append(asyncio.create_task(library.follow_events()))
        counter = fetchstats.FetchCounter if count_fetches else fetchstats.NoFetchCounter
        fetch_stats = counter(metadata.images.add_fetches, interval=flush_interval)
        metrics_sockets: list[socket.socket] = []
        if settings.metrics_port is not None:
            metrics = _metrics(settings, metadata, library, cache, fetch_stats, readiness)
            fetch_stats.on_flush = metrics.flushed
            metrics_sockets = bind_sockets(settings.metrics_port, settings.host)
        services = Services(
            settings=settings,
            library=library,
            keys=metadata.keys,
            fetch_stats=fetch_stats,
            readiness=readiness,
        )
        app = make_app(services, cache, metrics)
        http_metrics = metrics.http if metrics is not None else None
        server = HTTPServer(
            FastPublicRouter(app, library, cache, fetch_stats, http_metrics) if fast_path else app,
            max_body_size=uploads.MAX_BODY_BYTES + 1024 * 1024,  # our own 413 answers first
            idle_connection_timeout=60,
            body_timeout=120,
        )
        metrics_server = None
        if metrics is not None:
            metrics_server = HTTPServer(make_metrics_app(metrics), idle_connection_timeout=60)
            metrics_server.add_sockets(metrics_sockets)
        sockets = sockets or bind_sockets(settings.port, settings.host)
        server.add_sockets(sockets)
    except BaseException:
        # A half-started appliance must not linger (aiosqlite's thread would keep the
        # process alive): close what was opened, then fail.
        readiness.close()
        await close_services(metadata, library, pools, tasks)
        raise
    fetch_stats.start()
    port = sockets[0].getsockname()[1]
    metrics_port = metrics_sockets[0].getsockname()[1] if metrics_sockets else None
    log.info("%s; swept %d temp file(s) and %d unused blob(s)", vips, temps, orphans)
    appliance = Appliance(
        settings,
        metadata,
        library,
        server,
        port,
        fetch_stats,
        readiness,
        metrics,
        metrics_server,
        metrics_port,
        pools,
        tasks,
    )
    if announce:
        _announce(settings, port, first_key, metrics_port)
    return appliance


def _metrics(
    settings: Settings,
    metadata: Metadata,
    library: Library,
    cache: RepresentationCache,
    fetch_stats: fetchstats.FetchCounter,
    readiness: Readiness,
) -> Metrics:
    async def disk_usage() -> tuple[int, int]:
        usage = await readiness.run_blocking(lambda: shutil.disk_usage(settings.data_dir))
        return usage.free, usage.total

    return Metrics(
        Sources(
            cache_hits=lambda: cache.hits,
            cache_misses=lambda: cache.misses,
            rendered=lambda: library.rendered,
            render_jobs=lambda: library.imaging_jobs,
            pending_fetches=fetch_stats.pending_fetches,
            stored_totals=metadata.images.stored_totals,
            disk_usage=disk_usage,
        )
    )


def _announce(
    settings: Settings, port: int, first_key: str | None, metrics_port: int | None
) -> None:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"  # noqa: S104
    url = settings.public_url or f"http://{host}:{port}"
    print(f"Pictor is serving {settings.data_dir.resolve()} at http://{settings.host}:{port}/")
    if metrics_port is not None:
        print(f"Metrics: http://{settings.host}:{metrics_port}/metrics")
    if first_key is not None:
        print("First start: created the tenant 'default' and its API key (shown only once):")
        print(f"  API key: {first_key}")
        print(f"  Gallery: {url}/  (sign in with the key)")
    print("Stop with Ctrl+C.", flush=True)
