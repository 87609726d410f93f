"""Operations routes on the main port: /healthz, /readyz and an image's fetch statistics."""

from __future__ import annotations

from appliance import fetchstats
from appliance.errors import NotFound
from appliance.handlers.api import ApiHandler
from appliance.handlers.base import BaseHandler


class _PlainHandler(BaseHandler):
    """No key, never cached, plain text; HEAD sends the headers GET would."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/plain; charset=UTF-8")


class HealthHandler(_PlainHandler):
    """Liveness: the process runs and its event loop answers. Touches nothing else."""

    async def get(self) -> None:
        self.finish("ok")


class ReadyHandler(_PlainHandler):
    """Readiness: the database and the blob store answer, and the data directory has room."""

    async def get(self) -> None:
        checks = await self.services.readiness.checks()
        ready = all(c.ok for c in checks)
        self.set_status(200 if ready else 503)
        if not ready:
            self.set_header("Retry-After", "5")
        lines = ["ready" if ready else "not ready", *(c.line() for c in checks)]
        self.finish("\n".join(lines) + "\n")


class ImageStatsHandler(ApiHandler):
    """GET /v3/images/{id}/stats: fetches through /i/, stored plus this node's unwritten."""

    async def get(self, image_id: str) -> None:
        library = self.services.library
        record = await library.images.get(self.tenant.id, image_id)
        if record is None:  # unknown, another tenant's, or deleted
            raise NotFound("No image with this id.", code="image_not_found")
        since = fetchstats.recent_since()
        stored = await library.images.fetch_totals(image_id, since)
        pending = self.services.fetch_stats.pending(image_id)
        self.write_json(fetchstats.summary(image_id, stored, pending, since))
