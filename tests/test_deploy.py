"""The deployment of docs/deploy.md: a real nginx in front of real gunicorn.

nginx runs docs/nginx.conf as written, with only its two addresses changed,
inside a generated nginx.conf whose paths (pid, logs, temp files) are all
under the test's tmp dir.  gunicorn runs two ``ocr_sse.worker.GunicornWorker``
processes.  Both are needed: a missing one fails the test, it is never
skipped (on Debian: ``apt-get install -y nginx``; gunicorn is in the test
extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import orjson
import pytest

from . import images
from .test_main import free_port
from .wire import BOUNDARY, CONTENT_TYPE, multipart, read_events, types

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "docs" / "nginx.conf"

#: nginx's client_max_body_size in docs/nginx.conf: ocr_sse's default limit.
NGINX_BODY_LIMIT = 201 * 1024 * 1024
#: OCR_SSE_MAX_FILE_SIZE of the gunicorn under test, so that its own request
#: limit (x 20 files + 1 MiB = 6 MiB) is below nginx's.
MAX_FILE_SIZE = 256 * 1024
SERVER_BODY_LIMIT = MAX_FILE_SIZE * 20 + 1024 * 1024
SHUTDOWN_GRACE = 4
#: A PNG of 84 KB that takes some 0.2 s to decode: 25 megapixels of one colour.
SLOW_PNG = images.png(width=5000, height=5000)
GRACEFUL_TIMEOUT = SHUTDOWN_GRACE + 10


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if found is None:
        pytest.fail(
            "nginx is not installed; these tests need the real binary"
            " (Debian: apt-get install -y nginx)",
            pytrace=False,
        )
    return found


def require_gunicorn() -> None:
    if importlib.util.find_spec("gunicorn") is None:
        pytest.fail(
            "gunicorn is not installed; it is part of the test extra"
            " (pip install -e '.[test]')",
            pytrace=False,
        )


def control_socket_off() -> list[str]:
    """Keep a gunicorn that has a control socket from making one in ~/.gunicorn."""
    from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

    known = {setting.name for setting in KNOWN_SETTINGS}
    return ["--no-control-socket"] if "control_socket_disable" in known else []


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"docs/nginx.conf no longer has one {old!r}"
    return text.replace(old, new)


def nginx_conf(tmp: Path, *, port: int, upstream_port: int) -> Path:
    """An nginx.conf around docs/nginx.conf, every path under *tmp*."""
    site = SITE.read_text()
    site = replace_once(
        site, "server 127.0.0.1:3000;", f"server 127.0.0.1:{upstream_port};"
    )
    site = replace_once(site, "listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};")
    temp = {
        name: tmp / name
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    for path in temp.values():
        path.mkdir()
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""\
# One foreground process, so the test owns exactly one pid.
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{
    worker_connections 512;
}}
http {{
    access_log {tmp}/access.log;
    default_type application/octet-stream;
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};

{site}
}}
"""
    )
    return conf


@attrs.define
class Stack:
    """nginx on *url*, in front of a gunicorn master and its workers."""

    url: str
    port: int
    #: gunicorn's own address, behind nginx.
    upstream: str
    gunicorn: subprocess.Popen[bytes]
    nginx: subprocess.Popen[bytes]
    gunicorn_log: Path
    access_log: Path

    async def sigterm_then_wait(self) -> None:
        """SIGTERM to gunicorn's master; a second for its workers to begin
        stopping."""
        self.gunicorn.send_signal(signal.SIGTERM)
        await asyncio.sleep(1)

    def worker_pids(self) -> set[int]:
        """The pids gunicorn reported booting workers with."""
        text = self.gunicorn_log.read_text()
        return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", text)}

    def answered_by(self, request: str, *, since: int = 0) -> set[int]:
        """The pids of the workers that answered *request* ("GET /healthz").

        From gunicorn's access log (format ``%P %r %s``; ``%P`` is "<pid>"),
        read from byte *since* on.
        """
        if not self.access_log.exists():
            return set()
        with self.access_log.open() as log:
            log.seek(since)
            return {
                int(line.split()[0].strip("<>"))
                for line in log
                if f" {request} " in line
            }

    def logs(self) -> str:
        nginx_error = self.gunicorn_log.parent / "nginx" / "error.log"
        return (
            f"--- gunicorn\n{self.gunicorn_log.read_text()[-4000:]}"
            f"\n--- nginx\n{nginx_error.read_text()[-4000:]}"
        )


