#!/usr/bin/env python
"""Load test of a running ocr_sse server through ``ocr_sse.client``.

Runs uploads from N concurrent workers until a count or a duration is
reached, whichever comes first, and checks every event stream against the
wire contract:

- ``upload_started`` first, exactly once, with the declared ``total_files``;
- per file, in file order: ``image_received``, ``image_validation_start``,
  then exactly one result; the results in file order; every file reported;
- only the upload's own session id and its own (unique) file names;
- exactly one terminal event, last; ``processing_complete`` with the right
  counts, and each file's result the one its content calls for.

It reports uploads per second, latency percentiles of the first and of the
last event of each upload (from the moment the request is made), the errors
by kind, and the server's peak RSS (``VmHWM`` from ``/proc/PID/status``) when
it knows the server's process: ``--server-pid``, or ``--spawn`` to start
``python -m ocr_sse`` on 127.0.0.1 on a free port for the run.

    python scripts/loadtest.py --spawn --concurrency 20 --duration 10
    python scripts/loadtest.py --url http://127.0.0.1:3000/api/ocr \\
        --server-pid "$(pgrep -n ocr-sse)" --json

The exit status is 0 when every upload passed, 1 when any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, TextIO

import aiohttp
from PIL import Image

from ocr_sse.client import StreamError, UploadRefused, upload
from ocr_sse.events import (
    AllImagesValidated,
    Event,
    ImageReceived,
    ImageValidationError,
    ImageValidationStart,
    ImageValidationSuccess,
    ProcessingComplete,
    ProcessingError,
    UnsupportedFormat,
    UploadStarted,
)

__all__ = ("Report", "StreamCheck", "main", "percentile", "run")

ENDPOINT = "/api/ocr"
#: Not an image: what an invalid file of the mix is (a PDF header).
NOT_AN_IMAGE = b"%PDF-1.4\n% not an image\n%%EOF\n"


# -- checking one stream -------------------------------------------------------


class ContractViolation(Exception):
    """An event stream broke the wire contract; ``code`` names the rule."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass
class StreamCheck:
    """Checks the events of one upload, one at a time, against the contract.

    *names* are the file names the upload sent, in order, and *valid* says
    for each whether it is an image the server must accept.
    """

    names: Sequence[str]
    valid: Sequence[bool]
    session_id: uuid.UUID | None = None
    terminal: Event | None = None
    received: int = 0
    started: int = 0
    results: int = 0
    successes: int = 0

    def feed(self, event: Event) -> None:
        """Check the next *event*; raise :class:`ContractViolation` on a broken rule."""
        if self.terminal is not None:
            raise ContractViolation("event_after_terminal", event.type)
        if isinstance(event, UploadStarted):
            if self.session_id is not None:
                raise ContractViolation("started_twice", "a second upload_started")
            if event.total_files != len(self.names):
                raise ContractViolation(
                    "total_files", f"{event.total_files} declared {len(self.names)}"
                )
            self.session_id = event.session_id
            return
        if self.session_id is None:
            raise ContractViolation("started_not_first", f"{event.type} came first")
        if isinstance(event, ImageReceived):
            self._expect_index(event.file_index, self.received, "received_order")
            self._own_name(event.file_index, event.file_name)
            if event.size_bytes <= 0:
                raise ContractViolation(
                    "size", f"file {event.file_index}: {event.size_bytes}"
                )
            self.received += 1
        elif isinstance(event, ImageValidationStart):
            self._expect_index(event.file_index, self.started, "validation_start_order")
            if event.file_index >= self.received:
                raise ContractViolation("start_before_received", str(event.file_index))
            self._own_name(event.file_index, event.file_name)
            self.started += 1
        elif isinstance(event, (ImageValidationSuccess, ImageValidationError)):
            self._result(event)
        elif isinstance(event, AllImagesValidated):
            self._all_done()
            if (event.total_processed, event.successful_count, event.failed_count) != (
                self.results,
                self.successes,
                self.results - self.successes,
            ):
                raise ContractViolation("counts", f"all_images_validated: {event}")
        elif isinstance(event, ProcessingComplete):
            self._own_session(event.session_id)
            self._all_done()
            if (event.total_files, event.successful_files) != (
                self.results,
                self.successes,
            ):
                raise ContractViolation("counts", f"processing_complete: {event}")
            self.terminal = event
        elif isinstance(event, ProcessingError):
            self._own_session(event.session_id)
            self.terminal = event

    def finish(self) -> None:
        """Check the end of the stream: exactly one terminal event, last."""
        if self.session_id is None:
            raise ContractViolation("no_upload_started", "the stream had no events")
        if self.terminal is None:
            raise ContractViolation("no_terminal", "the stream ended without one")

    def _result(self, event: ImageValidationSuccess | ImageValidationError) -> None:
        index = event.file_index
        self._expect_index(index, self.results, "result_order")
        if index >= self.started:
            raise ContractViolation("result_before_start", str(index))
        if isinstance(event, ImageValidationSuccess):
            self._own_name(index, event.file_info.file_name)
            if event.file_info.file_index != index:
                raise ContractViolation("file_index", f"file_info of {index}")
            ok = True
        else:
            self._own_name(index, event.file_name)
            ok = False
        if ok != self.valid[index]:
            raise ContractViolation(
                "unexpected_result",
                f"file {index} ({self.names[index]}): {event.type}"
                + (
                    f" {event.error_message}"
                    if isinstance(event, ImageValidationError)
                    else ""
                ),
            )
        if not ok and isinstance(event, ImageValidationError):
            if event.error_code != UnsupportedFormat(detected="application/pdf"):
                raise ContractViolation(
                    "error_code", f"file {index}: {event.error_code}"
                )
        self.results += 1
        self.successes += ok

    def _all_done(self) -> None:
        if self.results != len(self.names):
            raise ContractViolation(
                "missing_results", f"{self.results} results for {len(self.names)} files"
            )

    def _expect_index(self, index: int, expected: int, code: str) -> None:
        if index != expected:
            raise ContractViolation(code, f"file {index} where {expected} was due")
        if index >= len(self.names):
            raise ContractViolation("file_index", f"file {index} of {len(self.names)}")

    def _own_name(self, index: int, name: str | None) -> None:
        if name != self.names[index]:
            raise ContractViolation("foreign_file_name", f"file {index} is {name!r}")

    def _own_session(self, session_id: uuid.UUID) -> None:
        if session_id != self.session_id:
            raise ContractViolation("foreign_session", str(session_id))


