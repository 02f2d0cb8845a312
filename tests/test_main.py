"""The command line: a real server process, and clear errors for bad settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import pytest

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


@pytest.fixture
def server() -> Iterator[str]:
    """A real `python -m ocr_sse` on a free loopback port; stopped afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ocr_sse", "--port", str(port), "--max-files", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        finally:
            process.kill()
            process.stdout.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-files", "abc"], {}, "argument --max-files: 'abc': expected a whole"),
        (["--port", "70000"], {}, "port must be between 0 and 65535, not 70000"),
        (["--keepalive-interval", "0"], {}, "keepalive_interval must be above 0"),
        ([], {"OCR_SSE_MAX_FILE_SIZE": "ten"}, "OCR_SSE_MAX_FILE_SIZE='ten'"),
        ([], {"OCR_SSE_ALLOWED_FORMATS": "PNG,PDF"}, "unknown: PDF"),
        (["--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
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
