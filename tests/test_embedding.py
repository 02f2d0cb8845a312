"""Embedding: the on_image hook, metrics and log lines an app relies on."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web

import ocr_sse
from ocr_sse import Config
from ocr_sse.handler import RUNTIME
from ocr_sse.metrics import PrometheusMetrics

from . import images
from .test_endpoint import ONE_FILE
from .test_endpoint import post as post_body
from .wire import (
    BOUNDARY,
    CONTENT_TYPE,
    failed_with,
    multipart,
    read_events,
    stalled,
    types,
)

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


async def post(client: Any, body: bytes) -> list[tuple[str, dict[str, Any]]]:
    status, _, raw = await post_body(client, body)
    assert status == 200
    return read_events(raw)


@pytest.mark.parametrize(
    "memory_budget", [0, 64 * 1024 * 1024], ids=["spooled", "in-memory"]
)
async def test_the_hook_gets_each_valid_image_before_its_success(
    aiohttp_client: Any, memory_budget: int
) -> None:
    """on_image sees every valid file, small or large, spooled or kept in
    memory, with its bytes and the stream's session id; invalid files never
    reach it."""
    seen: list[tuple[int, str, bytes]] = []

    async def on_image(image: ocr_sse.ValidImage) -> None:
        seen.append(
            (image.file_info.file_index, str(image.session_id), image.file.read())
        )

    app = ocr_sse.setup(
        web.Application(),
        config=ocr_sse.Config(memory_budget=memory_budget),
        on_image=on_image,
    )
    client = await aiohttp_client(app)
    small, large = images.png(), images.noise_jpeg(width=1500, height=1000)
    events = await post(
        client,
        multipart(
            [("images", "a.png", small), ("images", "b.pdf", b"%PDF-1.4"),
             ("images", "c.jpg", large)]
        ),
    )  # fmt: skip
    session_id = events[0][1]["session_id"]
    assert seen == [(0, session_id, small), (2, session_id, large)]
    assert types(events)[-1] == "processing_complete"


async def test_a_large_file_counts_against_the_memory_budget_until_its_result(
    aiohttp_client: Any,
) -> None:
    """A file over 1 MiB kept in memory holds its size of memory_budget,
    shared by all uploads, until its result is written, the hook's turn
    included; then the budget is whole again."""
    held: list[int] = []

    async def on_image(image: ocr_sse.ValidImage) -> None:
        held.append(app[RUNTIME].memory.in_use)

    app = ocr_sse.setup(web.Application(), on_image=on_image)
    client = await aiohttp_client(app)
    large = images.noise_jpeg(width=1500, height=1000)
    assert len(large) > 1024 * 1024
    events = await post(client, multipart([("images", "a.jpg", large)]))
    assert types(events) == ONE_FILE
    assert held == [len(large)]
    assert app[RUNTIME].memory.in_use == 0


async def test_the_success_event_waits_for_the_hook(aiohttp_client: Any) -> None:
    """The client sees a file's success only once the hook has returned."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def on_image(image: ocr_sse.ValidImage) -> None:
        entered.set()
        await release.wait()

    client = await aiohttp_client(ocr_sse.setup(web.Application(), on_image=on_image))
    response = await client.post(
        "/api/ocr",
        data=multipart([("images", "a.png", images.png())]),
        headers={"Content-Type": CONTENT_TYPE},
    )
    raw = b""
    async with asyncio.timeout(5):
        while not (b"event: image_validation_start" in raw and raw.endswith(b"\n\n")):
            raw += await response.content.readline()
    await asyncio.wait_for(entered.wait(), 5)
    with pytest.raises(TimeoutError):  # nothing more while the hook runs
        raw += await asyncio.wait_for(response.content.readline(), 0.3)
    release.set()
    events = read_events(raw + await response.read())
    assert types(events)[-3:] == [
        "image_validation_success",
        "all_images_validated",
        "processing_complete",
    ]