# -- statistics and the report ---------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of *values* (``fraction`` 0.95 for p95)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _summary(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else None,
    }


@dataclass
class Report:
    """What one run measured; :meth:`as_dict` is the ``--json`` document."""

    url: str
    concurrency: int
    duration_limit_s: float
    max_uploads: int
    files_per_upload: int
    invalid_per_upload: int
    elapsed_s: float = 0.0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    first_event_ms: list[float] = field(default_factory=list)
    last_event_ms: list[float] = field(default_factory=list)
    server_pid: int | None = None
    server_peak_rss_bytes: int | None = None

    @property
    def uploads(self) -> int:
        return self.ok + self.failed

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "concurrency": self.concurrency,
            "duration_limit_s": self.duration_limit_s,
            "max_uploads": self.max_uploads,
            "files_per_upload": self.files_per_upload,
            "invalid_per_upload": self.invalid_per_upload,
            "elapsed_s": round(self.elapsed_s, 3),
            "uploads": self.uploads,
            "ok": self.ok,
            "failed": self.failed,
            "uploads_per_s": round(self.ok / self.elapsed_s, 2)
            if self.elapsed_s
            else 0.0,
            "latency_ms": {
                "first_event": _summary(self.first_event_ms),
                "last_event": _summary(self.last_event_ms),
            },
            "errors": dict(sorted(self.errors.items())),
            "error_examples": dict(sorted(self.error_examples.items())),
            "server": {
                "pid": self.server_pid,
                "peak_rss_bytes": self.server_peak_rss_bytes,
            },
        }

    def table(self) -> str:
        doc = self.as_dict()

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        def latency(which: str) -> str:
            cells = doc["latency_ms"][which]
            return "  ".join(
                f"{key} {ms(cells[key])}" for key in ("p50", "p95", "p99", "max")
            )

        rss = self.server_peak_rss_bytes
        rows = [
            ("target", self.url),
            (
                "load",
                f"{self.concurrency} concurrent,"
                f" {self.files_per_upload} files per upload"
                f" ({self.invalid_per_upload} not images)",
            ),
            (
                "bounds",
                f"{self.duration_limit_s:g} s or {self.max_uploads} uploads;"
                f" ran {self.elapsed_s:.2f} s",
            ),
            (
                "uploads",
                f"{doc['uploads']} done, {self.ok} passed, {self.failed} failed,"
                f" {doc['uploads_per_s']:.1f} uploads/s",
            ),
            ("first event ms", latency("first_event")),
            ("last event ms", latency("last_event")),
        ]
        if self.errors:
            for kind, count in sorted(self.errors.items()):
                rows.append(
                    (f"error {kind}", f"{count}  e.g. {self.error_examples[kind]}")
                )
        else:
            rows.append(("errors", "none"))
        rows.append(
            (
                "server peak RSS",
                "unknown (no --server-pid or --spawn)"
                if rss is None
                else f"{rss / 2**20:.1f} MiB (VmHWM of pid {self.server_pid})",
            )
        )
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# -- the run -----------------------------------------------------------------------


