"""The upload endpoint: multipart in, events out, each as soon as it happens.

This is the only module that does the endpoint's I/O.  The life of one
upload (:func:`handle_upload`, :func:`_stream_upload`, :func:`_run_upload`):

1. the request head is checked (:mod:`ocr_sse.admission`) and an upload slot
   taken; a refusal is an RFC 9457 problem response, not a stream;
2. ``upload_started`` is written before the first part is read;
3. the parts are read one by one (:func:`_read_files`): each file is counted
   and kept (in memory, or spooled to a temporary file), handed to the
   decoding threads, and reported with ``image_received`` and
   ``image_validation_start``, while the next part is read;
4. a second task (:func:`_write_results`) writes the results in file order
   as the decodes finish, after the app's ``on_image`` hook if it has one;
5. the stream ends with ``all_images_validated`` and ``processing_complete``,
   or with ``processing_error`` for an upload that cannot go on.

Every frame after ``upload_started`` goes out through one writer task
(:class:`_EventWriter`).  A client that goes away is noticed when a read or
a write fails on the closed connection, or, while a decode is awaited, by a
look at the connection: the upload stops there and lets go of its slot, its
files and its decodes.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from typing import Any, BinaryIO, TypeVar, cast

import attrs
import orjson
from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError

from . import admission, sse, validation
from .buffers import open_chunks
from .config import Config
from .errors import InvalidImage, Refused, UploadFailed, describe
from .events import (
    AllImagesValidated,
    CorruptedFile,
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
from .limits import MemoryBudget, RateLimiter, UploadSlots
from .metrics import Metrics
from .parts import FILE_FIELD, Data, DelimiterScanner, read_head
from .pool import ThreadPool

__all__ = (
    "RUNTIME",
    "SSE_HEADERS",
    "OnImage",
    "Runtime",
    "ValidImage",
    "expect_upload",
    "handle_upload",
    "problem_response",
)

logger = logging.getLogger("ocr_sse")

_T = TypeVar("_T")

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # nginx buffers responses unless told not to, which would hold every
    # event back until the upload ends.
    "X-Accel-Buffering": "no",
}

#: A file larger than this stays in memory only while the memory budget
#: allows; past it, it goes to a temporary file as it arrives.
SPOOL_OVER = 1024 * 1024

#: Frames queued for a slow client before senders wait for it.
MAX_QUEUED_FRAMES = 256

#: Small files an upload may read ahead of its results: each burst of them
#: reaches the decoding threads, and their results the event loop, in fewer
#: wake-ups (20 KB images: 16% less CPU a file than at 4 files).
READ_AHEAD_BYTES = 1024 * 1024
READ_AHEAD_FILES = 64

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
    slots: UploadSlots
    #: Shared by the large files of all uploads (Config.memory_budget).
    memory: MemoryBudget
    rate: RateLimiter | None = None
    #: Set once the server stops: new uploads are refused from then on.
    stopping: bool = False
    #: The deadline of each upload in flight, so a stop can bring it forward.
    deadlines: set[asyncio.Timeout] = attrs.field(factory=set)
    metrics: Metrics = attrs.field(factory=Metrics)
    #: The embedding app's hook for each valid image, if it has one.
    on_image: OnImage | None = None
    #: The threads that decode images, from each start of the app on.
    decoders: ThreadPool = attrs.field(init=False)

    def start(self, decoders: ThreadPool) -> None:
        """Let uploads in, to be decoded by *decoders*: the app (re)starts."""
        self.decoders = decoders
        self.stopping = False

    async def stop(self) -> None:
        """Refuse new uploads; end those still in flight after the grace period."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        await self._until_idle(loop.time() + self.config.shutdown_grace)
        for deadline in self.deadlines:
            _end_now(deadline)
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
        runtime.metrics.refused(refusal.status)
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
        runtime.metrics.refused(refusal.status)
        response = problem_response(refusal)
        # The client will not send the body it announced; the connection
        # cannot go on, or the next request's bytes would be read as that
        # body (RFC 9110 section 10.1.1).
        response.force_close()
        return response
    # 1xx answers are HTTP/1.1's: an HTTP/1.0 client sends its body anyway.
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # Not part of the response the access log counts.
        request.writer.output_size = 0
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


@attrs.frozen
class ValidImage:
    """A file that passed validation, as the ``on_image`` hook is given it."""

    #: What validation learnt of it: the ``file_info`` of its success event.
    file_info: ImageFileInfo
    session_id: uuid.UUID
    #: The image's bytes, readable from the start; closed once the hook returns.
    file: BinaryIO
    #: The upload's request, for what the app knows of its client.
    request: web.Request


#: An embedding app's coroutine for each valid image, before its success event.
OnImage = Callable[[ValidImage], Awaitable[None]]


