"""Benchmark peer: the least a server can do for an upload of small images.

Not a server to run.  It checks no limit, reads only a well-formed body and
holds each file's bytes in one growing buffer, so it serves the small-part
workloads only (``--servers minimal --workloads small,parts``) and refuses a
body over 64 MiB.  What it keeps is the work no server of the contract can
skip: read the body, find each part and its file name, name its type by the
magic bytes, decode it in ocr_sse's threads with ocr_sse's validation, and
write three events a file, as one coroutine with no reader objects.  Set
beside ``ocr_sse``, it shows what ocr_sse's own code costs a file.

    python scripts/bench_peers/minimal.py --port 8005 --threads 2
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any

import attrs
import orjson
from _common import SSE_HEADERS, arguments, ending, frame, serve, session_id
from aiohttp import web

from ocr_sse import validation
from ocr_sse.errors import InvalidImage
from ocr_sse.events import ImageFileInfo
from ocr_sse.pool import ThreadPool

ARGS = arguments(__doc__.splitlines()[0])
ALLOWED = validation.KNOWN_FORMATS
MAX_BODY = 64 * 1024 * 1024
FILE_NAME = re.compile(rb'filename="([^"]*)"')

Outcome = ImageFileInfo | InvalidImage


def file_frame(kind: str, **fields: Any) -> bytes:
    # The frames of each file, by orjson: the json module of _common's
    # frame() would cost the loop more than the rest of this peer's work.
    fields.setdefault("timestamp", datetime.now(UTC))
    body = orjson.dumps({"type": kind, "data": fields}, option=orjson.OPT_UTC_Z)
    return b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n"


def check(data: bytes, index: int, name: str | None, detected: Any) -> Outcome:
    try:
        return validation.validate(
            data,
            file_index=index,
            file_name=name,
            size=len(data),
            allowed=ALLOWED,
            max_pixels=100_000_000,
            detected=detected,
        )
    except InvalidImage as invalid:
        return invalid


def result(index: int, name: str | None, outcome: Outcome) -> bytes:
    if isinstance(outcome, InvalidImage):
        code = outcome.code
        fields = attrs.asdict(code)
        return file_frame(
            "image_validation_error",
            file_index=index,
            file_name=name,
            error_message=outcome.message,
            error_code={type(code).__name__: fields} if fields else type(code).__name__,
        )
    return file_frame(
        "image_validation_success", file_index=index, file_info=attrs.asdict(outcome)
    )


async def upload(request: web.Request) -> web.StreamResponse:
    if (request.content_length or 0) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_BODY, actual_size=request.content_length or 0
        )
    started = time.monotonic()
    sid = session_id()
    pool = _pool()
    boundary = request.headers["Content-Type"].split("boundary=", 1)[1].encode()
    delimiter = b"\r\n--" + boundary
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    await response.write(frame("upload_started", total_files=None, session_id=sid))
    # The body starts with --boundary CRLF, as long as a delimiter.
    buffer, at = b"", len(delimiter)
    frames: list[bytes] = []
    waiting: list[tuple[int, str | None, asyncio.Future[Outcome]]] = []
    index = valid = 0
    while True:
        head_end = buffer.find(b"\r\n\r\n", at)
        end = buffer.find(delimiter, head_end + 4) if head_end >= 0 else -1
        if end < 0 or len(buffer) < end + len(delimiter) + 2:
            chunk, _ = await request.content.readchunk()
            if not chunk:
                await response.write(
                    frame(
                        "processing_error",
                        session_id=sid,
                        error_message="the body ends inside a part",
                        error_type="MultipartParsingError",
                    )
                )
                await response.write_eof()
                return response
            buffer, at = buffer[at:] + chunk, 0
            valid += _finished(waiting, frames)
            if frames:
                await response.write(b"".join(frames))
                frames.clear()
            continue
        found = FILE_NAME.search(buffer, at, head_end)
        name = found.group(1).decode() if found else None
        data = buffer[head_end + 4 : end]
        frames.append(
            file_frame(
                "image_received", file_index=index, file_name=name, size_bytes=len(data)
            )
        )
        frames.append(
            file_frame("image_validation_start", file_index=index, file_name=name)
        )
        try:
            detected = validation.detect_format(data, allowed=ALLOWED)
        except InvalidImage as invalid:
            # Its result still waits its turn: results go out in file order.
            outcome = asyncio.get_running_loop().create_future()
            outcome.set_result(invalid)
        else:
            outcome = pool.submit(check, data, index, name, detected)
        waiting.append((index, name, outcome))
        index += 1
        at = end + len(delimiter)
        if buffer[at : at + 2] == b"--":
            break
        at += 2
    for _, _, outcome in waiting:
        await outcome
    valid += _finished(waiting, frames)
    frames.append(ending(sid=sid, processed=index, valid=valid, started=started))
    await response.write(b"".join(frames))
    await response.write_eof()
    return response


def _finished(
    waiting: list[tuple[int, str | None, asyncio.Future[Outcome]]],
    frames: list[bytes],
) -> int:
    """Frame the results decoded so far, in file order; return how many were valid."""
    done = valid = 0
    for index, name, outcome in waiting:
        if not outcome.done():
            break
        checked = outcome.result()
        frames.append(result(index, name, checked))
        valid += isinstance(checked, ImageFileInfo)
        done += 1
    del waiting[:done]
    return valid


_POOL: list[ThreadPool] = []


def _pool() -> ThreadPool:
    # Made in the running loop, on the first upload; its threads end with
    # the process.
    if not _POOL:
        _POOL.append(ThreadPool(ARGS.threads))
    return _POOL[0]


def main() -> None:
    serve(upload, ARGS, client_max_size=MAX_BODY)


if __name__ == "__main__":
    main()
