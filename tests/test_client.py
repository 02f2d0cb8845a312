"""The Python client against the real endpoint, and the events it decodes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from ocr_sse import client as client_module
from ocr_sse.client import (
    FileSource,
    StreamError,
    UploadError,
    UploadRefused,
    upload,
)
from ocr_sse.events import (
    AllImagesValidated,
    CorruptedFile,
    CountLimitExceeded,
    EmptyFile,
    ErrorType,
    Event,
    FileSizeExceeded,
    ImageFileInfo,
    ImageReceived,
    ImageValidationError,
    ImageValidationStart,
    ImageValidationSuccess,
    InvalidEventError,
    ProcessingComplete,
    ProcessingError,
    UnknownEventType,
    UnsupportedFormat,
    UploadStarted,
    from_json,
    to_json,
)
from ocr_sse.sse import MAX_LENGTH
from ocr_sse.sse import event as sse_event

from . import images
from .conftest import Serve

Files = Sequence[FileSource | tuple[str | None, FileSource]]

PNG = images.png()
PDF = images.image_bytes("PDF")
BMP = images.image_bytes("BMP")  # uncompressed: over a 1 KiB request limit


def url(client: TestClient[Any, Any], path: str = "/api/ocr") -> str:
    return str(client.make_url(path))


async def collect(
    client: TestClient[Any, Any], files: Files, **options: Any
) -> list[Event]:
    """Every event of one upload, under a time limit so that a hang fails."""
    async with asyncio.timeout(20):
        return [
            event
            async for event in upload(client.session, url(client), files, **options)
        ]


def of_file(events: Sequence[Event], index: int) -> list[Event]:
    return [e for e in events if getattr(e, "file_index", None) == index]


def results(events: Sequence[Event]) -> list[Event]:
    return [
        e
        for e in events
        if isinstance(e, (ImageValidationSuccess, ImageValidationError))
    ]


# -- the whole exchange --------------------------------------------------------


async def test_png_and_pdf_give_the_contract_events(serve: Serve) -> None:
    """A PNG then a PDF: started, per file received/start/result, then complete."""
    client = await serve()
    events = await collect(
        client, [("receipt.png", PNG), ("notes.pdf", PDF)], total_files=2
    )

    started, *middle, validated, complete = events
    assert isinstance(started, UploadStarted)
    assert started.total_files == 2
    assert isinstance(started.session_id, uuid.UUID)
    assert [type(e) for e in of_file(middle, 0)] == [
        ImageReceived,
        ImageValidationStart,
        ImageValidationSuccess,
    ]
    assert [type(e) for e in of_file(middle, 1)] == [
        ImageReceived,
        ImageValidationStart,
        ImageValidationError,
    ]
    assert len(middle) == 6
    received = [e for e in middle if isinstance(e, ImageReceived)]
    assert [(e.file_name, e.size_bytes) for e in received] == [
        ("receipt.png", len(PNG)),
        ("notes.pdf", len(PDF)),
    ]
    success, error = results(middle)
    assert isinstance(success, ImageValidationSuccess)
    info = success.file_info
    assert (
        info.file_name,
        info.content_type,
        info.format,
        info.width,
        info.height,
    ) == (
        "receipt.png",
        "image/png",
        "PNG",
        64,
        48,
    )
    assert (info.size_bytes, info.file_index, info.validation_status) == (
        len(PNG),
        0,
        "Valid",
    )
    assert isinstance(error, ImageValidationError)
    assert error.file_name == "notes.pdf"
    assert error.error_code == UnsupportedFormat(detected="application/pdf")
    assert isinstance(validated, AllImagesValidated)
    assert (
        validated.total_processed,
        validated.successful_count,
        validated.failed_count,
    ) == (
        2,
        1,
        1,
    )
    assert isinstance(complete, ProcessingComplete)
    assert complete.session_id == started.session_id
    assert (complete.total_files, complete.successful_files) == (2, 1)
    for event in events:
        assert event.timestamp.utcoffset() == timedelta(0)


async def test_total_files_is_not_sent_unless_given(serve: Serve) -> None:
    """Without total_files, upload_started reports null: the client never guesses."""
    client = await serve()
    events = await collect(client, [PNG])
    assert isinstance(events[0], UploadStarted)
    assert events[0].total_files is None


async def test_no_files_ends_with_processing_error(serve: Serve) -> None:
    """An upload of no files gets processing_error, the contract's last word."""
    client = await serve()
    events = await collect(client, [])
    assert [type(e) for e in events] == [UploadStarted, ProcessingError]
    assert isinstance(events[1], ProcessingError)
    assert events[1].error_type is ErrorType.MULTIPART_PARSING