@attrs.frozen
class _Upload:
    """One upload in flight: its request, its stream and what it shares."""

    request: web.Request
    out: _EventWriter
    runtime: Runtime
    session_id: uuid.UUID
    started: float
    stall: _StallWatch
    connection: _ConnectionWatch

    def log(self, what: str, *, level: int = logging.INFO, **fields: object) -> None:
        """One ``key=value`` log line naming the upload's session."""
        if not logger.isEnabledFor(level):
            return
        shown = " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items())
        logger.log(
            level,
            "%s session_id=%s %s",
            what,
            self.session_id,
            shown,
            extra={"session_id": str(self.session_id), "event": what, **fields},
        )


def _logfmt(value: object) -> str:
    text = str(value)
    return (
        orjson.dumps(text).decode() if not text or " " in text or '"' in text else text
    )


async def _stream_upload(
    request: web.Request, runtime: Runtime, total_files: int | None
) -> web.StreamResponse:
    response = web.StreamResponse(headers=SSE_HEADERS)
    if request.version < (1, 1):
        # No chunked encoding: the stream ends where the connection does.
        # aiohttp (3.14) would keep a keep-alive client's open, and the
        # client, told nothing of keeping it, would wait on it.
        response.force_close()
    upload = _Upload(
        request=request,
        out=_EventWriter(
            request,
            response,
            write_timeout=runtime.config.write_timeout,
            keepalive_interval=runtime.config.keepalive_interval,
        ),
        runtime=runtime,
        session_id=uuid.uuid4(),
        started=time.monotonic(),
        stall=_StallWatch(runtime.config.read_timeout),
        connection=_ConnectionWatch(request),
    )
    outcome = "ClientDisconnected"
    counted_in_flight = False  # by runtime.metrics.upload_started()
    try:
        # In the try: a client that sent its upload and closed at once is
        # gone before the response can start.
        await response.prepare(request)
        # Out before the first part is read, even if the body is already
        # all here and would be read without a pause.  Written directly:
        # nothing else writes yet, and the writer task would take one more
        # turn of the loop (26 us of the first event's 0.6 ms).
        await response.write(
            encode(UploadStarted(total_files=total_files, session_id=upload.session_id))
        )
        async with upload.out:
            runtime.metrics.upload_started(
                first_event_seconds=time.monotonic() - upload.started
            )
            counted_in_flight = True
            upload.log("upload started", client=request.remote, total_files=total_files)
            # Uploads that arrive together write their first events before
            # any of them reads its body: with 100 at once, the first events
            # came a quarter sooner and the results 4% sooner (docs/performance.md).
            await asyncio.sleep(0)
            ending = await _run_upload(upload)
            await upload.out.send(*ending)
            await upload.out.end()
        outcome = (
            ending[-1].error_type.value
            if isinstance(ending[-1], ProcessingError)
            else "complete"
        )
    except ConnectionResetError as gone:
        upload.log(
            "upload ended", error_type=outcome, reason=upload.out.failure or gone
        )
        # A client that stopped reading still holds the socket: let it go
        # rather than wait on a buffer it will never drain.
        if request.transport is not None:
            request.transport.abort()
    except asyncio.CancelledError:
        # An app run with handler_cancellation=True cancels the handler when
        # its client goes; the cleanup is the same, done by the unwinding.
        if _client_gone(request):
            upload.log(
                "upload ended",
                error_type=outcome,
                reason=upload.out.failure or "the connection closed",
            )
        raise
    finally:
        runtime.metrics.upload_ended(
            outcome,
            received_bytes=request.content.total_bytes,
            started=counted_in_flight,
        )
    return response


