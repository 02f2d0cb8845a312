#!/usr/bin/env python
"""Benchmark ocr_sse against a ceiling and three peers, interleaved, in one run.

Every server is started here as a subprocess on 127.0.0.1 (a free port each)
and stopped at the end, whatever happens.  The same workloads run against
each server, round-robin per repetition (the order rotates each time), and
one table of medians and ratios is printed and, with ``--json PATH``, saved.

Servers (the peers are fixtures under ``scripts/bench_peers/``):

- ``ceiling``: aiohttp reading and discarding the body, no multipart;
- ``ocr_sse``: ``python -m ocr_sse`` as shipped;
- ``naive``: aiohttp ``MultipartReader``, default ``read_chunk()``, Pillow in
  the event loop;
- ``fastapi``: FastAPI + sse-starlette on uvicorn, ``await request.form()``;
- ``collect``: the original Rust design's flow: collect every file, then
  validate, then stream.

and, only when named in ``--servers``, ``minimal``: the least a server can do
for small images (one coroutine, ocr_sse's validation and threads, no limits),
for the ``small`` and ``parts`` workloads.

The client is aiohttp in this process; it sends each body from an async
generator, so it knows when each file's last byte went out, and it measures
its own CPU use (``client cpu``) so a client-bound row can be told apart.
A run that fails is listed under the table, and the script then exits 1.

    python scripts/bench.py --json bench.json          # the full run
    python scripts/bench.py --quick --json /tmp/q.json # a smoke run, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import ctypes
import io
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "scripts" / "bench_peers"
SERVERS = ("ceiling", "ocr_sse", "naive", "fastapi", "collect")
#: Servers run only when named: they serve some workloads, not all.
OPT_IN_SERVERS = ("minimal",)
MB = 1_000_000
MiB = 1024 * 1024
SEND_CHUNK = 256 * 1024
TERMINAL = ("processing_complete", "processing_error")
RESULTS = ("image_validation_success", "image_validation_error")
CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


# --------------------------------------------------------------------------
# settings


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Sizes and counts of every workload, and the limits given to servers."""

    reps: int
    rss_reps: int
    threads: int
    drain_files: int
    drain_size: int
    small_files: int
    small_size: int
    large_files: int
    large_width: int
    large_height: int
    lat_files: int
    lat_serial: int
    lat_concurrency: int
    big_size: int
    rss_concurrency: int
    rss_image_size: int
    run_timeout: float
    budget: float


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Plan]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument(
        "--reps", type=int, help="repetitions of the throughput and latency workloads"
    )
    p.add_argument("--rss-reps", type=int, help="repetitions of the memory workloads")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 2,
        help="decoding threads of ocr_sse, collect and bare validation",
    )
    p.add_argument("--drain-files", type=int)
    p.add_argument("--drain-size", type=int, help="bytes per non-image file")
    p.add_argument("--small-files", type=int)
    p.add_argument("--small-size", type=int, help="target bytes per small image")
    p.add_argument("--large-files", type=int)
    p.add_argument("--large-megapixels", type=float)
    p.add_argument("--lat-files", type=int, help="small images per latency upload")
    p.add_argument(
        "--lat-serial", type=int, help="uploads, one after another, at concurrency 1"
    )
    p.add_argument("--lat-concurrency", type=int)
    p.add_argument("--big-size", type=int, help="bytes of the one oversized file")
    p.add_argument("--rss-concurrency", type=int)
    p.add_argument(
        "--rss-image-size", type=int, help="target bytes per memory-test image"
    )
    p.add_argument("--run-timeout", type=float, help="seconds one run may take")
    p.add_argument(
        "--budget",
        type=float,
        help="seconds for all repetitions; later ones are skipped",
    )
    args = p.parse_args(argv)
    quick = dict(
        reps=1,
        rss_reps=1,
        drain_files=4,
        drain_size=256 * 1024,
        small_files=20,
        small_size=20_000,
        large_files=2,
        large_megapixels=1.0,
        lat_files=2,
        lat_serial=3,
        lat_concurrency=5,
        big_size=24 * MiB,
        rss_concurrency=5,
        rss_image_size=1 * MB,
        run_timeout=20.0,
        budget=40.0,
    )
    full = dict(
        reps=9,
        rss_reps=3,
        drain_files=20,
        drain_size=5 * MB,
        small_files=500,
        small_size=20_000,
        large_files=10,
        large_megapixels=12.0,
        lat_files=5,
        lat_serial=100,
        lat_concurrency=100,
        big_size=2 * 1024**3,
        rss_concurrency=100,
        rss_image_size=8 * MB,
        run_timeout=300.0,
        budget=780.0,
    )
    base = quick if args.quick else full
    value = {
        k: getattr(args, k) if getattr(args, k, None) is not None else v
        for k, v in base.items()
    }
    mp = value.pop("large_megapixels")
    width = round(math.sqrt(mp * 1e6 * 4 / 3))
    plan = Plan(
        threads=args.threads,
        large_width=width,
        large_height=round(width * 3 / 4),
        **value,
    )
    return args, plan


