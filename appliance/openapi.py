"""The OpenAPI 3.1 description of the API, served at /v3/openapi.json and kept true by tests
(schemathesis checks every response against it)."""

from __future__ import annotations

from typing import Any

from appliance import __version__
from appliance.fetchstats import CLIENTS
from appliance.uploads import MAX_FILE_BYTES
from appliance.validation import (
    MAX_ALT_TEXT,
    MAX_FOLDER,
    MAX_PAGE,
    MAX_PAGE_SIZE,
    MAX_SEARCH,
)

_ERROR_CODES_NOTE = "A stable machine-readable code, e.g. unsupported_media_type."


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


# No control characters, as appliance.validation enforces (text may hold tabs and newlines).
_TEXT = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"
_LABEL = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_ALT_TEXT = {"type": "string", "maxLength": MAX_ALT_TEXT, "pattern": _TEXT}
_FOLDER = {"type": "string", "maxLength": MAX_FOLDER, "pattern": _LABEL}

_IMAGE_ID = {
    "name": "image_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 64},
}

_COMMON_ERRORS = {
    "400": _error("Bad input"),
    "401": _error("Missing, invalid or revoked API key"),
    "429": _error("Too many failed authentication attempts from this address"),
}


def document() -> dict[str, Any]:
    image_properties: dict[str, Any] = {
        "id": {"type": "string", "pattern": "^img_[A-Za-z0-9]{22}$"},
        "filename": {"type": "string"},
        "alt_text": _ALT_TEXT,
        "folder": {**_FOLDER, "type": ["string", "null"], "minLength": 1},
        "mime_type": {"enum": ["image/jpeg", "image/png", "image/gif", "image/webp"]},
        "size_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_FILE_BYTES},
        "width": {"type": "integer", "minimum": 1},
        "height": {"type": "integer", "minimum": 1},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "url": {"type": "string", "format": "uri"},
        "thumbnail_url": {"type": "string", "format": "uri"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Pictor images API",
            "version": __version__,
            "description": "The tenant image library. Public image URLs are served at "
            "/i/{image_id} without authentication.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Image": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": sorted(image_properties),
                    "properties": image_properties,
                },
                "ImageList": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["images", "page", "page_size", "total"],
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Image"},
                        },
                        "page": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                        "page_size": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                        "total": {"type": "integer", "minimum": 0},
                    },
                },
                "Folders": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["folders"],
                    "properties": {"folders": {"type": "array", "items": {"type": "string"}}},
                },
                "ImageStats": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id", "fetches"],
                    "properties": {
                        "id": image_properties["id"],
                        "fetches": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["total", "last_30_days", "last_fetched_at", "by_client"],
                            "properties": {
                                "total": {"type": "integer", "minimum": 0},
                                "last_30_days": {"type": "integer", "minimum": 0},
                                "last_fetched_at": {"type": ["string", "null"]},
                                "by_client": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": list(CLIENTS),
                                    "properties": {
                                        c: {"type": "integer", "minimum": 0} for c in CLIENTS
                                    },
                                },
                            },
                        },
                    },
                },
                "ImagePatch": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "alt_text": _ALT_TEXT,
                        "folder": {**_FOLDER, "type": ["string", "null"]},
                    },
                },
                "Error": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["status", "code", "message"],
                            "properties": {
                                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                                "code": {"type": "string", "description": _ERROR_CODES_NOTE},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v3/images": {
                "get": {
                    "operationId": "listImages",
                    "summary": "List images, newest first",
                    "parameters": [
                        {"name": "folder", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "search",
                            "in": "query",
                            "schema": {"type": "string", "maxLength": MAX_SEARCH, "pattern": _TEXT},
                        },
                        {
                            "name": "sha256",
                            "in": "query",
                            "description": "Only images with exactly these bytes (duplicates).",
                            "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                        },
                        {
                            "name": "page",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                        },
                        {
                            "name": "page_size",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_PAGE_SIZE,
                            },
                        },
                    ],
                    "responses": {"200": _json("ImageList", "A page of images"), **_COMMON_ERRORS},
                },
                "post": {
                    "operationId": "uploadImage",
                    "summary": "Upload an image (JPEG, PNG, GIF or WebP, at most 10 MB)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["file"],
                                    "properties": {
                                        "file": {"type": "string", "format": "binary"},
                                        "alt_text": _ALT_TEXT,
                                        "folder": _FOLDER,
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json("Image", "The stored image"),
                        **_COMMON_ERRORS,
                        "413": _error("The file is larger than 10 MB"),
                        "507": _error("The server's disk is full"),
                    },
                },
            },
            "/v3/images/folders": {
                "get": {
                    "operationId": "listFolders",
                    "summary": "Folder names in use, sorted",
                    "responses": {"200": _json("Folders", "The folders"), **_COMMON_ERRORS},
                }
            },
            "/v3/images/{image_id}/stats": {
                "parameters": [_IMAGE_ID],
                "get": {
                    "operationId": "getImageStats",
                    "summary": "How often the image was fetched through /i/ (GETs: 200, 206, 304)",
                    "responses": {
                        "200": _json("ImageStats", "The image's fetch statistics"),
                        **_COMMON_ERRORS,
                        "404": _error("No such image for this tenant, or it was deleted"),
                    },
                },
            },
            "/v3/images/{image_id}": {
                "parameters": [_IMAGE_ID],
                "get": {
                    "operationId": "getImage",
                    "responses": {
                        "200": _json("Image", "The image"),
                        **_COMMON_ERRORS,
                        "404": _error("No such image for this tenant"),
                    },
                },
                "patch": {
                    "operationId": "updateImage",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ImagePatch"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json("Image", "The updated image"),
                        **_COMMON_ERRORS,
                        "404": _error("No such image for this tenant"),
                        "413": _error("The body is too large"),
                    },
                },
                "delete": {
                    "operationId": "deleteImage",
                    "responses": {
                        "204": {"description": "Deleted; /i/{image_id} answers 410 from now on"},
                        **_COMMON_ERRORS,
                        "404": _error("No such image for this tenant"),
                    },
                },
            },
        },
    }