def _end_now(deadline: asyncio.Timeout) -> None:
    """Bring an upload's *deadline* forward to now."""
    # One that has passed, perhaps in this same turn of the event loop, is
    # ending its upload already and cannot be moved.
    if not deadline.expired():
        deadline.reschedule(asyncio.get_running_loop().time())


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def _run_upload(upload: _Upload) -> list[Event]:
    """Receive and validate every file; return the events that end the stream."""
    runtime = upload.runtime
    config = runtime.config
    try:
        async with asyncio.timeout(config.upload_timeout) as deadline:
            runtime.deadlines.add(deadline)
            # A stalled client ends the upload as its deadline would, now.
            upload.stall.watch(lambda: _end_now(deadline))
            try:
                tally = await _receive_files(upload)
            finally:
                runtime.deadlines.discard(deadline)
                upload.stall.stop()
    except TimeoutError:
        # The deadline ends the upload at its time, or sooner when a stopping
        # server or a stalled client brings it forward.
        if runtime.stopping:
            failure = UploadFailed(ErrorType.INTERNAL, "server shutting down")
        elif upload.stall.stalled:
            failure = UploadFailed(
                ErrorType.SYSTEM_TIMEOUT,
                f"the client sent nothing for {config.read_timeout:g} s",
            )
        else:
            failure = UploadFailed(
                ErrorType.SYSTEM_TIMEOUT,
                f"the upload took longer than {config.upload_timeout:g} s",
            )
    except UploadFailed as failed:
        failure = failed
    except ConnectionResetError:
        raise
    except Exception:
        logger.exception("upload failed on a bug session_id=%s", upload.session_id)
        failure = UploadFailed(ErrorType.INTERNAL, "internal server error")
    else:
        duration_ms = round((time.monotonic() - upload.started) * 1000)
        upload.log(
            "upload complete",
            files=tally.processed,
            valid=tally.valid,
            duration_ms=duration_ms,
        )
        return [
            AllImagesValidated(
                total_processed=tally.processed,
                successful_count=tally.valid,
                failed_count=tally.invalid,
            ),
            ProcessingComplete(
                session_id=upload.session_id,
                total_files=tally.processed,
                successful_files=tally.valid,
                duration_ms=duration_ms,
            ),
        ]
    upload.log(
        "upload failed",
        # A disk that failed a temporary file is the operator's to mend.
        level=logging.ERROR if isinstance(failure, _DiskFailed) else logging.INFO,
        error_type=failure.error_type.value,
        reason=failure.message,
    )
    return [
        ProcessingError(
            session_id=upload.session_id,
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
    """A file whose result is still to be written, in file order.

    It owns the file's bytes until :meth:`release`: the decode only reads
    them, and the ``on_image`` hook gets them after it.
    """

    file_index: int
    file_name: str | None
    size: int
    source: bytes | BinaryIO | None
    #: The memory budget the bytes hold, if they are large and in memory.
    held: _Reservation
    outcome: asyncio.Future[ImageFileInfo | InvalidImage]
    #: When the file's last byte arrived (monotonic seconds).
    arrived: float = attrs.field(factory=time.monotonic)

    def release(self) -> None:
        """Stop the decode if it has not started, and let go of the bytes."""
        self.outcome.cancel()
        self.held.give_back()
        if isinstance(self.source, io.IOBase):
            self.source.close()


class _Backlog(asyncio.Queue["_Pending | None"]):
    """The files of one upload between their arrival and their result.

    Full at twice as many files as there are decoding threads, which keeps a
    fast client from queueing more decodes than the threads can run (it then
    waits, and TCP slows it down), unless the files in it hold less than
    :data:`READ_AHEAD_BYTES` in all; and full at :data:`READ_AHEAD_FILES`
    whatever their size.  Once full, it stays full until half of that has
    had its results.
    """

    def __init__(self, *, threads: int) -> None:
        super().__init__()
        self._files = 2 * threads
        self._bytes = 0
        self._draining = False

    def full(self) -> bool:
        # Let in again as soon as one file was done, the upload read the body
        # and wrote its events a file at a time; reading on only once half
        # are done, it writes them in 40% fewer sends (20 KB images: 3.6%
        # less CPU a file, 5.4% more files/s).
        share = 2 if self._draining else 1
        files = self.qsize()
        self._draining = files >= READ_AHEAD_FILES // share or (
            files >= self._files // share and self._bytes >= READ_AHEAD_BYTES // share
        )
        return self._draining

    def _put(self, file: _Pending | None) -> None:
        super()._put(file)
        self._bytes += _held_bytes(file)

    def _get(self) -> _Pending | None:
        file = super()._get()
        self._bytes -= _held_bytes(file)
        return file


def _held_bytes(file: _Pending | None) -> int:
    return 0 if file is None or file.source is None else file.size


async def _receive_files(upload: _Upload) -> _Tally:
    pending = _Backlog(threads=upload.runtime.config.validation_threads)
    tally = _Tally()
    upload.connection.start()
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_write_results(upload, pending, tally))
            await _read_files(upload, pending)
            await pending.put(None)
    except BaseExceptionGroup as group:
        raise _first_cause(group) from None
    finally:
        upload.connection.stop()
        while not pending.empty():
            if (left := pending.get_nowait()) is not None:
                left.release()
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


