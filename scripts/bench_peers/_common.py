"""What the benchmark peers share: SSE frames of the contract, a Pillow check.

Not part of ocr_sse: the peers are benchmark fixtures that speak enough of
the wire contract (docs CONTRACT.md) for the benchmark to check every
stream's terminal event.  The validation here is the obvious one: look at
the size, then let Pillow open and decode the bytes (JPEGs as ocr_sse does,
in draft mode).
"""

from __future__ import annotations

import argparse
import io
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from PIL import Image

__all__ = (
    "ALLOWED",
    "SSE_HEADERS",
    "arguments",
    "data",
    "frame",
    "now",
    "serve",
    "session_id",
    "validate",
)

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

ALLOWED = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}


def arguments(description: str) -> argparse.Namespace:
    """The peers' common command line: port and the contract's limits."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-file-size", type=int, default=10 * 1024 * 1024)
    parser.add_argument("--max-files", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def serve(
    upload: Callable[[web.Request], Awaitable[web.StreamResponse]],
    args: argparse.Namespace,
    **app_options: Any,
) -> None:
    """Run an aiohttp peer: *upload* at POST /api/ocr, and GET /healthz."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(**app_options)
    app.router.add_post("/api/ocr", upload)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def session_id() -> str:
    return str(uuid.uuid4())


def data(kind: str, **fields: Any) -> str:
    """The one-line JSON of an event: ``{"type": kind, "data": {...}}``."""
    fields.setdefault("timestamp", now())
    return json.dumps({"type": kind, "data": fields}, separators=(",", ":"))


def frame(kind: str, **fields: Any) -> bytes:
    """The whole SSE frame of one contract event."""
    return f"event: {kind}\ndata: {data(kind, **fields)}\n\n".encode()


def ending(*, sid: str, processed: int, valid: int, started: float) -> bytes:
    """The two frames that end a finished upload."""
    return frame(
        "all_images_validated",
        total_processed=processed,
        successful_count=valid,
        failed_count=processed - valid,
    ) + frame(
        "processing_complete",
        session_id=sid,
        total_files=processed,
        successful_files=valid,
        duration_ms=round((time.monotonic() - started) * 1000),
    )


def validate(
    payload: bytes | bytearray,
    *,
    index: int,
    name: str | None,
    size: int,
    max_file_size: int,
    max_files: int,
) -> tuple[str, dict[str, Any]]:
    """Check one file; return the result event's type and ``data`` fields."""

    def error(message: str, code: Any) -> tuple[str, dict[str, Any]]:
        return "image_validation_error", {
            "file_index": index,
            "file_name": name,
            "error_message": message,
            "error_code": code,
        }

    if index >= max_files:
        return error(
            "too many files",
            {"CountLimitExceeded": {"count": index + 1, "limit": max_files}},
        )
    if size == 0:
        return error("file is empty", "EmptyFile")
    if size > max_file_size:
        return error(
            "file too large",
            {"FileSizeExceeded": {"actual": size, "limit": max_file_size}},
        )
    try:
        with Image.open(io.BytesIO(payload)) as image:
            fmt = image.format or "unknown"
            if fmt not in ALLOWED:
                return error(
                    f"unsupported format: {fmt}",
                    {"UnsupportedFormat": {"detected": fmt}},
                )
            width, height = image.size
            if fmt == "JPEG":
                # As ocr_sse and bare validation decode a JPEG: every
                # coefficient, at 1/8 scale.  Without it a peer did 2.4 x
                # their work on a 12 MP photo, and the comparison measured
                # that rather than the server.
                image.draft(image.mode, (-(-width // 8), -(-height // 8)))
            image.load()
    except Image.UnidentifiedImageError:
        return error(
            "unsupported format: unknown",
            {"UnsupportedFormat": {"detected": "unknown"}},
        )
    except Exception as exc:
        return error(f"image does not decode: {exc}", "CorruptedFile")
    return "image_validation_success", {
        "file_index": index,
        "file_info": {
            "file_name": name,
            "content_type": ALLOWED[fmt],
            "size_bytes": size,
            "format": fmt,
            "validation_status": "Valid",
            "file_index": index,
            "processed_at": now(),
            "processing_duration_ms": 0,
            "width": width,
            "height": height,
        },
    }
