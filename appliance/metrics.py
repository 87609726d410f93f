"""Prometheus metrics: one registry per appliance, served on `--metrics-port` by
prometheus_client's own exposition.

Names follow the Prometheus naming guide (`pictor_` prefix, base units, `_total` counters) and
every label is bounded: the route *pattern* (never the path), a normalised method, the status
code, an error code. No label ever holds an image id, a key or a tenant.

Hot counts (every HTTP answer, the proxy's cache) are plain integers kept on the event loop
and turned into metric families only when Prometheus scrapes: a prometheus_client Counter or
Histogram takes a lock per call (1 to 2 microseconds here), which the fast lane, at about 100
microseconds a request, cannot afford. Rare events (uploads, flushes) use ordinary Counters.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

import tornado.log
import tornado.web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# Seconds. The fast lane answers in well under a millisecond, uploads of 10 MB and first
# renders take a tenth of a second to a few seconds.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STORED_TOTALS_MAX_AGE = 60.0  # seconds: counting every live image is a scan of the table


def method_label(method: str) -> str:
    """Clients may send any token as a method; only the ones we know become a label value."""
    return method if method in METHODS else "other"


class RouteMetrics:
    """One route's answers by (method, status) and its duration histogram. The fast lane
    holds the one of /i/{id}, so that counting an answer is two dict updates and a bisect."""

    __slots__ = ("bounds", "buckets", "requests", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, method: str, status: int, seconds: float) -> None:
        key = (method, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        # bisect_left: the first bound >= seconds, i.e. the bucket `le` that holds it.
        self.buckets[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds


class HttpMetrics(Collector):
    """pictor_http_requests_total{route,method,status} and
    pictor_http_request_duration_seconds{route}, counted on the event loop thread."""

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.bounds = buckets
        self.routes: dict[str, RouteMetrics] = {}

    def route(self, route: str) -> RouteMetrics:
        metrics = self.routes.get(route)
        if metrics is None:
            metrics = self.routes[route] = RouteMetrics(self.bounds)
        return metrics

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.route(route).observe(method, status, seconds)

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "pictor_http_requests",
            "HTTP requests answered, by route pattern, method and status code.",
            labels=["route", "method", "status"],
        )
        durations = HistogramMetricFamily(
            "pictor_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route pattern.",
            labels=["route"],
        )
        for route, metrics in sorted(self.routes.items()):
            for (method, status), count in sorted(metrics.requests.items()):
                requests.add_metric([route, method, str(status)], count)
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), metrics.buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            durations.add_metric([route], buckets, metrics.total)
        return [requests, durations]


class _Callbacks(Collector):
    """Metric families read from the running parts at scrape time."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return list(self._read())


@dataclass
class Sources:
    """What the metrics read when scraped; each is a cheap attribute read, no I/O."""

    cache_hits: Callable[[], int]
    cache_misses: Callable[[], int]
    rendered: Callable[[], int]
    render_jobs: Callable[[], int]
    pending_fetches: Callable[[], int]
    stored_totals: Callable[[], Awaitable[tuple[int, int]]]  # (live images, their bytes)
    disk_usage: Callable[[], Awaitable[tuple[int, int]]]  # the data directory's (free, total)


@dataclass
class _Cached:
    value: tuple[int, int] = (0, 0)
    at: float = field(default=-STORED_TOTALS_MAX_AGE)