async def _read_files(upload: _Upload, pending: asyncio.Queue[_Pending | None]) -> None:
    config = upload.runtime.config
    body = _Body(upload.request, config, upload.stall)
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
            memory=upload.runtime.memory,
        )
        try:
            await body.read(part, received)
            source = await received.finish()
        finally:
            received.close()
        # Decoding starts first; the pending file owns the bytes from here
        # on, so whatever fails next only has to release it.
        file = _Pending(
            file_index=file_index,
            file_name=head.file_name,
            size=received.size,
            source=source,
            held=received.held,
            outcome=_validate_later(
                upload.runtime,
                source,
                detected=received.detected,
                rejected=received.rejected,
                file_index=file_index,
                file_name=head.file_name,
                size=received.size,
            ),
        )
        try:
            await upload.out.send(
                ImageReceived(
                    file_index=file_index,
                    file_name=head.file_name,
                    size_bytes=received.size,
                ),
                ImageValidationStart(file_index=file_index, file_name=head.file_name),
            )
            await pending.put(file)
        except BaseException:
            file.release()
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
    detected: validation.DetectedFormat | None,
    rejected: InvalidImage | None,
    file_index: int,
    file_name: str | None,
    size: int,
) -> asyncio.Future[ImageFileInfo | InvalidImage]:
    """Start validating one file; its outcome is a future.

    The checks run in the contract's order: size and position first, then
    the magic bytes (already looked at as the file arrived), then the decode
    in a decoding thread.
    """
    config = runtime.config
    try:
        validation.check_arrival(
            file_index=file_index,
            size=size,
            max_file_size=config.max_file_size,
            max_files=config.max_files,
        )
    except InvalidImage as invalid:
        rejected = invalid
    if rejected is not None:
        done: asyncio.Future[ImageFileInfo | InvalidImage]
        done = asyncio.get_running_loop().create_future()
        done.set_result(rejected)
        return done
    assert source is not None, "a file that passed its checks was kept"
    return runtime.decoders.submit(
        _validate_quietly,
        source,
        detected=detected,
        file_index=file_index,
        file_name=file_name,
        size=size,
        allowed=config.allowed_formats,
        max_pixels=config.max_pixels,
    )


def _validate_quietly(
    source: bytes | BinaryIO, **facts: Any
) -> ImageFileInfo | InvalidImage:
    # An invalid image is an outcome, not a failure: returning it spares a
    # cancelled upload "exception was never retrieved" noise.
    try:
        return validation.validate(source, **facts)
    except InvalidImage as invalid:
        return invalid


@attrs.define
class _Reservation:
    """The part of the memory budget one file's bytes hold until let go."""

    budget: MemoryBudget
    size: int = 0

    def take(self, size: int) -> bool:
        if not self.budget.try_take(size):
            return False
        self.size += size
        return True

    def give_back(self) -> None:
        """Return what is held; safe to call more than once."""
        size, self.size = self.size, 0
        if size:
            self.budget.give_back(size)


class _FileBuffer:
    """One file's bytes as they arrive.

    Files up to :data:`SPOOL_OVER` bytes stay in memory; larger ones too
    while the memory budget shared by all uploads has room for them, and
    otherwise go to an unnamed temporary file, written off the event loop.
    Nothing is kept of a file known to fail: over the size limit, past the
    count limit, or not an accepted image by its first bytes.  Its size is
    counted all the same.

    The bytes come as views into the chunks they arrived in, and a large
    file kept in memory keeps its first and last chunks whole: up to two
    network chunks (512 KiB) more than the budget counts.  A small file is
    joined into bytes of its own, which lets them go.
    """

    def __init__(
        self,
        *,
        keep: bool,
        max_size: int,
        allowed: Collection[str],
        memory: MemoryBudget,
    ) -> None:
        self.size = 0
        #: The image type the first bytes tell, once they did.
        self.detected: validation.DetectedFormat | None = None
        #: Why the first bytes already failed the file, if they did.
        self.rejected: InvalidImage | None = None
        #: The memory budget the bytes in memory hold; passes to the caller
        #: with them in :meth:`finish`.
        self.held = _Reservation(memory)
        self._keep = keep
        self._max_size = max_size
        self._allowed = allowed
        self._head_checked = False
        self._chunks: list[Data] = []
        self._unwritten = 0
        self._file: BinaryIO | None = None
        self._writing: asyncio.Future[int] | None = None
        self._handed_over = False

    async def add(self, chunk: Data) -> None:
        self.size += len(chunk)
        if not self._keep:
            return
        if self.size > self._max_size:
            self._drop()
            return
        self._chunks.append(chunk)
        self._unwritten += len(chunk)
        if not self._head_checked and self._unwritten >= validation.HEAD_SIZE:
            self._check_head()
            if not self._keep:
                return
        if self._unwritten < SPOOL_OVER:
            return
        # Past the first MiB a file counts against the budget as a whole.
        if self._file is None and self.held.take(self._unwritten - self.held.size):
            return
        await self._spill()

    async def finish(self) -> bytes | BinaryIO | None:
        """The kept bytes, or ``None``; they and :attr:`held` pass to the caller."""
        if self._keep and not self._head_checked:
            self._check_head()
        if not self._keep:
            return None
        self._handed_over = True
        if self._file is None:
            chunks, self._chunks = self._chunks, []
            # A large file is read where its chunks lie: joining them would
            # copy it once more, into fresh memory.
            return open_chunks(chunks) if self.held.size else b"".join(chunks)
        await self._spill()
        assert self._writing is not None
        await _on_disk(self._writing)
        file, self._file = self._file, None
        return file

    def close(self) -> None:
        """Let go of whatever is still held; safe to call at any time."""
        self._chunks = []
        if not self._handed_over:
            self.held.give_back()
        file, self._file = self._file, None
        if file is None:
            return
        if self._writing is not None and not self._writing.done():
            self._writing.add_done_callback(lambda _: file.close())
        else:
            file.close()

    def _check_head(self) -> None:
        self._head_checked = True
        # The first HEAD_SIZE bytes, from as many chunks as they arrived in:
        # a slow client's chunks can be a byte each.
        pieces, wanted = [], validation.HEAD_SIZE
        for chunk in self._chunks:
            pieces.append(chunk[:wanted])
            wanted -= len(pieces[-1])
            if wanted <= 0:
                break
        head = b"".join(pieces)
        try:
            self.detected = validation.detect_format(head, allowed=self._allowed)
        except InvalidImage as invalid:
            self.rejected = invalid
            self._drop()

    def _drop(self) -> None:
        self._keep = False
        self.close()

    async def _spill(self) -> None:
        loop = asyncio.get_running_loop()
        if self._writing is not None:
            await _on_disk(self._writing)  # one write at a time keeps them in order
        if self._file is None:
            # Not shielded to close a file made after a cancellation: that
            # cost 100 uploads of 8 MB at once 15 to 20 MB more peak RSS, and
            # the dropped file is closed as soon as its future is let go.
            self._file = await _on_disk(loop.run_in_executor(None, _new_spool_file))
            self.held.give_back()  # what it held goes to the file now
        data = b"".join(self._chunks)
        self._chunks = []
        self._unwritten = 0
        self._writing = loop.run_in_executor(None, self._file.write, data)


