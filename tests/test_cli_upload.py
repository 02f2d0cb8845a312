"""`ocr-sse upload` against a real server process: output and exit status."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

import ocr_sse
from ocr_sse import __main__ as cli
from ocr_sse.events import from_json, to_json
from ocr_sse.progress import UNICODE, size_text

from . import images
from .test_main import free_port, run, running_server


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_server() as base:
        yield base + "/api/ocr"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {
        "receipt.jpg": images.jpeg(width=124, height=175),
        "scan.png": images.png(),
        "notes.pdf": images.pdf(),
    }
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in made}


def size(path: Path) -> str:
    return f"{size_text(path.stat().st_size):>10}"


def test_a_valid_image_and_a_pdf_print_one_line_each_and_exit_1(
    url: str, files: dict[str, Path]
) -> None:
    """Off a terminal: each file's final line once, in order, then the
    summary; no escape codes; a failed file gives exit status 1."""
    png, pdf = files["scan.png"], files["notes.pdf"]
    result = run("upload", str(png), str(pdf), "--url", url)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"scan.png   {size(png)}  ✓ PNG 64x48",
        f"notes.pdf  {size(pdf)}  ✗ UnsupportedFormat:"
        " unsupported format: application/pdf",
    ]
    assert lines[2].startswith("done: 1 valid, 1 failed of 2 files in ")
    assert len(lines) == 3
    assert "\x1b" not in result.stdout
    assert result.stderr == ""


def test_all_valid_files_exit_0(url: str, files: dict[str, Path]) -> None:
    """Every file valid and processing_complete: exit status 0."""
    jpg, png = files["receipt.jpg"], files["scan.png"]
    result = run("upload", str(jpg), str(png), "--url", url, "--total-files", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [
        f"receipt.jpg  {size(jpg)}  ✓ JPEG 124x175",
        f"scan.png     {size(png)}  ✓ PNG 64x48",
    ]
    assert result.stdout.splitlines()[2].startswith("done: 2 valid, 0 failed of 2")


def test_json_prints_every_event_as_the_contract_json_in_order(
    url: str, files: dict[str, Path]
) -> None:
    """--json: one contract JSON line per event and nothing else, in the
    contract's order; each line is exactly what to_json gives."""
    result = run(
        "upload",
        str(files["scan.png"]),
        str(files["notes.pdf"]),
        "--url",
        url,
        "--total-files",
        "2",
        "--json",
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.encode().splitlines()
    documents = [orjson.loads(line) for line in lines]
    assert all(set(document) == {"type", "data"} for document in documents)
    assert [to_json(from_json(line)) for line in lines] == lines
    kinds = [document["type"] for document in documents]
    assert kinds[0] == "upload_started"
    assert documents[0]["data"]["total_files"] == 2
    assert kinds[-2:] == ["all_images_validated", "processing_complete"]
    for index in (0, 1):
        of_file = [
            document["type"]
            for document in documents
            if document["data"].get("file_index") == index
        ]
        assert of_file[:2] == ["image_received", "image_validation_start"]
    results = [
        (document["type"], document["data"]["file_index"])
        for document in documents
        if document["type"].startswith("image_validation_")
        and document["type"] != "image_validation_start"
    ]
    assert results == [("image_validation_success", 0), ("image_validation_error", 1)]
    assert len(kinds) == 9


def test_a_refusal_exits_2_with_the_problem_on_stderr(files: dict[str, Path]) -> None:
    """A 4xx refusal before the stream: exit 2, its status, title and detail
    on stderr, nothing on stdout."""
    with running_server("--max-request-size", "100") as base:
        small = base + "/api/ocr"
        result = run("upload", str(files["receipt.jpg"]), "--url", small)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        "ocr-sse upload: error: 413 Content Too Large: the body is "
    )
    assert result.stderr.endswith(" over the limit of 100 bytes\n")


def test_an_unreachable_server_exits_3_with_one_line(files: dict[str, Path]) -> None:
    """Nothing listening: exit 3 and one clear line, no traceback."""
    url = f"http://127.0.0.1:{free_port()}/api/ocr"
    result = run("upload", str(files["scan.png"]), "--url", url)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr == (
        f"ocr-sse upload: error: cannot reach {url}: Connection refused\n"
    )


