"""The endpoint on the wire: the exact events, status codes and error codes."""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

import ocr_sse
from ocr_sse import Config, handler
from ocr_sse.handler import RUNTIME

from . import images
from .conftest import Serve
from .wire import (
    BOUNDARY,
    CONTENT_TYPE,
    failed_with,
    multipart,
    read_events,
    stalled,
    types,
)

ONE_FILE = [
    "upload_started",
    "image_received",
    "image_validation_start",
    "image_validation_success",
    "all_images_validated",
    "processing_complete",
]


async def post(
    client: TestClient[Any, Any], body: bytes | Any, *, query: str = "", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    if isinstance(body, bytes):
        body = io.BytesIO(body)  # aiohttp warns of large raw bytes bodies
    response = await client.post(
        "/api/ocr" + query, data=body, headers={"Content-Type": CONTENT_TYPE, **headers}
    )
    return response.status, dict(response.headers), await response.read()


async def upload(
    client: TestClient[Any, Any], *files: tuple[str | None, bytes], query: str = ""
) -> list[tuple[str, dict[str, Any]]]:
    status, _, raw = await post(
        client, multipart(("images", name, data) for name, data in files), query=query
    )
    assert status == 200
    return read_events(raw)


def only(events: list[tuple[str, dict[str, Any]]], name: str) -> list[dict[str, Any]]:
    return [data for kind, data in events if kind == name]


async def test_valid_and_invalid_file_stream_in_contract_order(serve: Serve) -> None:
    """A PNG and a PDF give the contract's example stream, field for field."""
    client = await serve()
    status, headers, raw = await post(
        client,
        multipart(
            [
                ("images", "receipt.png", images.png(width=120, height=80)),
                ("note", None, b"not a file"),
                ("images", "notes.pdf", b"%PDF-1.7\n1 0 obj\n"),
            ]
        ),
        query="?total_files=2",
    )
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Accel-Buffering"] == "no"
    events = read_events(raw)
    assert types(events) == [
        "upload_started",
        "image_received",
        "image_validation_start",
        "image_received",
        "image_validation_start",
        "image_validation_success",
        "image_validation_error",
        "all_images_validated",
        "processing_complete",
    ] or types(events) == [
        "upload_started",
        "image_received",
        "image_validation_start",
        "image_validation_success",
        "image_received",
        "image_validation_start",
        "image_validation_error",
        "all_images_validated",
        "processing_complete",
    ]
    started = only(events, "upload_started")[0]
    session_id = started["session_id"]
    assert uuid.UUID(session_id).version == 4
    assert started["total_files"] == 2
    size = len(images.png(width=120, height=80))
    assert only(events, "image_received") == [
        {
            "file_index": 0,
            "file_name": "receipt.png",
            "size_bytes": size,
            "timestamp": only(events, "image_received")[0]["timestamp"],
        },
        {
            "file_index": 1,
            "file_name": "notes.pdf",
            "size_bytes": 17,
            "timestamp": only(events, "image_received")[1]["timestamp"],
        },
    ]
    assert [
        (d["file_index"], d["file_name"])
        for d in only(events, "image_validation_start")
    ] == [
        (0, "receipt.png"),
        (1, "notes.pdf"),
    ]
    success = only(events, "image_validation_success")[0]
    info = success["file_info"]
    assert success["file_index"] == 0
    assert {
        k: v
        for k, v in info.items()
        if k not in ("processed_at", "processing_duration_ms")
    } == {
        "file_name": "receipt.png",
        "content_type": "image/png",
        "size_bytes": size,
        "format": "PNG",
        "validation_status": "Valid",
        "file_index": 0,
        "width": 120,
        "height": 80,
    }
    assert isinstance(info["processing_duration_ms"], int)
    error = only(events, "image_validation_error")[0]
    assert {k: v for k, v in error.items() if k != "timestamp"} == {
        "file_index": 1,
        "file_name": "notes.pdf",
        "error_message": "unsupported format: application/pdf",
        "error_code": {"UnsupportedFormat": {"detected": "application/pdf"}},
    }
    summary = only(events, "all_images_validated")[0]
    assert (
        summary["total_processed"],
        summary["successful_count"],
        summary["failed_count"],
    ) == (2, 1, 1)
    complete = only(events, "processing_complete")[0]
    assert complete["session_id"] == session_id
    assert (complete["total_files"], complete["successful_files"]) == (2, 1)
    assert isinstance(complete["duration_ms"], int)


async def test_total_files_is_null_unless_declared(serve: Serve) -> None:
    """Without ?total_files the server never guesses the count."""
    client = await serve()
    events = await upload(client, ("a.png", images.png()))
    assert only(events, "upload_started")[0]["total_files"] is None
    events = await upload(client, ("a.png", images.png()), query="?total_files=0")
    assert only(events, "upload_started")[0]["total_files"] == 0


@pytest.mark.parametrize(
    ("format", "mime", "save"),
    [
        ("JPEG", "image/jpeg", {"quality": 85}),
        ("PNG", "image/png", {}),
        ("WEBP", "image/webp", {}),
        ("TIFF", "image/tiff", {}),
        ("BMP", "image/bmp", {}),
    ],
)
async def test_each_accepted_format_validates_with_its_size(
    serve: Serve, format: str, mime: str, save: dict[str, Any]
) -> None:
    """Every format of the default allow-list passes and reports its pixels."""
    client = await serve()
    data = images.image_bytes(format, width=33, height=21, **save)
    events = await upload(client, ("scan", data))
    assert types(events) == ONE_FILE
    info = only(events, "image_validation_success")[0]["file_info"]
    assert (info["format"], info["content_type"], info["width"], info["height"]) == (
        format,
        mime,
        33,
        21,
    )
    assert info["size_bytes"] == len(data)


@pytest.mark.parametrize(
    ("settings", "data", "code", "message"),
    [
        ({}, b"", "EmptyFile", "file is empty"),
        (
            {"max_file_size": 1000},
            b"\x89PNG" + b"x" * 4000,
            {"FileSizeExceeded": {"actual": 4004, "limit": 1000}},
            "file is 4004 bytes, over the limit of 1000 bytes",
        ),
        (
            {},
            b"\x00\x01 nothing anyone knows",
            {"UnsupportedFormat": {"detected": "unknown"}},
            "unsupported format: unknown",
        ),
        (
            {"allowed_formats": {"PNG"}},
            images.jpeg(),
            {"UnsupportedFormat": {"detected": "image/jpeg"}},
            "unsupported format: image/jpeg",
        ),
        (
            {},
            images.truncated(images.jpeg(width=300, height=200)),
            "CorruptedFile",
            "image does not decode: image file is truncated",
        ),
        (
            {},
            images.pixel_bomb_png(),
            "CorruptedFile",
            "image has more pixels than the limit of 50000000 pixels",
        ),
        (
            {"max_pixels": 1000},
            images.png(width=50, height=50),
            "CorruptedFile",
            "image is 50x50 pixels, over the limit of 1000 pixels",
        ),
    ],
)
async def test_each_error_code_reaches_the_client(
    serve: Serve, settings: dict[str, Any], data: bytes, code: Any, message: str
) -> None:
    """A failing file gives image_validation_error with the serde error code."""
    client = await serve(**settings)
    events = await upload(client, ("bad.bin", data))
    assert types(events)[:3] == [
        "upload_started",
        "image_received",
        "image_validation_start",
    ]
    assert types(events)[3:] == [
        "image_validation_error",
        "all_images_validated",
        "processing_complete",
    ]
    error = only(events, "image_validation_error")[0]
    assert error["error_code"] == code
    assert error["error_message"].startswith(message)
    assert only(events, "image_received")[0]["size_bytes"] == len(data)


async def test_a_file_of_exactly_max_file_size_is_validated(serve: Serve) -> None:
    """max_file_size is the largest size let in: a file of that many bytes
    is validated, one of a byte more is FileSizeExceeded."""
    png = images.png()
    client = await serve(max_file_size=len(png))
    events = await upload(client, ("a.png", png), ("b.png", png + b"\0"))
    assert types(events)[-1] == "processing_complete"
    (success,) = only(events, "image_validation_success")
    assert (success["file_index"], success["file_info"]["size_bytes"]) == (0, len(png))
    (error,) = only(events, "image_validation_error")
    assert (error["file_index"], error["error_code"]) == (
        1,
        {"FileSizeExceeded": {"actual": len(png) + 1, "limit": len(png)}},
    )


@pytest.mark.parametrize("memory_budget", [0, 1_250_000, 64 * 1024 * 1024])
async def test_large_files_validate_in_memory_or_spooled(
    serve: Serve, memory_budget: int
) -> None:
    """Files over 1 MiB validate like small ones whether the memory budget
    keeps them (64 MiB), runs out while one arrives (1.25 MB) or keeps
    none (0), and a large non-image is still told apart by its magic bytes.
    The budget is whole again afterwards."""
    client = await serve(memory_budget=memory_budget)
    large = images.noise_jpeg(width=1500, height=1000)
    assert len(large) > 1024 * 1024
    events = await upload(
        client,
        ("large.jpg", large),
        ("large.bin", b"\x00" * 3_000_000),
        ("small.png", images.png()),
    )
    results = [
        (kind, data.get("file_info", {}).get("width"), data.get("error_code"))
        for kind, data in events
        if kind in ("image_validation_success", "image_validation_error")
    ]
    assert results == [
        ("image_validation_success", 1500, None),
        (
            "image_validation_error",
            None,
            {"UnsupportedFormat": {"detected": "unknown"}},
        ),
        ("image_validation_success", 64, None),
    ]
    assert only(events, "image_received")[0]["size_bytes"] == len(large)
    assert client.app[RUNTIME].memory.in_use == 0


class _FullDisk(io.BytesIO):
    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def _no_room() -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    "new_spool_file", [_no_room, _FullDisk], ids=["made", "written"]
)
async def test_a_temporary_file_the_disk_refuses_is_the_servers_failure(
    serve: Serve,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    new_spool_file: Callable[[], Any],
) -> None:
    """A large file whose temporary file cannot be made or written (a full
    disk) ends the upload with InternalServerError naming the disk's error,
    logged as one ERROR line, not as a bug with a traceback."""
    monkeypatch.setattr(handler, "_new_spool_file", new_spool_file)
    client = await serve(memory_budget=0)
    status, _, raw = await post(
        client,
        multipart(
            [("images", "large.jpg", images.noise_jpeg(width=1500, height=1000))]
        ),
    )
    assert status == 200
    events = read_events(raw)
    assert failed_with(events) == (
        "InternalServerError",
        "the server could not store the file: [Errno 28] No space left on device",
    )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.getMessage().split(" session_id=")[0], r.exc_info) for r in errors] == [
        ("upload failed", None)
    ]