class _DiskFailed(UploadFailed):
    """A temporary file could not be made or written: the server's failure."""


async def _on_disk(io: Awaitable[_T]) -> _T:
    """Await a temporary file's making or writing: a disk that fails it (a
    full one, say) is the server's failure, not the client's nor a bug."""
    try:
        return await io
    except OSError as failed:
        raise _DiskFailed(
            ErrorType.INTERNAL,
            f"the server could not store the file: {describe(failed)}",
        ) from failed


def _new_spool_file() -> BinaryIO:
    # Unnamed (O_TMPFILE where the system has it): gone when closed, and
    # gone even if the process dies first.
    return tempfile.TemporaryFile(prefix="ocr_sse-")


async def _write_results(
    upload: _Upload, pending: asyncio.Queue[_Pending | None], tally: _Tally
) -> None:
    while (file := await pending.get()) is not None:
        try:
            await upload.connection.wait(file.outcome)
            outcome = file.outcome.result()
            if upload.runtime.on_image is not None and not isinstance(
                outcome, InvalidImage
            ):
                outcome = await _hand_over(upload, file, outcome)
        finally:
            file.release()
        event: Event
        if isinstance(outcome, InvalidImage):
            tally.invalid += 1
            result = type(outcome.code).__name__
            event = ImageValidationError(
                file_index=file.file_index,
                file_name=file.file_name,
                error_message=outcome.message,
                error_code=outcome.code,
            )
        else:
            tally.valid += 1
            result = "valid"
            event = ImageValidationSuccess(
                file_index=file.file_index, file_info=outcome
            )
        await upload.out.send(event)
        seconds = time.monotonic() - file.arrived
        upload.runtime.metrics.file_validated(result, seconds=seconds)
        # A line per file is for debugging: at INFO, it cost 16% of the
        # throughput on small files (scripts/bench.py).
        upload.log(
            "file validated",
            level=logging.DEBUG,
            file_index=file.file_index,
            result=result,
            ms=round(seconds * 1000, 1),
        )


async def _hand_over(
    upload: _Upload, file: _Pending, info: ImageFileInfo
) -> ImageFileInfo | InvalidImage:
    """Give a valid image to the app's ``on_image`` hook; a failure fails the file."""
    assert upload.runtime.on_image is not None and file.source is not None
    readable = (
        io.BytesIO(file.source) if isinstance(file.source, bytes) else file.source
    )
    readable.seek(0)
    hook = asyncio.ensure_future(
        upload.runtime.on_image(
            ValidImage(
                file_info=info,
                session_id=upload.session_id,
                file=readable,
                request=upload.request,
            )
        )
    )
    try:
        await upload.connection.wait(hook)
    finally:
        hook.cancel()  # a client that left takes its hook with it
    try:
        hook.result()
    # A hook that ended cancelled, by something it awaited, failed too.
    except (Exception, asyncio.CancelledError) as failure:
        logger.error(
            "on_image failed session_id=%s file_index=%d",
            upload.session_id,
            file.file_index,
            exc_info=failure,
        )
        # The contract has no error code for a file the app refused; the
        # message says what happened.
        return InvalidImage(
            CorruptedFile(), f"the image could not be processed: {describe(failure)}"
        )
    return info


