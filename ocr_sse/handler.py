"""The upload endpoint: multipart in, events out, each as soon as it happens.

This is the only module that does I/O.  The life of one upload:

1. the request head is checked (:mod:`ocr_sse.admission`) and an upload slot
   taken; a refusal is an RFC 9457 problem response, not a stream;
2. ``upload_started`` is written before the first part is read;
3. the parts are read one by one: each file is counted and buffered,
   reported with ``image_received`` and ``image_validation_start``, and handed
   to the executor for decoding, while the next part is read;
4. a second task writes the validation results in file order as they finish;
5. the stream ends with ``all_images_validated`` and ``processing_complete``,
   or with ``processing_error`` for an upload that cannot go on.

A client that goes away is noticed when a read or a write fails on the
closed transport: the upload stops there and its pending decodes are
cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Collection, Iterator
from concurrent.futures import Executor, Future
from typing import Any, BinaryIO, TypeVar

import attrs
import orjson
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from . import admission, sse, validation
from .config import Config
from .errors import InvalidImage, Refused, UploadFailed, describe
from .events import (
    AllImagesValidated,
    ErrorType,
    Event,
    ImageFileInfo,
    ImageReceived,
    ImageValidationError,
    ImageValidationStart,
    ImageValidationSuccess,
    ProcessingComplete,
    ProcessingError,
    UploadStarted,
    encode,
)
from .limits import RateLimiter, UploadSlots
from .parts import FILE_FIELD, DelimiterScanner, read_head

__all__ = (
    "RUNTIME",
    "SSE_HEADERS",
    "Runtime",
    "expect_upload",
    "handle_upload",
    "problem_response",
)

logger = logging.getLogger("ocr_sse")

_T = TypeVar("_T")
_O = TypeVar("_O")

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # nginx buffers responses unless told not to, which would hold every
    # event back until the upload ends.
    "X-Accel-Buffering": "no",
}

#: Most bytes of a part read at once.
READ_CHUNK = 256 * 1024

#: A file larger than this goes to a temporary file as it arrives.
SPOOL_OVER = 1024 * 1024

#: Seconds between looks at the connection while a decode is awaited.
CONNECTION_CHECK_INTERVAL = 0.1

#: Most bytes read before the first boundary (RFC 2046 allows a preamble).
MAX_PREAMBLE = 1024

# What aiohttp's multipart reader raises for a body it cannot parse.
_MALFORMED = (
    ValueError,
    AssertionError,
    RuntimeError,
    LookupError,
    HttpProcessingError,
)


@attrs.define(kw_only=True)
class Runtime:
    """What the uploads of one app share: settings, limits, decoding threads."""

    config: Config
    executor: Executor
    slots: UploadSlots
    rate: RateLimiter | None = None
    #: Set once the server stops: new uploads are refused from then on.
    stopping: bool = False
    #: The deadline of each upload in flight, so a stop can bring it forward.
    deadlines: set[asyncio.Timeout] = attrs.field(factory=set)

    async def stop(self) -> None:
        """Refuse new uploads; end those still in flight after the grace period."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        await self._until_idle(loop.time() + self.config.shutdown_grace)
        for deadline in self.deadlines:
            deadline.reschedule(loop.time())
        # They now write their processing_error, which takes a moment.
        await self._until_idle(loop.time() + 5)

    async def _until_idle(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        while self.slots.in_use and loop.time() < when:
            await asyncio.sleep(0.05)


RUNTIME = web.AppKey("ocr_sse.runtime", Runtime)


async def handle_upload(request: web.Request) -> web.StreamResponse:
    """``POST`` handler of the endpoint: answer an upload with its events."""
    runtime = request.config_dict[RUNTIME]
    try:
        total_files = _admit(request, runtime, spend=True)
    except Refused as refusal:
        return problem_response(refusal)
    runtime.slots.try_take()  # _admit saw a free slot, and nothing ran since
    try:
        return await _stream_upload(request, runtime, total_files)
    finally:
        runtime.slots.give_back()


async def expect_upload(request: web.Request) -> web.StreamResponse | None:
    """Answer ``Expect: 100-continue`` only for an upload that would be let in.

    A refused client then never sends its body at all.
    """
    runtime = request.config_dict[RUNTIME]
    try:
        # The upload is counted against a rate limit when it starts, not now.
        _admit(request, runtime, spend=False)
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise Refused(417, "Expectation Failed", "only 100-continue is understood")
    except Refused as refusal:
        return problem_response(refusal)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


def problem_response(refusal: Refused) -> web.Response:
    """The RFC 9457 ``application/problem+json`` response of *refusal*."""
    body = {
        "type": "about:blank",
        "title": refusal.title,
        "status": refusal.status,
        "detail": refusal.detail,
    }
    return web.Response(
        status=refusal.status,
        body=orjson.dumps(body),
        content_type="application/problem+json",
        headers=refusal.headers,
    )


def _admit(request: web.Request, runtime: Runtime, *, spend: bool) -> int | None:
    """Refuse the request or return its ``total_files``; a slot is free then."""
    total_files = admission.check_request(
        request.headers,
        request.query,
        content_length=request.content_length,
        request_size_limit=runtime.config.request_size_limit,
    )
    if runtime.rate is not None:
        wait = runtime.rate.wait_for(request.remote or "", spend=spend)
        if wait:
            raise Refused(
                429,
                "Too Many Requests",
                f"more than {runtime.rate.per_minute} uploads a minute from"
                " this address",
                headers={"Retry-After": str(math.ceil(wait))},
            )
    if runtime.stopping:
        raise _unavailable("the server is shutting down")
    if runtime.slots.full:
        raise _unavailable("too many uploads in flight; try again shortly")
    return total_files


def _unavailable(detail: str) -> Refused:
    return Refused(503, "Service Unavailable", detail, headers={"Retry-After": "1"})


async def _stream_upload(
    request: web.Request, runtime: Runtime, total_files: int | None
) -> web.StreamResponse:
    session_id = uuid.uuid4()
    started = time.monotonic()
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    out = _EventWriter(response, write_timeout=runtime.config.write_timeout)
    logger.info("upload %s started", session_id)
    try:
        async with out.keeping_alive(runtime.config.keepalive_interval):
            await out.send(
                UploadStarted(total_files=total_files, session_id=session_id)
            )
            for event in await _run_upload(request, out, runtime, session_id, started):
                await out.send(event)
        await response.write_eof()
    except ConnectionResetError as gone:
        _log_disconnect(session_id, gone)
        # A client that stopped reading still holds the socket: let it go
        # rather than wait on a buffer it will never drain.
        if request.transport is not None:
            request.transport.abort()
    except asyncio.CancelledError:
        # An app run with handler_cancellation=True cancels the handler when
        # its client goes; the cleanup is the same, done by the unwinding.
        if _client_gone(request):
            _log_disconnect(session_id, "the connection closed")
        raise
    return response


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _log_disconnect(session_id: uuid.UUID, why: object) -> None:
    logger.info(
        "upload %s ended: %s: %s", session_id, ErrorType.CLIENT_DISCONNECTED.value, why
    )


async def _run_upload(
    request: web.Request,
    out: _EventWriter,
    runtime: Runtime,
    session_id: uuid.UUID,
    started: float,
) -> list[Event]:
    """Receive and validate every file; return the events that end the stream."""
    config = runtime.config
    try:
        async with asyncio.timeout(config.upload_timeout) as deadline:
            runtime.deadlines.add(deadline)
            try:
                tally = await _receive_files(request, out, runtime)
            finally:
                runtime.deadlines.discard(deadline)
    except TimeoutError:
        # A stopping server ends the uploads left after its grace period by
        # bringing their deadline forward.
        failure = (
            UploadFailed(ErrorType.INTERNAL, "server shutting down")
            if runtime.stopping
            else UploadFailed(
                ErrorType.SYSTEM_TIMEOUT,
                f"the upload took longer than {config.upload_timeout:g} s",
            )
        )
    except UploadFailed as failed:
        failure = failed
    except ConnectionResetError:
        raise
    except Exception:
        logger.exception("upload %s failed on a bug", session_id)
        failure = UploadFailed(ErrorType.INTERNAL, "internal server error")
    else:
        duration_ms = round((time.monotonic() - started) * 1000)
        logger.info(
            "upload %s complete: %d files, %d valid, %d ms",
            session_id,
            tally.processed,
            tally.valid,
            duration_ms,
        )
        return [
            AllImagesValidated(
                total_processed=tally.processed,
                successful_count=tally.valid,
                failed_count=tally.invalid,
            ),
            ProcessingComplete(
                session_id=session_id,
                total_files=tally.processed,
                successful_files=tally.valid,
                duration_ms=duration_ms,
            ),
        ]
    logger.info(
        "upload %s failed: %s: %s",
        session_id,
        failure.error_type.value,
        failure.message,
    )
    return [
        ProcessingError(
            session_id=session_id,
            error_message=failure.message,
            error_type=failure.error_type,
        )
    ]


@attrs.define
class _Tally:
    valid: int = 0
    invalid: int = 0

    @property
    def processed(self) -> int:
        return self.valid + self.invalid


@attrs.frozen
class _Pending:
    """A file whose result is still to be written, in file order."""

    file_index: int
    file_name: str | None
    outcome: asyncio.Future[ImageFileInfo | InvalidImage]


async def _receive_files(
    request: web.Request, out: _EventWriter, runtime: Runtime
) -> _Tally:
    # Files wait here between their arrival and their result; the bound
    # keeps a fast client from queueing more decodes than there are threads
    # to run them (it then waits, and TCP slows it down).
    pending: asyncio.Queue[_Pending | None] = asyncio.Queue(
        maxsize=2 * runtime.config.validation_threads
    )
    tally = _Tally()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_write_results(request, pending, out, tally))
            await _read_files(request, out, pending, runtime)
            await pending.put(None)
    except BaseExceptionGroup as group:
        raise _first_cause(group) from None
    finally:
        while not pending.empty():
            if (left := pending.get_nowait()) is not None:
                left.outcome.cancel()
    return tally


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    # A gone client explains every other failure, so it wins.
    leaves = list(_leaves(group))
    for leaf in leaves:
        if isinstance(leaf, ConnectionResetError):
            return leaf
    return leaves[0]


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


