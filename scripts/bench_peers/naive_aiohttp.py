"""Benchmark peer: the contract written the obvious way with aiohttp.

``MultipartReader`` parts read with ``read_chunk()`` at its default size
(8 KiB), each file decoded by Pillow right in the event loop, events written
as they happen.  Bytes past the per-file limit are counted, not kept.

    python scripts/bench_peers/naive_aiohttp.py --port 8002 --max-file-size N
"""

from __future__ import annotations

import time

from _common import SSE_HEADERS, arguments, ending, frame, serve, session_id, validate
from aiohttp import web

ARGS = arguments(__doc__.splitlines()[0])


async def upload(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    sid = session_id()
    total = request.query.get("total_files")
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    await response.write(
        frame(
            "upload_started", total_files=int(total) if total else None, session_id=sid
        )
    )
    index = valid = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name != "images":
                await part.release()
                continue
            data = bytearray()
            size = 0
            while chunk := await part.read_chunk():
                size += len(chunk)
                if size <= ARGS.max_file_size:
                    data.extend(chunk)
            await response.write(
                frame(
                    "image_received",
                    file_index=index,
                    file_name=part.filename,
                    size_bytes=size,
                )
            )
            await response.write(
                frame(
                    "image_validation_start", file_index=index, file_name=part.filename
                )
            )
            kind, fields = validate(
                data,
                index=index,
                name=part.filename,
                size=size,
                max_file_size=ARGS.max_file_size,
                max_files=ARGS.max_files,
            )
            valid += kind == "image_validation_success"
            await response.write(frame(kind, **fields))
            index += 1
    except Exception as exc:
        await response.write(
            frame(
                "processing_error",
                session_id=sid,
                error_message=str(exc),
                error_type="MultipartParsingError",
            )
        )
    else:
        await response.write(
            ending(sid=sid, processed=index, valid=valid, started=started)
        )
    await response.write_eof()
    return response


def main() -> None:
    serve(upload, ARGS)


if __name__ == "__main__":
    main()
