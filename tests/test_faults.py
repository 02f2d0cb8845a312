"""Faults: clients that leave, stall or flood; each is survived, nothing leaks."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import attrs
import orjson
import pytest
from aiohttp import web

import ocr_sse
from ocr_sse import Config, validation
from ocr_sse.handler import RUNTIME, Runtime
from ocr_sse.metrics import Metrics, PrometheusMetrics

from . import images
from .test_endpoint import ONE_FILE
from .wire import CONTENT_TYPE, multipart, read_events, types

Start = Callable[..., Awaitable[tuple["Server", Runtime]]]
Post = Callable[..., Awaitable[tuple[int, Any, bytes]]]

#: A JPEG of noise, slow enough to decode that a client can leave meanwhile.
SLOW_JPEG = images.noise_jpeg(width=2500, height=2500)

#: An upload whose events fill any socket buffer: long file names make every
#: event large, and 400 files make enough of them.
EVENTS_TO_FILL_ANY_BUFFER = multipart(
    [("images", f"{'n' * 250}{n}", b"x") for n in range(400)]
)


@attrs.frozen
class Server:
    app: web.Application
    port: int


@pytest.fixture(params=[False, True], ids=["run_app-default", "handler_cancellation"])
async def start(request: pytest.FixtureRequest) -> AsyncIterator[Start]:
    """Start real servers on loopback, as ``web.run_app`` does by default and
    as apps that cancel handlers on disconnect do; stop them afterwards."""
    runners = []

    async def run(
        *,
        on_prepare: Any = None,
        on_image: Any = None,
        metrics: Metrics | None = None,
        **settings: Any,
    ) -> tuple[Server, Runtime]:
        app = ocr_sse.setup(
            web.Application(),
            config=Config(**settings),
            on_image=on_image,
            metrics=metrics,
        )
        if on_prepare is not None:
            app.on_response_prepare.append(on_prepare)
        runner = web.AppRunner(app, handler_cancellation=request.param)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return Server(app=app, port=runner.addresses[0][1]), app[RUNTIME]

    yield run
    for runner in runners:
        await runner.cleanup()


class RawUpload:
    """An upload over a bare socket, to stop at any byte and vanish."""

    def __init__(self, port: int, body: bytes) -> None:
        self.port = port
        self.body = body
        self.received = b""

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            f"POST /api/ocr HTTP/1.1\r\nHost: test\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n".encode()
        )

    async def send(self, end: int, start: int = 0) -> None:
        self.writer.write(self.body[start:end])
        await self.writer.drain()

    async def wait_for(self, text: bytes) -> None:
        async with asyncio.timeout(10):
            while text not in self.received:
                chunk = await self.reader.read(65536)
                assert chunk, self.received
                self.received += chunk

    def vanish(self) -> None:
        """Reset the connection, as a killed client or a dropped network would."""
        self.writer.transport.abort()
        self.writer.close()


def open_files() -> int:
    """Open descriptors of this process: sockets and the unnamed spool files."""
    return len(os.listdir("/proc/self/fd"))


async def settled(
    runtime: Runtime, baseline_tasks: int, baseline_files: int | None = None
) -> None:
    """Wait until every upload has let go of its slot, tasks, decodes, memory
    and temporary files (each spooled file holds a descriptor until closed)."""
    decoders = runtime.decoders
    async with asyncio.timeout(10):
        while (
            runtime.slots.in_use
            or runtime.memory.in_use
            or len(asyncio.all_tasks()) > baseline_tasks
            or decoders.queued
            or (baseline_files is not None and open_files() > baseline_files)
        ):
            await asyncio.sleep(0.02)


def disconnects(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if "ClientDisconnected" in r.getMessage()
    ]


async def first_disconnect(caplog: pytest.LogCaptureFixture, *, within: float) -> str:
    """Wait *within* seconds for an upload's disconnect line; return it."""
    async with asyncio.timeout(within):
        while not disconnects(caplog):
            await asyncio.sleep(0.01)
    return disconnects(caplog)[0]


async def left_while_validating(
    caplog: pytest.LogCaptureFixture, *, within: float
) -> None:
    """Wait *within* seconds for the upload's disconnect line: it left while
    its files were validated, noticed by the upload itself or by aiohttp
    cancelling it."""
    assert (await first_disconnect(caplog, within=within)).endswith(
        (
            'error_type=ClientDisconnected reason="the client left while its files'
            ' were validated"',
            'error_type=ClientDisconnected reason="the connection closed"',
        )
    )