async def _read_files(
    request: web.Request,
    out: _EventWriter,
    pending: asyncio.Queue[_Pending | None],
    runtime: Runtime,
) -> None:
    config = runtime.config
    body = _Body(request, config)
    file_index = 0
    async for part in body.parts():
        head = read_head(part.headers)
        if not head.is_file:
            await body.read(part, limit=config.max_field_size)
            continue
        received = _FileBuffer(
            keep=file_index < config.max_files,
            max_size=config.max_file_size,
            allowed=config.allowed_formats,
        )
        try:
            await body.read(part, received)
            source = await received.finish()
        finally:
            received.close()
        # Decoding starts first: it owns the file from here on, so whatever
        # fails next only has to cancel it.
        outcome = _validate_later(
            runtime,
            source,
            rejected=received.rejected,
            file_index=file_index,
            file_name=head.file_name,
            size=received.size,
        )
        try:
            await out.send(
                ImageReceived(
                    file_index=file_index,
                    file_name=head.file_name,
                    size_bytes=received.size,
                ),
                ImageValidationStart(file_index=file_index, file_name=head.file_name),
            )
            await pending.put(_Pending(file_index, head.file_name, outcome))
        except BaseException:
            outcome.cancel()
            raise
        file_index += 1
    if file_index == 0:
        raise UploadFailed(
            ErrorType.MULTIPART_PARSING, f"the upload has no '{FILE_FIELD}' part"
        )