# -- the kinds of file source --------------------------------------------------


async def test_paths_bytes_and_file_objects(serve: Serve, tmp_path: Path) -> None:
    """Paths, bytes, file objects and named pairs are each sent whole, in order."""
    client = await serve()
    on_disk = tmp_path / "scan.png"
    on_disk.write_bytes(PNG)
    jpeg = images.jpeg()
    with open(on_disk, "rb") as opened:
        events = await collect(
            client,
            [
                on_disk,
                str(on_disk),
                PNG,
                opened,
                io.BytesIO(jpeg),
                ("named.jpg", jpeg),
                (None, on_disk),
            ],
        )
        assert not opened.closed  # the caller's file stays the caller's
    received = [e for e in events if isinstance(e, ImageReceived)]
    assert [(e.file_index, e.file_name, e.size_bytes) for e in received] == [
        (0, "scan.png", len(PNG)),
        (1, "scan.png", len(PNG)),
        (2, None, len(PNG)),
        (3, "scan.png", len(PNG)),
        (4, None, len(jpeg)),
        (5, "named.jpg", len(jpeg)),
        (6, None, len(PNG)),
    ]
    assert all(isinstance(e, ImageValidationSuccess) for e in results(events))
    assert isinstance(events[-1], ProcessingComplete)
    assert events[-1].successful_files == 7


async def test_file_object_is_sent_from_its_position(serve: Serve) -> None:
    """A file object is read from where it stands, not from its start."""
    client = await serve()
    source = io.BytesIO(b"not part of the file" + PNG)
    source.seek(20)
    events = await collect(client, [source])
    assert [e.size_bytes for e in events if isinstance(e, ImageReceived)] == [len(PNG)]
    assert isinstance(results(events)[0], ImageValidationSuccess)


async def test_small_chunks_arrive_intact(serve: Serve, tmp_path: Path) -> None:
    """A path read a few bytes at a time reaches the server byte for byte."""
    client = await serve()
    on_disk = tmp_path / "small-chunks.png"
    on_disk.write_bytes(PNG)
    events = await collect(client, [on_disk, PNG], chunk_size=7)
    assert [type(e) for e in results(events)] == [ImageValidationSuccess] * 2


async def test_async_iterable_is_sent_chunked(serve: Serve) -> None:
    """An async iterable of bytes of unknown length is streamed as it yields."""
    client = await serve()

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(PNG), 100):
            yield PNG[start : start + 100]

    events = await collect(client, [("stream.png", pieces())])
    received = [e for e in events if isinstance(e, ImageReceived)]
    assert [(e.file_name, e.size_bytes) for e in received] == [("stream.png", len(PNG))]
    assert isinstance(results(events)[0], ImageValidationSuccess)


async def test_a_pipe_path_is_sent_to_its_end(serve: Serve) -> None:
    """A path that is a pipe (a shell's <(cat scan.png), /dev/stdin) is sent
    whole, though its size on stat is 0."""
    client = await serve()
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, PNG)
        os.close(write_end)
        events = await collect(client, [f"/dev/fd/{read_end}"])
    finally:
        os.close(read_end)
    received = [e for e in events if isinstance(e, ImageReceived)]
    assert [(e.file_name, e.size_bytes) for e in received] == [
        (str(read_end), len(PNG))
    ]
    assert isinstance(results(events)[0], ImageValidationSuccess)
    assert isinstance(events[-1], ProcessingComplete)