async def dropped_for_not_reading(
    caplog: pytest.LogCaptureFixture, runtime: Runtime
) -> None:
    """Wait for the upload's disconnect line: the write timeout dropped a
    client that stopped reading; then for the upload to let go of all it
    held."""
    assert (await first_disconnect(caplog, within=10)).endswith(
        'error_type=ClientDisconnected reason="the client stopped reading the event'
        ' stream"'
    )
    await settled(runtime, len(asyncio.all_tasks()))


@pytest.mark.parametrize(
    "memory_budget", [0, 64 * 1024 * 1024], ids=["spooled", "in-memory"]
)
async def test_a_burst_of_vanishing_clients_leaves_nothing_behind(
    start: Start, caplog: pytest.LogCaptureFixture, memory_budget: int
) -> None:
    """Clients that vanish before the first part, mid-part, between parts and
    while decoding: each upload stops, logs ClientDisconnected, and frees its
    slot, its tasks, its queued decodes, its memory and its temporary files,
    whether its large file went to a temporary file or stayed in memory."""
    caplog.set_level(logging.INFO, logger="ocr_sse")
    assert len(SLOW_JPEG) > 1024 * 1024
    server, runtime = await start(
        max_file_size=20_000_000, validation_threads=1, memory_budget=memory_budget
    )
    two_files = multipart(
        [("images", "a.png", images.png()), ("images", "b.jpg", SLOW_JPEG)]
    )
    first_part_end = two_files.index(b"--testboundary1234", 10) + len(
        b"--testboundary1234\r\n"
    )
    baseline_tasks = len(asyncio.all_tasks())
    baseline_files = open_files()

    async def before_first_part() -> None:
        upload = RawUpload(server.port, two_files)
        await upload.open()
        await upload.wait_for(b"event: upload_started")
        upload.vanish()

    async def mid_part() -> None:
        upload = RawUpload(server.port, two_files)
        await upload.open()
        await upload.send(len(two_files) // 2)
        await upload.wait_for(b"event: image_validation_success")
        upload.vanish()

    async def between_parts() -> None:
        upload = RawUpload(server.port, two_files)
        await upload.open()
        await upload.send(first_part_end)
        await upload.wait_for(b"event: image_validation_success")
        upload.vanish()

    async def while_decoding() -> None:
        upload = RawUpload(server.port, two_files)
        await upload.open()
        await upload.send(len(two_files))
        await upload.wait_for(b'"file_index":1,"file_name":"b.jpg","timestamp"')
        upload.vanish()

    rounds = 3
    for vanish in (before_first_part, mid_part, between_parts, while_decoding):
        await asyncio.gather(*(vanish() for _ in range(rounds)))
    await settled(runtime, baseline_tasks, baseline_files)
    assert len(disconnects(caplog)) == 4 * rounds
    # The server is still fine.
    upload = RawUpload(server.port, multipart([("images", "ok.png", images.png())]))
    await upload.open()
    await upload.send(len(upload.body))
    await upload.wait_for(b"event: processing_complete")
    upload.writer.close()


async def test_a_client_leaving_during_a_decode_is_noticed_before_it_ends(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that leaves once its files have arrived, while they decode:
    the upload stops by the end of the decode under way, without writing a
    result, and the decode queued behind it never runs."""
    caplog.set_level(logging.INFO, logger="ocr_sse")
    server, runtime = await start(max_file_size=20_000_000, validation_threads=1)
    body = multipart([("images", f"{n}.jpg", SLOW_JPEG) for n in range(2)])
    upload = RawUpload(server.port, body)
    await upload.open()
    await upload.send(len(body))
    await upload.wait_for(b'"file_index":1,"file_name":"1.jpg","timestamp"')
    upload.vanish()
    await left_while_validating(caplog, within=10)
    await settled(runtime, len(asyncio.all_tasks()))


async def test_a_decode_queued_when_its_client_leaves_never_runs(
    start: Start, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that leaves while its first file decodes and its second
    waits for the thread: the second is never decoded, so a gone client
    takes no decoding time from the uploads still running."""
    caplog.set_level(logging.INFO, logger="ocr_sse")
    decoded: list[tuple[int, int]] = []
    decoding, go_on = threading.Event(), threading.Event()
    decode = validation.decode

    def held_decode(source: Any, detected: Any, *, max_pixels: int) -> Any:
        decoding.set()
        go_on.wait(10)
        size = decode(source, detected, max_pixels=max_pixels)
        decoded.append(size)
        return size

    monkeypatch.setattr(validation, "decode", held_decode)
    server, runtime = await start(validation_threads=1)
    upload = RawUpload(
        server.port,
        multipart(
            [
                ("images", "0.png", images.png(width=10)),
                ("images", "1.png", images.png(width=11)),
            ]
        ),
    )
    await upload.open()
    await upload.send(len(upload.body))
    await upload.wait_for(b'"file_index":1,"file_name":"1.png","timestamp"')
    async with asyncio.timeout(5):
        while not decoding.is_set():
            await asyncio.sleep(0.01)
    upload.vanish()
    await left_while_validating(caplog, within=5)
    go_on.set()
    # One thread, calls in order: once this one ran, so did all before it.
    await runtime.decoders.submit(lambda: None)
    assert decoded == [(10, 48)]
    await settled(runtime, len(asyncio.all_tasks()))


async def test_a_client_leaving_during_the_hook_cancels_it(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that leaves while its upload waits on the app's hook, with
    nothing left to read or write: the hook is cancelled and the upload
    ends as a disconnect, even though the hook would never return."""
    caplog.set_level(logging.INFO, logger="ocr_sse")
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def on_image(image: ocr_sse.ValidImage) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server, runtime = await start(on_image=on_image)
    upload = RawUpload(server.port, multipart([("images", "a.png", images.png())]))
    await upload.open()
    await upload.send(len(upload.body))
    await asyncio.wait_for(entered.wait(), 5)
    upload.vanish()
    await asyncio.wait_for(cancelled.wait(), 5)
    await left_while_validating(caplog, within=5)
    await settled(runtime, len(asyncio.all_tasks()))


async def small_send_buffer(request: web.Request, response: web.StreamResponse) -> None:
    sock = request.transport.get_extra_info("socket")  # type: ignore[union-attr]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


async def send_without_reading(port: int, body: bytes) -> asyncio.StreamWriter:
    """Send an upload from a socket with a small receive buffer; never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    _, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"POST /api/ocr HTTP/1.1\r\nHost: t\r\nContent-Type: {CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return writer


async def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends its upload but never reads the stream cannot hold
    the handler: once the socket buffers fill, the write times out."""
    caplog.set_level(logging.INFO, logger="ocr_sse")
    server, runtime = await start(
        write_timeout=0.5, max_parts=1000, max_files=1000, on_prepare=small_send_buffer
    )
    writer = await send_without_reading(server.port, EVENTS_TO_FILL_ANY_BUFFER)
    await dropped_for_not_reading(caplog, runtime)
    writer.close()


async def test_a_client_that_stops_reading_at_the_end_is_dropped_too(
    start: Start, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end of the stream is written under the write timeout as well: a
    client that stopped reading just before it cannot hold the upload."""
    caplog.set_level(logging.INFO, logger="ocr_sse")
    transports = []

    async def keep_transport(request: web.Request, _: web.StreamResponse) -> None:
        transports.append(request.transport)

    async def write_eof_to_a_client_that_reads_nothing(*_: Any) -> None:
        # aiohttp's write_eof() waits for the socket to drain; when the
        # client reads nothing, until the connection closes (here, at most
        # until the client gives up, after 5 s).
        for _ in range(500):
            if transports[0].is_closing():
                return
            await asyncio.sleep(0.01)
        raise ConnectionError("Connection lost")

    monkeypatch.setattr(
        web.StreamResponse, "write_eof", write_eof_to_a_client_that_reads_nothing
    )
    server, runtime = await start(write_timeout=0.5, on_prepare=keep_transport)
    writer = await send_without_reading(
        server.port, multipart([("images", "a.png", images.png())])
    )
    await dropped_for_not_reading(caplog, runtime)
    writer.close()


async def test_a_client_that_stops_reading_and_sending_is_dropped_too(
    start: Start, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that stops reading the stream with its body half sent is
    dropped at the write timeout, though the upload waits on the body: the
    connection is closed then, not after read_timeout."""
    caplog.set_level(logging.INFO, logger="ocr_sse")
    transports = []
    write = web.StreamResponse.write

    async def keep_transport(request: web.Request, _: web.StreamResponse) -> None:
        transports.append(request.transport)

    async def write_to_a_client_that_reads_nothing(
        self: web.StreamResponse, data: bytes
    ) -> None:
        if data.startswith(b"event: upload_started"):
            return await write(self, data)
        # What aiohttp's write does once the socket buffers are full: wait
        # for a drain that never comes, until the connection closes.
        for _ in range(1000):
            if transports[0].is_closing():
                raise ConnectionError("Connection lost")
            await asyncio.sleep(0.01)

    monkeypatch.setattr(
        web.StreamResponse, "write", write_to_a_client_that_reads_nothing
    )
    server, runtime = await start(
        write_timeout=0.5, read_timeout=600, on_prepare=keep_transport
    )
    upload = RawUpload(
        server.port,
        multipart(
            [("images", "a.png", images.png()), ("images", "b.png", images.png())]
        ),
    )
    await upload.open()
    await upload.send(len(upload.body) // 2 + 100)
    await dropped_for_not_reading(caplog, runtime)
    async with asyncio.timeout(5):
        upload.received += await upload.reader.read()  # to the end
    assert b"event: upload_started" in upload.received
    assert b"processing_" not in upload.received
    upload.writer.close()


async def test_events_sent_while_a_write_waits_are_written_before_the_end(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client slow to read, so that a write still waits on it when the
    last events are sent: they are written after it, and only then does the
    stream end; none is lost."""
    write = web.StreamResponse.write

    async def write_to_a_slow_reader(self: web.StreamResponse, data: bytes) -> None:
        # Each write waits for the socket to drain, the first ones long
        # enough for the upload to send its last events meanwhile.
        await asyncio.sleep(0.3 if b"event: image_validation_start" in data else 0)
        await write(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", write_to_a_slow_reader)
    server, _ = await start()
    async with server_session(server) as post:
        status, _, raw = await post(multipart([("images", "a.png", images.png())]))
    assert status == 200
    assert types(read_events(raw)) == ONE_FILE


async def test_a_client_that_resets_while_a_write_waits_is_noticed_at_once(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """A reset from a client whose stream is not being read ends the upload
    when it arrives, not a write timeout later."""
    caplog.set_level(logging.INFO, logger="ocr_sse")
    transports = []

    async def keep_transport(
        request: web.Request, response: web.StreamResponse
    ) -> None:
        transports.append(request.transport)
        await small_send_buffer(request, response)

    server, runtime = await start(
        write_timeout=60, max_parts=1000, max_files=1000, on_prepare=keep_transport
    )
    writer = await send_without_reading(server.port, EVENTS_TO_FILL_ANY_BUFFER)
    # Once the socket buffers are full, the stream's next write waits for
    # them to drain, in a moment, and for good.
    async with asyncio.timeout(10):
        while not transports or not transports[0].get_write_buffer_size():
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # with no lingering: a reset
    assert (await first_disconnect(caplog, within=5)).endswith(
        'error_type=ClientDisconnected reason="Connection lost"'
    )
    await settled(runtime, len(asyncio.all_tasks()))


@pytest.mark.parametrize("how", ["close", "half-close"])
async def test_a_client_that_closes_right_after_sending_leaves_no_error(
    start: Start, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """An upload sent whole by a client that closes at once ends as a client
    gone, not as aiohttp's "Error handling request" (a 500), holds nothing,
    and is counted as a disconnect that was never in flight."""
    caplog.set_level(logging.INFO)
    metrics = PrometheusMetrics()
    server, runtime = await start(metrics=metrics)
    body = multipart([("images", "a.png", images.png())])
    # aiohttp's tasks for the connection end only once it is done with the
    # request, and whatever it logs about it is logged by then.
    baseline_tasks = len(asyncio.all_tasks())
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            f"POST /api/ocr HTTP/1.1\r\nHost: t\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        if how == "close":
            sock.close()
        else:
            sock.shutdown(socket.SHUT_WR)
        gone = await first_disconnect(caplog, within=5)
        await settled(runtime, baseline_tasks)
        sock.close()
        assert [r.levelname for r in caplog.records if r.levelno >= logging.ERROR] == []
        # Which of the writes, the body's read or aiohttp's cancellation of
        # the handler says so first varies, and with it the reason.
        assert "error_type=ClientDisconnected reason=" in gone, gone
        caplog.clear()
    assert metrics.registry.get_sample_value("ocr_sse_uploads_in_flight") == 0
    assert metrics.registry.get_sample_value("ocr_sse_client_disconnects_total") == 5


async def test_a_connection_lost_to_a_broken_pipe_is_a_client_gone(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection that ends on a failed write rather than a reset fails the
    body with that error (a broken pipe); the upload still ends as a client
    gone, with no error logged, and holds nothing."""
    caplog.set_level(logging.INFO)
    protocols = []

    async def keep_protocol(request: web.Request, _: web.StreamResponse) -> None:
        protocols.append(request.protocol)

    metrics = PrometheusMetrics()
    server, runtime = await start(metrics=metrics, on_prepare=keep_protocol)
    baseline_tasks = len(asyncio.all_tasks())
    upload = RawUpload(server.port, multipart([("images", "a.png", images.png())]))
    await upload.open()
    await upload.send(100)
    await upload.wait_for(b"event: upload_started")
    # What asyncio tells the protocol when a write to the socket fails
    # with EPIPE.
    protocols[0].connection_lost(BrokenPipeError(errno.EPIPE, "Broken pipe"))
    gone = await first_disconnect(caplog, within=5)
    upload.vanish()
    await settled(runtime, baseline_tasks)
    # Read from the failed body; or, where aiohttp cancels the handler of a
    # connection that closes, said by the handler as it unwinds.
    assert gone.endswith(
        (
            'error_type=ClientDisconnected reason="[Errno 32] Broken pipe"',
            'error_type=ClientDisconnected reason="the connection closed"',
        )
    ), gone
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert metrics.registry.get_sample_value("ocr_sse_client_disconnects_total") == 1


async def test_rate_limit_refuses_with_429_and_retry_after(start: Start) -> None:
    """Past rate_limit uploads a minute, one address is refused with 429."""
    server, _ = await start(rate_limit=2)
    body = multipart([("images", "a.png", images.png())])
    async with server_session(server) as post:
        for _ in range(2):
            status, headers, raw = await post(body)
            assert (
                status == 200 and types(read_events(raw))[-1] == "processing_complete"
            )
        status, headers, raw = await post(body)
    assert status == 429
    assert headers["Retry-After"] == "30"
    assert orjson.loads(raw) == {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "more than 2 uploads a minute from this address",
    }


async def test_the_rate_limit_counts_each_address_apart(start: Start) -> None:
    """One address past its rate_limit does not hold back another: uploads
    from 127.0.0.2 pass while 127.0.0.1 is refused."""
    server, _ = await start(rate_limit=1)
    body = multipart([("images", "a.png", images.png())])
    url = f"http://127.0.0.1:{server.port}/api/ocr"
    statuses = []
    for address in ("127.0.0.1", "127.0.0.2", "127.0.0.1"):
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        async with (
            aiohttp.ClientSession(connector=connector) as client,
            client.post(
                url, data=body, headers={"Content-Type": CONTENT_TYPE}
            ) as response,
        ):
            await response.read()
            statuses.append(response.status)
    assert statuses == [200, 200, 429]


async def test_asking_to_continue_does_not_spend_the_rate_limit(start: Start) -> None:
    """An Expect: 100-continue upload counts once against the rate limit."""
    server, _ = await start(rate_limit=1)
    body = multipart([("images", "a.png", images.png())])
    async with server_session(server) as post:
        status, _, raw = await post(body, Expect="100-continue")
        assert status == 200 and types(read_events(raw))[-1] == "processing_complete"
        status, _, _ = await post(body, Expect="100-continue")
    assert status == 429


@contextlib.asynccontextmanager
async def server_session(server: Server) -> AsyncIterator[Post]:
    """A function posting one upload body to *server*, on one client session."""
    async with aiohttp.ClientSession() as client:

        async def post(body: bytes, **headers: str) -> tuple[int, Any, bytes]:
            async with client.post(
                f"http://127.0.0.1:{server.port}/api/ocr",
                data=body,
                headers={"Content-Type": CONTENT_TYPE, **headers},
            ) as response:
                return response.status, response.headers, await response.read()

        yield post


async def test_a_client_that_half_closes_mid_upload_has_gone(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that stops sending mid-upload with shutdown(SHUT_WR) and
    still reads: aiohttp closes the connection at once, so the upload ends
    as ClientDisconnected and the client reads the end of the connection,
    with no final event, rather than waiting out read_timeout."""
    caplog.set_level(logging.INFO, logger="ocr_sse")
    server, runtime = await start(read_timeout=30)
    baseline_tasks = len(asyncio.all_tasks())
    upload = RawUpload(server.port, multipart([("images", "a.png", images.png())]))
    await upload.open()
    await upload.send(len(upload.body) // 2)
    await upload.wait_for(b"event: upload_started")
    upload.writer.write_eof()
    async with asyncio.timeout(5):
        upload.received += await upload.reader.read()  # to the end
    assert b"processing_" not in upload.received
    await first_disconnect(caplog, within=5)
    await settled(runtime, baseline_tasks)
    upload.writer.close()