# --------------------------------------------------------------------------
# payloads


def noise_image(fmt: str, width: int, height: int, **save: Any) -> bytes:
    """Incompressible pixels: the file size follows the pixel count."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def sized_image(fmt: str, target: int, **save: Any) -> bytes:
    """A square noise image whose file is about *target* bytes."""
    low, high = 8, 8
    while len(noise_image(fmt, high, high, **save)) < target:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if len(noise_image(fmt, mid, mid, **save)) < target:
            low = mid
        else:
            high = mid
    return noise_image(fmt, high, high, **save)


def photo_jpeg(width: int, height: int) -> bytes:
    """A photo-sized JPEG with smooth areas and grain, a few MB at 12 MP."""
    base = Image.linear_gradient("L").resize((width, height))
    grain = Image.effect_noise((width, height), 12)
    image = Image.merge(
        "RGB",
        (
            ImageChops.add(base, grain, scale=2.0),
            ImageChops.add(
                base.transpose(Image.Transpose.ROTATE_180), grain, scale=2.0
            ),
            grain,
        ),
    )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@dataclass(frozen=True)
class Part:
    """One file part of an upload: given bytes, or *size* bytes of a repeated block."""

    file_name: str
    content_type: str
    data: bytes | None = None
    size: int = 0
    block: bytes = b""

    @property
    def length(self) -> int:
        return len(self.data) if self.data is not None else self.size

    def chunks(self) -> Iterator[memoryview | bytes]:
        if self.data is not None:
            view = memoryview(self.data)
            for start in range(0, len(view), SEND_CHUNK):
                yield view[start : start + SEND_CHUNK]
            return
        left = self.size  # generated on the fly, never stored whole
        while left > 0:
            piece = self.block if left >= len(self.block) else self.block[:left]
            left -= len(piece)
            yield piece


@dataclass
class Payloads:
    blob: bytes
    small: list[bytes]
    large: list[bytes]
    rss_images: list[bytes]

    @classmethod
    def make(cls, plan: Plan) -> Payloads:
        blob = b"%PDF-1.7\n" + os.urandom(plan.drain_size - 9)  # not an image, clearly
        small = []
        for i in range(8):
            small.append(
                sized_image("PNG", plan.small_size)
                if i % 2
                else sized_image("JPEG", plan.small_size, quality=85)
            )
        large = [photo_jpeg(plan.large_width, plan.large_height) for _ in range(2)]
        side = round(math.sqrt(plan.rss_image_size / 3))
        rss = [noise_image("PNG", side, side) for _ in range(2)]
        return cls(blob=blob, small=small, large=large, rss_images=rss)

    def small_parts(self, count: int) -> list[Part]:
        return [
            Part(
                f"small-{i}.{'png' if i % 2 else 'jpg'}",
                "image/png" if i % 2 else "image/jpeg",
                self.small[i % len(self.small)],
            )
            for i in range(count)
        ]


# --------------------------------------------------------------------------
# servers


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: a server outlives no benchmark, even a killed one.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_file_size: int
    max_request_size: int
    max_files: int
    max_uploads: int
    threads: int

    @classmethod
    def of(cls, plan: Plan, payloads: Payloads) -> Limits:
        largest = max(
            plan.drain_size, *map(len, payloads.large), *map(len, payloads.rss_images)
        )
        max_file_size = max(2 * largest, MiB)
        max_file_size = -(-max_file_size // MiB) * MiB
        if plan.big_size <= max_file_size:
            raise SystemExit(
                f"--big-size must be over the per-file limit {max_file_size}"
            )
        total = max(
            plan.drain_files * plan.drain_size,
            plan.big_size,
            plan.small_files * 2 * plan.small_size,
        )
        return cls(
            max_file_size=max_file_size,
            max_request_size=total + 64 * MiB,
            max_files=max(
                plan.small_files, plan.drain_files, plan.large_files, plan.lat_files, 20
            ),
            max_uploads=max(plan.lat_concurrency, plan.rss_concurrency) + 16,
            threads=plan.threads,
        )


_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _LIVE.discard(proc)


class Server:
    """One server subprocess: started on a free port, stopped on the way out."""

    def __init__(
        self, name: str, limits: Limits, logdir: Path, *, source: Path = ROOT
    ) -> None:
        self.name = name
        #: The checkout it runs from (``python -m ocr_sse`` imports from here).
        self.source = source
        self.limits = limits
        self.log = logdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.baseline: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        lim, port = self.limits, str(self.port)
        if self.name == "ocr_sse":
            return [
                sys.executable,
                "-m",
                "ocr_sse",
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--max-file-size",
                str(lim.max_file_size),
                "--max-request-size",
                str(lim.max_request_size),
                "--max-files",
                str(lim.max_files),
                "--max-parts",
                str(lim.max_files + 16),
                "--max-uploads",
                str(lim.max_uploads),
                "--validation-threads",
                str(lim.threads),
                "--upload-timeout",
                "1800",
                "--read-timeout",
                "120",
                "--write-timeout",
                "120",
            ]
        script = {
            "ceiling": "ceiling.py",
            "naive": "naive_aiohttp.py",
            "fastapi": "fastapi_sse.py",
            "collect": "collect_then_validate.py",
            "minimal": "minimal.py",
        }[self.name]
        return [
            sys.executable,
            str(PEERS / script),
            "--port",
            port,
            "--max-file-size",
            str(lim.max_file_size),
            "--max-files",
            str(lim.max_files),
            "--threads",
            str(lim.threads),
        ]

    def start(self) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCR_SSE_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.source,
                env=env,
                preexec_fn=_die_with_parent,
            )
        _LIVE.add(self.proc)

    async def ready(self, session: aiohttp.ClientSession, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                async with session.get(self.url + "/healthz") as resp:
                    if resp.status == 200:
                        self.baseline = self.memory()
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(
            f"{self.name} not ready after {timeout} s: {self.log_tail()}"
        )

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} is not running: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS since start) of the server, in bytes."""
        assert self.proc is not None
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
        return out

    def cpu(self) -> float:
        """CPU seconds the server has used, to the nanosecond where it can.

        The process's own count is in clock ticks (10 ms): over one
        repetition of ten large files, that alone is 3% either way.  Each
        live thread's count is in nanoseconds; the threads that have exited
        are only in the process's count, so what that holds beyond the live
        threads' is added.
        """
        assert self.proc is not None
        proc = f"/proc/{self.proc.pid}"
        with open(f"{proc}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK
        live = 0.0
        for thread in os.listdir(f"{proc}/task"):
            try:
                with open(f"{proc}/task/{thread}/schedstat") as schedstat:
                    live += int(schedstat.read().split()[0]) / 1e9
            except (FileNotFoundError, ProcessLookupError):
                pass  # it exited meanwhile: the process's count has it
        return live + max(0.0, ticks - live)


class Servers:
    """Every server of a phase, started together and always stopped."""

    def __init__(self, names: list[str], limits: Limits, logdir: Path) -> None:
        self.by_name = {name: Server(name, limits, logdir) for name in names}

    async def __aenter__(self) -> dict[str, Server]:
        try:
            for server in self.by_name.values():
                server.start()
            async with aiohttp.ClientSession() as session:
                await asyncio.gather(*(s.ready(session) for s in self.by_name.values()))
        except BaseException:
            self.stop()
            raise
        return self.by_name

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for server in self.by_name.values():
            server.stop()


# --------------------------------------------------------------------------
# the client


@dataclass
class Upload:
    """What the client saw of one upload."""

    started: float
    status: int = 0
    first_event: float | None = None
    ended: float | None = None
    terminal: str | None = None
    terminal_data: dict[str, Any] = field(default_factory=dict)
    last_byte: list[float | None] = field(default_factory=list)
    results: dict[int, tuple[float, str]] = field(default_factory=dict)
    error: str | None = None
    sent: int = 0

    @property
    def ttfe(self) -> float | None:
        return None if self.first_event is None else self.first_event - self.started

    @property
    def wall(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    def file_latencies(self) -> list[float]:
        return [
            t - sent
            for i, (t, _) in self.results.items()
            if i < len(self.last_byte) and (sent := self.last_byte[i]) is not None
        ]


def _encode_head(boundary: str, part: Part) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
        f'filename="{part.file_name}"\r\nContent-Type: {part.content_type}\r\n\r\n'
    ).encode()


async def upload(session: aiohttp.ClientSession, url: str, parts: list[Part]) -> Upload:
    """Send one multipart upload, read its event stream to the end."""
    boundary = "bench" + uuid.uuid4().hex
    heads = [_encode_head(boundary, p) for p in parts]
    closing = f"--{boundary}--\r\n".encode()
    framing = sum(len(h) + 2 for h in heads) + len(closing)
    length = framing + sum(p.length for p in parts)
    seen = Upload(
        started=time.perf_counter(), last_byte=[None] * len(parts), sent=length
    )

    async def body() -> AsyncIterator[bytes | memoryview]:
        for index, (head, part) in enumerate(zip(heads, parts, strict=True)):
            yield head
            for chunk in part.chunks():
                yield chunk
            # The generator resumes once the writer has taken the last chunk.
            seen.last_byte[index] = time.perf_counter()
            yield b"\r\n"
        yield closing

    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(length),
    }
    async with session.post(
        f"{url}/api/ocr?total_files={len(parts)}", data=body(), headers=headers
    ) as resp:
        seen.status = resp.status
        if resp.status != 200:
            seen.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
            seen.ended = time.perf_counter()
            return seen
        kind, data = "message", None
        async for raw in resp.content:
            now = time.perf_counter()
            line = raw.rstrip(b"\r\n")
            if line:
                name, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                if name == b"event":
                    kind = value.decode()
                elif name == b"data":
                    data = value
                continue
            if data is None:  # a comment or an empty frame
                continue
            if seen.first_event is None:
                seen.first_event = now
            if kind in RESULTS:
                seen.results[json.loads(data)["data"]["file_index"]] = (now, kind)
            elif kind in TERMINAL:
                seen.terminal, seen.ended = kind, now
                seen.terminal_data = json.loads(data)["data"]
            kind, data = "message", None
    if seen.ended is None:
        seen.ended = time.perf_counter()
        seen.error = "the stream ended without a terminal event"
    return seen