async def test_a_pipe_with_nothing_to_read_can_be_stopped(serve: Serve) -> None:
    """An upload waiting on a pipe whose writer sends nothing ends at once
    when it is cancelled: the event loop is not left waiting for the pipe."""
    client = await serve()
    read_end, write_end = os.pipe()
    closed: list[int] = []

    def close_write_end() -> None:
        os.close(write_end)
        closed.append(write_end)

    # Should the loop wait for the pipe after all, it ends in 3 s.
    unblock = threading.Timer(3, close_write_end)
    unblock.start()
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                async for _ in upload(
                    client.session, url(client), [f"/dev/fd/{read_end}"]
                ):
                    pass
        waited = time.monotonic() - started
    finally:
        unblock.cancel()
        unblock.join()
        if not closed:
            os.close(write_end)
        os.close(read_end)
    assert waited < 2


async def test_file_names_reach_the_server_as_given(serve: Serve) -> None:
    """Non-ASCII names and quotes arrive unchanged; a line break is percent-encoded."""
    client = await serve()
    events = await collect(
        client,
        [("reçu 日本.png", PNG), ('say "cheese".png', PNG), ("two\nlines.png", PNG)],
    )
    assert [e.file_name for e in events if isinstance(e, ImageReceived)] == [
        "reçu 日本.png",
        'say "cheese".png',
        "two%0Alines.png",
    ]


async def test_control_characters_and_undecodable_bytes_in_names(
    serve: Serve,
) -> None:
    """Every C0 control character and DEL in a name is percent-encoded, and a
    lone surrogate (a name whose bytes on disk are not UTF-8) is sent as
    U+FFFD, instead of the upload failing."""
    client = await serve()
    events = await collect(
        client,
        [
            ("esc\x1b[31m.png", PNG),
            ("tab\tnul\x00del\x7f.png", PNG),
            (os.fsdecode(b"caf\xe9.png"), PNG),
        ],
    )
    assert [e.file_name for e in events if isinstance(e, ImageReceived)] == [
        "esc%1B[31m.png",
        "tab%09nul%00del%7F.png",
        "caf\ufffd.png",
    ]
    assert isinstance(events[-1], ProcessingComplete)


async def test_missing_path_fails_before_anything_is_sent(
    serve: Serve, tmp_path: Path
) -> None:
    """A path that does not exist raises FileNotFoundError, not a broken upload."""
    client = await serve()
    with pytest.raises(FileNotFoundError):
        await collect(client, [PNG, tmp_path / "missing.png"])


@pytest.mark.parametrize("case", ["directory", "shrinks", "raises"])
async def test_a_file_that_fails_while_sent_raises_its_error_at_once(
    serve: Serve, tmp_path: Path, case: str
) -> None:
    """A file that fails while the body is sent (a directory, a file that
    shrinks after its size went out, an async source that raises) ends the
    upload with that file's error at once, not when the server times out."""
    client = await serve()
    shrinking = tmp_path / "shrinks.png"
    shrinking.write_bytes(PNG)

    async def then_shrink() -> AsyncIterator[bytes]:
        yield PNG
        os.truncate(shrinking, 10)

    async def raising() -> AsyncIterator[bytes]:
        yield PNG[:8]
        raise RuntimeError("disk on fire")

    files: Files
    if case == "directory":
        files, error, message = [PNG, tmp_path], IsADirectoryError, "Is a directory"
    elif case == "shrinks":
        files = [("first.png", then_shrink()), shrinking]
        error = UploadError
        message = f"{shrinking} changed size while it was being sent"
    else:
        files, error, message = [("x.png", raising())], RuntimeError, "disk on fire"
    with pytest.raises(error, match=re.escape(message)):
        async with asyncio.timeout(2):
            async for _ in upload(client.session, url(client), files):
                pass