async def test_files_past_the_count_limit_are_reported_not_validated(
    serve: Serve,
) -> None:
    """The third file of a two-file limit is CountLimitExceeded; the rest go on."""
    client = await serve(max_files=2)
    events = await upload(
        client,
        ("a.png", images.png()),
        ("b.png", images.png()),
        ("c.png", images.png()),
    )
    results = [
        (d["file_index"], d.get("error_code"))
        for k, d in events
        if k.startswith("image_validation_") and k != "image_validation_start"
    ]
    assert results == [
        (0, None),
        (1, None),
        (2, {"CountLimitExceeded": {"count": 3, "limit": 2}}),
    ]
    summary = only(events, "all_images_validated")[0]
    assert (summary["successful_count"], summary["failed_count"]) == (2, 1)


async def test_a_failed_file_does_not_stop_the_next(serve: Serve) -> None:
    """Results arrive in file order and every file is validated."""
    client = await serve()
    files = [
        ("ok0.png", images.png()),
        ("bad.png", images.truncated(images.png(width=200, height=200))),
        ("ok2.jpg", images.jpeg()),
    ]
    events = await upload(client, *files)
    results = [
        (k, d["file_index"])
        for k, d in events
        if k in ("image_validation_success", "image_validation_error")
    ]
    assert results == [
        ("image_validation_success", 0),
        ("image_validation_error", 1),
        ("image_validation_success", 2),
    ]