class _ConnectionWatch:
    """Notices a client that leaves while its upload waits on a decode or a hook.

    A read or a write notices a closed transport by failing; waiting on a
    decode or a hook does neither, and aiohttp has no callback for the
    moment a connection closes.  So one timer an upload looks at the
    transport a few times a second, and once it is closed cancels what is
    awaited.  A timeout around each wait instead (``asyncio.wait``) cost
    8 us more a wait.
    """

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._awaited: asyncio.Future[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._gone = False

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(
            CONNECTION_CHECK_INTERVAL, self._look
        )

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def wait(self, awaited: asyncio.Future[Any]) -> None:
        """Wait until *awaited* is done, unless the client leaves first.

        A client that left is a ``ConnectionResetError``, and cancels
        *awaited*; what *awaited* itself raised is for its caller to read.
        """
        if not awaited.done():
            self._awaited = awaited
            try:
                await awaited
            except asyncio.CancelledError:
                task = asyncio.current_task()
                # Only this task's own cancellation goes on from here: *awaited*
                # cancelled by _look, or on its own, is read as a failure is.
                if task is not None and task.cancelling():
                    raise
            except Exception:
                pass  # *awaited* failed: its caller reads how from it
            finally:
                self._awaited = None
        # Looked at once more: the outcome is for nobody if the client left
        # meanwhile.
        if self._gone or _client_gone(self._request):
            raise ConnectionResetError("the client left while its files were validated")

    def _look(self) -> None:
        if not _client_gone(self._request):
            self.start()
            return
        self._gone = True
        if self._awaited is not None:
            self._awaited.cancel()


class _StallWatch:
    """Notices a wait on the client that has lasted *timeout* seconds.

    One timer a stream rather than one a read or a write: a read or a write
    only notes when it began to wait, and the timer, when it finds a wait
    too long, calls the watcher's *on_stall* once.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: When the read or write under way began to wait, if one is.
        self.waiting_since: float | None = None
        self.stalled = False
        self._on_stall: Callable[[], object] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, on_stall: Callable[[], object]) -> None:
        self._on_stall = on_stall
        self._look_at(asyncio.get_running_loop().time() + self.timeout)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _look_at(self, when: float) -> None:
        self._timer = asyncio.get_running_loop().call_at(when, self._look)

    def _look(self) -> None:
        now = asyncio.get_running_loop().time()
        since = self.waiting_since
        if since is not None and now - since >= self.timeout:
            assert self._on_stall is not None
            self.stalled = True
            self._on_stall()
        else:
            self._look_at((now if since is None else since) + self.timeout)


class _Body:
    """The request body as multipart parts, read under the upload's limits."""

    def __init__(
        self, request: web.Request, config: Config, stall: _StallWatch
    ) -> None:
        self._request = request
        self._config = config
        self._stall = stall

    async def parts(self) -> AsyncIterator[_PartReader]:
        content = self._request.content
        if content.at_eof() and content.total_bytes:
            raise UploadFailed(
                ErrorType.INTERNAL,
                "the request body was read before the endpoint, by a middleware"
                " or another handler",
            )
        stream = _BodyStream(
            content,
            stall=self._stall,
            size_limit=self._config.request_size_limit,
        )
        reader = _UploadReader(self._request.headers, cast(StreamReader, stream))
        # One read more than max_parts: the last one must find the body's end.
        for count in range(self._config.max_parts + 1):
            try:
                part = await reader.next()
            except _MALFORMED as exc:
                raise _malformed(exc) from None
            if part is None:
                return
            if count == self._config.max_parts:
                break
            if not isinstance(part, _PartReader):
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
        part: _PartReader,
        into: _FileBuffer | None = None,
        *,
        limit: int | None = None,
    ) -> None:
        """Read *part* to its end, into *into*, or into nothing up to *limit*."""
        size = 0
        while not part.at_eof():
            try:
                data = await part.read_data()
            except _MALFORMED as exc:
                raise _malformed(exc) from None
            if into is not None:
                for piece in data:
                    await into.add(piece)
                continue
            size += sum(map(len, data))
            if limit is not None and size > limit:
                raise UploadFailed(
                    ErrorType.MULTIPART_PARSING,
                    f"a form field is over the limit of {limit} bytes",
                )


def _malformed(exc: BaseException) -> UploadFailed:
    return UploadFailed(
        ErrorType.MULTIPART_PARSING, f"malformed multipart body: {describe(exc)}"
    )


