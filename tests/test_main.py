"""The command line: a real server process, and clear errors for bad settings."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, TextIO

import aiohttp
import pytest

from ocr_sse import Config, ConfigError
from ocr_sse.__main__ import _LogWriter, _QueueHandler, serve
from ocr_sse.app import create_app

from . import images
from .wire import CONTENT_TYPE, multipart, read_events, types


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocr_sse", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server(*flags: str, stderr: IO[bytes] | None = None) -> Iterator[str]:
    """`python -m ocr_sse` with *flags* on a free loopback port; its base URL.

    Stopped with SIGINT afterwards, killed if it does not stop.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ocr_sse", "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, "server exited"
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        finally:
            process.kill()  # a server stuck in a loop never handles SIGINT
            process.wait()


@pytest.fixture
def server() -> Iterator[str]:
    """A real server allowing two files per upload."""
    with running_server("--max-files", "2") as url:
        yield url


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-files", "abc"], {}, "argument --max-files: 'abc': expected a whole"),
        (["--port", "70000"], {}, "port must be between 0 and 65535, not 70000"),
        (["--keepalive-interval", "0"], {}, "keepalive_interval must be 0.01 or"),
        ([], {"OCR_SSE_MAX_FILE_SIZE": "ten"}, "OCR_SSE_MAX_FILE_SIZE='ten'"),
        ([], {"OCR_SSE_ALLOWED_FORMATS": "PNG,PDF"}, "unknown: PDF"),
        (
            ["--port", "70000"],  # read after the environment: never a server
            {"OCR_SSE_MAX_FILESIZE": "50MiB"},
            "error: OCR_SSE_MAX_FILESIZE is not a setting; did you mean"
            " OCR_SSE_MAX_FILE_SIZE?",
        ),
        (["--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
        (["--log-level", "loud"], {}, "log_level must be one of debug, info,"),
    ],
)
def test_bad_settings_exit_with_a_message_not_a_traceback(
    args: list[str], env: dict[str, str], message: str
) -> None:
    """A bad flag or variable: exit status 2 and one clear line on stderr."""
    result = run(*args, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_taken_port_is_a_clear_error() -> None:
    """A server whose port is taken says so and exits 1, with no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--port", str(port))
    assert result.returncode == 1
    assert f"ocr-sse: cannot listen on 127.0.0.1:{port}: " in result.stderr
    assert "address already in use" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def ipv6_loopback() -> socket.socket:
    """A socket bound to [::1] on a free port; the test is skipped without
    IPv6."""
    taken = socket.socket(socket.AF_INET6)
    try:
        taken.bind(("::1", 0))
    except OSError as exc:
        taken.close()
        pytest.skip(f"no IPv6 loopback: {exc}")
    return taken


def test_an_ipv6_address_is_shown_in_brackets() -> None:
    """The server on an IPv6 address names it in brackets, as a URL does:
    http://[::1]:port/api/ocr, which a client can use, and [::1]:port when it
    cannot listen."""
    with ipv6_loopback() as taken:
        taken.listen()
        taken_port = taken.getsockname()[1]
        refused = run("--host", "::1", "--port", str(taken_port))
    with ipv6_loopback() as probe:
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "ocr_sse", "--host", "::1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        listening = process.stdout.readline()  # or "" if the server exits
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        finally:
            process.kill()
            process.wait()
            process.stdout.close()
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"ocr-sse: cannot listen on [::1]:{taken_port}: ")
    assert listening == f"ocr-sse listening on http://[::1]:{port}/api/ocr\n"


def test_a_host_that_does_not_resolve_is_a_clear_error() -> None:
    """A host name the resolver cannot find: exit status 1 and the resolver's
    reason, not "Unknown error -2"."""
    port = free_port()
    with pytest.raises(socket.gaierror) as failed:
        socket.getaddrinfo(
            "no-such-host.invalid",
            port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
    result = run("--host", "no-such-host.invalid", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr == (
        f"ocr-sse: cannot listen on no-such-host.invalid:{port}:"
        f" {failed.value.strerror}\n"
    )


def test_a_memory_budget_past_what_malloc_takes_is_not_a_traceback() -> None:
    """A memory budget too large for glibc's mallopt(), which takes a C int,
    does not end the server with a traceback: it goes on to listen (here on
    a taken port, so that it exits at once)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("--port", str(port), "--memory-budget", str(10**30))
    assert result.returncode == 1
    assert f"ocr-sse: cannot listen on 127.0.0.1:{port}: " in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_setting_with_its_variable() -> None:
    """--help names each flag, its environment variable and current value."""
    result = run("--help", OCR_SSE_MAX_FILES="7")
    assert result.returncode == 0
    for flag, variable in [
        ("--max-file-size", "OCR_SSE_MAX_FILE_SIZE"),
        ("--max-files", "OCR_SSE_MAX_FILES"),
        ("--max-request-size", "OCR_SSE_MAX_REQUEST_SIZE"),
        ("--allowed-formats", "OCR_SSE_ALLOWED_FORMATS"),
        ("--max-pixels", "OCR_SSE_MAX_PIXELS"),
        ("--host", "OCR_SSE_HOST"),
        ("--port", "OCR_SSE_PORT"),
        ("--keepalive-interval", "OCR_SSE_KEEPALIVE_INTERVAL"),
    ]:
        assert flag in result.stdout and variable in result.stdout
    assert "now 7]" in " ".join(result.stdout.split())


async def test_the_server_process_streams_an_upload(server: str) -> None:
    """`python -m ocr_sse` serves /healthz and the endpoint, with its flags."""
    async with aiohttp.ClientSession() as session:
        async with session.get(server + "/healthz") as response:
            assert response.status == 200
        body = multipart([("images", f"{n}.png", images.png()) for n in range(3)])
        async with session.post(
            server + "/api/ocr", data=body, headers={"Content-Type": CONTENT_TYPE}
        ) as response:
            assert response.status == 200
            events = read_events(await response.read())
    assert types(events)[-1] == "processing_complete"
    errors = [data["error_code"] for kind, data in events if "error_code" in data]
    assert errors == [{"CountLimitExceeded": {"count": 3, "limit": 2}}]


@pytest.mark.parametrize(
    ("flags", "lines"),
    [
        ((), ["upload started", "upload complete"]),
        (
            ("--log-level", "debug"),
            ["upload started", "file validated", "file validated", "upload complete"],
        ),
        (("--log-level", "warning"), []),
    ],
)
async def test_log_level_decides_which_lines_the_server_writes(
    tmp_path: Path, flags: tuple[str, ...], lines: list[str]
) -> None:
    """An upload logs its start and end at INFO, a line per file at DEBUG,
    and nothing at WARNING."""
    with (tmp_path / "stderr").open("w+b") as stderr:
        with running_server(*flags, stderr=stderr) as url:
            async with aiohttp.ClientSession() as session:
                body = multipart(
                    [("images", f"{n}.png", images.png()) for n in range(2)]
                )
                async with session.post(
                    url + "/api/ocr", data=body, headers={"Content-Type": CONTENT_TYPE}
                ) as response:
                    await response.read()
        stderr.seek(0)
        logged = stderr.read().decode()
    written = [
        what
        for line in logged.splitlines()
        if " ocr_sse " in line and "session_id=" in line
        for what in [line.split(" ocr_sse ", 1)[1].split(" session_id=")[0]]
    ]
    assert written == lines, logged


async def test_each_request_gets_an_access_line(tmp_path: Path) -> None:
    """The server logs each request at INFO on aiohttp.access: the client, the
    request line, the status, the bytes written, the referer and user agent."""
    with (tmp_path / "stderr").open("w+b") as stderr:
        with running_server(stderr=stderr) as url:
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    url + "/api/ocr?total_files=1",
                    data=multipart([("images", "a.png", images.png())]),
                    headers={"Content-Type": CONTENT_TYPE, "User-Agent": "bills/2.0"},
                ) as response:
                    sent = len(await response.read())
                async with session.get(
                    url + "/healthz", headers={"Referer": "http://a.example/"}
                ) as response:
                    await response.read()
        stderr.seek(0)
        logged = stderr.read().decode()
    access = [
        line.split(" INFO aiohttp.access ", 1)[1]
        for line in logged.splitlines()
        if " INFO aiohttp.access " in line
    ]
    upload = re.fullmatch(
        r'127\.0\.0\.1 "POST /api/ocr\?total_files=1 HTTP/1\.1" 200 (\d+)'
        r' "-" "bills/2\.0"',
        access[0],
    )
    assert upload is not None, access[0]
    # Counted as written, with the chunked encoding's framing.
    assert int(upload.group(1)) > sent
    assert access[1].startswith('127.0.0.1 "GET /healthz HTTP/1.1" 200 ')
    assert access[1].endswith(f'"http://a.example/" "{aiohttp.http.SERVER_SOFTWARE}"')
    assert len(access) == 2, logged


