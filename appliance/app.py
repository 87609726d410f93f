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
from appliance.blobs import BlobStore
from appliance.config import Settings, static_dir
from appliance.db import Database
from appliance.fastpath import FastPublicRouter
from appliance.handlers.api import (
    ApiNotFoundHandler,
    FoldersHandler,
    ImageHandler,
    ImagesHandler,
    OpenApiHandler,
)
from appliance.handlers.base import NotFoundHandler, Services
from appliance.handlers.gallery import GalleryHandler, StaticHandler
from appliance.handlers.public import PublicImageHandler, RepresentationCache
from appliance.library import Library
from appliance.store import ImageStore, KeyStore

log = logging.getLogger("pictor")


def make_app(services: Services, cache: RepresentationCache) -> tornado.web.Application:
    deps = {"services": services}
    return tornado.web.Application(
        [
            (r"/v3/images/?", ImagesHandler, deps),
            (r"/v3/images/folders/?", FoldersHandler, deps),
            (r"/v3/images/([^/]+)/?", ImageHandler, deps),
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
    db: Database
    keys: KeyStore
    library: Library
    server: HTTPServer
    port: int
    pools: list[ThreadPoolExecutor] = field(default_factory=list)

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (briefly), close the database."""
        self.server.stop()
        try:
            await asyncio.wait_for(self.server.close_all_connections(), timeout=10)
        except TimeoutError:
            log.warning("requests still running after 10 s were aborted")
        await self.db.close()
        for pool in self.pools:
            pool.shutdown(wait=True, cancel_futures=True)


async def open_services(
    settings: Settings,
) -> tuple[Database, KeyStore, Library, list[ThreadPoolExecutor]]:
    blobs = BlobStore(settings.data_dir)  # creates the directories: fails before the database
    db = await Database.open(settings.data_dir / "pictor.db")
    io_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pictor-io")
    imaging_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pictor-imaging")
    library = Library(ImageStore(db), blobs, io_pool=io_pool, imaging_pool=imaging_pool)
    return db, KeyStore(db), library, [io_pool, imaging_pool]


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
    db, keys, library, pools = await open_services(settings)
    try:
        temps, orphans = await library.sweep()
        first_key = None
        if await keys.tenant_count() == 0:
            first_key = (await keys.create_key("default")).key
        cache = RepresentationCache()
        library.on_delete.append(cache.forget)
        app = make_app(Services(settings=settings, library=library, keys=keys), cache)
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
        await db.close()
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    port = sockets[0].getsockname()[1]
    log.info("%s; swept %d temp file(s) and %d unused blob(s)", vips, temps, orphans)
    appliance = Appliance(settings, db, keys, library, server, port, pools)
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