class HeldUpload:
    """An upload of *files* copies of *data* to an app with one decoding
    thread, whose hook awaits *wait()* for each valid image.

    The first file goes alone, the others once the hook has it, so that it
    is not still waiting with them.  ``raw`` is the stream read so far.
    """

    def __init__(
        self,
        aiohttp_client: Any,
        data: bytes,
        *,
        files: int,
        wait: Callable[[], Awaitable[object]],
    ) -> None:
        self._aiohttp_client = aiohttp_client
        self._body = multipart([("images", f"{n}.img", data) for n in range(files)])
        self._wait = wait
        self.raw = b""

    async def start(self) -> None:
        held = asyncio.Event()

        async def on_image(image: ocr_sse.ValidImage) -> None:
            held.set()
            await self._wait()

        app = ocr_sse.setup(
            web.Application(),
            config=Config(validation_threads=1, max_files=100),
            on_image=on_image,
        )
        client = await self._aiohttp_client(app)
        # The first file ends at the next delimiter: it goes with it.
        delimiter = f"--{BOUNDARY}\r\n".encode()
        cut = self._body.index(delimiter, 1) + len(delimiter)

        async def arriving() -> AsyncIterator[bytes]:
            yield self._body[:cut]
            await held.wait()
            yield self._body[cut:]

        self._response: ClientResponse = await client.post(
            "/api/ocr", data=arriving(), headers={"Content-Type": CONTENT_TYPE}
        )

    def count(self, kind: str) -> int:
        return self.raw.count(f"event: {kind}\n".encode())

    async def read_until(self, kind: str, count: int) -> None:
        """Read until *count* events of *kind* have come."""
        async with asyncio.timeout(10):
            while self.count(kind) < count:
                self._add(await self._response.content.readline())

    async def read_nothing_more(self) -> None:
        """Fail if anything more comes within half a second."""
        with pytest.raises(TimeoutError):
            while True:
                self._add(
                    await asyncio.wait_for(self._response.content.readline(), 0.5)
                )

    def _add(self, line: bytes) -> None:
        # At the stream's end readline() returns b"" at once, for ever.
        assert line, f"the stream ended: {self.raw[-300:]!r}"
        self.raw += line

    async def events(self) -> list[tuple[str, dict[str, Any]]]:
        """Every event of the stream, once it has ended."""
        return read_events(self.raw + await self._response.read())


@pytest.mark.parametrize(
    ("size", "files", "received"),
    [(137, 80, 66), (400_000, 8, 5), (1_100_000, 6, 4)],
    ids=["tiny", "400KB", "1.1MB"],
)
async def test_an_upload_reads_ahead_of_its_results_by_files_and_bytes(
    aiohttp_client: Any, size: int, files: int, received: int
) -> None:
    """While the first file's result is held up, the upload goes on reading
    until the files waiting for their results number twice the decoding
    threads and hold 1 MiB, or number 64: then it stops reading, so the
    client's later files are received only once the results move again."""
    if size < 1000:
        data = images.png()
    else:
        side = round((size / 0.96) ** 0.5)
        data = images.noise_jpeg(width=side, height=side)
    assert abs(len(data) - size) < size / 10
    release = asyncio.Event()
    upload = HeldUpload(aiohttp_client, data, files=files, wait=release.wait)
    await upload.start()
    await upload.read_until("image_received", received)
    await upload.read_nothing_more()  # while the first is held
    assert upload.count("image_received") == received
    release.set()
    events = await upload.events()
    assert types(events).count("image_received") == files
    assert events[-1] == ("processing_complete", events[-1][1])
    assert events[-1][1]["successful_files"] == files


async def test_a_full_upload_reads_again_once_half_of_its_files_are_done(
    aiohttp_client: Any,
) -> None:
    """Once an upload stops reading, it reads again only when fewer than half
    of the 64 files it holds are still waiting for their results, not as
    soon as one is done: the client's next files are then read together."""
    files = 80
    done = asyncio.Semaphore(0)
    upload = HeldUpload(aiohttp_client, images.png(), files=files, wait=done.acquire)
    await upload.start()
    # File 0 at the hook, 64 waiting, and one more read and held back.
    await upload.read_until("image_received", 66)
    for n in range(1, 33):
        done.release()
        await upload.read_until("image_validation_success", n)
    await upload.read_nothing_more()  # 32 still wait: nothing more is read
    assert upload.count("image_received") == 66
    done.release()  # 31 wait: the rest of the upload is read
    await upload.read_until("image_received", files)
    for _ in range(files):
        done.release()
    events = await upload.events()
    assert events[-1] == ("processing_complete", events[-1][1])
    assert events[-1][1]["successful_files"] == files