class _BodyStream:
    """The request body, read where it lies, for the multipart reader.

    aiohttp's ``StreamReader`` gives out the body in the chunks the network
    delivered.  A part rarely ends where a chunk does, and handing back what
    follows its end (``unread_data``) copies the rest of the chunk, then
    copies it again when it is read once more: for small parts, many times
    over for each chunk.  Here a chunk stays as it arrived and a position
    moves through it: a part's data goes out as the chunk or views of it,
    and only the lines of part headers are cut out of it.

    Its reads are the only waits for the client to send: each wait for a
    chunk is noted for the upload's *stall* watch, and a body past
    *size_limit* bytes fails the upload.
    """

    #: aiohttp's own bound on a line read with no limit given (its high
    #: water mark): the preamble, the boundary lines, the epilogue.
    MAX_LINE = 2 * 2**16

    def __init__(
        self, content: StreamReader, *, stall: _StallWatch, size_limit: int
    ) -> None:
        self._content = content
        self._stall = stall
        self._size_limit = size_limit
        self._loop = asyncio.get_running_loop()
        self._chunk = b""
        self._at = 0

    async def _more(self) -> bool:
        """Make sure some bytes are unread; ``False`` once the body ends."""
        while self._at >= len(self._chunk):
            # Asked, not inferred from readchunk(): the reader of an empty
            # body is shared, and answers (b"", True) from its second call.
            if self._content.at_eof():
                return False
            self._chunk = await self._receive()
            self._at = 0
        return True

    async def _receive(self) -> bytes:
        # The one place an upload waits for its client to send, so the one
        # place that tells the stall watch, and that looks at the size of the
        # body: once a network chunk rather than once a read.
        self._stall.waiting_since = self._loop.time()
        try:
            chunk, _ = await self._content.readchunk()
        except web.RequestPayloadError as bad:
            # What aiohttp fails a body with that it cannot decode, such as
            # one not in its Content-Encoding: the client's fault, told by the
            # error it wraps (its own text is only "400, message:").
            raise _malformed(bad.__cause__ or bad) from None
        except ConnectionResetError:
            raise
        except OSError as lost:
            # aiohttp fails the body with whatever ended the connection: a
            # reset, but also a broken pipe (a write found the client gone
            # first) or a socket timeout.  Each is a client gone.
            raise ConnectionResetError(*lost.args) from lost
        finally:
            self._stall.waiting_since = None
        if self._content.total_bytes > self._size_limit:
            raise UploadFailed(
                ErrorType.MULTIPART_PARSING,
                f"the body is over the limit of {self._size_limit} bytes",
            )
        return chunk

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        """The next line, up to and with its LF; what is left at the end."""
        limit = max_line_length or self.MAX_LINE
        chunk, at = self._chunk, self._at
        lf = chunk.find(b"\n", at)
        if 0 <= lf < at + limit:  # all of it here, as nearly always
            self._at = lf + 1
            return chunk[at : lf + 1]
        pieces: list[bytes] = []
        size = 0
        while await self._more():
            chunk, at = self._chunk, self._at
            lf = chunk.find(b"\n", at)
            end = len(chunk) if lf < 0 else lf + 1
            pieces.append(chunk[at:end])
            size += end - at
            self._at = end
            if size > limit:
                raise ValueError(f"a line is longer than {limit} bytes")
            if lf >= 0:
                break
        return b"".join(pieces)

    async def read_part(self, scanner: DelimiterScanner) -> tuple[list[Data], bool]:
        """The next data of the part *scanner* looks for its end in, and
        whether it ended; after the end, the boundary line is read next."""
        if not await self._more():
            raise ValueError("the body ends inside a part")
        data, end = scanner.feed(self._chunk, self._at)
        if end is None:
            self._at = len(self._chunk)
            return data, False
        # The multipart reader reads the boundary line from its dashes on,
        # which are the delimiter's last bytes, in this chunk or (rarely)
        # in one before it.
        dash_boundary = scanner.dash_boundary
        if self._chunk[end - len(dash_boundary) : end] == dash_boundary:
            self._at = end - len(dash_boundary)
        else:
            self._chunk, self._at = dash_boundary + self._chunk[end:], 0
        return data, True


class _PartReader(BodyPartReader):
    """aiohttp's part reader, handing on each chunk as it arrives.

    The stock reader returns data only once it holds a chunk of look-ahead
    past it, so a part is not finished until bytes arrive after its
    delimiter, and it copies every byte twice on the way.  This one finds
    the delimiter with :class:`~ocr_sse.parts.DelimiterScanner` and gives
    back each chunk as the network delivered it (256 KiB at most), or views
    of it, whatever *size* asks for.
    """

    _content: _BodyStream  # type: ignore[assignment]
    _scanner: DelimiterScanner | None = None

    async def read_data(self) -> list[Data]:
        """The part's next pieces of data, as they arrived; none at its end."""
        if self._at_eof:
            return []
        if self._scanner is None:
            self._scanner = DelimiterScanner(self._boundary)
        while True:
            data, self._at_eof = await self._content.read_part(self._scanner)
            if data or self._at_eof:
                return data

    async def read_chunk(self, size: int = BodyPartReader.chunk_size) -> bytes:
        return b"".join(await self.read_data())