def check(server: str, seen: Upload, *, files: int, valid: int) -> str | None:
    """Why the upload's stream is not what the contract says, or None."""
    if seen.error:
        return seen.error
    if seen.terminal != "processing_complete":
        return f"terminal event {seen.terminal}: {seen.terminal_data}"
    if server == "ceiling":
        return None
    got = (
        seen.terminal_data.get("total_files"),
        seen.terminal_data.get("successful_files"),
    )
    if got != (files, valid):
        return f"expected {files} files / {valid} valid, got {got}"
    if len(seen.results) != files:
        return f"{len(seen.results)} result events for {files} files"
    return None


async def all_of(*uploads: Awaitable[T]) -> list[T]:
    """Await every upload; on a failure, stop the others before raising it.

    ``asyncio.gather`` alone would leave them running, into the next
    server's run.
    """
    tasks = [asyncio.ensure_future(u) for u in uploads]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------
# workloads: each run returns a dict of numbers, or raises


@dataclass
class Context:
    plan: Plan
    payloads: Payloads
    limits: Limits
    session: aiohttp.ClientSession


async def _one(
    ctx: Context, server: Server, parts: list[Part], valid: int
) -> tuple[Upload, dict[str, float]]:
    server.check_alive()
    cpu0, client0 = server.cpu(), time.process_time()
    seen = await upload(ctx.session, server.url, parts)
    problem = check(server.name, seen, files=len(parts), valid=valid)
    if problem:
        raise RuntimeError(problem)
    wall = seen.wall
    return seen, {
        "wall_s": wall,
        "server_cpu": (server.cpu() - cpu0) / wall,
        "client_cpu": (time.process_time() - client0) / wall,
    }


