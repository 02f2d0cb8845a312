"""Benchmark ceiling: an aiohttp handler that reads the body and throws it away.

No multipart parsing, no validation: what aiohttp and the loopback can move.
It answers with ``upload_started`` before reading and ``processing_complete``
after the last byte, so the benchmark checks it like any other server.

    python scripts/bench_peers/ceiling.py --port 8001
"""

from __future__ import annotations

import time

from _common import SSE_HEADERS, arguments, frame, serve, session_id
from aiohttp import web

CHUNK = 1024 * 1024


async def upload(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    sid = session_id()
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    await response.write(frame("upload_started", total_files=None, session_id=sid))
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
    await response.write(
        frame(
            "processing_complete",
            session_id=sid,
            total_files=0,
            successful_files=0,
            duration_ms=round((time.monotonic() - started) * 1000),
            bytes_read=size,
        )
    )
    await response.write_eof()
    return response


def main() -> None:
    serve(upload, arguments(__doc__.splitlines()[0]))


if __name__ == "__main__":
    main()