async def test_file_names_are_echoed_safely(serve: Serve) -> None:
    """A file name with quotes, line breaks and unicode stays one JSON line."""
    client = await serve()
    name = 'evil"\r\nevent: processing_complete\r\ndata: {}\r\n\r\n\u00e9\U0001f9fe'
    body = (
        b"--testboundary1234\r\n"
        b"Content-Disposition: form-data; name=\"images\"; filename*=utf-8''"
        + _percent(name).encode()
        + b"\r\n\r\n"
        + images.png()
        + b"\r\n--testboundary1234--\r\n"
    )
    status, _, raw = await post(client, body)
    events = read_events(raw)
    assert status == 200
    assert types(events) == ONE_FILE
    assert only(events, "image_received")[0]["file_name"] == name


def _percent(text: str) -> str:
    return "".join(f"%{b:02X}" for b in text.encode())


async def test_a_bug_ends_the_upload_with_internal_server_error(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception the endpoint did not expect ends the stream with
    InternalServerError and a message that tells nothing of the code; the
    log has the traceback."""

    def broken(**facts: Any) -> None:
        raise ZeroDivisionError("a detail for the log only")

    monkeypatch.setattr(ocr_sse.validation, "check_arrival", broken)
    client = await serve()
    status, _, raw = await post(client, multipart([("images", "a.png", images.png())]))
    assert status == 200
    events = read_events(raw)
    assert types(events) == ["upload_started", "processing_error"]
    assert {k: v for k, v in events[-1][1].items() if k != "timestamp"} == {
        "session_id": events[0][1]["session_id"],
        "error_message": "internal server error",
        "error_type": "InternalServerError",
    }
    assert b"a detail for the log only" not in raw
    logged = [type(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert logged == [ZeroDivisionError]


@pytest.mark.parametrize(
    ("content_type", "status", "detail"),
    [
        ("text/plain", 415, "multipart/form-data"),
        ("application/json", 415, "multipart/form-data"),
        ("multipart/form-data", 400, "boundary"),
        ("multipart/form-data; boundary=" + "b" * 71, 400, "boundary"),
    ],
)
async def test_requests_that_are_not_uploads_are_refused(
    serve: Serve, content_type: str, status: int, detail: str
) -> None:
    """Wrong or boundary-less Content-Type: a problem+json refusal, no stream."""
    client = await serve()
    response = await client.post(
        "/api/ocr", data=b"x", headers={"Content-Type": content_type}
    )
    assert response.status == status
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = orjson.loads(await response.read())
    assert problem["status"] == status and problem["type"] == "about:blank"
    assert detail in problem["detail"] and problem["title"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT"])
async def test_other_methods_on_the_endpoint_get_405_allowing_post(
    serve: Serve, method: str
) -> None:
    """Any method but POST on the endpoint's path is aiohttp's plain-text 405
    with ``Allow: POST``, never a stream."""
    client = await serve()
    response = await client.request(method, "/api/ocr")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert response.content_type == "text/plain"


async def test_a_boundary_of_bytes_that_are_not_utf8_is_refused(serve: Serve) -> None:
    """A boundary of raw non-UTF-8 bytes: 400 before the stream, not an error in it."""
    client = await serve()
    body = (
        b"--\xff\xfe\r\nContent-Disposition: form-data; name=images\r\n\r\n"
        b"x\r\n--\xff\xfe--\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /api/ocr HTTP/1.0\r\n"
        b"Content-Type: multipart/form-data; boundary=\xff\xfe\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head, _, problem = (await reader.read()).partition(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.0 400 ")
    assert b"Content-Type: application/problem+json" in head
    assert "RFC 2046" in orjson.loads(problem)["detail"]


async def test_declared_body_over_the_limit_is_refused_with_413(serve: Serve) -> None:
    """A Content-Length over the request limit is refused before reading it."""
    client = await serve(max_request_size=1000)
    status, _, raw = await post(client, b"x" * 1001)
    assert status == 413
    assert (
        orjson.loads(raw)["detail"]
        == "the body is 1001 bytes, over the limit of 1000 bytes"
    )


@pytest.mark.parametrize("value", ["-1", "1.5", "abc", "", "+3", "1e3"])
async def test_bad_total_files_is_refused_with_400(serve: Serve, value: str) -> None:
    """total_files must be a non-negative whole number."""
    client = await serve()
    status, _, raw = await post(
        client,
        multipart([("images", "a.png", images.png())]),
        query=f"?total_files={value}",
    )
    assert status == 400
    assert "total_files" in orjson.loads(raw)["detail"]


async def test_expect_continue_is_refused_before_the_body(serve: Serve) -> None:
    """A client asking Expect: 100-continue hears the refusal, not "continue"."""
    client = await serve(max_request_size=10)
    status, _, raw = await post(client, b"x" * 100, Expect="100-continue")
    assert status == 413
    assert orjson.loads(raw)["status"] == 413


async def test_a_refused_expect_continue_says_the_connection_closes(
    serve: Serve,
) -> None:
    """A refusal before the announced body says the connection closes: a
    client reusing it would have its next request read as that body."""
    client = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /api/ocr HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n"
    )
    async with asyncio.timeout(5):
        head = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        length = next(int(h[15:]) for h in head if h.startswith(b"Content-Length: "))
        problem = await reader.readexactly(length)
    writer.close()
    assert head[0].startswith(b"HTTP/1.1 415 ")
    assert b"Connection: close" in head
    assert orjson.loads(problem)["status"] == 415


@pytest.mark.parametrize("header", ["Expect: 100-continue", "Connection: keep-alive"])
async def test_an_http10_client_gets_the_stream_alone_to_the_connections_end(
    serve: Serve, header: str
) -> None:
    """HTTP/1.0 has no 1xx answers and no chunked encoding: its upload gets
    the stream alone, never told to continue, and the stream ends with the
    connection, closed after the last event even when the client asked to
    keep it alive (the response says nothing of keeping it, so the client
    waits for its end)."""
    client = await serve()
    body = multipart([("images", "a.png", images.png())])
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        f"POST /api/ocr HTTP/1.0\r\nContent-Type: {CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n{header}\r\n\r\n".encode()
        + body
    )
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    head, _, stream = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"Connection: keep-alive" not in head
    assert types(read_events(stream)) == ONE_FILE


async def test_expect_continue_lets_an_upload_in(serve: Serve) -> None:
    """An admissible upload sent with Expect: 100-continue streams as usual."""
    client = await serve()
    status, _, raw = await post(
        client, multipart([("images", "a.png", images.png())]), Expect="100-continue"
    )
    assert status == 200
    assert types(read_events(raw)) == ONE_FILE


async def test_expect_continue_is_understood_in_any_case(serve: Serve) -> None:
    """Expect's value is case-insensitive (RFC 9110): "100-Continue" is
    answered as "100-continue" is, and the upload streams."""
    client = await serve()
    status, _, raw = await post(
        client, multipart([("images", "a.png", images.png())]), Expect="100-Continue"
    )
    assert status == 200
    assert types(read_events(raw)) == ONE_FILE


async def test_an_expectation_other_than_continue_is_refused_with_417(
    serve: Serve,
) -> None:
    """An Expect the server cannot meet is refused with 417 before the body,
    and the connection closes."""
    client = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        f"POST /api/ocr HTTP/1.1\r\nHost: t\r\nContent-Type: {CONTENT_TYPE}\r\n"
        "Content-Length: 100\r\nExpect: 200-ok\r\n\r\n".encode()
    )
    async with asyncio.timeout(5):
        head = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        length = next(int(h[15:]) for h in head if h.startswith(b"Content-Length: "))
        problem = await reader.readexactly(length)
    writer.close()
    assert head[0].startswith(b"HTTP/1.1 417 ")
    assert b"Connection: close" in head
    assert orjson.loads(problem) == {
        "type": "about:blank",
        "title": "Expectation Failed",
        "status": 417,
        "detail": "only 100-continue is understood",
    }


async def held_upload(release: asyncio.Event) -> AsyncIterator[bytes]:
    """One PNG's upload, held after its first delimiter until *release*."""
    delimiter = f"--{BOUNDARY}\r\n".encode()
    yield delimiter
    await release.wait()
    yield multipart([("images", "a.png", images.png())])[len(delimiter) :]


async def test_uploads_over_the_concurrency_limit_get_503(serve: Serve) -> None:
    """With every slot taken, a new upload is refused with 503 and Retry-After."""
    client = await serve(max_uploads=1)
    release = asyncio.Event()

    first = asyncio.create_task(post(client, held_upload(release)))
    await asyncio.sleep(0.2)
    status, headers, raw = await post(
        client, multipart([("images", "a.png", images.png())])
    )
    release.set()
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert orjson.loads(raw)["status"] == 503
    first_status, _, first_raw = await first
    assert first_status == 200 and types(read_events(first_raw)) == ONE_FILE
    # The slot is free again.
    status, _, _ = await post(client, multipart([("images", "a.png", images.png())]))
    assert status == 200


async def test_an_address_past_its_rate_limit_gets_429_even_when_all_slots_are_busy(
    serve: Serve,
) -> None:
    """The rate limit is checked before the free slots: an address past its
    rate_limit hears 429 and when to come back, not 503 and "in a second"."""
    client = await serve(rate_limit=1, max_uploads=1)
    release = asyncio.Event()

    first = asyncio.create_task(post(client, held_upload(release)))
    async with asyncio.timeout(5):
        while not client.app[RUNTIME].slots.full:
            await asyncio.sleep(0.01)
    status, headers, _ = await post(
        client, multipart([("images", "a.png", images.png())])
    )
    release.set()
    assert (status, headers["Retry-After"]) == (429, "60")
    assert (await first)[0] == 200


async def test_a_stopping_server_refuses_new_uploads_with_503(serve: Serve) -> None:
    """Once the server has begun to stop, a new upload is refused with 503
    and Retry-After, before any stream starts."""
    client = await serve()
    await ocr_sse.stop_uploads(client.app)
    status, headers, raw = await post(
        client, multipart([("images", "a.png", images.png())])
    )
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert orjson.loads(raw) == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "the server is shutting down",
    }


