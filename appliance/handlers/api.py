"""The tenant-scoped REST API at /v3/images."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import tornado.web

from appliance import openapi, uploads, validation
from appliance.blobs import TempBlob
from appliance.errors import (
    ApiError,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    storage_error,
)
from appliance.handlers.base import BaseHandler
from appliance.library import UploadForm
from appliance.store import Tenant

MAX_JSON_BYTES = 64 * 1024
DEFAULT_PAGE_SIZE = 25


class ApiHandler(BaseHandler):
    """Authenticated by `Authorization: Bearer <key>`; `self.tenant` is set in `prepare`."""

    tenant: Tenant

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json; charset=UTF-8")

    async def prepare(self) -> None:
        scheme, _, key = self.request.headers.get("Authorization", "").partition(" ")
        has_key = scheme.lower() == "bearer" and bool(key.strip())
        tenant = await self.services.keys.authenticate(key.strip()) if has_key else None
        if tenant is None:
            self._refuse(has_key)
        self.tenant = tenant

    def _refuse(self, had_key: bool) -> NoReturn:
        """401, or 429 once this address has failed too often (a good key is never slowed)."""
        client = self.request.remote_ip or "?"
        limiter = self.services.auth_failures
        wait = limiter.retry_after(client)
        if wait:
            raise TooManyRequests(
                f"Too many failed attempts to authenticate; try again in {wait} seconds.",
                headers={"Retry-After": str(wait)},
            )
        limiter.record_failure(client)
        if not had_key:
            raise Unauthorized(
                "Send your API key in the header 'Authorization: Bearer <key>'.",
                code="missing_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="pictor"'},
            )
        raise Unauthorized(
            "This API key is not valid or has been revoked.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="pictor", error="invalid_token"'},
        )

    def query(self, name: str) -> str | None:
        values = self.request.query_arguments.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadRequest(f"Give '{name}' once.", code="invalid_parameter")
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"'{name}' is not UTF-8 text.", code="invalid_parameter") from None

    def json_object(self) -> dict[str, Any]:
        if len(self.request.body) > MAX_JSON_BYTES:
            raise PayloadTooLarge("The JSON body is too large.", code="body_too_large")
        try:
            payload = json.loads(self.request.body)
        except (ValueError, RecursionError):
            raise BadRequest("The body is not valid JSON.", code="invalid_json") from None
        if not isinstance(payload, dict):
            raise BadRequest("The body must be a JSON object.", code="invalid_json")
        return payload


@tornado.web.stream_request_body
class ImagesHandler(ApiHandler):
    """GET lists the library; POST streams an upload to a temp file as it arrives."""

    _reader: uploads.MultipartReader | None = None
    _temp: TempBlob | None = None
    _received = 0
    _failure: ApiError | None = None

    async def prepare(self) -> None:
        await super().prepare()
        if self.request.method != "POST":
            return
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > uploads.MAX_BODY_BYTES:
            raise uploads.too_large()  # answered before a byte of the body is read
        self._reader = uploads.MultipartReader(
            uploads.boundary_of(self.request.headers.get("Content-Type"))
        )

    async def data_received(self, chunk: bytes) -> None:
        if self._reader is None or self._finished:
            return
        self._received += len(chunk)
        try:
            if self._received > uploads.MAX_BODY_BYTES:
                raise uploads.too_large()
            if self._failure is not None:
                return  # draining the body after a storage failure
            self._reader.feed(chunk)
            data = self._reader.take_file_bytes()
            if data:
                if self._temp is None:
                    self._temp = self.services.library.blobs.new_temp()
                await self.services.library.run_io(self._temp.write, data)
        except ApiError as exc:
            self._discard()
            self.send_api_error(exc)
        except OSError as exc:
            # Not the client's fault: read the rest of the body (bounded by the limit) and
            # answer once it is in, so that the client surely gets to read the answer.
            # Logged once, with this cause, when the answer is made (BaseHandler.log_exception).
            self._discard()
            self._failure = storage_error(exc)
            self._failure.__cause__ = exc

    def _discard(self) -> None:
        if self._temp is not None:
            self._temp.discard()
            self._temp = None

    def on_finish(self) -> None:
        self._discard()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._discard()

    async def post(self) -> None:
        if self._failure is not None:
            raise self._failure
        reader = self._reader
        assert reader is not None
        reader.finish()
        temp, self._temp = self._temp, None
        if temp is None:  # a file part with no bytes
            raise BadRequest("The 'file' field is empty.", code="empty_file")
        record = await self.services.library.ingest(
            self.tenant.id,
            temp,
            UploadForm(reader.filename, reader.fields.get("alt_text"), reader.fields.get("folder")),
        )
        self.set_header("Location", f"/v3/images/{record.id}")
        self.write_json(self.image_json(record), status=201)

    async def get(self) -> None:
        page = validation.positive_int("page", self.query("page"), 1, validation.MAX_PAGE)
        page_size = validation.positive_int(
            "page_size", self.query("page_size"), DEFAULT_PAGE_SIZE, validation.MAX_PAGE_SIZE
        )
        folder = self.query("folder") or None
        search = validation.search(self.query("search"))
        sha256 = validation.sha256(self.query("sha256"))
        result = await self.services.library.images.list_page(
            self.tenant.id,
            folder=folder,
            search=search,
            sha256=sha256,
            page=page,
            page_size=page_size,
        )
        self.write_json(
            {
                "images": [self.image_json(r) for r in result.images],
                "page": page,
                "page_size": page_size,
                "total": result.total,
            }
        )


class FoldersHandler(ApiHandler):
    async def get(self) -> None:
        folders = await self.services.library.images.folders(self.tenant.id)
        self.write_json({"folders": folders})


class ImageHandler(ApiHandler):
    async def prepare(self) -> None:
        declared = self.request.headers.get("Content-Length", "0")
        if declared.isdigit() and int(declared) > MAX_JSON_BYTES:
            raise PayloadTooLarge("The JSON body is too large.", code="body_too_large")
        await super().prepare()

    async def get(self, image_id: str) -> None:
        record = await self.services.library.images.get(self.tenant.id, image_id)
        if record is None:
            raise NotFound("No image with this id.", code="image_not_found")
        self.write_json(self.image_json(record))

    async def patch(self, image_id: str) -> None:
        payload = self.json_object()
        unknown = sorted(set(payload) - {"alt_text", "folder"})
        if unknown:
            raise BadRequest(
                f"Unknown field(s): {', '.join(unknown)}. Only alt_text and folder can change.",
                code="invalid_field",
            )
        changes: dict[str, str | None] = {}
        if "alt_text" in payload:
            if not isinstance(payload["alt_text"], str):
                raise BadRequest("alt_text must be a string.", code="invalid_field")
            changes["alt_text"] = validation.alt_text(payload["alt_text"])
        if "folder" in payload:
            if payload["folder"] is not None and not isinstance(payload["folder"], str):
                raise BadRequest("folder must be a string or null.", code="invalid_field")
            changes["folder"] = validation.folder(payload["folder"])
        record = await self.services.library.images.update(self.tenant.id, image_id, changes)
        if record is None:
            raise NotFound("No image with this id.", code="image_not_found")
        self.write_json(self.image_json(record))

    async def delete(self, image_id: str) -> None:
        await self.services.library.delete(self.tenant.id, image_id)
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


class ApiNotFoundHandler(ApiHandler):
    """Unknown paths under /v3: a JSON 404 (after auth, so nothing leaks to strangers)."""

    async def prepare(self) -> None:
        await super().prepare()
        raise NotFound("There is no API route at this path.", code="route_not_found")


class OpenApiHandler(ApiHandler):
    """The API's OpenAPI 3.1 description (behind auth, like everything under /v3)."""

    def get(self) -> None:
        self.write_json(openapi.document())