async def test_text_file_object_is_refused(serve: Serve, tmp_path: Path) -> None:
    """A file opened in text mode is a TypeError: images are bytes."""
    client = await serve()
    (tmp_path / "a.txt").write_text("text")
    with open(tmp_path / "a.txt") as text, pytest.raises(TypeError, match="binary"):
        await collect(client, [text])  # type: ignore[list-item]


async def test_bad_options_are_refused(serve: Serve) -> None:
    """A negative total_files or a chunk size of 0 is a ValueError."""
    client = await serve()
    with pytest.raises(ValueError, match="total_files"):
        await collect(client, [PNG], total_files=-1)
    with pytest.raises(ValueError, match="chunk_size"):
        await collect(client, [PNG], chunk_size=0)


# -- refusals --------------------------------------------------------------------


async def test_413_raises_with_the_problem_details(serve: Serve) -> None:
    """A body over the request limit raises UploadRefused carrying the RFC 9457 body."""
    client = await serve(max_request_size=1024)
    with pytest.raises(UploadRefused) as refused:
        await collect(client, [BMP])
    error = refused.value
    assert error.status == 413
    assert error.problem["status"] == 413
    assert error.problem["type"] == "about:blank"
    assert error.title == "Content Too Large"
    assert error.detail is not None and "1024" in error.detail
    assert str(error).startswith("413 Content Too Large: ")