MALFORMED = {
    "empty body": b"",
    "no parts at all": b"--testboundary1234--\r\n",
    "only other fields": multipart([("note", None, b"hi")]),
    "truncated in a part": multipart([("images", "a.png", images.png())])[:-40],
    "no closing boundary": multipart([("images", "a.png", images.png())])[
        : -len("--testboundary1234--\r\n")
    ],
    "wrong boundary": multipart([("images", "a.png", images.png())], boundary="other"),
    "garbage": b"\x00\xff" * 100,
    "CRLF flood before the first boundary": b"\r\n" * 400_000
    + multipart([("images", "a.png", images.png())]),
    "header line too long": b"--testboundary1234\r\nX-Long: "
    + b"a" * 9000
    + b"\r\n\r\nx\r\n--testboundary1234--\r\n",
    "bad header line": b"--testboundary1234\r\nno colon here\r\n\r\n"
    b"x\r\n--testboundary1234--\r\n",
    "base64 part": b"--testboundary1234\r\n"
    b'Content-Disposition: form-data; name="images"; filename="a"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--testboundary1234--\r\n",
    "encoding not in UTF-8": b"--testboundary1234\r\n"
    b'Content-Disposition: form-data; name="images"; filename="a"\r\n'
    b"Content-Encoding: x\xff\r\n\r\nDATA\r\n--testboundary1234--\r\n",
    "nested multipart": b"--testboundary1234\r\n"
    b'Content-Disposition: form-data; name="images"\r\n'
    b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n"
    b"--inner\r\n\r\nx\r\n--inner--\r\n\r\n--testboundary1234--\r\n",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_bodies_end_with_multipart_parsing_error(
    serve: Serve, body: bytes
) -> None:
    """A body that is not a usable upload ends the stream with processing_error."""
    client = await serve()
    status, _, raw = await post(client, body)
    assert status == 200
    events = read_events(raw)
    assert types(events)[0] == "upload_started"
    assert types(events)[-1] == "processing_error"
    assert "processing_complete" not in types(events)
    error = events[-1][1]
    assert error["error_type"] == "MultipartParsingError"
    assert error["session_id"] == events[0][1]["session_id"]
    assert "Traceback" not in raw.decode("utf-8", "replace")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("header line too long", "a line is longer than 8190 bytes"),
        ("bad header line", "Invalid HTTP header: b'no colon here'"),
        ("truncated in a part", "the body ends inside a part"),
        ("empty body", "no boundary in the first 1024 bytes"),
    ],
)
async def test_a_malformed_body_is_said_in_words(
    serve: Serve, case: str, message: str
) -> None:
    """The error message says what is wrong with the body, also where aiohttp
    found it (its errors print as "400, message:" and the rest on a line of
    its own)."""
    client = await serve()
    _, _, raw = await post(client, MALFORMED[case])
    assert read_events(raw)[-1][1]["error_message"] == (
        f"malformed multipart body: {message}"
    )