async def run_drain(ctx: Context, server: Server) -> dict[str, Any]:
    plan = ctx.plan
    parts = [
        Part(f"blob-{i}.pdf", "application/pdf", ctx.payloads.blob)
        for i in range(plan.drain_files)
    ]
    seen, out = await _one(ctx, server, parts, valid=0)
    return {**out, "mb_per_s": seen.sent / seen.wall / MB}


async def run_parts(ctx: Context, server: Server) -> dict[str, Any]:
    # Small parts that are not images: part handling before any decode.
    blob = ctx.payloads.blob[: ctx.plan.small_size]
    parts = [
        Part(f"part-{i}.pdf", "application/pdf", blob)
        for i in range(ctx.plan.small_files)
    ]
    seen, out = await _one(ctx, server, parts, valid=0)
    return {**out, "files_per_s": len(parts) / seen.wall}


def _per_file(out: dict[str, float], files: int) -> dict[str, float]:
    """Throughput and the server's CPU time per file of one run."""
    return {
        "files_per_s": files / out["wall_s"],
        "cpu_ms_per_file": out["server_cpu"] * out["wall_s"] / files * 1000,
    }


async def run_small(ctx: Context, server: Server) -> dict[str, Any]:
    parts = ctx.payloads.small_parts(ctx.plan.small_files)
    _, out = await _one(ctx, server, parts, valid=len(parts))
    return {**out, **_per_file(out, len(parts))}


async def run_large(ctx: Context, server: Server) -> dict[str, Any]:
    large = ctx.payloads.large
    parts = [
        Part(f"photo-{i}.jpg", "image/jpeg", large[i % len(large)])
        for i in range(ctx.plan.large_files)
    ]
    _, out = await _one(ctx, server, parts, valid=len(parts))
    return {**out, **_per_file(out, len(parts))}