def _validate_later(
    runtime: Runtime,
    source: bytes | BinaryIO | None,
    *,
    rejected: InvalidImage | None,
    file_index: int,
    file_name: str | None,
    size: int,
) -> asyncio.Future[ImageFileInfo | InvalidImage]:
    """Start validating one file; its outcome is a future.

    The checks run in the contract's order: size and position first, then
    the magic bytes (already looked at as the file arrived), then the decode
    in the executor, which takes over *source* and closes it.
    """
    config = runtime.config
    try:
        validation.check_arrival(
            file_index=file_index,
            size=size,
            max_file_size=config.max_file_size,
            max_files=config.max_files,
        )
        if rejected is not None:
            raise rejected
        assert source is not None, "a file that passed its checks was kept"
    except InvalidImage as invalid:
        if isinstance(source, io.IOBase):
            source.close()
        done: asyncio.Future[ImageFileInfo | InvalidImage]
        done = asyncio.get_running_loop().create_future()
        done.set_result(invalid)
        return done
    decoding = runtime.executor.submit(
        _validate_quietly,
        source,
        file_index=file_index,
        file_name=file_name,
        size=size,
        allowed=config.allowed_formats,
        max_pixels=config.max_pixels,
    )
    if isinstance(source, io.IOBase):
        spooled = source

        def close_if_never_run(job: Future[Any]) -> None:
            # A decode cancelled before it starts never gets to close its file.
            if job.cancelled():
                spooled.close()

        decoding.add_done_callback(close_if_never_run)
    return asyncio.wrap_future(decoding)