async def test_a_body_not_in_its_content_encoding_is_malformed(
    serve: Serve,
) -> None:
    """A body whose Content-Encoding does not match its bytes, which aiohttp
    cannot decode, ends with MultipartParsingError saying so, not with
    InternalServerError."""
    client = await serve()
    status, _, raw = await post(
        client,
        multipart([("images", "a.png", images.png())]),
        **{"Content-Encoding": "gzip"},
    )
    assert status == 200
    events = read_events(raw)
    assert failed_with(events) == (
        "MultipartParsingError",
        "malformed multipart body: Can not decode content-encoding: gzip",
    )


async def test_a_nested_multipart_part_is_said_to_be_unsupported(
    serve: Serve,
) -> None:
    """A part that is itself multipart/mixed (RFC 7578 section 4.3 drops
    them) ends the upload with a message that says so."""
    client = await serve()
    _, _, raw = await post(client, MALFORMED["nested multipart"])
    events = read_events(raw)
    assert failed_with(events) == (
        "MultipartParsingError",
        "nested multipart parts are not supported (RFC 7578 section 4.3)",
    )


@pytest.mark.parametrize("case", ["no parts at all", "only other fields"])
async def test_an_upload_without_files_says_it_has_no_images_part(
    serve: Serve, case: str
) -> None:
    """A well-formed body with no 'images' part, whether it has no part at
    all or only other fields, ends saying that no file part came."""
    client = await serve()
    _, _, raw = await post(client, MALFORMED[case])
    events = read_events(raw)
    assert failed_with(events) == (
        "MultipartParsingError",
        "the upload has no 'images' part",
    )


async def test_a_boundary_line_with_more_after_the_boundary_is_malformed(
    serve: Serve,
) -> None:
    """A line that begins as the boundary but goes on is no delimiter line
    (RFC 2046): the file before it is reported, then the upload ends with
    MultipartParsingError rather than reading what follows as a part."""
    client = await serve()
    first = multipart([("images", "a.png", images.png())])
    second = multipart([("images", "b.png", images.png())])
    body = (
        first[: -len(f"--{BOUNDARY}--\r\n")]
        + f"--{BOUNDARY}-and-more".encode()
        + second[len(f"--{BOUNDARY}") :]
    )
    _, _, raw = await post(client, body)
    events = read_events(raw)
    assert [d["file_name"] for d in only(events, "image_received")] == ["a.png"]
    assert types(events)[-1] == "processing_error"
    assert events[-1][1]["error_type"] == "MultipartParsingError"
    assert events[-1][1]["error_message"] == (
        "malformed multipart body: Invalid boundary"
        f" b'--{BOUNDARY}-and-more', expected b'--{BOUNDARY}'"
    )


async def test_what_a_malformed_body_message_quotes_is_cut_to_200_characters(
    serve: Serve,
) -> None:
    """A message quoting the client's bytes (here a boundary line of 10,000
    characters) quotes at most 200 characters of what went wrong."""
    client = await serve()
    first = multipart([("images", "a.png", images.png())])
    body = (
        first[: -len(f"--{BOUNDARY}--\r\n")]
        + f"--{BOUNDARY}{'x' * 10_000}\r\n".encode()
    )
    _, _, raw = await post(client, body)
    message = read_events(raw)[-1][1]["error_message"]
    prefix = "malformed multipart body: "
    assert message == prefix + f"Invalid boundary b'--{BOUNDARY}{'x' * 10_000}"[:200]


async def test_header_bytes_that_are_not_utf8_are_quoted_as_replacements(
    serve: Serve,
) -> None:
    """A part header value that is not UTF-8 shows as U+FFFD in the message."""
    client = await serve()
    _, _, raw = await post(client, MALFORMED["encoding not in UTF-8"])
    assert read_events(raw)[-1][1]["error_message"] == (
        "a part has Content-Encoding: x\ufffd; multipart/form-data parts must"
        " carry their bytes as they are"
    )


@pytest.mark.parametrize(
    "epilogue",
    [b"", b"thanks\r\n", b"x" * 200_000, b"\r\n" * 10_000],
    ids=["none", "a line", "one long line", "many lines"],
)
async def test_an_epilogue_after_the_closing_boundary_is_ignored(
    serve: Serve, epilogue: bytes
) -> None:
    """Whatever follows the closing boundary (RFC 2046's epilogue) is not read."""
    client = await serve()
    _, _, raw = await post(
        client, multipart([("images", "a.png", images.png())]) + epilogue
    )
    events = read_events(raw)
    assert types(events) == ONE_FILE
    assert events[-1][1]["successful_files"] == 1


