"""make_app(): routes and handler dependencies; start_appliance(): the running service."""

from __future__ import annotations

import asyncio
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.log import access_log
from tornado.netutil import bind_sockets

from appliance import imaging, uploads
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
from appliance.handlers.public import PublicImageHandler, RepresentationCache
from appliance.library import Library
from appliance.store import KeyStore, Metadata

log = logging.getLogger("pictor")

SWEEP_EVERY = 6 * 3600.0  # seconds between a scaled-out node's sweeps (jittered)
SWEEP_GRACE = 3600.0  # objects younger than this are never swept


def make_app(services: Services, cache: RepresentationCache) -> tornado.web.Application:
    deps = {"services": services}
    return tornado.web.Application(
        [
            (r"/v3/images/?", ImagesHandler, deps),
            (r"/v3/images/folders/?", FoldersHandler, deps),
            (r"/v3/images/([^/]+)/?", ImageHandler, deps),
            (r"/v3/folders/?", FolderCountsHandler, deps),
            (r"/v3/folders/([^/]+)/?", FolderHandler, deps),
            (r"/v3/openapi.json", OpenApiHandler, deps),
            (r"/v3(?:/.*)?", ApiNotFoundHandler, deps),
            (r"/i/([^/]+)", PublicImageHandler, {**deps, "cache": cache}),
            (r"/", GalleryHandler, deps),
            (r"/static/(.+)", StaticHandler, {"path": str(static_dir())}),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=deps,
        compress_response=False,
        xheaders=False,
        log_function=_log_request,
    )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Errors and API calls are logged; successful public image hits are not (a newsletter
    burst would otherwise write a log line per mail client)."""
    status = handler.get_status()
    if status < 400 and handler.request.path.startswith("/i/"):
        return
    access_log.log(
        logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR,
        "%d %s %.2fms",
        status,
        handler._request_summary(),
        1000.0 * handler.request.request_time(),
    )


@dataclass
class Appliance:
    """The running service: what `serve` starts and tests drive."""

    settings: Settings
    metadata: Metadata
    library: Library
    server: HTTPServer
    port: int
    pools: list[ThreadPoolExecutor] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def keys(self) -> KeyStore:
        return self.metadata.keys

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (briefly), close the backends."""
        self.server.stop()
        try:
            await asyncio.wait_for(self.server.close_all_connections(), timeout=10)
        except TimeoutError:
            log.warning("requests still running after 10 s were aborted")
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
    library = Library(metadata.images, blobs, io_pool=io_pool, imaging_pool=imaging_pool)
    return metadata, library, pools


async def start_appliance(
    settings: Settings,
    *,
    announce: bool = True,
    sockets: list[socket.socket] | None = None,
    fast_path: bool = True,
) -> Appliance:
    """Open the data directory, sweep a crash's leftovers, and listen. (`fast_path=False`
    lets the tests hold the plain handler to the same answers as the fast lane.)"""
    vips = imaging.init_pyvips()
    metadata, library, pools = await open_services(settings)
    tasks: list[asyncio.Task[None]] = []
    try:
        if settings.blob_store == "file":
            # The embedded library: a crash's leftovers are swept before serving.
            temps, orphans = await library.sweep()
        else:
            # Scaled out: this node's scratch files now; orphans of any node's crash in
            # the background, now and every few hours, past a grace period.
            temps, orphans = await library.blobs.sweep_scratch(), 0
            tasks.append(asyncio.create_task(library.sweep_forever(SWEEP_EVERY, SWEEP_GRACE)))
        created = await metadata.keys.create_first_key("default")
        first_key = None if created is None else created.key
        cache = RepresentationCache()
        library.on_delete.append(cache.forget)
        library.on_reset.append(cache.clear)
        tasks.append(asyncio.create_task(library.follow_events()))
        app = make_app(Services(settings=settings, library=library, keys=metadata.keys), cache)
        server = HTTPServer(
            FastPublicRouter(app, library, cache) if fast_path else app,
            max_body_size=uploads.MAX_BODY_BYTES + 1024 * 1024,  # our own 413 answers first
            idle_connection_timeout=60,
            body_timeout=120,
        )
        sockets = sockets or bind_sockets(settings.port, settings.host)
        server.add_sockets(sockets)
    except BaseException:
        # A half-started appliance must not linger (aiosqlite's thread would keep the
        # process alive): close what was opened, then fail.
        await close_services(metadata, library, pools, tasks)
        raise
    port = sockets[0].getsockname()[1]
    log.info("%s; swept %d temp file(s) and %d unused blob(s)", vips, temps, orphans)
    appliance = Appliance(settings, metadata, library, server, port, pools, tasks)
    if announce:
        _announce(settings, port, first_key)
    return appliance


def _announce(settings: Settings, port: int, first_key: str | None) -> None:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"  # noqa: S104
    url = settings.public_url or f"http://{host}:{port}"
    print(f"Pictor is serving {settings.data_dir.resolve()} at http://{settings.host}:{port}/")
    if first_key is not None:
        print("First start: created the tenant 'default' and its API key (shown only once):")
        print(f"  API key: {first_key}")
        print(f"  Gallery: {url}/  (sign in with the key)")
    print("Stop with Ctrl+C.", flush=True)