async def _latency(
    ctx: Context, server: Server, concurrency: int, rounds: int
) -> dict[str, Any]:
    parts = ctx.payloads.small_parts(ctx.plan.lat_files)
    ttfe: list[float] = []
    files: list[float] = []

    async def one() -> None:
        seen = await upload(ctx.session, server.url, parts)
        problem = check(server.name, seen, files=len(parts), valid=len(parts))
        if problem:
            raise RuntimeError(problem)
        ttfe.append(seen.ttfe or math.nan)
        files.extend(seen.file_latencies())

    started = time.perf_counter()
    for _ in range(rounds):
        await all_of(*(one() for _ in range(concurrency)))
    return {
        "ttfe_ms": [t * 1000 for t in ttfe],
        "file_ms": [t * 1000 for t in files],
        # The median file can be done sooner by a server that finishes some
        # uploads early and the rest late: this says when all were done.
        "wall_s": time.perf_counter() - started,
    }


async def run_latency_1(ctx: Context, server: Server) -> dict[str, Any]:
    return await _latency(ctx, server, 1, ctx.plan.lat_serial)


async def run_latency_n(ctx: Context, server: Server) -> dict[str, Any]:
    return await _latency(ctx, server, ctx.plan.lat_concurrency, 1)


async def run_rss_big(ctx: Context, server: Server) -> dict[str, Any]:
    block = b"%PDF-1.7\n" + os.urandom(MiB - 9)
    parts = [Part("huge.pdf", "application/pdf", size=ctx.plan.big_size, block=block)]
    seen, out = await _one(ctx, server, parts, valid=0)
    return {**out, **_rss(server), "mb_per_s": seen.sent / seen.wall / MB}


async def run_rss_many(ctx: Context, server: Server) -> dict[str, Any]:
    images = ctx.payloads.rss_images
    n = ctx.plan.rss_concurrency
    server.check_alive()
    cpu0, started = server.cpu(), time.perf_counter()
    seen = await all_of(
        *(
            upload(
                ctx.session,
                server.url,
                [Part(f"big-{i}.png", "image/png", images[i % len(images)])],
            )
            for i in range(n)
        )
    )
    for one in seen:
        if problem := check(server.name, one, files=1, valid=1):
            raise RuntimeError(problem)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "server_cpu": (server.cpu() - cpu0) / wall, **_rss(server)}


def _rss(server: Server) -> dict[str, float]:
    now = server.memory()
    return {
        "baseline_mb": server.baseline["VmRSS"] / MB,
        "peak_mb": now["VmHWM"] / MB,
        "growth_mb": (now["VmHWM"] - server.baseline["VmRSS"]) / MB,
    }


def bare_validation(ctx: Context, blobs: list[bytes]) -> dict[str, Any]:
    """ocr_sse.validation.validate on the same files, same thread count, no I/O.

    Each thread takes the next file as it is done with one, and nothing is
    handed back a file at a time: through ``ThreadPoolExecutor.map``, whose
    caller wakes for each result and takes the GIL, 20 KB images cost about
    a fifth more CPU a file and came a fifth fewer a second.
    """
    from ocr_sse.config import Config
    from ocr_sse.validation import validate

    config = Config()
    files = iter(enumerate(blobs))
    taking = threading.Lock()
    failures: list[BaseException] = []

    def validate_in_turn() -> None:
        while not failures:
            with taking:
                file_index, data = next(files, (-1, b""))
            if file_index < 0:
                return
            try:
                validate(
                    data,
                    file_index=file_index,
                    file_name=None,
                    size=len(data),
                    allowed=config.allowed_formats,
                    max_pixels=config.max_pixels,
                )
            except BaseException as exc:
                failures.append(exc)

    threads = [
        threading.Thread(target=validate_in_turn) for _ in range(ctx.plan.threads)
    ]
    started, cpu0 = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise failures[0]
    # The benchmark process does nothing else meanwhile: its CPU time is the
    # validation's.
    cpu = time.process_time() - cpu0
    return {
        "wall_s": wall,
        "files_per_s": len(blobs) / wall,
        "cpu_ms_per_file": cpu / len(blobs) * 1000,
        "server_cpu": cpu / wall,
    }


@dataclass(frozen=True)
class Workload:
    title: str
    run: Callable[[Context, Server], Any]
    fresh_servers: bool = False
    bare: Callable[[Context], list[bytes]] | None = None