@pytest.mark.parametrize(
    "preamble",
    [b"x" * 1022 + b"\r\n", b"a preamble\r\n" * 85 + b"xx\r\n"],
    ids=["one line", "many lines"],
)
async def test_a_preamble_of_up_to_1024_bytes_is_skipped(
    serve: Serve, preamble: bytes
) -> None:
    """Text before the first boundary (RFC 2046's preamble) is skipped up to
    1024 bytes; one byte more ends the upload, saying so."""
    assert len(preamble) == 1024
    client = await serve()
    body = multipart([("images", "a.png", images.png())])
    _, _, raw = await post(client, preamble + body)
    assert types(read_events(raw)) == ONE_FILE
    _, _, raw = await post(client, b"x" + preamble + body)
    events = read_events(raw)
    assert failed_with(events) == (
        "MultipartParsingError",
        "malformed multipart body: no boundary in the first 1024 bytes",
    )


async def test_files_before_a_malformed_part_are_still_reported(serve: Serve) -> None:
    """Results already earned are written before the processing_error."""
    client = await serve()
    body = (
        multipart([("images", "a.png", images.png())])[
            : -len("--testboundary1234--\r\n")
        ]
        + b"--testboundary1234\r\nbroken\r\n\r\n"
    )
    _, _, raw = await post(client, body)
    events = read_events(raw)
    assert types(events)[-1] == "processing_error"
    assert "image_received" in types(events)


async def test_too_many_parts_end_the_upload(serve: Serve) -> None:
    """More parts than max_parts: processing_error, not an endless read."""
    client = await serve(max_parts=3)
    events = await upload(client, *[(f"{i}.png", images.png()) for i in range(5)])
    assert types(events)[-1] == "processing_error"
    assert events[-1][1]["error_message"] == "the upload has more than 3 parts"
    assert len(only(events, "image_received")) == 3


async def test_exactly_max_parts_parts_are_all_read(serve: Serve) -> None:
    """An upload of max_parts parts, a field among them, completes."""
    client = await serve(max_parts=3)
    _, _, raw = await post(
        client,
        multipart(
            [
                ("note", None, b"for the accounts"),
                ("images", "0.png", images.png()),
                ("images", "1.png", images.png()),
            ]
        ),
    )
    events = read_events(raw)
    assert types(events)[-1] == "processing_complete"
    assert events[-1][1]["successful_files"] == 2


async def test_large_form_fields_end_the_upload(serve: Serve) -> None:
    """A non-file field over max_field_size ends the upload."""
    client = await serve(max_field_size=100)
    _, _, raw = await post(
        client,
        multipart([("note", None, b"x" * 101), ("images", "a.png", images.png())]),
    )
    events = read_events(raw)
    assert failed_with(events) == (
        "MultipartParsingError",
        "a form field is over the limit of 100 bytes",
    )


async def test_a_form_field_of_exactly_max_field_size_is_read(serve: Serve) -> None:
    """max_field_size is the largest field let in: a field of that many
    bytes is read and the upload completes."""
    client = await serve(max_field_size=100)
    _, _, raw = await post(
        client,
        multipart([("note", None, b"x" * 100), ("images", "a.png", images.png())]),
    )
    assert types(read_events(raw)) == ONE_FILE


async def test_body_over_the_limit_is_stopped_while_streaming(serve: Serve) -> None:
    """A chunked body with no Content-Length is cut off at the request limit."""
    client = await serve(max_request_size=50_000, max_file_size=1_000_000)

    async def body() -> AsyncIterator[bytes]:
        yield multipart([("images", "a.png", images.png())])[
            : -len("--testboundary1234--\r\n")
        ]
        yield (
            b"--testboundary1234\r\n"
            b'Content-Disposition: form-data; name="images"; filename="big"\r\n\r\n'
        )
        for _ in range(100):
            yield b"x" * 10_000

    _, _, raw = await post(client, body())
    events = read_events(raw)
    assert types(events)[-1] == "processing_error"
    assert events[-1][1]["error_message"] == "the body is over the limit of 50000 bytes"
    assert events[-1][1]["error_type"] == "MultipartParsingError"


@pytest.mark.parametrize("declared", [True, False], ids=["Content-Length", "chunked"])
async def test_a_body_of_exactly_the_request_limit_is_read(
    serve: Serve, declared: bool
) -> None:
    """max_request_size is the largest body let in, whether its length is
    declared or only counted as it streams: a body of that many bytes is
    read to its end."""
    body = multipart([("images", "a.png", images.png())])
    client = await serve(max_request_size=len(body))

    async def chunked() -> AsyncIterator[bytes]:
        yield body

    status, _, raw = await post(client, body if declared else chunked())
    assert status == 200
    assert types(read_events(raw)) == ONE_FILE


async def test_results_arrive_while_the_upload_is_still_being_sent(
    serve: Serve,
) -> None:
    """Full duplex: file 0's result reaches the client before file 1 is sent.

    The body generator waits to send file 1 until the client has read file
    0's result; a server that answered only after the whole body would hang
    here, and the time limit fails the test.
    """
    client = await serve()
    seen_first_result = asyncio.Event()
    seen_started = asyncio.Event()
    first, second = (
        multipart([("images", "first.png", images.png())]),
        multipart([("images", "second.png", images.png())]),
    )
    head = first[: -len("--testboundary1234--\r\n")]

    delimiter = b"--testboundary1234\r\n"

    async def body() -> AsyncIterator[bytes]:
        yield b"--testboundary1234"  # not even one whole part yet
        await seen_started.wait()
        # File 0 ends where the next delimiter starts: send that much only.
        yield head[len(b"--testboundary1234") :] + delimiter
        await seen_first_result.wait()
        yield second[len(delimiter) :]

    response = await client.post(
        "/api/ocr", data=body(), headers={"Content-Type": CONTENT_TYPE}
    )
    assert response.status == 200
    raw = b""
    async with asyncio.timeout(10):
        async for line in response.content:
            raw += line
            if raw.endswith(b"\n\n") and b"event: upload_started" in raw:
                seen_started.set()
            if b"event: image_validation_success" in raw:
                seen_first_result.set()
    events = read_events(raw)
    assert [
        d["file_info"]["file_name"] for d in only(events, "image_validation_success")
    ] == ["first.png", "second.png"]
    assert types(events)[-1] == "processing_complete"


