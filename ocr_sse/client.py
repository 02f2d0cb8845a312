"""A client of the endpoint: send files, get the contract's events as they come.

:func:`upload` posts the files as the ``images`` parts of one
multipart/form-data body and yields the typed events of the answer.  The
files are streamed: a path is opened only when its turn comes and read a
chunk at a time, a file object is read from where it stands, and an async
iterable of bytes is sent as it yields.

Full duplex comes from aiohttp itself: ``ClientRequest.send`` writes the body
from a task of its own (``write_bytes``) and hands back the response as soon
as its head arrives, so the events of the first files are read while the
later ones are still being sent.  When the response ends first (a refusal, a
``processing_error``), aiohttp cancels the rest of the body.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import stat
import typing
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Mapping,
)
from typing import IO, Any, Union

import aiohttp
import orjson
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from .errors import without_surrogates
from .events import (
    Event,
    InvalidEventError,
    ProcessingComplete,
    ProcessingError,
    from_json,
)
from .parts import FILE_FIELD
from .sse import EventStreamError, EventStreamParser, ServerSentEvent

__all__ = (
    "DEFAULT_CHUNK_SIZE",
    "FILE_FIELD",
    "FileSource",
    "StreamError",
    "UploadError",
    "UploadRefused",
    "upload",
)

#: How many bytes of a file are read and sent at once, unless told otherwise.
DEFAULT_CHUNK_SIZE = 64 * 1024

#: A file to send: a path, its bytes, a binary file object, or an async
#: iterable of byte chunks.  A ``(name, source)`` pair names it explicitly.
FileSource = Union[
    str,
    "os.PathLike[str]",
    bytes,
    bytearray,
    memoryview,
    IO[bytes],
    AsyncIterable[bytes],
]

# The most of a refusal's body that is read; a problem document is small.
_PROBLEM_LIMIT = 64 * 1024

_EVENT_TYPES = frozenset(cls.type for cls in typing.get_args(Event))


class UploadError(Exception):
    """Something went wrong with an upload, other than the network."""


class UploadRefused(UploadError):
    """The server turned the upload away with a non-2xx response.

    *problem* is the RFC 9457 problem document of the response (``type``,
    ``title``, ``status``, ``detail``), or an empty dict when the body was
    not one.
    """

    def __init__(
        self,
        status: int,
        problem: Mapping[str, Any],
        *,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.problem: dict[str, Any] = dict(problem)
        self.headers: dict[str, str] = dict(headers or {})
        title = self.problem.get("title")
        self.title: str = title if isinstance(title, str) else (reason or "")
        detail = self.problem.get("detail")
        self.detail: str | None = detail if isinstance(detail, str) else None
        super().__init__(
            f"{status} {self.title}" + (f": {self.detail}" if self.detail else "")
        )

    @property
    def retry_after(self) -> int | None:
        """The seconds ``Retry-After`` asks to wait (429, 503), if it says."""
        value = self.headers.get("Retry-After", "").strip()
        return int(value) if value.isascii() and value.isdigit() else None


class StreamError(UploadError):
    """The response is not an event stream of the contract.

    Raised for a 2xx response that is not ``text/event-stream``, for an event
    whose JSON does not decode, for a line or an event over
    :data:`ocr_sse.sse.MAX_LENGTH` characters, and for a stream that ends
    without ``processing_complete`` or ``processing_error``.
    """


async def upload(
    session: aiohttp.ClientSession,
    url: str,
    files: Iterable[FileSource | tuple[str | None, FileSource]],
    *,
    total_files: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    expect_continue: bool = False,
) -> AsyncIterator[Event]:
    """Upload *files* to the endpoint at *url*; yield its events as they arrive.

    Each item of *files* is one ``images`` part, in order: a path (``str`` or
    path-like; its base name is the file name), bytes (no file name), a
    binary file object (read from its current position, never closed here;
    its ``name`` is the file name), or an async iterable of bytes.  A
    ``(name, source)`` pair sets the file name, or sends none for ``None``.

    *total_files* is sent as the ``total_files`` query parameter, the count
    the server reports in ``upload_started``; it is not sent when ``None``.
    *chunk_size* is how much of a file is read at once.  With
    *expect_continue* the request asks ``Expect: 100-continue``, so that a
    refused upload is answered before any of its body is sent; aiohttp then
    holds the body until the server answers, with no time limit, so ask it
    only of a server that answers ``Expect`` (ocr_sse does; one that ignores
    it, or an HTTP/1.0 proxy on the way, would never get the body).
    ``ocr-sse upload`` sends the body anyway after 1 s.

    The body has a ``Content-Length`` when every size is known up front
    (bytes, ``BytesIO``, and paths and file objects of regular files) and is
    chunked otherwise, as for a pipe (``/dev/stdin``) or an async iterable; a
    file whose size changes while it is sent fails the upload.  Redirects are
    not followed: a streamed body cannot be sent twice.

    Events of a type this client does not know are skipped, so that a newer
    server adding event types does not break it.  Close the iterator
    (``contextlib.aclosing``) to stop early; the request is then closed too.

    Raises :class:`UploadRefused` for a non-2xx response, :class:`StreamError`
    for a stream that breaks the contract, ``OSError`` for a path that cannot
    be read, :class:`UploadError` for a file that changed size, the exception
    of an async iterable that raises, and ``aiohttp.ClientError`` for a
    failure of the connection.  A file that fails while the body is sent
    raises at once: the connection is cut, and the server sees the client go.
    """
    if total_files is not None and total_files < 0:
        raise ValueError(f"total_files must be 0 or more, not {total_files}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be above 0, not {chunk_size}")
    failures: list[Exception] = []
    body = _form(files, chunk_size=chunk_size, failures=failures)
    params = {"total_files": str(total_files)} if total_files is not None else None
    try:
        async with session.post(
            url,
            data=body,
            params=params,
            headers={"Accept": "text/event-stream"},
            expect100=expect_continue,
            allow_redirects=False,
            raise_for_status=False,
        ) as response:
            if not 200 <= response.status < 300:
                raise await _refusal(response)
            if response.content_type != "text/event-stream":
                raise StreamError(
                    "expected text/event-stream,"
                    f" got {response.content_type or 'no type'}"
                )
            parser = EventStreamParser()
            ended = False
            async for chunk in response.content.iter_any():
                try:
                    messages = parser.feed(chunk)
                except EventStreamError as exc:
                    raise StreamError(str(exc)) from exc
                for message in messages:
                    event = _event(message)
                    if event is None:
                        continue
                    ended = ended or isinstance(
                        event, (ProcessingComplete, ProcessingError)
                    )
                    yield event
            if not ended:
                raise StreamError(
                    "the event stream ended before processing_complete"
                    " or processing_error"
                )
    except (aiohttp.ClientError, StreamError):
        # A file that failed while it was sent cut the connection (see
        # _FilePayload.write), and the stream broke off: the file's error is
        # what went wrong.
        if failures:
            raise failures[0] from None
        raise


def _event(message: ServerSentEvent) -> Event | None:
    if message.event not in _EVENT_TYPES:
        return None
    try:
        event = from_json(message.data)
    except InvalidEventError as exc:
        raise StreamError(f"a {message.event} event does not decode: {exc}") from exc
    if event.type != message.event:
        raise StreamError(
            f"an event is named {message.event} but its JSON says {event.type}"
        )
    return event


async def _refusal(response: aiohttp.ClientResponse) -> UploadRefused:
    raw = b""
    while len(raw) < _PROBLEM_LIMIT and (chunk := await response.content.readany()):
        raw += chunk
    problem: Any = {}
    if response.content_type in ("application/problem+json", "application/json"):
        try:
            problem = orjson.loads(raw)
        except orjson.JSONDecodeError:
            problem = {}
    return UploadRefused(
        response.status,
        problem if isinstance(problem, dict) else {},
        reason=response.reason,
        headers=response.headers,
    )


# -- the request body --------------------------------------------------------


def _form(
    files: Iterable[FileSource | tuple[str | None, FileSource]],
    *,
    chunk_size: int,
    failures: list[Exception],
) -> aiohttp.MultipartWriter:
    form = aiohttp.MultipartWriter("form-data")
    for item in files:
        if isinstance(item, tuple):
            name, source = item
        else:
            name, source = _default_name(item), item
        payload = _FilePayload(
            _chunks_of(source, chunk_size), filename=name, failures=failures
        )
        # RFC 7578 section 4.2 and the WHATWG form encoder: the name goes as
        # UTF-8 in a quoted string (aiohttp's default would percent-encode it,
        # and servers would show the percent signs).
        params = {"name": FILE_FIELD}
        if name is not None:
            params["filename"] = _sent_name(name)
        payload.set_content_disposition("form-data", quote_fields=False, **params)
        form.append_payload(payload)
    return form


# C0 controls and DEL: a line break would end the header, and aiohttp
# refuses the others in a header.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _sent_name(name: str) -> str:
    """*name* as it can go in the part's header.

    Each control character is percent-encoded, as browsers encode CR and LF
    (``%0D``, ``%0A``, ``%1B``); the lone surrogates of a file name whose
    bytes are not UTF-8 become U+FFFD, as the server would show them.
    """
    return _CONTROL.sub(_percent, without_surrogates(name))


def _percent(match: re.Match[str]) -> str:
    return f"%{ord(match.group()):02X}"


def _default_name(source: FileSource) -> str | None:
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source))
    name = getattr(source, "name", None)
    if isinstance(name, str) and not isinstance(source, (bytes, bytearray, memoryview)):
        return os.path.basename(name) or None
    return None


class _Chunks:
    """The bytes of one file, streamed a chunk at a time; the size if known."""

    def __init__(self, size: int | None, chunks: AsyncGenerator[bytes, None]) -> None:
        self.size = size
        self.chunks = chunks


def _chunks_of(source: FileSource, chunk_size: int) -> _Chunks:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source).cast("B")
        return _Chunks(len(data), _from_memory(data, chunk_size))
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        info = os.stat(path)  # a missing file fails here, not mid-body
        # Only a regular file's size is its length: a pipe (/dev/stdin, a
        # shell's <(...)) says 0, and is sent chunked, to its end.
        size = info.st_size if stat.S_ISREG(info.st_mode) else None
        return _Chunks(size, _from_path(path, size, chunk_size))
    if isinstance(source, io.TextIOBase):
        raise TypeError("a file object to upload must be opened in binary mode")
    if hasattr(source, "read"):
        file = typing.cast(IO[bytes], source)
        size = _remaining_size(file)
        return _Chunks(size, _from_file(file, size, chunk_size, name=repr(file)))
    if isinstance(source, AsyncIterable):
        return _Chunks(None, _from_async(source))
    raise TypeError(
        "a file to upload is a path, bytes, a binary file object or an async"
        f" iterable of bytes, not {type(source).__name__}"
    )


def _remaining_size(file: IO[bytes]) -> int | None:
    """The bytes left in *file* from where it stands, or None if unknowable."""
    try:
        if isinstance(file, io.BytesIO):
            return len(file.getbuffer()) - file.tell()
        stat = os.fstat(file.fileno())
        if stat.st_mode & 0o170000 == 0o100000:  # a regular file
            return max(stat.st_size - file.tell(), 0)
    except (AttributeError, OSError, ValueError):
        pass
    return None


async def _from_memory(
    data: memoryview, chunk_size: int
) -> AsyncGenerator[bytes, None]:
    for start in range(0, len(data), chunk_size):
        yield bytes(data[start : start + chunk_size])


async def _from_path(
    path: str, size: int | None, chunk_size: int
) -> AsyncGenerator[bytes, None]:
    loop = asyncio.get_running_loop()
    opening: asyncio.Future[IO[bytes]] = loop.run_in_executor(None, open, path, "rb")
    try:
        file = await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The thread opens the file all the same: close it once opened.
        opening.add_done_callback(_close_opened)
        raise
    try:
        chunks = (
            _from_pipe(file.fileno(), chunk_size)
            if size is None
            else _from_file(file, size, chunk_size, name=path)
        )
        async for chunk in chunks:
            yield chunk
    except OSError as exc:
        # A failed read names no file: say which one it was.
        if exc.filename is None:
            exc.filename = path
        raise
    finally:
        file.close()


def _close_opened(opening: asyncio.Future[IO[bytes]]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


async def _from_file(
    file: IO[bytes], size: int | None, chunk_size: int, *, name: str
) -> AsyncGenerator[bytes, None]:
    loop = asyncio.get_running_loop()
    in_memory = isinstance(file, io.BytesIO)
    left = size
    while left is None or left > 0:
        want = chunk_size if left is None else min(chunk_size, left)
        # A read of a real file blocks: it runs in the default executor.
        chunk = (
            file.read(want)
            if in_memory
            else await loop.run_in_executor(None, file.read, want)
        )
        if not chunk:
            break
        if left is not None:
            left -= len(chunk)
        yield chunk
    if size is None:
        return
    # The size went out in Content-Length before the first byte: a file that
    # changed since cannot be sent as declared.
    extra = (
        file.read(1) if in_memory else await loop.run_in_executor(None, file.read, 1)
    )
    if left or extra:
        raise UploadError(f"{name} changed size while it was being sent")


async def _from_pipe(fd: int, chunk_size: int) -> AsyncGenerator[bytes, None]:
    """The bytes of a file that is not a regular one (a pipe, a terminal),
    read when the event loop sees them come.

    A read of a pipe in a thread waits as long as its writer is silent: the
    thread cannot be stopped, closing the file waits for the read with the
    event loop stopped, and the program cannot exit.
    """
    loop = asyncio.get_running_loop()
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        while True:
            try:
                chunk = os.read(fd, chunk_size)
            except BlockingIOError:
                await _readable(loop, fd)
                continue
            if not chunk:
                return
            yield chunk
    finally:
        os.set_blocking(fd, blocking)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready = loop.create_future()
    loop.add_reader(fd, _set_once, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _from_async(source: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
    async for chunk in source:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"an async file source yielded {type(chunk).__name__}, not bytes"
            )
        yield bytes(chunk)


class _FilePayload(Payload):
    """One file part: its bytes streamed from a :class:`_Chunks`.

    A file that fails while it is read (a directory, a file that changed
    size, an async source that raises) is put in *failures* and cuts the
    connection, for :func:`upload` to raise.  aiohttp alone would only mark
    the connection broken, which the response being read never hears of:
    the upload would wait for the server to time out.
    """

    _autoclose = True  # whatever it opens, it closes itself

    def __init__(
        self, chunks: _Chunks, *, filename: str | None, failures: list[Exception]
    ) -> None:
        super().__init__(chunks, filename=filename)
        self._chunks = chunks
        self._size = chunks.size
        self._failures = failures

    async def write(self, writer: AbstractStreamWriter) -> None:
        chunks = self._chunks.chunks
        try:
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    # The server cannot be told the part is broken, only that
                    # the body ends here: it sees the client go.
                    self._failures.append(exc)
                    if (transport := writer.transport) is not None:
                        transport.abort()
                    raise
                await writer.write(chunk)
        finally:
            # A cancelled upload closes the file it opened now, not when the
            # generator is collected.
            await chunks.aclose()

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed file part cannot be decoded")