WORKLOADS: dict[str, Workload] = {
    "drain": Workload("N x non-image files, read fully", run_drain),
    "parts": Workload("N small non-image parts, no decode", run_parts),
    "small": Workload(
        "N small valid images in one upload",
        run_small,
        bare=lambda ctx: [
            p.data for p in ctx.payloads.small_parts(ctx.plan.small_files)
        ],
    ),
    "large": Workload(
        "N photo-sized JPEGs in one upload",
        run_large,
        bare=lambda ctx: [
            ctx.payloads.large[i % 2] for i in range(ctx.plan.large_files)
        ],
    ),
    "latency_1": Workload("latency, 1 upload at a time", run_latency_1),
    "latency_n": Workload("latency, N concurrent uploads", run_latency_n),
    "rss_big": Workload(
        "peak RSS, one oversized file", run_rss_big, fresh_servers=True
    ),
    "rss_many": Workload(
        "peak RSS, N concurrent uploads of one image", run_rss_many, fresh_servers=True
    ),
}


# --------------------------------------------------------------------------
# running it all


async def run_all(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    names = [s for s in args.servers.split(",") if s]
    wanted = [w for w in args.workloads.split(",") if w]
    for name in names:
        if name not in SERVERS + OPT_IN_SERVERS:
            raise SystemExit(f"unknown server {name}")
    for name in wanted:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name}")
    t0 = time.monotonic()
    payloads = await asyncio.to_thread(Payloads.make, plan)
    limits = Limits.of(plan, payloads)
    log(f"payloads ready in {time.monotonic() - t0:.1f} s; limits {limits}")
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + plan.budget
    logdir = Path(tempfile.mkdtemp(prefix="ocr-sse-bench-"))
    timeout = aiohttp.ClientTimeout(total=None, sock_read=plan.run_timeout)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        ctx = Context(plan, payloads, limits, session)
        shared = [w for w in wanted if not WORKLOADS[w].fresh_servers]
        fresh = [w for w in wanted if WORKLOADS[w].fresh_servers]
        if shared:
            async with Servers(names, limits, logdir) as servers:
                for name in shared:
                    await _repeat(
                        ctx,
                        name,
                        plan.reps,
                        deadline,
                        lambda: _nullservers(servers),
                        runs,
                    )
        for name in fresh:
            await _repeat(
                ctx,
                name,
                plan.rss_reps,
                deadline,
                lambda: Servers(names, limits, logdir),
                runs,
            )
    return {
        "runs": runs,
        "limits": limits.__dict__,
        "payloads": {
            "drain_file_bytes": len(payloads.blob),
            "small_file_bytes": sorted(map(len, payloads.small)),
            "large_file_bytes": sorted(map(len, payloads.large)),
            "large_pixels": [plan.large_width, plan.large_height],
            "rss_image_bytes": sorted(map(len, payloads.rss_images)),
        },
        "server_logs": str(logdir),
    }


class _nullservers:
    def __init__(self, servers: dict[str, Server]) -> None:
        self.servers = servers

    async def __aenter__(self) -> dict[str, Server]:
        return self.servers

    async def __aexit__(self, *exc: object) -> None:
        pass


async def _repeat(
    ctx: Context,
    workload: str,
    reps: int,
    deadline: float,
    servers_for_rep: Callable[[], Any],
    runs: list[dict[str, Any]],
) -> None:
    spec = WORKLOADS[workload]
    for rep in range(reps):
        if rep and time.monotonic() > deadline:
            log(f"{workload}: time budget spent, {rep} of {reps} repetitions run")
            break
        async with servers_for_rep() as servers:
            order = list(servers)
            order = order[rep % len(order) :] + order[: rep % len(order)]
            entries: list[tuple[str, Callable[[], Any]]] = [
                (name, lambda s=servers[name]: spec.run(ctx, s)) for name in order
            ]
            if spec.bare is not None:
                blobs = spec.bare(ctx)
                entries.append(
                    ("bare", lambda b=blobs: asyncio.to_thread(bare_validation, ctx, b))
                )
            for name, go in entries:
                started = time.monotonic()
                record: dict[str, Any] = {
                    "workload": workload,
                    "server": name,
                    "rep": rep,
                }
                try:
                    async with asyncio.timeout(ctx.plan.run_timeout):
                        record.update(ok=True, **await go())
                except Exception as exc:
                    record.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
                record["elapsed_s"] = time.monotonic() - started
                runs.append(record)
                log(
                    f"{workload} rep {rep} {name}: "
                    + ("ok" if record["ok"] else record["error"])
                    + f" ({record['elapsed_s']:.1f} s)"
                )


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# the table