async def test_concurrent_uploads_see_only_their_own_events(serve: Serve) -> None:
    """Twenty uploads at once: every stream holds its own session and names."""
    client = await serve()

    async def one(n: int) -> list[tuple[str, dict[str, Any]]]:
        return await upload(
            client,
            *[
                (f"u{n}-f{i}.png", images.png(width=10 + n, height=10 + i))
                for i in range(3)
            ],
        )

    streams = await asyncio.gather(*(one(n) for n in range(20)))
    session_ids = set()
    for n, events in enumerate(streams):
        session_id = events[0][1]["session_id"]
        session_ids.add(session_id)
        assert types(events)[-1] == "processing_complete"
        assert {d["session_id"] for k, d in events if "session_id" in d} == {session_id}
        names = {d["file_name"] for k, d in events if "file_name" in d}
        assert names == {f"u{n}-f{i}.png" for i in range(3)}
        sizes = [
            (d["file_info"]["width"], d["file_info"]["height"])
            for d in only(events, "image_validation_success")
        ]
        assert sizes == [(10 + n, 10 + i) for i in range(3)]
    assert len(session_ids) == 20


async def test_silence_is_filled_with_keep_alive_comments(serve: Serve) -> None:
    """While the client pauses, the stream carries comment lines."""
    client = await serve(keepalive_interval=0.05)

    async def body() -> AsyncIterator[bytes]:
        data = multipart([("images", "a.png", images.png())])
        yield data[:30]
        await asyncio.sleep(0.3)
        yield data[30:]

    status, _, raw = await post(client, body())
    assert status == 200
    assert b"\n:\n\n" in raw or raw.count(b":\n\n") >= 2
    assert types(read_events(raw)) == ONE_FILE


async def post_then_fall_silent(
    client: TestClient[Any, Any],
) -> tuple[ClientResponse, asyncio.Event]:
    """Post the first 100 bytes of a one-image upload, then nothing more
    until the event returned is set."""
    stop = asyncio.Event()
    body = multipart([("images", "a.png", images.png())])
    response = await client.post(
        "/api/ocr",
        data=stalled(body, until=stop),
        headers={"Content-Type": CONTENT_TYPE},
    )
    return response, stop


async def test_a_stalled_sender_ends_with_system_timeout(serve: Serve) -> None:
    """A client that stops sending mid-upload gets SystemTimeout."""
    client = await serve(read_timeout=0.2)
    response, stop = await post_then_fall_silent(client)
    raw = await asyncio.wait_for(response.content.read(), 5)
    stop.set()
    events = read_events(raw)
    assert failed_with(events) == (
        "SystemTimeout",
        "the client sent nothing for 0.2 s",
    )


async def test_an_upload_over_its_deadline_ends_with_system_timeout(
    serve: Serve,
) -> None:
    """A client that trickles bytes forever still meets the upload deadline."""
    client = await serve(upload_timeout=0.3, read_timeout=5)
    stop = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield multipart([("images", "a.png", images.png())])[:100]
        while not stop.is_set():
            yield b"x"
            await asyncio.sleep(0.02)

    response = await client.post(
        "/api/ocr", data=body(), headers={"Content-Type": CONTENT_TYPE}
    )
    raw = await asyncio.wait_for(response.content.read(), 5)
    stop.set()
    events = read_events(raw)
    assert failed_with(events) == (
        "SystemTimeout",
        "the upload took longer than 0.3 s",
    )