async def test_a_path_opened_as_its_upload_is_refused_is_closed(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal that comes while a path is being opened: the file, opened
    all the same once the upload is over, is closed, not left open for the
    garbage collector (a ResourceWarning, an error under pytest's
    filterwarnings = error)."""
    client = await serve(max_request_size=1024)
    on_disk = tmp_path / "large.bmp"
    on_disk.write_bytes(BMP)
    go_on = threading.Event()
    opened: list[IO[bytes]] = []

    def slow_open(path: str, mode: str) -> IO[bytes]:
        go_on.wait(10)
        opened.append(open(path, mode))
        return opened[-1]

    monkeypatch.setattr(client_module, "open", slow_open, raising=False)
    try:
        with pytest.raises(UploadRefused):
            await collect(client, [on_disk])
        go_on.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while not (opened and opened[0].closed):
                    await asyncio.sleep(0.01)
        assert opened and opened[0].closed
    finally:
        go_on.set()
        for file in opened:
            file.close()


async def test_expect_continue_refusal_sends_no_body(serve: Serve) -> None:
    """With expect_continue a refused upload is answered before its files are read."""
    client = await serve(max_request_size=1024)
    source = io.BytesIO(BMP)
    with pytest.raises(UploadRefused) as refused:
        await collect(client, [source], expect_continue=True)
    assert refused.value.status == 413
    assert source.tell() == 0


async def test_expect_continue_accepted_upload_streams(serve: Serve) -> None:
    """With expect_continue an accepted upload goes on as usual."""
    client = await serve()
    events = await collect(client, [PNG], expect_continue=True)
    assert isinstance(events[-1], ProcessingComplete)
    assert events[-1].successful_files == 1


async def test_503_when_busy_carries_retry_after(serve: Serve) -> None:
    """Past the concurrency limit the upload raises 503 with Retry-After."""
    client = await serve(max_uploads=1)
    release = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        await release.wait()
        yield PNG

    first = upload(client.session, url(client), [("held.png", held())])
    async with asyncio.timeout(20):
        assert isinstance(await anext(first), UploadStarted)
        with pytest.raises(UploadRefused) as refused:
            await collect(client, [PNG])
        release.set()
        rest = [event async for event in first]
    assert refused.value.status == 503
    assert refused.value.retry_after == 1
    assert refused.value.problem["status"] == 503
    assert isinstance(rest[-1], ProcessingComplete)


async def test_non_problem_error_body(serve: Serve) -> None:
    """A non-2xx answer that is not problem+json still raises, with its status."""
    client = await serve()
    with pytest.raises(UploadRefused) as refused:
        async with asyncio.timeout(20):
            async for _ in upload(client.session, url(client, "/nowhere"), [PNG]):
                pass
    assert refused.value.status == 404
    assert refused.value.problem == {}
    assert refused.value.title == "Not Found"


# -- full duplex -----------------------------------------------------------------


async def test_file_0_result_arrives_before_file_1_is_sent(serve: Serve) -> None:
    """Events are read while the body is still being sent."""
    client = await serve()
    go_on = asyncio.Event()
    sent: list[str] = []

    async def slow_second_file() -> AsyncIterator[bytes]:
        await go_on.wait()
        sent.append("second.png")
        yield PNG

    events: list[Event] = []
    sent_when_first_result: list[str] | None = None
    async with asyncio.timeout(20):
        async for event in upload(
            client.session,
            url(client),
            [("first.png", PNG), ("second.png", slow_second_file())],
        ):
            events.append(event)
            if isinstance(event, ImageValidationSuccess) and event.file_index == 0:
                sent_when_first_result = list(sent)
                go_on.set()
    assert sent_when_first_result == []
    assert [type(e) for e in results(events)] == [ImageValidationSuccess] * 2
    assert isinstance(events[-1], ProcessingComplete)


# -- what the client does with a stream that breaks the contract -----------------


async def fake_server(aiohttp_client: Any, *frames: bytes, content_type: str) -> str:
    """A server answering every upload with *frames*: a stand-in for a broken server."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for frame in frames:
            await response.write(frame)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/api/ocr", answer)
    client = await aiohttp_client(app)
    return url(client)


def frame(event: Event) -> bytes:
    return sse_event(event.type, to_json(event))


SESSION = uuid.UUID("6f1c0e5e-8d5a-4a57-9a43-3b1f2f0a9b10")
STARTED = UploadStarted(total_files=None, session_id=SESSION)
FAILED = ProcessingError(
    session_id=SESSION, error_message="bye", error_type=ErrorType.INTERNAL
)


async def events_from(
    aiohttp_client: Any, *frames: bytes, content_type: str = "text/event-stream"
) -> list[Event]:
    address = await fake_server(aiohttp_client, *frames, content_type=content_type)
    client = await aiohttp_client(web.Application())
    async with asyncio.timeout(20):
        return [event async for event in upload(client.session, address, [PNG])]


async def test_stream_without_terminal_event_raises(aiohttp_client: Any) -> None:
    """A stream that ends before its terminal event is a StreamError."""
    with pytest.raises(StreamError, match="ended before"):
        await events_from(aiohttp_client, frame(STARTED))


async def test_unknown_event_types_are_skipped(aiohttp_client: Any) -> None:
    """Events of types this client does not know, and comments, are passed over."""
    events = await events_from(
        aiohttp_client,
        frame(STARTED),
        b": keep-alive\n\n",
        b'event: ocr_progress\ndata: {"type":"ocr_progress","data":{}}\n\n',
        b"data: untyped\n\n",
        frame(FAILED),
    )
    assert events == [STARTED, FAILED]


async def test_undecodable_event_raises(aiohttp_client: Any) -> None:
    """A known event whose JSON is wrong is a StreamError."""
    with pytest.raises(StreamError, match="upload_started"):
        await events_from(
            aiohttp_client,
            b'event: upload_started\ndata: {"type":"upload_started"}\n\n',
        )


async def test_event_name_and_json_type_must_agree(aiohttp_client: Any) -> None:
    """An event line naming another type than its JSON is a StreamError."""
    with pytest.raises(StreamError, match="named processing_error"):
        await events_from(
            aiohttp_client,
            b"event: processing_error\ndata: " + to_json(STARTED) + b"\n\n",
        )


async def test_a_line_over_the_parser_limit_raises(aiohttp_client: Any) -> None:
    """A line longer than ocr_sse.sse.MAX_LENGTH is a StreamError, not memory
    that grows as long as the server writes."""
    with pytest.raises(StreamError) as raised:
        await events_from(aiohttp_client, frame(STARTED), b":" + b"x" * MAX_LENGTH)
    assert str(raised.value) == (
        f"a line of the event stream is over {MAX_LENGTH} characters"
    )


async def test_200_that_is_not_an_event_stream_raises(aiohttp_client: Any) -> None:
    """A 2xx answer of another content type is a StreamError."""
    with pytest.raises(StreamError, match="text/event-stream"):
        await events_from(aiohttp_client, b"{}", content_type="application/json")


# -- from_json: the contract's JSON back to events -------------------------------

_times = st.datetimes(
    timezones=st.sampled_from(
        [
            UTC,
            timezone(timedelta(hours=5, minutes=30)),
            timezone(timedelta(hours=-8)),
        ]
    )
)
_counts = st.integers(min_value=0, max_value=2**53)
_names = st.none() | st.text(max_size=40)
_codes = st.one_of(
    st.builds(FileSizeExceeded, actual=_counts, limit=_counts),
    st.builds(UnsupportedFormat, detected=st.text(max_size=30)),
    st.just(CorruptedFile()),
    st.just(EmptyFile()),
    st.builds(CountLimitExceeded, count=_counts, limit=_counts),
)
_infos = st.builds(
    ImageFileInfo,
    file_name=_names,
    content_type=st.text(max_size=20),
    size_bytes=_counts,
    format=st.text(max_size=8),
    validation_status=st.just("Valid"),
    file_index=_counts,
    processed_at=_times,
    processing_duration_ms=_counts,
    width=_counts,
    height=_counts,
)
_events = st.one_of(
    st.builds(
        UploadStarted,
        total_files=st.none() | _counts,
        session_id=st.uuids(),
        timestamp=_times,
    ),
    st.builds(
        ImageReceived,
        file_index=_counts,
        file_name=_names,
        size_bytes=_counts,
        timestamp=_times,
    ),
    st.builds(
        ImageValidationStart, file_index=_counts, file_name=_names, timestamp=_times
    ),
    st.builds(
        ImageValidationSuccess, file_index=_counts, file_info=_infos, timestamp=_times
    ),
    st.builds(
        ImageValidationError,
        file_index=_counts,
        file_name=_names,
        error_message=st.text(max_size=60),
        error_code=_codes,
        timestamp=_times,
    ),
    st.builds(
        AllImagesValidated,
        total_processed=_counts,
        successful_count=_counts,
        failed_count=_counts,
        timestamp=_times,
    ),
    st.builds(
        ProcessingComplete,
        session_id=st.uuids(),
        total_files=_counts,
        successful_files=_counts,
        duration_ms=_counts,
        timestamp=_times,
    ),
    st.builds(
        ProcessingError,
        session_id=st.uuids(),
        error_message=st.text(max_size=60),
        error_type=st.sampled_from(ErrorType),
        timestamp=_times,
    ),
)


@given(_events)
def test_from_json_reverses_to_json(event: Event) -> None:
    """Every event survives the trip through its JSON with equal values."""
    assert from_json(to_json(event)) == event
    assert from_json(to_json(event).decode()) == event


def test_from_json_reads_the_contract_example() -> None:
    """The contract's error event decodes to typed values."""
    event = from_json(
        '{"type":"image_validation_error","data":{"file_index":1,"file_name":"notes.pdf",'
        '"error_message":"unsupported format: application/pdf",'
        '"error_code":{"UnsupportedFormat":{"detected":"application/pdf"}},'
        '"timestamp":"2026-11-22T10:00:00.123456Z"}}'
    )
    assert event == ImageValidationError(
        file_index=1,
        file_name="notes.pdf",
        error_message="unsupported format: application/pdf",
        error_code=UnsupportedFormat(detected="application/pdf"),
        timestamp=datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC),
    )