def median_of(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else None


def p99_of(values: list[float]) -> float | None:
    values = sorted(v for v in values if not math.isnan(v))
    return values[max(0, math.ceil(0.99 * len(values)) - 1)] if values else None


def summarize(
    runs: list[dict[str, Any]], servers: list[str], workloads: list[str]
) -> dict[str, Any]:
    """Per workload and server: medians of the run metrics, pooled percentiles."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for w in workloads:
        out[w] = {}
        for s in [*servers, "bare"]:
            mine = [r for r in runs if r["workload"] == w and r["server"] == s]
            if not mine:
                continue
            ok = [r for r in mine if r["ok"]]
            row: dict[str, Any] = {
                "runs": len(mine),
                "ok_runs": len(ok),
                "errors": sorted({r["error"] for r in mine if not r["ok"]}),
            }
            keys = {
                k
                for r in ok
                for k, v in r.items()
                if isinstance(v, (int, float, list)) and k not in ("rep", "ok")
            }
            for k in sorted(keys):
                if isinstance(ok[0].get(k), list):
                    pooled = [v for r in ok for v in r[k]]
                    row[f"{k}_median"] = median_of(pooled)
                    row[f"{k}_p99"] = p99_of(pooled)
                    row[f"{k}_samples"] = len(pooled)
                else:
                    row[k] = median_of([r[k] for r in ok if k in r])
            out[w][s] = row
    for w, per in out.items():
        for s, row in per.items():
            if s == "bare":
                continue
            for k in ("mb_per_s", "files_per_s"):
                if (ratio := _paired(runs, w, s, "ceiling", k)) is not None:
                    row["x_ceiling"] = ratio
            if (ratio := _paired(runs, w, s, "bare", "files_per_s")) is not None:
                row["x_bare"] = ratio
            if (ratio := _paired(runs, w, s, "bare", "cpu_ms_per_file")) is not None:
                row["cpu_x_bare"] = ratio
    return out


def _paired(
    runs: list[dict[str, Any]], workload: str, server: str, other: str, key: str
) -> float | None:
    """The median over repetitions of *server*'s *key* over *other*'s.

    Each repetition runs every server back to back, so a ratio within one
    repetition cancels what drifts between them (the machine's other load,
    its caches, its clock): medians taken apart would mix those in.
    """
    by_rep: dict[tuple[str, int], float] = {
        (r["server"], r["rep"]): r[key]
        for r in runs
        if r["workload"] == workload and r["ok"] and r.get(key)
    }
    return median_of(
        [
            value / by_rep[other, rep]
            for (name, rep), value in by_rep.items()
            if name == server and (other, rep) in by_rep
        ]
    )


ROWS: list[tuple[str, str, str, str]] = [
    # workload, key, label, format
    ("drain", "mb_per_s", "MB/s", "{:.0f}"),
    ("drain", "x_ceiling", "x ceiling", "{:.2f}"),
    ("drain", "server_cpu", "server CPU (cores)", "{:.2f}"),
    ("drain", "client_cpu", "client CPU (cores)", "{:.2f}"),
    ("parts", "files_per_s", "files/s", "{:.0f}"),
    ("parts", "x_ceiling", "x ceiling", "{:.2f}"),
    ("small", "files_per_s", "files/s", "{:.0f}"),
    ("small", "x_ceiling", "x ceiling", "{:.2f}"),
    ("small", "x_bare", "x bare validation", "{:.2f}"),
    ("small", "cpu_ms_per_file", "server CPU ms per file", "{:.3f}"),
    ("small", "cpu_x_bare", "CPU per file / bare", "{:.2f}"),
    ("small", "server_cpu", "server CPU (cores)", "{:.2f}"),
    ("small", "client_cpu", "client CPU (cores)", "{:.2f}"),
    ("large", "files_per_s", "files/s", "{:.2f}"),
    ("large", "x_bare", "x bare validation", "{:.2f}"),
    ("large", "cpu_ms_per_file", "server CPU ms per file", "{:.1f}"),
    ("large", "cpu_x_bare", "CPU per file / bare", "{:.2f}"),
    ("large", "server_cpu", "server CPU (cores)", "{:.2f}"),
    ("large", "client_cpu", "client CPU (cores)", "{:.2f}"),
    ("latency_1", "ttfe_ms_median", "first event median ms", "{:.1f}"),
    ("latency_1", "ttfe_ms_p99", "first event p99 ms", "{:.1f}"),
    ("latency_1", "file_ms_median", "last byte->result median ms", "{:.1f}"),
    ("latency_1", "file_ms_p99", "last byte->result p99 ms", "{:.1f}"),
    ("latency_1", "wall_s", "wall s, all uploads", "{:.2f}"),
    ("latency_n", "ttfe_ms_median", "first event median ms", "{:.0f}"),
    ("latency_n", "ttfe_ms_p99", "first event p99 ms", "{:.0f}"),
    ("latency_n", "file_ms_median", "last byte->result median ms", "{:.0f}"),
    ("latency_n", "file_ms_p99", "last byte->result p99 ms", "{:.0f}"),
    ("latency_n", "wall_s", "wall s, all uploads", "{:.2f}"),
    ("rss_big", "baseline_mb", "baseline RSS MB", "{:.0f}"),
    ("rss_big", "peak_mb", "peak RSS MB", "{:.0f}"),
    ("rss_big", "mb_per_s", "MB/s", "{:.0f}"),
    ("rss_many", "baseline_mb", "baseline RSS MB", "{:.0f}"),
    ("rss_many", "peak_mb", "peak RSS MB", "{:.0f}"),
    ("rss_many", "wall_s", "wall s", "{:.1f}"),
]

#: The number a workload is judged by; the smoke test wants it for every server.
PRIMARY = {
    "drain": "mb_per_s",
    "parts": "files_per_s",
    "small": "files_per_s",
    "large": "files_per_s",
    "latency_1": "ttfe_ms_median",
    "latency_n": "ttfe_ms_median",
    "rss_big": "peak_mb",
    "rss_many": "peak_mb",
}


def workload_title(plan: Plan, w: str) -> str:
    megapixels = plan.large_width * plan.large_height / 1e6
    rss_mb = plan.rss_image_size / MB
    return {
        "drain": f"drain {plan.drain_files} x {plan.drain_size / MB:.3g} MB non-image",
        "parts": f"parts {plan.small_files} x ~{plan.small_size / 1000:g} KB non-image",
        "small": f"small {plan.small_files} x ~{plan.small_size / 1000:g} KB PNG/JPEG",
        "large": f"large {plan.large_files} x {megapixels:.0f} MP JPEG",
        "latency_1": f"latency c=1 ({plan.lat_serial} uploads x {plan.lat_files} imgs)",
        "latency_n": f"latency c={plan.lat_concurrency} ({plan.lat_files} imgs each)",
        "rss_big": f"rss 1 x {plan.big_size / 2**30:.3g} GiB oversized file",
        "rss_many": f"rss {plan.rss_concurrency} x {rss_mb:.3g} MB images",
    }[w]


def table(
    summary: dict[str, Any], servers: list[str], plan: Plan
) -> tuple[str, list[dict[str, Any]]]:
    rows = []
    lines = []
    # Bare validation gets a column of its own where it ran: its files/s,
    # CPU per file and cores are what the ratios to it divide by.
    if any("bare" in per for per in summary.values()):
        servers = [*servers, "bare"]
    header = f"{'workload':<42} {'metric':<28}" + "".join(f"{s:>10}" for s in servers)
    lines += [header, "-" * len(header)]
    last = None
    for w, key, label, fmt in ROWS:
        if w not in summary:
            continue
        values = {s: summary[w].get(s, {}).get(key) for s in servers}
        if all(v is None for v in values.values()):
            continue
        rows.append(
            {
                "workload": w,
                "title": workload_title(plan, w),
                "metric": key,
                "label": label,
                "values": values,
            }
        )
        title = workload_title(plan, w) if w != last else ""
        last = w
        cells = "".join(
            f"{fmt.format(v) if v is not None else '-':>10}" for v in values.values()
        )
        lines.append(f"{title:<42} {label:<28}{cells}")
    failed = failed_runs(summary)
    if failed:
        lines += ["", "failed runs:", *failed]
    return "\n".join(lines), rows


def failed_runs(summary: dict[str, Any]) -> list[str]:
    """One line for each workload and server with a run that failed."""
    return [
        f"{w}/{s}: {row['ok_runs']}/{row['runs']} ok; {row['errors'][:1]}"
        for w, per in summary.items()
        for s, row in per.items()
        if row["ok_runs"] < row["runs"]
    ]


def _source_state() -> dict[str, Any]:
    """Which ocr_sse was measured: the commit, and files changed since."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "ocr_sse_changes": git("status", "--short", "--", "ocr_sse").splitlines(),
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args, plan = parse_args(argv)
    # Stop the servers on SIGTERM/SIGHUP as on Ctrl-C: unwind, run the finallys.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = time.time()
    load_before = os.getloadavg()
    source = _source_state()
    result = asyncio.run(run_all(args, plan))
    servers = [s for s in args.servers.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    summary = summarize(result["runs"], servers, workloads)
    text, rows = table(summary, servers, plan)
    print(text)
    if args.json:
        meta = {
            "command": [
                Path(sys.argv[0]).name,
                *(argv if argv is not None else sys.argv[1:]),
            ],
            "started": started,
            "duration_s": time.time() - started,
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "source": source,
            "client": "aiohttp, in the benchmark process",
            "plan": plan.__dict__,
            **{k: v for k, v in result.items() if k != "runs"},
        }
        doc = {
            "meta": meta,
            "servers": servers,
            "workloads": workloads,
            "primary": PRIMARY,
            "summary": summary,
            "table": rows,
            "runs": result["runs"],
        }
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    # The table is still printed and saved, but a scripted run must not take
    # a failed run for a measured one.
    return 1 if failed_runs(summary) else 0


if __name__ == "__main__":
    sys.exit(main())