class Metrics:
    """Everything the appliance exports, in a registry of its own (tests run several
    appliances in one process)."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.http = HttpMetrics()
        registry.register(self.http)
        registry.register(_Callbacks(self._read_sources))
        self.uploads_accepted = Counter(
            "pictor_uploads_accepted",
            "Uploads stored (answered 201).",
            registry=registry,
        )
        self.uploads_refused = Counter(
            "pictor_uploads_refused",
            "Uploads refused, by the error code of the answer (e.g. unsupported_media_type, "
            "file_too_large, image_too_large, insufficient_storage).",
            ["reason"],
            registry=registry,
        )
        self.fetch_flushes = Counter(
            "pictor_fetch_stats_flushes",
            "Batches of fetch counts written to the database.",
            registry=registry,
        )
        self.fetch_flush_failures = Counter(
            "pictor_fetch_stats_flush_failures",
            "Batches of fetch counts that could not be written (kept and retried).",
            registry=registry,
        )
        self.stored_images = Gauge(
            "pictor_stored_images",
            f"Live images in the library, all tenants (refreshed at most every "
            f"{STORED_TOTALS_MAX_AGE:.0f} s).",
            registry=registry,
        )
        self.stored_bytes = Gauge(
            "pictor_stored_bytes",
            "Sum of the live images' original sizes, before deduplication.",
            registry=registry,
        )
        self.free_bytes = Gauge(
            "pictor_data_dir_free_bytes",
            "Free space on the file system of the data directory (for unprivileged users).",
            registry=registry,
        )
        self.size_bytes = Gauge(
            "pictor_data_dir_size_bytes",
            "Size of the file system of the data directory.",
            registry=registry,
        )
        self._totals = _Cached()

    def _read_sources(self) -> Iterator[Metric]:
        s = self.sources
        yield CounterMetricFamily(
            "pictor_proxy_cache_hits",
            "/i/ answers made from a representation held in memory.",
            value=s.cache_hits(),
        )
        yield CounterMetricFamily(
            "pictor_proxy_cache_misses",
            "/i/ answers that had to load (or render) the representation first.",
            value=s.cache_misses(),
        )
        yield CounterMetricFamily(
            "pictor_representations_rendered",
            "Representations (thumbnails, variants) rendered on demand by this process.",
            value=s.rendered(),
        )
        yield GaugeMetricFamily(
            "pictor_render_queue_jobs",
            "Imaging jobs (renders, upload checks) waiting for or running on the imaging pool.",
            value=s.render_jobs(),
        )
        yield GaugeMetricFamily(
            "pictor_fetch_stats_pending",
            "Fetch counts held in memory, not yet written to the database.",
            value=s.pending_fetches(),
        )

    async def refresh(self) -> None:
        """Gauges that need I/O, read just before a scrape is answered."""
        free, total = await self.sources.disk_usage()
        self.free_bytes.set(free)
        self.size_bytes.set(total)
        now = time.monotonic()
        if now - self._totals.at >= STORED_TOTALS_MAX_AGE:
            self._totals = _Cached(await self.sources.stored_totals(), now)
        images, size = self._totals.value
        self.stored_images.set(images)
        self.stored_bytes.set(size)

    def flushed(self, ok: bool) -> None:
        (self.fetch_flushes if ok else self.fetch_flush_failures).inc()

    def upload_answered(self, status: int, error_code: str | None) -> None:
        if status == 201:
            self.uploads_accepted.inc()
        elif status >= 400:
            self.uploads_refused.labels(error_code or "error").inc()


class MetricsHandler(tornado.web.RequestHandler):
    """GET /metrics on the metrics port: the Prometheus text format."""

    metrics: Metrics

    def initialize(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    async def get(self) -> None:
        await self.metrics.refresh()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        # On the event loop: the hot counters are plain dicts that only this thread touches.
        self.finish(generate_latest(self.metrics.registry))

    async def head(self) -> None:
        await self.get()  # Tornado drops the body of a HEAD answer, keeping Content-Length


class MetricsNotFound(tornado.web.RequestHandler):
    def set_default_headers(self) -> None:
        self.clear_header("Server")

    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish("Only /metrics is served on this port.\n")


def _log_errors_only(handler: tornado.web.RequestHandler) -> None:
    if handler.get_status() >= 500:
        tornado.log.access_log.error(
            "%d %s (metrics port)", handler.get_status(), handler._request_summary()
        )


def make_metrics_app(metrics: Metrics) -> tornado.web.Application:
    return tornado.web.Application(
        [(r"/metrics", MetricsHandler, {"metrics": metrics})],
        default_handler_class=MetricsNotFound,
        log_function=_log_errors_only,
    )
