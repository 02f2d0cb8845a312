"""Benchmark peer: the contract with FastAPI, sse-starlette and uvicorn.

The obvious way: ``await request.form()`` (python-multipart; files over
1 MiB spool to temporary files), then an ``EventSourceResponse`` whose
generator reports each file and decodes it with Pillow in a thread, at most
``--threads`` decoding at once, as in every other server (Starlette's thread
pool alone allows 40).  Nothing is streamed before the whole body has been
parsed.

    python scripts/bench_peers/fastapi_sse.py --port 8003 --max-file-size N
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator

import anyio
import uvicorn
from _common import arguments, data, session_id, validate
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import UploadFile

ARGS = arguments(__doc__.splitlines()[0])
app = FastAPI()


def event(kind: str, **fields: object) -> ServerSentEvent:
    return ServerSentEvent(event=kind, data=data(kind, **fields))


@functools.cache
def decoders() -> anyio.CapacityLimiter:
    # Made in the running loop, on the first upload.
    return anyio.CapacityLimiter(ARGS.threads)


@app.post("/api/ocr")
async def ocr(request: Request, total_files: int | None = None) -> EventSourceResponse:
    started = time.monotonic()
    sid = session_id()
    form = await request.form(max_files=ARGS.max_files + 1000, max_fields=1000)
    files = [f for f in form.getlist("images") if isinstance(f, UploadFile)]

    async def events() -> AsyncIterator[ServerSentEvent]:
        yield event("upload_started", total_files=total_files, session_id=sid)
        valid = 0
        try:
            for index, upload in enumerate(files):
                size = upload.size or 0
                yield event(
                    "image_received",
                    file_index=index,
                    file_name=upload.filename,
                    size_bytes=size,
                )
                yield event(
                    "image_validation_start",
                    file_index=index,
                    file_name=upload.filename,
                )
                content = await upload.read() if size <= ARGS.max_file_size else b""
                kind, fields = await anyio.to_thread.run_sync(
                    functools.partial(
                        validate,
                        content,
                        index=index,
                        name=upload.filename,
                        size=size,
                        max_file_size=ARGS.max_file_size,
                        max_files=ARGS.max_files,
                    ),
                    limiter=decoders(),
                )
                valid += kind == "image_validation_success"
                yield event(kind, **fields)
            yield event(
                "all_images_validated",
                total_processed=len(files),
                successful_count=valid,
                failed_count=len(files) - valid,
            )
            yield event(
                "processing_complete",
                session_id=sid,
                total_files=len(files),
                successful_files=valid,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
        finally:
            await form.close()

    return EventSourceResponse(events(), headers={"X-Accel-Buffering": "no"})


@app.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


if __name__ == "__main__":
    uvicorn.run(
        app, host=ARGS.host, port=ARGS.port, log_level="warning", access_log=False
    )