@contextlib.contextmanager
def start_stack(
    tmp: Path,
    *,
    worker_class: str = "ocr_sse.worker.GunicornWorker",
    app: str = "ocr_sse.app:create_app()",
    graceful_timeout: int = GRACEFUL_TIMEOUT,
    **settings: str,
) -> Iterator[Stack]:
    """Start gunicorn (2 workers) and nginx in front; stop both afterwards.

    *settings* are more ``OCR_SSE_*`` variables for gunicorn's workers.
    """
    nginx = nginx_binary()
    require_gunicorn()
    upstream_port, port = free_port(), free_port()
    (tmp / "nginx").mkdir()
    conf = nginx_conf(tmp / "nginx", port=port, upstream_port=upstream_port)
    gunicorn_log, access_log = tmp / "gunicorn.log", tmp / "gunicorn-access.log"
    env = {
        **os.environ,
        "OCR_SSE_MAX_FILE_SIZE": str(MAX_FILE_SIZE),
        "OCR_SSE_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE),
        "OCR_SSE_VALIDATION_THREADS": "2",
        **settings,
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with gunicorn_log.open("wb") as log:
            # Its own session: the last resort below kills its workers too.
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gunicorn",
                        app,
                        f"--worker-class={worker_class}",
                        "--workers=2",
                        f"--bind=127.0.0.1:{upstream_port}",
                        f"--graceful-timeout={graceful_timeout}",
                        "--keep-alive=75",
                        f"--access-logfile={access_log}",
                        "--access-logformat=%P %r %s",
                        *control_socket_off(),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=tmp,
                    start_new_session=True,
                )
            )
            processes.append(
                subprocess.Popen(
                    [
                        nginx,
                        "-p",
                        f"{tmp}/nginx",
                        "-c",
                        str(conf),
                        "-e",
                        f"{tmp}/nginx/error.log",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        stack = Stack(
            url=f"http://127.0.0.1:{port}",
            port=port,
            upstream=f"http://127.0.0.1:{upstream_port}",
            gunicorn=processes[0],
            nginx=processes[1],
            gunicorn_log=gunicorn_log,
            access_log=access_log,
        )
        wait_until_ready(stack)
        yield stack
    finally:
        for process in reversed(processes):
            stop(process)


def wait_until_ready(stack: Stack) -> None:
    """Both workers have answered GET /healthz, and nginx passes it on."""
    deadline = time.monotonic() + 30
    # Each urlopen() is a new connection to gunicorn, which any worker may take.
    while not (
        healthy(stack.upstream)
        and len(stack.answered_by("GET /healthz")) == 2
        and healthy(stack.url)
    ):
        for name, process in (("gunicorn", stack.gunicorn), ("nginx", stack.nginx)):
            assert process.poll() is None, f"{name} exited\n{stack.logs()}"
        assert time.monotonic() < deadline, f"not ready in 30 s\n{stack.logs()}"
        time.sleep(0.05)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False  # not listening yet, or 502 from nginx


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a bounded wait, then SIGKILL (to gunicorn's workers too)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=GRACEFUL_TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # gunicorn: its session
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One nginx + gunicorn for the tests that do not stop it."""
    with start_stack(tmp_path_factory.mktemp("deploy")) as started:
        yield started


async def collect(response: aiohttp.ClientResponse, **flags: asyncio.Event) -> bytes:
    """Read the whole stream, setting ``flags[name]`` once event *name* is read."""
    raw = b""
    try:
        async with asyncio.timeout(30):
            async for line in response.content:
                raw += line
                for name, flag in flags.items():
                    if raw.endswith(b"\n\n") and f"event: {name}\n".encode() in raw:
                        flag.set()
    except TimeoutError:
        pytest.fail(f"the stream did not end within 30 s; it ends {raw[-300:]!r}")
    return raw


async def two_files_while_watching(
    session: aiohttp.ClientSession,
    url: str,
    *,
    between: Any = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Upload two PNGs; file 1 only once file 0's result has been read.

    A part only ends when the next delimiter arrives, so file 0 goes out
    with the start of file 1's delimiter.  *between*, an async callable,
    runs after file 0's result and before file 1 is sent.
    """
    first = multipart([("images", "first.png", images.png())])
    second = multipart([("images", "second.png", images.png(width=32))])
    delimiter = f"--{BOUNDARY}\r\n".encode()
    head = first[: -len(f"--{BOUNDARY}--\r\n")] + delimiter
    seen_result = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield head
        async with asyncio.timeout(20):
            await seen_result.wait()
        if between is not None:
            await between()
        yield second[len(delimiter) :]

    async with session.post(
        f"{url}/api/ocr", data=body(), headers={"Content-Type": CONTENT_TYPE}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        raw = await collect(response, image_validation_success=seen_result)
    return read_events(raw)


async def raw_request(port: int, head: str) -> tuple[int, dict[str, str], bytes]:
    """Send a request head and no body; read the status, headers and body."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head.encode())
            await writer.drain()
            status_line, *lines = (
                (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")[:-2]
            )
            headers = dict(line.split(": ", 1) for line in lines)
            body = await reader.readexactly(int(headers["Content-Length"]))
        finally:
            writer.close()
    return int(status_line.split()[1]), headers, body


def declared(length: int, port: int) -> str:
    return (
        f"POST /api/ocr HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {length}\r\n\r\n"
    )


async def test_events_arrive_through_nginx_while_the_upload_is_sent(
    stack: Stack,
) -> None:
    """Through nginx, file 0's result reaches the client before file 1 is sent.

    Neither the request body nor the event stream is buffered by nginx: if
    either were, file 1 would never be sent and the time limit would fail
    the test.
    """
    async with aiohttp.ClientSession() as session:
        events = await two_files_while_watching(session, stack.url)
    assert [
        d["file_info"]["file_name"]
        for name, d in events
        if name == "image_validation_success"
    ] == ["first.png", "second.png"]
    assert types(events)[-1] == "processing_complete"


async def test_each_upload_is_logged_in_gunicorns_error_log(stack: Stack) -> None:
    """The worker's upload lines reach gunicorn's error log, at its level (info)."""
    async with aiohttp.ClientSession() as session:
        events = await two_files_while_watching(session, stack.url)
    session_id = events[0][1]["session_id"]
    wanted = f"upload complete session_id={session_id} files=2 valid=2"
    deadline = time.monotonic() + 10
    while wanted not in stack.gunicorn_log.read_text():
        if time.monotonic() > deadline:
            pytest.fail(f"no {wanted!r} in the log:\n{stack.logs()}")
        await asyncio.sleep(0.05)
    assert f"upload started session_id={session_id}" in stack.gunicorn_log.read_text()


async def test_metrics_are_not_passed_on_by_nginx(stack: Stack) -> None:
    """GET /metrics through nginx is nginx's own 404: the workers' figures
    stay behind it, where a scraper can still read them."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stack.url}/metrics") as response:
            assert response.status == 404
            assert response.headers["Server"].startswith("nginx")
        async with session.get(f"{stack.upstream}/metrics") as response:
            assert response.status == 200
            assert "ocr_sse_uploads_in_flight" in await response.text()


async def test_a_file_over_the_size_limit_is_refused_through_nginx(
    stack: Stack,
) -> None:
    """A file over OCR_SSE_MAX_FILE_SIZE gives FileSizeExceeded, via nginx."""
    big = b"\x89PNG\r\n\x1a\n" + bytes(MAX_FILE_SIZE + 1000)
    body = multipart([("images", "big.png", big), ("images", "ok.png", images.png())])
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{stack.url}/api/ocr", data=body, headers={"Content-Type": CONTENT_TYPE}
        ) as response:
            assert response.status == 200
            events = read_events(await collect(response))
    errors = [d for name, d in events if name == "image_validation_error"]
    assert [e["error_code"] for e in errors] == [
        {"FileSizeExceeded": {"actual": len(big), "limit": MAX_FILE_SIZE}}
    ]
    assert events[-1][0] == "processing_complete"
    assert events[-1][1]["successful_files"] == 1


async def test_a_body_over_nginx_limit_gets_a_problem_413(stack: Stack) -> None:
    """A declared body over client_max_body_size (201 MiB): nginx's 413.

    nginx answers from the headers alone, before any of the body is sent and
    without asking ocr_sse, with the same RFC 9457 problem the endpoint uses.
    """
    status, headers, body = await raw_request(
        stack.port, declared(NGINX_BODY_LIMIT + 1, stack.port)
    )
    assert status == 413
    assert headers["Content-Type"] == "application/problem+json"
    assert orjson.loads(body) == {
        "type": "about:blank",
        "title": "Content Too Large",
        "status": 413,
        "detail": "the body is over the limit of 201 MiB",
    }


async def test_a_body_over_the_server_limit_gets_its_problem_413(
    stack: Stack,
) -> None:
    """A declared body under nginx's limit but over ocr_sse's: ocr_sse's 413.

    nginx passes the request head on at once (no request buffering), and
    passes back ocr_sse's RFC 9457 refusal before any body is sent.
    """
    status, headers, body = await raw_request(
        stack.port, declared(SERVER_BODY_LIMIT + 1, stack.port)
    )
    assert status == 413
    assert headers["Content-Type"] == "application/problem+json"
    assert f"over the limit of {SERVER_BODY_LIMIT} bytes".encode() in body


async def test_both_workers_answer_concurrent_uploads(stack: Stack) -> None:
    """Sixteen overlapping uploads through nginx all succeed, and both
    workers answer uploads.

    The workers share one listening socket and the kernel picks which one
    accepts each new connection, so sixteen may all go to one worker.  More
    rounds follow, at most four, until both have answered.  They go to
    gunicorn directly, each on a new connection: nginx would send them down
    the connections it keeps open from the round before, to the same
    workers.  The gunicorn access log carries the pid of the worker of each
    request.
    """
    start = stack.access_log.stat().st_size
    delimiter = f"--{BOUNDARY}\r\n".encode()

    async def one(url: str, name: str, session: aiohttp.ClientSession) -> None:
        first = multipart([("images", f"{name}-0.png", images.png())])
        second = multipart([("images", f"{name}-1.png", images.png(width=32))])

        async def body() -> AsyncIterator[bytes]:
            yield first[: -len(f"--{BOUNDARY}--\r\n")] + delimiter
            await asyncio.sleep(0.5)  # hold the connection: the uploads overlap
            yield second[len(delimiter) :]

        async with session.post(
            f"{url}/api/ocr", data=body(), headers={"Content-Type": CONTENT_TYPE}
        ) as response:
            assert response.status == 200
            events = read_events(await collect(response))
        assert types(events)[-1] == "processing_complete"
        assert events[-1][1]["successful_files"] == 2
        received = [d["file_name"] for e, d in events if e == "image_received"]
        assert received == [f"{name}-0.png", f"{name}-1.png"]

    async def sixteen(url: str, tag: str) -> set[int]:
        async def staggered(n: int, session: aiohttp.ClientSession) -> None:
            await asyncio.sleep(n * 0.05)  # new connections one by one
            await one(url, f"{tag}u{n}", session)

        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with asyncio.timeout(30):
                await asyncio.gather(*(staggered(n, session) for n in range(16)))
        return stack.answered_by("POST /api/ocr", since=start)

    pids = await sixteen(stack.url, "nginx")
    for round_ in range(4):
        if len(pids) == 2:
            break
        pids = await sixteen(stack.upstream, f"r{round_}")
    assert pids <= stack.worker_pids()
    assert len(pids) == 2, f"one worker answered every upload: {pids}"


async def test_sigterm_lets_an_upload_in_flight_finish(tmp_path: Path) -> None:
    """SIGTERM to gunicorn's master: the upload still being sent completes.

    File 0 has been validated when the signal comes; file 1 is sent a second
    later, while the worker is stopping.  It is validated, the stream ends
    with processing_complete, and gunicorn exits 0 within the grace period.
    """
    with start_stack(tmp_path) as stack:
        stopped_at = 0.0

        async def sigterm_then_wait() -> None:
            nonlocal stopped_at
            stopped_at = time.monotonic()
            await stack.sigterm_then_wait()

        async with aiohttp.ClientSession() as session:
            events = await two_files_while_watching(
                session, stack.url, between=sigterm_then_wait
            )
        assert types(events)[-1] == "processing_complete", events[-1]
        assert events[-1][1]["successful_files"] == 2
        exit_status = await asyncio.to_thread(stack.gunicorn.wait, GRACEFUL_TIMEOUT)
        assert exit_status == 0, stack.logs()
        assert time.monotonic() - stopped_at < SHUTDOWN_GRACE + 2, stack.logs()


#: An app as a team would write it: an async factory, the endpoint on a
#: sub-app.
TEAM_APP = """
from aiohttp import web

import ocr_sse


async def healthz(request):
    return web.json_response({"status": "ok"})


async def make_app():
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.add_subapp("/v2", ocr_sse.setup(web.Application()))
    return app
"""


async def test_sigterm_lets_an_upload_to_a_team_apps_sub_app_finish(
    tmp_path: Path,
) -> None:
    """The worker runs an async app factory, and on SIGTERM lets an upload in
    flight to the endpoint on a sub-app finish, then exits on its own."""
    (tmp_path / "team_app.py").write_text(TEAM_APP)
    with start_stack(tmp_path, app="team_app:make_app") as stack:
        async with aiohttp.ClientSession() as session:
            events = await two_files_while_watching(
                session, f"{stack.upstream}/v2", between=stack.sigterm_then_wait
            )
        assert types(events)[-1] == "processing_complete", events[-1]
        assert events[-1][1]["successful_files"] == 2
        exit_status = await asyncio.to_thread(stack.gunicorn.wait, GRACEFUL_TIMEOUT)
        assert exit_status == 0, stack.logs()
        assert stack.gunicorn_log.read_text().count("Worker exiting") == 2


async def test_a_body_still_arriving_after_the_grace_does_not_get_the_worker_killed(
    tmp_path: Path,
) -> None:
    """A client still sending when the grace ends gets its processing_error,
    and the worker exits on its own before --graceful-timeout, rather than
    waiting out aiohttp's 10 s of reading the rest of the body and being
    killed by gunicorn (which would skip the app's cleanup)."""
    grace, graceful_timeout = 1, 7  # graceful_timeout above grace + 5 s
    with start_stack(
        tmp_path,
        graceful_timeout=graceful_timeout,
        OCR_SSE_SHUTDOWN_GRACE=str(grace),
    ) as stack:
        port = int(stack.upstream.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                declared(SERVER_BODY_LIMIT, port)
                + f"--{BOUNDARY}\r\nContent-Disposition: form-data;"
                ' name="images"; filename="slow.png"\r\n\r\n'
            ).encode()
        )

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(300):  # at most 30 s
                    writer.write(bytes(1024))
                    await writer.drain()
                    await asyncio.sleep(0.1)

        sending = asyncio.create_task(trickle())
        try:
            async with asyncio.timeout(30):
                await reader.readuntil(b"event: upload_started\n")
                stack.gunicorn.send_signal(signal.SIGTERM)
                stopped_at = time.monotonic()
                await reader.readuntil(b"event: processing_error\n")
                last = orjson.loads((await reader.readline()).removeprefix(b"data: "))
            assert last["data"]["error_message"] == "server shutting down"
            exit_status = await asyncio.to_thread(
                stack.gunicorn.wait, graceful_timeout + 5
            )
            took = time.monotonic() - stopped_at
        finally:
            sending.cancel()
            writer.close()
        log = stack.gunicorn_log.read_text()
        assert exit_status == 0, stack.logs()
        assert "SIGKILL" not in log, stack.logs()
        assert log.count("Worker exiting") == 2, stack.logs()
        assert took < graceful_timeout, stack.logs()


async def test_aiohttp_own_worker_cuts_the_same_upload_short(tmp_path: Path) -> None:
    """The same stop under plain aiohttp.GunicornWebWorker fails the upload.

    aiohttp stops reading bodies once its shutdown starts
    (aio-libs/aiohttp#2298): file 1 never arrives, and at the end of the
    grace period the upload ends with a processing_error.  This is why
    ``ocr_sse.worker`` exists; should aiohttp fix it, this test says so.
    """
    with start_stack(tmp_path, worker_class="aiohttp.GunicornWebWorker") as stack:
        async with aiohttp.ClientSession() as session:
            events = await two_files_while_watching(
                session, stack.url, between=stack.sigterm_then_wait
            )
        assert types(events)[-1] == "processing_error"
        assert events[-1][1]["error_type"] == "InternalServerError"


async def test_nginx_stalls_a_large_body_sent_faster_than_it_is_read(
    tmp_path: Path,
) -> None:
    """Known nginx limit: a fast large body stops once the stream has begun.

    Stock nginx stops passing the request body on when its write to the
    upstream had to wait after it sent the response head on (docs/deploy.md,
    "Known limit").  ocr_sse then hears nothing and ends the upload with
    SystemTimeout after read_timeout.  Should nginx pass the body on, this
    test fails, and docs/deploy.md should say the limit is gone.

    The upload opens with sixteen PNGs slow to decode (0.2 s each), which
    fill the upload's read-ahead: ocr_sse stops reading for a while, so
    nginx's write has to wait, whatever the speed of the machine.
    """
    size = 150 * 1024 * 1024
    slow = [("images", f"slow-{n}.png", SLOW_PNG) for n in range(16)]
    with start_stack(
        tmp_path, OCR_SSE_MAX_REQUEST_SIZE="200M", OCR_SSE_READ_TIMEOUT="2"
    ) as stack:

        async def body() -> AsyncIterator[bytes]:
            yield multipart(slow)[: -len(f"--{BOUNDARY}--\r\n")]
            yield (
                f"--{BOUNDARY}\r\nContent-Disposition: form-data;"
                ' name="images"; filename="big.png"\r\n\r\n'
            ).encode()
            block = bytes(1024 * 1024)
            for _ in range(size // len(block)):
                yield block
            yield f"\r\n--{BOUNDARY}--\r\n".encode()

        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{stack.url}/api/ocr",
                data=body(),
                headers={"Content-Type": CONTENT_TYPE},
            ) as response:
                assert response.status == 200
                events = read_events(await collect(response))
        assert events[-1][0] == "processing_error"
        assert events[-1][1]["error_type"] == "SystemTimeout"