async def test_a_deadline_and_a_stall_due_at_once_end_the_upload_quietly(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When the upload's deadline and the stall watch come due in the same turn
    of the event loop, the upload ends with one SystemTimeout and nothing is
    logged: the stall watch does not move a deadline that has already passed.
    The event loop's clock is moved past both rather than waited for."""
    client = await serve(upload_timeout=10, read_timeout=20)
    response, stop = await post_then_fall_silent(client)
    # upload_started is written once the server waits on the body.
    assert (await response.content.readuntil(b"\n\n")).startswith(
        b"event: upload_started\n"
    )
    loop = asyncio.get_running_loop()
    clock = loop.time
    monkeypatch.setattr(loop, "time", lambda: clock() + 100)
    raw = await asyncio.wait_for(response.content.read(), 5)
    stop.set()

    events = read_events(raw)
    assert types(events) == ["processing_error"]
    assert events[0][1]["error_type"] == "SystemTimeout"
    assert events[0][1]["error_message"] == "the client sent nothing for 20 s"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_embedding_in_a_sub_application_at_another_path(
    aiohttp_client: Any,
) -> None:
    """setup() on a sub-app: the endpoint answers under the parent's prefix."""
    parent = web.Application()
    child = ocr_sse.setup(web.Application(), config=Config(max_files=1), path="/ocr")
    parent.add_subapp("/v2", child)
    client = await aiohttp_client(parent)
    assert child[ocr_sse.CONFIG].max_files == 1
    response = await client.post(
        "/v2/ocr",
        data=multipart(
            [("images", "a.png", images.png()), ("images", "b.png", images.png())]
        ),
        headers={"Content-Type": CONTENT_TYPE},
    )
    events = read_events(await response.read())
    assert only(events, "image_validation_error")[0]["error_code"] == {
        "CountLimitExceeded": {"count": 2, "limit": 1}
    }


async def test_standalone_app_answers_healthz(aiohttp_client: Any) -> None:
    """The app factory serves GET /healthz and the endpoint."""
    client = await aiohttp_client(ocr_sse.create_app([]))
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    status, _, raw = await post(client, multipart([("images", "a.png", images.png())]))
    assert status == 200 and types(read_events(raw)) == ONE_FILE


async def test_healthz_says_stopping_with_503_once_the_server_stops(
    aiohttp_client: Any,
) -> None:
    """Once the standalone server has begun to stop, GET /healthz answers
    503 {"status": "stopping"}, so a load balancer sends it no more uploads."""
    client = await aiohttp_client(ocr_sse.create_app([]))
    await ocr_sse.stop_uploads(client.app)
    response = await client.get("/healthz")
    assert response.status == 503
    assert await response.json() == {"status": "stopping"}


@pytest.mark.parametrize(
    "split", ["every byte", "every 7 bytes", "after each part head"]
)
async def test_a_chunked_body_gives_the_same_events(serve: Serve, split: str) -> None:
    """A chunked body, split into tiny HTTP chunks or exactly where each
    part's headers end (as aiohttp's client sends them), is read exactly
    like one sent whole."""
    client = await serve()
    png, jpeg = images.png(), images.jpeg()
    body = multipart(
        [("images", "a.png", png), ("note", None, b"x"), ("images", "b.jpg", jpeg)]
    )
    if split.startswith("every"):
        step = 1 if split == "every byte" else 7
        cuts = list(range(step, len(body), step))
    else:
        cuts = [m.end() for m in re.finditer(rb"\r\n\r\n", body)]

    async def chunks() -> AsyncIterator[bytes]:
        for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
            yield body[start:end]
            await asyncio.sleep(0)  # one HTTP chunk at a time

    status, _, raw = await post(client, chunks())
    events = read_events(raw)
    assert status == 200
    assert [
        (d["file_info"]["file_name"], d["file_info"]["size_bytes"])
        for d in only(events, "image_validation_success")
    ] == [("a.png", len(png)), ("b.jpg", len(jpeg))]
    assert types(events)[-1] == "processing_complete"


_DISPOSITION = 'Content-Disposition: form-data; name="images"; filename="a.png"'


@pytest.mark.parametrize(
    ("head", "outcome"),
    [
        (f"{_DISPOSITION}\r\nContent-Type: image/png\r\n", "a.png"),
        (f"{_DISPOSITION}\nContent-Type: image/png\n", "a.png"),
        (f"{_DISPOSITION}\r\r\nContent-Type: image/png\r\n", "a.png"),
        (f"X-Pad: {'x' * 5000}\r\nX-Pad: {'x' * 5000}\r\n{_DISPOSITION}\r\n", "a.png"),
        (f"X-Pad: {'x' * 8181}\r\n{_DISPOSITION}\r\n", "a.png"),
        (f"X-Pad: {'x' * 8182}\r\n{_DISPOSITION}\r\n", "MultipartParsingError"),
        ("X-N: 1\r\n" * 127 + f"{_DISPOSITION}\r\n", "a.png"),
        ("X-N: 1\r\n" * 128 + f"{_DISPOSITION}\r\n", "MultipartParsingError"),
        (f"X-N: 1\r2\r\n{_DISPOSITION}\r\n", "MultipartParsingError"),
    ],
    ids=[
        "CRLF",
        "LF",
        "CR before CRLF",
        "over 8190 bytes in all",
        "a line of 8190 bytes",
        "a line of 8191 bytes",
        "128 lines",
        "129 lines",
        "CR in a value",
    ],
)
async def test_part_heads_are_read_as_aiohttp_reads_them(
    serve: Serve, head: str, outcome: str
) -> None:
    """A part's head is read as aiohttp's multipart reader reads it, line by
    line, however its lines end: up to 128 lines, each up to 8190 bytes
    with its line end, and no CR or LF inside a value."""
    client = await serve()
    png = images.png()
    body = (
        f"--{BOUNDARY}\r\n{head}\r\n".encode()
        + png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    status, _, raw = await post(client, body)
    events = read_events(raw)
    assert status == 200
    if outcome == "MultipartParsingError":
        assert failed_with(events)[0] == outcome
    else:
        (success,) = only(events, "image_validation_success")
        assert success["file_info"]["file_name"] == outcome
        assert success["file_info"]["size_bytes"] == len(png)
        assert types(events)[-1] == "processing_complete"


async def test_a_part_with_no_head_is_skipped(serve: Serve) -> None:
    """A part with no headers at all (its blank line right after the
    boundary) is no file, even when its data holds a blank line."""
    client = await serve()
    png = images.png()
    body = f"--{BOUNDARY}\r\n\r\nnot\r\n\r\na head\r\n".encode() + multipart(
        [("images", "a.png", png)]
    )
    status, _, raw = await post(client, body)
    events = read_events(raw)
    assert status == 200
    assert [
        e["file_info"]["file_index"] for e in only(events, "image_validation_success")
    ] == [0]
    assert types(events)[-1] == "processing_complete"


async def test_waiting_on_the_server_is_not_a_stalled_client(
    aiohttp_client: Any,
) -> None:
    """read_timeout counts only the client's silence: an upload held up by
    its own slow processing (here an on_image hook) is not timed out."""

    async def slow_hook(image: ocr_sse.ValidImage) -> None:
        await asyncio.sleep(0.3)

    app = ocr_sse.setup(
        web.Application(),
        config=Config(read_timeout=0.1, validation_threads=1),
        on_image=slow_hook,
    )
    client = await aiohttp_client(app)
    files = [(f"{n}.png", images.png()) for n in range(4)]
    events = await upload(client, *files)
    assert types(events)[-1] == "processing_complete"
    assert events[-1][1]["successful_files"] == 4


async def test_uploads_that_arrive_together_each_start_before_any_reads_a_file(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads whose bytes are all there at once each write ``upload_started``
    before any of them hands a file to the decoding threads."""
    client = await serve()
    runtime = client.server.app[RUNTIME]
    steps: list[str] = []
    submit = runtime.decoders.submit
    monkeypatch.setattr(
        runtime.metrics,
        "upload_started",
        lambda *, first_event_seconds: steps.append("started"),
    )
    monkeypatch.setattr(
        runtime.decoders,
        "submit",
        lambda *args, **kwargs: steps.append("decode") or submit(*args, **kwargs),
    )
    body = multipart([("images", "a.png", images.png())])
    request = (
        # HTTP/1.0: the stream comes unchunked, and ends with the connection.
        f"POST /api/ocr HTTP/1.0\r\nContent-Type: {CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    streams = [
        await asyncio.open_connection("127.0.0.1", client.port) for _ in range(3)
    ]
    for _, writer in streams:
        writer.write(request)  # no await between them: they arrive together
    for reader, writer in streams:
        answer = await reader.read()
        writer.close()
        assert types(read_events(answer.partition(b"\r\n\r\n")[2]))[-1] == (
            "processing_complete"
        )
    assert steps == ["started"] * 3 + ["decode"] * 3