def test_a_tls_failure_exits_3_with_its_reason(
    url: str, files: dict[str, Path]
) -> None:
    """https:// to a server that speaks plain HTTP: exit 3 with the TLS
    reason OpenSSL gives (WRONG_VERSION_NUMBER), not the "Operation not
    permitted" of its error number read as the system's."""
    https = url.replace("http://", "https://", 1)
    result = run("upload", str(files["scan.png"]), "--url", https)
    assert result.returncode == 3
    assert result.stdout == ""
    line = f"ocr-sse upload: error: cannot reach {https}: TLS handshake failed: "
    assert re.fullmatch(re.escape(line) + r"[A-Z][A-Z0-9_]+\n", result.stderr)


def test_a_missing_file_is_a_usage_error_before_anything_is_sent(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """A path that cannot be read: exit 2 before connecting (the URL has no
    server, which would give 3), with the path named."""
    url = f"http://127.0.0.1:{free_port()}/api/ocr"
    missing = tmp_path / "missing.png"
    result = run("upload", str(files["scan.png"]), str(missing), "--url", url)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"ocr-sse upload: error: cannot read {missing}: No such file" in (
        result.stderr
    )


def test_a_file_whose_read_fails_while_sent_exits_2_at_once() -> None:
    """A file that opens but fails to read (here /proc/self/mem, whose first
    page is not mapped): exit 2 as soon as the read fails, naming the path,
    not a SystemTimeout once the server tires of waiting."""
    with running_server("--read-timeout", "1") as base:
        result = run("upload", "/proc/self/mem", "--url", base + "/api/ocr")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        "ocr-sse upload: error: cannot read /proc/self/mem: Input/output error\n"
    )


def test_a_file_piped_to_dev_stdin_is_sent(url: str, files: dict[str, Path]) -> None:
    """`cat scan.png | ocr-sse upload /dev/stdin`: the pipe is sent to its
    end and validated, exit 0."""
    png = files["scan.png"]
    result = subprocess.run(
        [sys.executable, "-m", "ocr_sse", "upload", "/dev/stdin", "--url", url],
        input=png.read_bytes(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines()[0] == (
        f"stdin  {size(png)}  ✓ PNG 64x48"
    )
    assert result.stderr == b""


def test_ctrl_c_while_a_pipe_sends_nothing_exits_130(
    url: str, files: dict[str, Path]
) -> None:
    """Ctrl-C while /dev/stdin is a pipe whose writer sends nothing: exit 130
    at once, nothing on stderr, rather than waiting for the pipe for ever."""
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "ocr_sse", "upload", "/dev/stdin"]
    process = subprocess.Popen(
        [*command, str(files["scan.png"]), "--url", url, "--json"],
        stdin=read_end,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(read_end)
    try:
        first = process.stdout.readline()  # type: ignore[union-attr]
        assert orjson.loads(first)["type"] == "upload_started"
        time.sleep(0.5)  # the read of the pipe is under way
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=5)
    finally:
        os.close(write_end)
        process.kill()
        process.wait()
    assert process.returncode == 130
    assert stderr == b""


def test_names_with_an_escape_or_bytes_not_utf8_are_sent(
    url: str, tmp_path: Path
) -> None:
    """Files named with ESC, or with bytes that are not UTF-8, are sent and
    shown escaped (the escape as \\x1b, the bytes as U+FFFD): exit 0."""
    escape = tmp_path / "esc\x1b[31m.png"
    undecodable = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    for path in (escape, undecodable):
        with open(path, "wb") as file:
            file.write(images.png())
    result = run("upload", str(escape), os.fsdecode(undecodable), "--url", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [
        f"esc\\x1b[31m.png  {size(escape)}  ✓ PNG 64x48",
        f"caf\ufffd.png         {size(escape)}  ✓ PNG 64x48",
    ]
    assert result.stderr == ""


def test_a_name_the_output_encoding_lacks_is_shown_escaped(
    url: str, tmp_path: Path
) -> None:
    """An output encoding without a name's characters (PYTHONIOENCODING=ascii)
    shows them backslash-escaped: exit 0, no traceback."""
    receipt = tmp_path / "reçu.png"
    receipt.write_bytes(images.png())
    result = run("upload", str(receipt), "--url", url, PYTHONIOENCODING="ascii")
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.splitlines()[0] == f"re\\xe7u.png  {size(receipt)}  ok PNG 64x48"
    )
    assert result.stderr == ""


def test_a_closed_stdout_still_uploads(url: str, files: dict[str, Path]) -> None:
    """Started with stdout closed (`>&-`), the upload runs and its exit
    status says how it went: 0, nothing on stderr."""
    command = [sys.executable, "-m", "ocr_sse", "upload", str(files["scan.png"])]
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *command, "--url", url],
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_an_output_that_cannot_be_written_exits_1_with_one_line(
    url: str, files: dict[str, Path]
) -> None:
    """stdout on a full disk (/dev/full): exit 1 with the reason on stderr,
    no traceback."""
    command = [sys.executable, "-m", "ocr_sse", "upload", str(files["scan.png"])]
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*command, "--url", url],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert result.stderr == (
        "ocr-sse upload: error: cannot write the output: No space left on device\n"
    )