async def send_raw(tmp_path: Path, request: bytes, *flags: str) -> tuple[bytes, str]:
    """Send *request* as raw bytes to `python -m ocr_sse` with *flags*; return
    the answer, read to the connection's end, and what the server logged."""
    with (tmp_path / "stderr").open("w+b") as stderr:
        with running_server(*flags, stderr=stderr) as url:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", int(url.rsplit(":", 1)[1])
            )
            writer.write(request)
            answer = await reader.read()
            writer.close()
        stderr.seek(0)
        return answer, stderr.read().decode()


async def test_a_request_aiohttp_cannot_parse_is_one_warning_line(
    tmp_path: Path,
) -> None:
    """Bad HTTP from a client gets aiohttp's 400 and one WARNING line in the
    log, not an error with a traceback."""
    answer, logged = await send_raw(
        tmp_path,
        b"POST /api/ocr HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    assert answer.startswith(b"HTTP/1.0 400 ")  # aiohttp answers as it can
    warnings = [line for line in logged.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, logged
    assert (
        " WARNING aiohttp.server Error handling request from 127.0.0.1: "
        in (warnings[0])
    )
    assert "Traceback" not in logged and " ERROR " not in logged


async def test_a_body_not_in_its_content_encoding_is_one_warning_line(
    tmp_path: Path,
) -> None:
    """A request body that does not decode from its Content-Encoding: the
    upload ends with MultipartParsingError, and what aiohttp then fails to
    read of the body's rest is one WARNING line, not an error with a
    traceback a client could repeat at will."""
    body = b"this is not gzip" * 100
    answer, logged = await send_raw(
        tmp_path,
        b"POST /api/ocr HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert b"event: processing_error" in answer
    assert b'"error_type":"MultipartParsingError"' in answer
    warnings = [line for line in logged.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, logged
    assert warnings[0].endswith(
        " WARNING aiohttp.server the rest of a request body could not be read:"
        " Can not decode content-encoding: gzip"
    ), warnings[0]
    assert "Traceback" not in logged and " ERROR " not in logged, logged


async def test_a_request_that_is_not_http_is_one_debug_line(tmp_path: Path) -> None:
    """A connection whose first bytes are no HTTP method (TLS sent to the
    port, a scanner) gets aiohttp's 400 and one DEBUG line, never a WARNING,
    as aiohttp logs the noise of a public address."""
    answer, logged = await send_raw(
        tmp_path, b"GARBAGE / HTTP/1.1\r\nHost: t\r\n\r\n", "--log-level", "debug"
    )
    assert answer.startswith(b"HTTP/1.0 400 ")
    lines = [line for line in logged.splitlines() if " aiohttp.server " in line]
    assert len(lines) == 1, logged
    assert (
        " DEBUG aiohttp.server Error handling request from 127.0.0.1:"
        " Invalid method encountered:" in lines[0]
    )
    assert "Traceback" not in logged and " WARNING " not in logged, logged


@contextlib.contextmanager
def log_thread(
    stream: TextIO | None, fmt: str = "%(message)s"
) -> Iterator[queue.SimpleQueue[logging.LogRecord | None]]:
    """The queue of a log thread writing to *stream*; on leaving, the thread
    writes what is queued and ends."""
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    writer = _LogWriter(records, stream, logging.Formatter(fmt))
    writer.start()
    try:
        yield records
    finally:
        writer.stop()


def test_the_log_thread_formats_each_record_with_its_traceback() -> None:
    """A record reaches the log thread as it was logged, and is formatted
    there: its arguments merged, its traceback written out."""
    stream = io.StringIO()
    logger = logging.getLogger("tests.log_thread")
    logger.propagate = False
    with log_thread(stream, "%(levelname)s %(message)s") as records:
        handler = _QueueHandler(records)
        logger.addHandler(handler)
        try:
            raise ZeroDivisionError("no files")
        except ZeroDivisionError:
            logger.exception("upload failed files=%d reason=%s", 2, "a bug")
        finally:
            logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "ERROR upload failed files=2 reason=a bug"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ZeroDivisionError: no files"


def test_log_lines_are_written_in_batches_and_all_of_them_at_stop() -> None:
    """The thread that writes the log writes lines queued together in one
    go, in order, and what is still queued when it stops."""
    writes: list[str] = []

    class Stream(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return super().write(text)

    stream = Stream()
    with log_thread(stream) as records:
        for n in range(100):
            records.put(logging.makeLogRecord({"msg": f"line {n}"}))
        deadline = time.monotonic() + 5
        while stream.getvalue().count("\n") < 100 and time.monotonic() < deadline:
            time.sleep(0.005)
        records.put(logging.makeLogRecord({"msg": "last"}))
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(100)] + [
        "last"
    ]
    # The first line wakes the thread and may go out alone, the rest gather
    # for one write, and the last goes at the stop: not a write a line.
    assert len(writes) <= 3


def test_a_record_that_cannot_be_formatted_does_not_stop_the_log() -> None:
    """A log call whose arguments do not fit its message is written as a
    one-line logging error naming where it was made, and the lines after
    it are still written."""
    stream = io.StringIO()
    with log_thread(stream) as records:
        records.put(
            logging.makeLogRecord(
                {
                    "name": "a.library",
                    "msg": "%d files",
                    "args": ("two",),
                    "pathname": "library.py",
                    "lineno": 7,
                }
            )
        )
        records.put(logging.makeLogRecord({"msg": "next"}))
    assert stream.getvalue().splitlines() == [
        "--- Logging error: TypeError: %d format: a real number is required,"
        " not str, in a record of a.library (library.py:7)",
        "next",
    ]


def test_without_stderr_log_records_are_dropped_not_kept() -> None:
    """A server started with stderr closed (Python's sys.stderr is None
    then) still takes each record off the log queue, which would otherwise
    grow for as long as the server runs."""
    with log_thread(None) as records:
        for n in range(3):
            records.put(logging.makeLogRecord({"msg": f"line {n}"}))
    assert records.empty()


async def test_sigterm_lets_uploads_finish_then_ends_the_rest() -> None:
    """On SIGTERM the server stops listening, lets uploads in flight finish
    within the grace period, ends the rest with InternalServerError, and
    exits 0."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ocr_sse",
        "--port",
        str(port),
        "--shutdown-grace",
        "1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/ocr"
        async with asyncio.timeout(20):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port)).close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        whole = multipart([("images", "a.png", images.png())])
        finish = asyncio.Event()

        async def body(wait_for: asyncio.Event | None) -> AsyncIterator[bytes]:
            yield whole[:50]
            if wait_for is not None:
                await wait_for.wait()
            else:
                await asyncio.sleep(3600)  # stalls past the grace period
            yield whole[50:]

        async with aiohttp.ClientSession() as session:

            async def upload(wait_for: asyncio.Event | None) -> bytes:
                async with session.post(
                    url, data=body(wait_for), headers={"Content-Type": CONTENT_TYPE}
                ) as response:
                    assert response.status == 200
                    return await response.content.read()

            finishing = asyncio.create_task(upload(finish))
            stalled = asyncio.create_task(upload(None))
            await asyncio.sleep(0.5)  # both streams have started
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"http://127.0.0.1:{port}/healthz")
            finish.set()
            finished, ended = await asyncio.wait_for(
                asyncio.gather(finishing, stalled), 10
            )
        assert types(read_events(finished))[-1] == "processing_complete", finished
        last = read_events(ended)[-1]
        assert last[0] == "processing_error"
        assert last[1]["error_type"] == "InternalServerError"
        assert last[1]["error_message"] == "server shutting down"
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_an_idle_connection_is_closed_after_75_seconds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection on which no request comes is closed once it has been idle
    for 75 s, as aiohttp's run_app closes it, not held for the hour a bare
    aiohttp runner would hold it.  The event loop's clock is moved on rather
    than waited for."""
    server = asyncio.create_task(serve(Config(port=0)))
    try:
        async with asyncio.timeout(10):
            while "listening on" not in (printed := capsys.readouterr().out):
                await asyncio.sleep(0.01)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", printed)
        assert match is not None, printed
        port = int(match[1])
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        # Answered on a connection accepted after the idle one: the server has
        # taken the idle one in, and waits on it for a request.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        loop = asyncio.get_running_loop()
        clock = loop.time
        monkeypatch.setattr(loop, "time", lambda: clock() + 75.01)
        async with asyncio.timeout(5):
            assert await idle_reader.read() == b""
        idle_writer.close()
        writer.close()
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


def test_the_app_factory_refuses_a_flag_it_does_not_know(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """create_app(argv), given the arguments after the factory's name by
    `python -m aiohttp.web`, refuses a misspelt flag with exit status 2 and
    names it, rather than serving with the default it was meant to change."""
    with pytest.raises(SystemExit) as caught:
        create_app(["--max-filesize", "5MiB"])

    assert caught.value.code == 2
    assert capsys.readouterr().err.endswith(
        "ocr_sse.app:create_app: error: unrecognized arguments: --max-filesize 5MiB\n"
    )


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (
            ["--max-files", "0"],
            {},
            "argument --max-files: max_files must be above 0, not 0",
        ),
        (
            [],
            {"OCR_SSE_MAX_FILES": "0"},
            "OCR_SSE_MAX_FILES='0': max_files must be above 0, not 0",
        ),
        (
            [],
            {"OCR_SSE_MAX_FILES": "ten"},
            "OCR_SSE_MAX_FILES='ten': expected a whole number",
        ),
    ],
)
def test_the_app_factory_refuses_a_bad_value_with_a_usage_line(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """create_app(argv) from `python -m aiohttp.web` refuses a value out of
    range, as a flag or as a variable, as `ocr-sse` does: its usage and one
    line on stderr, exit status 2, not a traceback."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        create_app(argv)

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ocr_sse.app:create_app ")
    assert err.endswith(f"\nocr_sse.app:create_app: error: {message}\n")


def test_the_app_factory_called_from_code_raises_a_bad_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """create_app() as gunicorn calls it raises the ConfigError, which gunicorn
    shows before it stops: an exit status 2 would have it start the worker
    again and again."""
    monkeypatch.setenv("OCR_SSE_MAX_FILES", "0")
    with pytest.raises(ConfigError, match=r"^OCR_SSE_MAX_FILES='0': max_files must"):
        create_app()


def upload_under_aiohttp_web(
    *flags: str, stderr: IO[bytes] | None = None
) -> list[tuple[str, dict[str, object]]]:
    """Two PNGs sent to `python -m aiohttp.web ocr_sse.app:create_app *flags`
    on a free loopback port; the events of the upload.

    The server is stopped afterwards, and has ended when this returns.
    """
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "aiohttp.web", "-H", "127.0.0.1", "-P", str(port),
            "ocr_sse.app:create_app", *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
    )  # fmt: skip
    try:
        body = multipart([("images", f"{n}.png", images.png()) for n in range(2)])
        deadline = time.monotonic() + 20
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request(
                    "POST",
                    "/api/ocr",
                    body=body,
                    headers={"Content-Type": CONTENT_TYPE},
                )
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        events = read_events(connection.getresponse().read())
        connection.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        finally:
            process.kill()
            process.wait()
    return events


def test_the_app_factory_runs_under_aiohttp_web() -> None:
    """`python -m aiohttp.web ocr_sse.app:create_app` serves the endpoint,
    with settings after the factory's name passed to it as flags."""
    events = upload_under_aiohttp_web("--max-files", "1")
    errors = [data["error_code"] for kind, data in events if "error_code" in data]
    assert errors == [{"CountLimitExceeded": {"count": 2, "limit": 1}}]


@pytest.mark.parametrize(
    ("flags", "lines"),
    [
        ((), ["upload started", "upload complete"]),
        (("--log-level", "warning"), []),
    ],
)
def test_the_app_factory_logs_at_its_log_level_under_aiohttp_web(
    tmp_path: Path, flags: tuple[str, ...], lines: list[str]
) -> None:
    """Under `python -m aiohttp.web`, which sets up logging at DEBUG, the
    factory's log_level still decides what is written, as with `ocr-sse`:
    no line per file at the default INFO, no upload lines at WARNING."""
    with (tmp_path / "stderr").open("w+b") as stderr:
        events = upload_under_aiohttp_web(*flags, stderr=stderr)
        stderr.seek(0)
        logged = stderr.read().decode()
    assert types(events)[-1] == "processing_complete"
    written = [
        line.removeprefix("INFO:ocr_sse:").split(" session_id=")[0]
        for line in logged.splitlines()
        if ":ocr_sse:" in line
    ]
    assert written == lines, logged
    assert "DEBUG:" not in logged