def _validate_quietly(
    source: bytes | BinaryIO, **facts: Any
) -> ImageFileInfo | InvalidImage:
    # An invalid image is an outcome, not a failure: returning it spares a
    # cancelled upload "exception was never retrieved" noise.
    try:
        return validation.validate(source, **facts)
    except InvalidImage as invalid:
        return invalid
    finally:
        if not isinstance(source, bytes):
            source.close()


class _FileBuffer:
    """One file's bytes as they arrive.

    Small files stay in memory; past :data:`SPOOL_OVER` bytes they go to an
    unnamed temporary file, written off the event loop one write at a time.
    Nothing is kept of a file known to fail: over the size limit, past the
    count limit, or not an accepted image by its first bytes.  Its size is
    counted all the same.
    """

    def __init__(self, *, keep: bool, max_size: int, allowed: Collection[str]) -> None:
        self.size = 0
        #: Why the first bytes already failed the file, if they did.
        self.rejected: InvalidImage | None = None
        self._keep = keep
        self._max_size = max_size
        self._allowed = allowed
        self._head_checked = False
        self._chunks: list[bytes] = []
        self._held = 0
        self._file: BinaryIO | None = None
        self._writing: asyncio.Future[int] | None = None

    async def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if not self._keep:
            return
        if self.size > self._max_size:
            self._drop()
            return
        self._chunks.append(chunk)
        self._held += len(chunk)
        if not self._head_checked and self._held >= validation.HEAD_SIZE:
            self._check_head()
        if self._keep and self._held >= SPOOL_OVER:
            await self._spill()

    async def finish(self) -> bytes | BinaryIO | None:
        """The kept bytes, or ``None``; a temporary file passes to the caller."""
        if self._keep and not self._head_checked:
            self._check_head()
        if not self._keep:
            return None
        if self._file is None:
            data = b"".join(self._chunks)
            self._chunks = []
            return data
        await self._spill()
        assert self._writing is not None
        await self._writing
        file, self._file = self._file, None
        return file

    def close(self) -> None:
        """Let go of whatever is still held; safe to call at any time."""
        self._chunks = []
        file, self._file = self._file, None
        if file is None:
            return
        if self._writing is not None and not self._writing.done():
            self._writing.add_done_callback(lambda _: file.close())
        else:
            file.close()

    def _check_head(self) -> None:
        self._head_checked = True
        head = b"".join(self._chunks[:2])[: validation.HEAD_SIZE]
        try:
            validation.detect_format(head, allowed=self._allowed)
        except InvalidImage as invalid:
            self.rejected = invalid
            self._drop()

    def _drop(self) -> None:
        self._keep = False
        self.close()

    async def _spill(self) -> None:
        loop = asyncio.get_running_loop()
        if self._writing is not None:
            await self._writing  # one write at a time keeps them in order
        if self._file is None:
            self._file = await loop.run_in_executor(None, _new_spool_file)
        data = b"".join(self._chunks)
        self._chunks = []
        self._held = 0
        self._writing = loop.run_in_executor(None, self._file.write, data)