def make_image(width: int, height: int) -> bytes:
    """A PNG of varied pixels, so that the server really decodes something."""
    image = Image.new("RGB", (width, height))
    image.putdata(
        [
            ((x * 7) % 256, (y * 5) % 256, (x + y) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ContractViolation):
        return f"contract:{exc.code}"
    if isinstance(exc, UploadRefused):
        return f"refused:{exc.status}"
    if isinstance(exc, StreamError):
        return "stream_error"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


async def _one_upload(
    session: aiohttp.ClientSession,
    url: str,
    number: int,
    *,
    image: bytes,
    files: int,
    invalid: int,
    timeout: float,
    report: Report,
) -> None:
    # Names unique to this upload: another upload's name in its stream is
    # a leak between uploads.
    tag = f"u{number}-{uuid.uuid4().hex[:8]}"
    valid = [True] * files + [False] * invalid
    names = [
        f"{tag}-{index}.png" if ok else f"{tag}-{index}.pdf"
        for index, ok in enumerate(valid)
    ]
    sources = [
        (name, image if ok else NOT_AN_IMAGE)
        for name, ok in zip(names, valid, strict=True)
    ]
    check = StreamCheck(names=names, valid=valid)
    loop = asyncio.get_running_loop()
    begun = loop.time()
    first: float | None = None
    last: float | None = None
    try:
        async with asyncio.timeout(timeout):
            async for event in upload(session, url, sources, total_files=len(sources)):
                now = loop.time()
                first = now if first is None else first
                last = now
                check.feed(event)
        check.finish()
        if isinstance(check.terminal, ProcessingError):
            raise ContractViolation(
                f"processing_error:{check.terminal.error_type.value}",
                check.terminal.error_message,
            )
    except Exception as exc:  # every failure is counted, by kind
        kind = _error_kind(exc)
        report.errors[kind] += 1
        report.error_examples.setdefault(kind, str(exc)[:200] or type(exc).__name__)
        return
    assert first is not None and last is not None
    report.ok += 1
    report.first_event_ms.append((first - begun) * 1000)
    report.last_event_ms.append((last - begun) * 1000)


async def run(
    url: str,
    *,
    concurrency: int,
    duration: float,
    max_uploads: int,
    files: int = 2,
    invalid: int = 0,
    image_size: tuple[int, int] = (64, 48),
    timeout: float = 60.0,
) -> Report:
    """Run the load against the endpoint at *url*; return what was measured.

    No upload starts after *duration* seconds or once *max_uploads* have
    started; those in flight then finish, each within *timeout* seconds.
    """
    report = Report(
        url=url,
        concurrency=concurrency,
        duration_limit_s=duration,
        max_uploads=max_uploads,
        files_per_upload=files + invalid,
        invalid_per_upload=invalid,
    )
    image = make_image(*image_size)
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + duration
    numbers: Iterator[int] = iter(range(max_uploads))
    connector = aiohttp.TCPConnector(limit=concurrency)
    session_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=session_timeout
    ) as session:

        async def worker() -> None:
            while (
                loop.time() < deadline and (number := next(numbers, None)) is not None
            ):
                await _one_upload(
                    session,
                    url,
                    number,
                    image=image,
                    files=files,
                    invalid=invalid,
                    timeout=timeout,
                    report=report,
                )

        async with asyncio.TaskGroup() as workers:
            for _ in range(concurrency):
                workers.create_task(worker())
    report.elapsed_s = loop.time() - started
    return report


# -- the server process --------------------------------------------------------------


def peak_rss(pid: int) -> int | None:
    """The peak resident set size of process *pid* in bytes (``VmHWM``), if readable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    # The kernel always writes this field in kB (KiB).
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def free_port() -> int:
    """A port free on 127.0.0.1 now (another process could still take it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SpawnedServer:
    """``python -m ocr_sse`` on 127.0.0.1 for the length of a ``with`` block."""

    def __init__(
        self, extra_args: Sequence[str] = (), *, ready_timeout: float = 20.0
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._argv = [
            sys.executable,
            "-m",
            "ocr_sse",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *extra_args,
        ]
        self._ready_timeout = ready_timeout
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SpawnedServer:
        self.start()
        return self

    def start(self) -> None:
        """Start the server and wait until ``/healthz`` answers 200."""
        # The server's log goes to a file, not a pipe: a pipe nobody reads
        # fills up and stalls the server mid-run.
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _wait_ready(self) -> None:
        assert self.process is not None
        give_up = time.monotonic() + self._ready_timeout
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}:\n"
                    + self.log_tail()
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5
                ) as probe,
            ):
                probe.sendall(
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                if probe.recv(64).startswith(b"HTTP/1.1 200"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the server was not ready after {self._ready_timeout:g} s")

    def log_tail(self, size: int = 2000) -> str:
        """The end of the server's output, to explain a failed start."""
        if self._log is None or self._log.closed:
            return ""
        self._log.seek(0, os.SEEK_END)
        self._log.seek(max(0, self._log.tell() - size))
        return self._log.read().decode("utf-8", "replace")

    def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()


# -- the command line ------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, not {text!r}"
        ) from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"sides must be above 0, not {text!r}")
    return width, height


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadtest.py",
        description="Run concurrent uploads against an ocr_sse server, check every"
        " event stream against the contract, report throughput and latency.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--url",
        help=f"the endpoint of a running server, e.g. http://127.0.0.1:3000{ENDPOINT}",
    )
    target.add_argument(
        "--spawn",
        action="store_true",
        help="start `python -m ocr_sse` on 127.0.0.1 (a free port), stop it at the end",
    )
    parser.add_argument(
        "--server-pid",
        type=_positive_int,
        help="pid of the --url server, to report its peak RSS",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the --spawn server (repeatable),"
        " e.g. --server-arg=--max-uploads=512",
    )
    parser.add_argument(
        "-c",
        "--concurrency",
        type=_positive_int,
        default=10,
        help="uploads in flight [10]",
    )
    parser.add_argument(
        "-d",
        "--duration",
        type=_positive_float,
        default=10.0,
        help="seconds after which no upload starts [10]",
    )
    parser.add_argument(
        "-n",
        "--max-uploads",
        type=_positive_int,
        default=10_000,
        help="most uploads started [10000]",
    )
    parser.add_argument(
        "--files",
        type=_non_negative_int,
        default=2,
        help="valid PNG files per upload [2]",
    )
    parser.add_argument(
        "--invalid",
        type=_non_negative_int,
        default=0,
        help="files per upload that are not images [0]",
    )
    parser.add_argument(
        "--image-size",
        type=_size,
        default=(64, 48),
        help="PNG size, WIDTHxHEIGHT [64x48]",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=60.0,
        help="seconds one upload may take [60]",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON instead of a table",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the load test the command line *argv* describes; return the exit status."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    out = out if out is not None else sys.stdout
    if args.files + args.invalid == 0:
        parser.error("an upload needs at least one file (--files or --invalid)")
    if args.spawn and args.server_pid is not None:
        parser.error("--server-pid is for --url; --spawn knows its server")
    if args.server_arg and not args.spawn:
        parser.error("--server-arg is for --spawn")
    options: dict[str, Any] = {
        "concurrency": args.concurrency,
        "duration": args.duration,
        "max_uploads": args.max_uploads,
        "files": args.files,
        "invalid": args.invalid,
        "image_size": args.image_size,
        "timeout": args.timeout,
    }
    if args.spawn:
        server = SpawnedServer(args.server_arg)
        try:
            server.start()
        except RuntimeError as failed:
            parser.exit(2, f"{parser.prog}: cannot start the server: {failed}\n")
        with contextlib.closing(server):
            report = asyncio.run(run(server.base_url + ENDPOINT, **options))
            report.server_pid = server.pid
            report.server_peak_rss_bytes = peak_rss(server.pid)
    else:
        report = asyncio.run(run(args.url, **options))
        if args.server_pid is not None:
            report.server_pid = args.server_pid
            report.server_peak_rss_bytes = peak_rss(args.server_pid)
    if args.json:
        json.dump(report.as_dict(), out, indent=2)
        out.write("\n")
    else:
        out.write(report.table() + "\n")
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
