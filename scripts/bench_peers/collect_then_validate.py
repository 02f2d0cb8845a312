"""Benchmark peer: the original Rust design's control flow, in aiohttp.

Every part is read whole into memory first (``await part.read()``, like
axum's ``field.bytes().await``), then the stream starts and the files are
validated one after another in a worker thread (``spawn_blocking``), each
result written as it is known.  Limits are checked on the collected bytes.

    python scripts/bench_peers/collect_then_validate.py --port 8004 --max-file-size N
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from _common import SSE_HEADERS, arguments, ending, frame, serve, session_id, validate
from aiohttp import web

ARGS = arguments(__doc__.splitlines()[0])
EXECUTOR = ThreadPoolExecutor(max_workers=ARGS.threads)


async def upload(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    sid = session_id()
    total = request.query.get("total_files")
    files: list[tuple[str | None, bytearray]] = []
    failure = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            content = await part.read()
            if part.name == "images":
                files.append((part.filename, content))
    except Exception as exc:
        failure = str(exc)
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    await response.write(
        frame(
            "upload_started", total_files=int(total) if total else None, session_id=sid
        )
    )
    if failure is not None:
        await response.write(
            frame(
                "processing_error",
                session_id=sid,
                error_message=failure,
                error_type="MultipartParsingError",
            )
        )
        await response.write_eof()
        return response
    loop = asyncio.get_running_loop()
    count = len(files)
    valid = 0
    for index, (name, content) in enumerate(files):
        await response.write(
            frame(
                "image_received",
                file_index=index,
                file_name=name,
                size_bytes=len(content),
            )
        )
        await response.write(
            frame("image_validation_start", file_index=index, file_name=name)
        )
        kind, fields = await loop.run_in_executor(
            EXECUTOR,
            functools.partial(
                validate,
                content,
                index=index,
                name=name,
                size=len(content),
                max_file_size=ARGS.max_file_size,
                max_files=ARGS.max_files,
            ),
        )
        valid += kind == "image_validation_success"
        await response.write(frame(kind, **fields))
    files.clear()
    await response.write(ending(sid=sid, processed=count, valid=valid, started=started))
    await response.write_eof()
    return response


def main() -> None:
    # No aiohttp size cap on part.read(): the design checks sizes after collecting.
    serve(upload, ARGS, client_max_size=sys.maxsize)


if __name__ == "__main__":
    main()