def _new_spool_file() -> BinaryIO:
    # Unnamed (O_TMPFILE where the system has it): gone when closed, and
    # gone even if the process dies first.
    return tempfile.TemporaryFile(prefix="ocr_sse-")


async def _write_results(
    request: web.Request,
    pending: asyncio.Queue[_Pending | None],
    out: _EventWriter,
    tally: _Tally,
) -> None:
    while (file := await pending.get()) is not None:
        try:
            outcome = await _unless_client_leaves(request, file.outcome)
        finally:
            file.outcome.cancel()
        event: Event
        if isinstance(outcome, InvalidImage):
            tally.invalid += 1
            event = ImageValidationError(
                file_index=file.file_index,
                file_name=file.file_name,
                error_message=outcome.message,
                error_code=outcome.code,
            )
        else:
            tally.valid += 1
            event = ImageValidationSuccess(
                file_index=file.file_index, file_info=outcome
            )
        await out.send(event)


async def _unless_client_leaves(
    request: web.Request, outcome: asyncio.Future[_O]
) -> _O:
    """Wait for a decode, watching the connection meanwhile.

    A read or a write notices a closed transport by failing; waiting on a
    decode does neither, and aiohttp has no callback for the moment a
    connection closes, so the transport is looked at a few times a second.
    """
    while True:
        await asyncio.wait([outcome], timeout=CONNECTION_CHECK_INTERVAL)
        # Looked at once more when the decode ends: its result is for nobody
        # if the client left meanwhile.
        if _client_gone(request):
            raise ConnectionResetError("the client left while its files were decoded")
        if outcome.done():
            return outcome.result()


class _Body:
    """The request body as multipart parts, read under the upload's limits."""

    def __init__(self, request: web.Request, config: Config) -> None:
        self._request = request
        self._config = config

    async def parts(self) -> AsyncIterator[BodyPartReader]:
        reader = _UploadReader(self._request.headers, self._request.content)
        for _ in range(self._config.max_parts):
            part = await self._guard(reader.next())
            if part is None:
                return
            if not isinstance(part, BodyPartReader):
                raise UploadFailed(
                    ErrorType.MULTIPART_PARSING,
                    "nested multipart parts are not supported (RFC 7578 section 4.3)",
                )
            yield part
        raise UploadFailed(
            ErrorType.MULTIPART_PARSING,
            f"the upload has more than {self._config.max_parts} parts",
        )

    async def read(
        self,
        part: BodyPartReader,
        into: _FileBuffer | None = None,
        *,
        limit: int | None = None,
    ) -> None:
        """Read *part* to its end, into *into*, or into nothing up to *limit*."""
        size = 0
        while chunk := await self._guard(part.read_chunk()):
            if into is not None:
                await into.add(chunk)
                continue
            size += len(chunk)
            if limit is not None and size > limit:
                raise UploadFailed(
                    ErrorType.MULTIPART_PARSING,
                    f"a form field is over the limit of {limit} bytes",
                )

    async def _guard(self, read: Awaitable[_T]) -> _T:
        """Await one read of the body, turning its failures into upload errors."""
        config = self._config
        try:
            async with asyncio.timeout(config.read_timeout):
                result = await read
        except TimeoutError:
            raise UploadFailed(
                ErrorType.SYSTEM_TIMEOUT,
                f"the client sent nothing for {config.read_timeout:g} s",
            ) from None
        except _MALFORMED as exc:
            raise UploadFailed(
                ErrorType.MULTIPART_PARSING,
                f"malformed multipart body: {describe(exc)}",
            ) from None
        if self._request.content.total_bytes > config.request_size_limit:
            raise UploadFailed(
                ErrorType.MULTIPART_PARSING,
                f"the body is over the limit of {config.request_size_limit} bytes",
            )
        return result