class _UploadReader(MultipartReader):
    """aiohttp's multipart reader for part headers, with :class:`_PartReader`."""

    part_reader_cls = _PartReader

    async def next(self) -> MultipartReader | BodyPartReader | None:
        # aiohttp's next() parses every part's Content-Disposition once more,
        # looking for a _charset_ field (RFC 7578 section 4.6) that matters
        # only for decoding text fields, which this endpoint never does.
        if self._at_eof:
            return None
        await self._maybe_release_last_part()
        if self._at_bof:
            await self._read_until_first_boundary()
            self._at_bof = False
        else:
            await self._read_boundary()
        if self._at_eof:
            return None
        self._last_part = await self.fetch_next_part()
        return self._last_part

    async def _read_boundary(self) -> None:
        # After the closing boundary aiohttp reads two lines more, for the
        # parent multipart of a nested one; a body has none, and RFC 2046
        # says to ignore its epilogue.  A long line there failed uploads that
        # were complete.
        line = (await self._readline()).rstrip()
        if line == self._boundary + b"--":
            self._at_eof = True
        elif line != self._boundary:
            raise ValueError(f"Invalid boundary {line!r}, expected {self._boundary!r}")

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
    """The stream's writer after its first event: a task that writes what is queued.

    :meth:`send` queues frames; the task writes everything queued by then
    in one go, so a burst of events costs one write, not one each.  It fills
    silences with a comment, and drops a client that stops reading: aiohttp
    waits for the socket only every 64 KiB, and that wait has no end of its
    own, so a client that stopped reading would hold the upload forever.
    Both are timers that look at the stream only when a silence or a write
    would have lasted too long: a timeout around every wait and every write
    cost 3% of the throughput, on large parts as on small ones.
    """

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        *,
        write_timeout: float,
        keepalive_interval: float,
    ) -> None:
        self._request = request
        self._response = response
        self._keepalive_interval = keepalive_interval
        self._frames: list[bytes] = []
        self._queued = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        #: Why the stream cannot be written any more, once it cannot.
        self.failure: ConnectionError | None = None
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._writes = _StallWatch(write_timeout)
        self._keepalive: asyncio.TimerHandle | None = None
        #: When the last write ended.
        self._last_write = self._loop.time()

    async def __aenter__(self) -> _EventWriter:
        self._task = asyncio.create_task(self._write_all())
        self._writes.watch(self._stopped_reading)
        self._keep_alive_at(self._last_write + self._keepalive_interval)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None and self._keepalive is not None
        self._keepalive.cancel()
        self._writes.stop()
        self._task.cancel()
        await asyncio.wait([self._task])

    async def send(self, *events: Event) -> None:
        """Queue *events*; wait while too much is queued for a slow client."""
        self._raise_failure()
        self._queue(*(encode(event) for event in events))
        if len(self._frames) > MAX_QUEUED_FRAMES:
            await self.flush()

    async def flush(self) -> None:
        """Wait until everything sent so far is written."""
        await self._idle.wait()
        self._raise_failure()

    async def end(self) -> None:
        """Write everything sent so far, then the end of the stream.

        The end is watched as every write is: aiohttp's ``write_eof()`` waits
        for the socket to drain, and a client that stopped reading just
        before it would hold the upload there forever.
        """
        await self.flush()
        self._writes.waiting_since = self._loop.time()
        try:
            await self._response.write_eof()
        except ConnectionError as exc:
            self._fail(exc)
        finally:
            self._writes.waiting_since = None
        self._raise_failure()

    def _queue(self, *frames: bytes) -> None:
        self._frames.extend(frames)
        self._idle.clear()
        self._queued.set()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise ConnectionResetError(*self.failure.args)

    async def _write_all(self) -> None:
        try:
            while True:
                await self._queued.wait()
                self._queued.clear()
                data = b"".join(self._frames)
                self._frames.clear()
                self._writes.waiting_since = self._loop.time()
                await self._response.write(data)
                self._writes.waiting_since = None
                self._last_write = self._loop.time()
                if not self._frames:
                    self._idle.set()
        except ConnectionError as exc:
            # A connection reset, or aiohttp's "Connection lost" when it
            # closes while a write waits for the socket to drain.
            self._fail(exc)

    def _fail(self, failure: ConnectionError) -> None:
        if self.failure is None:
            self.failure = failure
        self._idle.set()
        # The upload may be waiting on the body: closing the connection
        # ends that wait at once.
        if self._request.transport is not None:
            self._request.transport.abort()

    def _stopped_reading(self) -> None:
        self._fail(ConnectionResetError("the client stopped reading the event stream"))
        assert self._task is not None
        self._task.cancel()

    def _keep_alive_at(self, when: float) -> None:
        self._keepalive = self._loop.call_at(when, self._keep_alive)

    def _keep_alive(self) -> None:
        if self.failure is not None:
            return  # nothing more will be written
        now = self._loop.time()
        if self._writes.waiting_since is not None:  # a write under way
            self._keep_alive_at(now + self._keepalive_interval)
        elif now >= self._last_write + self._keepalive_interval:
            self._queue(sse.comment())
            self._keep_alive_at(now + self._keepalive_interval)
        else:
            self._keep_alive_at(self._last_write + self._keepalive_interval)