def test_from_json_reads_unit_error_codes() -> None:
    """serde's bare-string codes become the field-less code classes."""
    data = {
        "file_index": 0,
        "file_name": None,
        "error_message": "m",
        "timestamp": "2026-11-22T10:00:00Z",
    }
    for name, code in (("EmptyFile", EmptyFile()), ("CorruptedFile", CorruptedFile())):
        raw = orjson.dumps(
            {"type": "image_validation_error", "data": {**data, "error_code": name}}
        )
        event = from_json(raw)
        assert isinstance(event, ImageValidationError)
        assert event.error_code == code


def test_from_json_reads_lower_case_t_and_z() -> None:
    """An RFC 3339 time written with a lower-case t and z is read as UTC."""
    raw = orjson.loads(to_json(STARTED))
    raw["data"]["timestamp"] = "2026-11-22t10:00:00.123456z"
    event = from_json(orjson.dumps(raw))
    assert event.timestamp == datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)


def test_from_json_ignores_added_fields() -> None:
    """Fields the contract may add later do not break decoding."""
    raw = orjson.loads(to_json(STARTED))
    raw["data"]["region"] = "eu"
    raw["trace"] = "abc"
    assert from_json(orjson.dumps(raw)) == STARTED


def test_from_json_unknown_type_is_a_value_error() -> None:
    """An unknown event type raises UnknownEventType, a ValueError naming it."""
    with pytest.raises(UnknownEventType, match="ocr_progress") as raised:
        from_json('{"type":"ocr_progress","data":{}}')
    assert isinstance(raised.value, ValueError)
    assert raised.value.type_name == "ocr_progress"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("session_id"), "no 'session_id'"),
        (lambda d: d.update(session_id="not-a-uuid"), "UUID"),
        (lambda d: d.update(total_files=True), "integer"),
        (lambda d: d.update(total_files="2"), "integer"),
        (lambda d: d.update(timestamp="2026-11-22T10:00:00"), "RFC 3339"),
        (lambda d: d.update(timestamp=17), "RFC 3339"),
    ],
)
def test_from_json_rejects_wrong_fields(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    """A missing field or a value of the wrong type raises InvalidEventError."""
    raw = orjson.loads(to_json(STARTED))
    change(raw["data"])
    with pytest.raises(InvalidEventError, match=message):
        from_json(orjson.dumps(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"data":{}}',
        b'{"type":"upload_started","data":[]}',
    ],
)
def test_from_json_rejects_what_is_not_an_event(raw: bytes) -> None:
    """JSON that is not an event object raises InvalidEventError."""
    with pytest.raises(InvalidEventError):
        from_json(raw)


@pytest.mark.parametrize(
    "code",
    [
        "Unknown",
        {"FileSizeExceeded": {"actual": 1}},
        {"EmptyFile": {}},
        {"A": {}, "B": {}},
        3,
    ],
)
def test_from_json_rejects_bad_error_codes(code: object) -> None:
    """An error code outside the contract's serde forms raises InvalidEventError."""
    data = {
        "file_index": 0,
        "file_name": None,
        "error_message": "m",
        "error_code": code,
        "timestamp": "2026-11-22T10:00:00Z",
    }
    with pytest.raises(InvalidEventError):
        from_json(orjson.dumps({"type": "image_validation_error", "data": data}))


def test_from_json_rejects_unknown_error_type() -> None:
    """An error_type outside the contract's list raises InvalidEventError."""
    raw = orjson.loads(to_json(FAILED))
    raw["data"]["error_type"] = "Oops"
    with pytest.raises(InvalidEventError, match="error type"):
        from_json(orjson.dumps(raw))