class _PartReader(BodyPartReader):
    """aiohttp's part reader, handing on each chunk as it arrives.

    The stock reader returns data only once it holds a chunk of look-ahead
    past it, so a part is not finished until bytes arrive after its
    delimiter, and it copies every byte twice on the way.  This one finds
    the delimiter with :class:`~ocr_sse.parts.DelimiterScanner` and gives
    back what has arrived, up to :data:`READ_CHUNK` bytes whatever *size*
    asks for.
    """

    _scanner: DelimiterScanner | None = None

    async def read_chunk(self, size: int = BodyPartReader.chunk_size) -> bytes:
        if self._at_eof:
            return b""
        if self._scanner is None:
            self._scanner = DelimiterScanner(self._boundary)
        while True:
            # A bounded read: readany() would join everything buffered, and
            # what follows the part's end is copied back for the next part.
            chunk = await self._content.read(READ_CHUNK)
            if not chunk:
                raise ValueError("the body ends inside a part")
            data, rest = self._scanner.feed(chunk)
            if rest is not None:
                self._at_eof = True
                # The multipart reader reads the boundary line from here;
                # aiohttp's own reader pushes it back the same way.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._content.unread_data(rest)
                return data
            if data:
                return data


class _UploadReader(MultipartReader):
    """aiohttp's multipart reader for part headers, with :class:`_PartReader`."""

    part_reader_cls = _PartReader

    async def _read_until_first_boundary(self) -> None:
        # aiohttp reads the preamble line by line with no end but the body's:
        # a flood of CRLFs kept it busy for the whole request limit.  Browsers
        # send no preamble at all.
        read = 0
        while read <= MAX_PREAMBLE:
            line = await self._readline()
            if not line:
                break
            read += len(line)
            if line.rstrip() == self._boundary:
                return
            if line.rstrip() == self._boundary + b"--":
                self._at_eof = True
                return
        raise ValueError(f"no boundary in the first {MAX_PREAMBLE} bytes")


class _EventWriter:
    """Writes frames to the stream one at a time, each under a time limit."""

    def __init__(self, response: web.StreamResponse, *, write_timeout: float) -> None:
        self._response = response
        self._write_timeout = write_timeout
        self._lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self._last_write = self._loop.time()

    async def send(self, *events: Event) -> None:
        """Write *events* in one go."""
        await self._write(b"".join(encode(event) for event in events))

    async def _write(self, frame: bytes) -> None:
        async with self._lock:
            try:
                # aiohttp waits for the socket only every 64 KiB, and that
                # wait has no end of its own: a client that stops reading
                # would hold this upload forever.
                async with asyncio.timeout(self._write_timeout):
                    await self._response.write(frame)
            except TimeoutError:
                raise ConnectionResetError(
                    "the client stopped reading the event stream"
                ) from None
            self._last_write = self._loop.time()

    @contextlib.asynccontextmanager
    async def keeping_alive(self, interval: float) -> AsyncIterator[None]:
        """Send a comment whenever the stream has been silent for *interval*."""
        task = asyncio.create_task(self._keep_alive(interval))
        try:
            yield
        finally:
            task.cancel()
            await asyncio.wait([task])

    async def _keep_alive(self, interval: float) -> None:
        # A failed write here means the client is gone; the upload itself
        # finds out on its next read or write.
        with contextlib.suppress(ConnectionResetError):
            while True:
                await asyncio.sleep(self._last_write + interval - self._loop.time())
                if self._loop.time() - self._last_write >= interval:
                    await self._write(sse.comment())