async def test_a_server_that_ignores_expect_gets_the_body_after_a_wait(
    aiohttp_client: Any,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server that never answers `Expect: 100-continue` (it waits for the
    body first) gets the body once the command has waited _CONTINUE_WAIT
    seconds, as curl does: the upload goes through, exit 0."""

    async def ignore(request: web.Request) -> None:
        return None  # no 100 Continue, no refusal: read the body regardless

    app = ocr_sse.setup(web.Application(), path="/api/ocr")
    app.router.add_post("/no-continue", ocr_sse.handle_upload, expect_handler=ignore)
    client = await aiohttp_client(app)
    monkeypatch.setattr(cli, "_CONTINUE_WAIT", 0.05)
    png = files["scan.png"]
    async with asyncio.timeout(2):
        status = await cli._upload(
            client.make_url("/no-continue"),
            [str(png)],
            total_files=None,
            json=False,
            terminal=False,
            glyphs=UNICODE,
        )
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"scan.png  {size(png)}  ✓ PNG 64x48"
    assert lines[1].startswith("done: 1 valid, 0 failed of 1 file in ")


async def test_a_refusal_cannot_send_escape_codes_to_the_terminal(
    aiohttp_client: Any, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A refusal whose problem document carries control characters (an
    escape code, a line break) is shown on one line with them escaped, as
    names and messages of the stream are: exit 2."""

    async def refuse(request: web.Request) -> web.Response:
        problem = {"title": "Bad\x1b[2J", "status": 422, "detail": "one\ntwo"}
        return web.Response(
            status=422,
            body=orjson.dumps(problem),
            content_type="application/problem+json",
        )

    app = web.Application()
    app.router.add_post("/api/ocr", refuse)
    client = await aiohttp_client(app)
    async with asyncio.timeout(5):
        status = await cli._upload(
            client.make_url("/api/ocr"),
            [str(files["scan.png"])],
            total_files=None,
            json=False,
            terminal=False,
            glyphs=UNICODE,
        )
    assert status == 2
    assert capsys.readouterr().err == (
        "ocr-sse upload: error: 422 Bad\\x1b[2J: one\\x0atwo\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: FILE"),
        (["x.png", "--total-files", "-1"], "argument --total-files: expected a whole"),
        (["x.png", "--url", "ftp://host/"], "--url must be an http:// or https://"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    """Missing files, a bad --total-files or a non-HTTP URL: exit 2, usage."""
    result = run("upload", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_without_upload_the_command_still_runs_the_server() -> None:
    """Only a first argument `upload` selects the client: flags alone still
    configure the server (here its --help)."""
    result = run("--help")
    assert result.returncode == 0
    assert "--max-request-size" in result.stdout
    assert "ocr-sse upload FILE..." in result.stdout


def test_on_a_terminal_lines_are_redrawn_in_place(
    url: str, files: dict[str, Path]
) -> None:
    """On a terminal each file's line is redrawn with cursor movement as its
    events arrive, and ends with its result and the summary."""
    main, terminal = pty.openpty()
    upload = [sys.executable, "-m", "ocr_sse", "upload"]
    process = subprocess.Popen(
        [*upload, str(files["scan.png"]), str(files["notes.pdf"]), "--url", url],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=subprocess.PIPE,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "200"},
    )
    os.close(terminal)
    output = b""
    with contextlib.suppress(OSError):  # EIO once the process has exited
        while chunk := os.read(main, 65536):
            output += chunk
    os.close(main)
    assert process.wait(timeout=30) == 1
    process.stderr.close()  # type: ignore[union-attr]
    text = output.decode()
    assert text.startswith("scan.png   ")
    assert "sending..." in text and "validating..." in text
    assert "\r\x1b[1A\x1b[J" in text
    assert "✓ PNG 64x48\r\n" in text
    assert "✗ UnsupportedFormat: unsupported format: application/pdf\r\n" in text
    assert "done: 1 valid, 1 failed of 2 files in " in text