async def test_a_failing_hook_fails_its_file_and_the_upload_goes_on(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises turns that file into an image_validation_error."""

    async def on_image(image: ocr_sse.ValidImage) -> None:
        if image.file_info.file_index == 0:
            raise OSError("disk full")

    client = await aiohttp_client(ocr_sse.setup(web.Application(), on_image=on_image))
    events = await post(
        client, multipart([("images", f"{n}.png", images.png()) for n in range(2)])
    )
    results = [
        (kind, data.get("error_code"), data.get("error_message"))
        for kind, data in events
        if kind in ("image_validation_success", "image_validation_error")
    ]
    assert results == [
        (
            "image_validation_error",
            "CorruptedFile",
            "the image could not be processed: disk full",
        ),
        ("image_validation_success", None, None),
    ]
    assert events[-1][1]["successful_files"] == 1
    assert "on_image failed" in caplog.text


async def test_a_hook_failing_without_a_message_is_named_by_its_type(
    aiohttp_client: Any,
) -> None:
    """A hook that raises an exception with no message: the file's error
    message names the exception's type rather than ending in nothing."""

    async def on_image(image: ocr_sse.ValidImage) -> None:
        raise PermissionError

    client = await aiohttp_client(ocr_sse.setup(web.Application(), on_image=on_image))
    events = await post(client, multipart([("images", "a.png", images.png())]))
    (error,) = [data for kind, data in events if kind == "image_validation_error"]
    assert error["error_message"] == (
        "the image could not be processed: PermissionError"
    )


async def test_a_hook_that_ends_cancelled_fails_its_file_and_the_upload_goes_on(
    aiohttp_client: Any,
) -> None:
    """A hook that ends with a CancelledError of its own (it awaited something
    that was cancelled), while the upload is not being cancelled, fails its
    file as any failing hook does: the next file still gets its result, and
    the counts of the end events are those of the two files."""

    async def on_image(image: ocr_sse.ValidImage) -> None:
        if image.file_info.file_index == 0:
            cancelled = asyncio.get_running_loop().create_future()
            cancelled.cancel()
            await cancelled

    client = await aiohttp_client(ocr_sse.setup(web.Application(), on_image=on_image))
    events = await post(
        client, multipart([("images", f"{n}.png", images.png()) for n in range(2)])
    )
    results = [
        (kind, data["file_index"], data.get("error_message"))
        for kind, data in events
        if kind in ("image_validation_success", "image_validation_error")
    ]
    assert results == [
        (
            "image_validation_error",
            0,
            "the image could not be processed: CancelledError",
        ),
        ("image_validation_success", 1, None),
    ]
    assert events[-1][0] == "processing_complete"
    assert (events[-1][1]["total_files"], events[-1][1]["successful_files"]) == (2, 1)


async def test_the_readme_app_saves_valid_images_under_server_chosen_names(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """The README's embedding example runs as written and saves each valid
    image as <session id>-<index>.<ext>, never under the client's name."""
    source = re.search(
        r"```python\n(import asyncio\nimport shutil.+?)```", README, re.S
    )
    assert source is not None
    example: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(source.group(1), "README.md", "exec"), example)
    example["UPLOADS"] = tmp_path / "uploads"
    client = await aiohttp_client(example["make_app"]())
    assert await (await client.get("/")).text() == "bills to spreadsheets"
    png, jpeg = images.png(), images.jpeg()
    events = await post(
        client,
        multipart(
            [("images", "../../etc/passwd", png), ("images", "notes.pdf", b"%PDF-1.4"),
             ("images", "scan.jpg", jpeg)]
        ),
    )  # fmt: skip
    session_id = events[0][1]["session_id"]
    saved = {path.name: path.read_bytes() for path in (tmp_path / "uploads").iterdir()}
    assert saved == {f"{session_id}-0.png": png, f"{session_id}-2.jpg": jpeg}


def test_setup_refuses_a_config_that_is_not_a_config() -> None:
    """setup(app, config=...) given settings as a dict is a TypeError saying
    what config must be, not an AttributeError from within."""
    with pytest.raises(TypeError) as caught:
        ocr_sse.setup(web.Application(), config={"max_files": 5})  # type: ignore[arg-type]

    assert str(caught.value) == (
        "config must be an ocr_sse.Config, not {'max_files': 5}"
    )


def test_setup_refuses_a_second_endpoint_on_the_same_app() -> None:
    """A second setup() on one app is refused: its settings would silently
    become those of the first endpoint too, and the first endpoint's
    decoding threads would outlive the app."""
    app = ocr_sse.setup(web.Application(), config=Config(max_files=1), path="/a")
    with pytest.raises(RuntimeError) as caught:
        ocr_sse.setup(app, config=Config(max_files=5), path="/b")

    assert str(caught.value) == (
        "ocr_sse.setup() was already called on this app; put a second endpoint"
        " on a sub-application"
    )
    assert app[ocr_sse.CONFIG].max_files == 1


async def test_metrics_count_uploads_files_refusals_and_latency(
    aiohttp_client: Any,
) -> None:
    """/metrics of the standalone app counts what its uploads did."""
    client = await aiohttp_client(ocr_sse.app.standalone_app(Config()))
    png = images.png()
    await post(
        client,
        multipart(
            [("images", "a.png", png), ("images", "b", b""), ("images", "c.png", png)]
        ),
    )
    refused = await client.post("/api/ocr", data=b"x", headers={"Content-Type": "a/b"})
    assert refused.status == 415
    text = await (await client.get("/metrics")).text()
    for sample in [
        'ocr_sse_uploads_total{outcome="complete"} 1.0',
        'ocr_sse_files_total{result="valid"} 2.0',
        'ocr_sse_files_total{result="EmptyFile"} 1.0',
        'ocr_sse_refusals_total{status="415"} 1.0',
        "ocr_sse_uploads_in_flight 0.0",
        "ocr_sse_first_event_seconds_count 1.0",
        "ocr_sse_file_result_seconds_count 3.0",
    ]:
        assert sample in text, sample
    received = re.search(r"^ocr_sse_received_bytes_total (\S+)$", text, re.M)
    assert received is not None and float(received.group(1)) > 2 * len(png)


async def test_metrics_count_an_upload_that_fails_by_its_error_type(
    aiohttp_client: Any,
) -> None:
    """An upload that ends with processing_error is counted under its
    error_type in ocr_sse_uploads_total, not as complete."""
    client = await aiohttp_client(ocr_sse.app.standalone_app(Config()))
    await post(client, multipart([("note", None, b"no file here")]))
    text = await (await client.get("/metrics")).text()
    assert 'ocr_sse_uploads_total{outcome="MultipartParsingError"} 1.0' in text
    assert 'outcome="complete"' not in text


def test_metrics_count_disconnects() -> None:
    """A disconnect is counted as an upload outcome and a disconnect."""
    metrics = PrometheusMetrics()
    metrics.upload_started(first_event_seconds=0.001)
    metrics.upload_ended("ClientDisconnected", received_bytes=10)
    values = {
        (sample.name, tuple(sample.labels.items())): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
    }
    assert values[("ocr_sse_client_disconnects_total", ())] == 1
    assert values[("ocr_sse_uploads_total", (("outcome", "ClientDisconnected"),))] == 1
    assert values[("ocr_sse_uploads_in_flight", ())] == 0


async def test_every_log_line_of_an_upload_names_its_session(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Start, each file's outcome (at DEBUG) and the end are logged with the
    session id."""
    caplog.set_level(logging.DEBUG, logger="ocr_sse")
    client = await aiohttp_client(ocr_sse.setup(web.Application()))
    events = await post(
        client, multipart([("images", "a.png", images.png()), ("images", "b", b"")])
    )
    session_id = events[0][1]["session_id"]
    lines = [r.getMessage() for r in caplog.records if r.name == "ocr_sse"]
    assert [line.split(" session_id=")[0] for line in lines] == [
        "upload started",
        "file validated",
        "file validated",
        "upload complete",
    ]
    assert all(f"session_id={session_id} " in line for line in lines)
    assert "file_index=1 result=EmptyFile" in lines[2]
    assert all(
        r.session_id == session_id  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "ocr_sse"
    )


async def test_stop_uploads_on_the_top_app_stops_each_sub_apps_uploads_at_once(
    aiohttp_client: Any,
) -> None:
    """``stop_uploads(app)`` finds the endpoint on each sub-app below *app*:
    each upload still arriving there ends with an InternalServerError,
    "server shutting down", after one grace period, not one per sub-app in
    turn."""
    grace = 1.0
    parent = web.Application()
    for prefix in ("/a", "/b"):
        child = ocr_sse.setup(web.Application(), config=Config(shutdown_grace=grace))
        parent.add_subapp(prefix, child)
    client = await aiohttp_client(parent)
    whole = multipart([("images", "a.png", images.png())])

    async def upload(prefix: str) -> list[tuple[str, dict[str, Any]]]:
        response = await client.post(
            f"{prefix}/api/ocr",
            data=stalled(whole, until=asyncio.Event()),
            headers={"Content-Type": CONTENT_TYPE},
        )
        return read_events(await response.read())

    uploads = [asyncio.create_task(upload(prefix)) for prefix in ("/a", "/b")]
    await asyncio.sleep(0.3)  # both streams have started
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(ocr_sse.stop_uploads(parent), 10)
    took = asyncio.get_running_loop().time() - started
    for events in await asyncio.wait_for(asyncio.gather(*uploads), 5):
        assert failed_with(events) == (
            "InternalServerError",
            "server shutting down",
        )
    assert grace <= took < 2 * grace


async def test_an_app_shutting_down_ends_the_uploads_still_arriving(
    aiohttp_client: Any,
) -> None:
    """An app with the endpoint that shuts down, as aiohttp does on a
    stop: an upload still arriving gets its processing_error after
    shutdown_grace, before the connection closes, without setup()'s caller
    doing anything more."""
    app = ocr_sse.setup(
        web.Application(), config=Config(shutdown_grace=0.2, read_timeout=600)
    )
    client = await aiohttp_client(app)
    whole = multipart([("images", "a.png", images.png())])
    response = await client.post(
        "/api/ocr",
        data=stalled(whole, until=asyncio.Event()),
        headers={"Content-Type": CONTENT_TYPE},
    )
    # The stream has started (its head is in): the upload is in flight.
    closing = asyncio.create_task(client.server.close())
    events = read_events(await asyncio.wait_for(response.read(), 10))
    await asyncio.wait_for(closing, 10)
    assert failed_with(events) == (
        "InternalServerError",
        "server shutting down",
    )


async def test_an_app_stops_cleanly_while_an_expired_upload_still_unwinds(
    aiohttp_client: Any,
) -> None:
    """An upload past its deadline whose hook takes a while to handle its
    cancellation, when the app stops: the stop does not fail on it (the
    upload is ending already), the client gets the upload's
    processing_error, and the decoding threads are let go."""
    grace = 0.05

    async def on_image(image: ocr_sse.ValidImage) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            # A cleanup of its own that outlasts the grace period, begun
            # once the stop has begun.
            while not runtime.stopping:
                await asyncio.sleep(0.01)
            await asyncio.sleep(grace + 0.2)
            raise

    cancelled = asyncio.Event()
    app = ocr_sse.setup(
        web.Application(),
        config=Config(upload_timeout=0.3, shutdown_grace=grace),
        on_image=on_image,
    )
    runtime = app[RUNTIME]
    client = await aiohttp_client(app)
    response = await client.post(
        "/api/ocr",
        data=multipart([("images", "a.png", images.png())]),
        headers={"Content-Type": CONTENT_TYPE},
    )
    await asyncio.wait_for(cancelled.wait(), 5)  # the deadline has passed
    closing = asyncio.create_task(client.server.close())
    events = read_events(await asyncio.wait_for(response.read(), 10))
    await asyncio.wait_for(closing, 10)
    assert types(events) == [*ONE_FILE[:3], "processing_error"]
    assert not [t for t in threading.enumerate() if t.name.startswith("ocr_sse-decode")]


async def test_an_app_started_a_second_time_serves_uploads_again(
    aiohttp_client: Any,
) -> None:
    """One app, started, stopped and started again (as a test module's app
    may be): each run has its decoding threads and lets uploads in, and
    nothing of the app aiohttp froze at the first start is changed."""
    app = ocr_sse.setup(web.Application())
    for _ in range(2):
        client = await aiohttp_client(app)
        events = await post(client, multipart([("images", "a.png", images.png())]))
        assert types(events) == ONE_FILE
        await client.close()


async def test_an_app_that_stops_lets_its_decoding_threads_go(
    aiohttp_client: Any,
) -> None:
    """The decoding threads start with the app and end with it: an app
    started and stopped leaves no thread behind."""

    def decoders() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("ocr_sse-decode")}

    before = decoders()
    client = await aiohttp_client(
        ocr_sse.setup(web.Application(), config=Config(validation_threads=3))
    )
    assert len(decoders() - before) == 3
    await client.close()
    assert decoders() - before == set()


async def test_a_body_read_by_a_middleware_first_is_said_to_be_so(
    aiohttp_client: Any,
) -> None:
    """An app whose middleware reads the whole body before the endpoint does
    gets a processing_error that says so, not one about a malformed body."""

    @web.middleware
    async def reads_the_form(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        await request.post()
        return await handler(request)

    app = ocr_sse.setup(web.Application(middlewares=[reads_the_form]))
    client = await aiohttp_client(app)
    events = await post(client, multipart([("images", "a.png", images.png())]))
    assert failed_with(events) == (
        "InternalServerError",
        "the request body was read before the endpoint, by a middleware or"
        " another handler",
    )
