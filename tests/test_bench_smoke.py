"""The benchmark script runs end to end on tiny workloads and reports every cell."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import JpegImagePlugin

from ocr_sse import validation
from ocr_sse.errors import InvalidImage
from ocr_sse.validation import detect_format, validate

from . import images
from .conftest import load_script

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench.py"
PEERS = ROOT / "scripts" / "bench_peers"


def run_quick_bench(
    tmp_path: Path, *args: str, status: int = 0
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run `bench.py --quick` with *args*; return the run and its JSON."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == status, done.stderr[-2000:]
    return done, json.loads(out.read_text())


def test_quick_bench_reports_every_server_and_workload(tmp_path: Path) -> None:
    """`bench.py --quick` runs each workload on each server, saving the numbers."""
    done, doc = run_quick_bench(tmp_path)
    servers, workloads = doc["servers"], doc["workloads"]
    assert servers == ["ceiling", "ocr_sse", "naive", "fastapi", "collect"]
    assert workloads == [
        "drain",
        "parts",
        "small",
        "large",
        "latency_1",
        "latency_n",
        "rss_big",
        "rss_many",
    ]
    for workload in workloads:
        metric = doc["primary"][workload]
        for server in servers:
            cell = doc["summary"][workload][server]
            assert cell["ok_runs"] == cell["runs"] >= 1, (
                workload,
                server,
                cell["errors"],
            )
            value = cell[metric]
            assert (
                isinstance(value, (int, float)) and math.isfinite(value) and value > 0
            ), (workload, server, metric, value)
    for workload in ("small", "large"):
        assert doc["summary"][workload]["bare"]["files_per_s"] > 0
        assert doc["summary"][workload]["ocr_sse"]["x_bare"] > 0
    for server in servers[1:]:
        assert doc["summary"]["latency_n"][server]["file_ms_median"] >= 0
        assert doc["summary"]["latency_n"][server]["wall_s"] > 0
    table_cells = {(row["workload"], row["metric"]) for row in doc["table"]}
    assert {(w, doc["primary"][w]) for w in workloads} <= table_cells
    # The table is printed too, one column per server, and one for bare
    # validation, with the cores each used.
    header = done.stdout.splitlines()[0].split()
    assert header[2:] == [*servers, "bare"]
    cores = {
        row["workload"]: row["values"]
        for row in doc["table"]
        if row["metric"] == "server_cpu"
    }
    assert cores["large"]["bare"] > 0
    assert cores["large"]["ocr_sse"] > 0
    # Every server it started is gone: its port no longer answers.
    assert "server_logs" in doc["meta"]


def test_the_minimal_peer_runs_when_named(tmp_path: Path) -> None:
    """`--servers minimal` runs the opt-in peer on the small-part workloads,
    whose every file it answers as the contract says."""
    _, doc = run_quick_bench(
        tmp_path, "--servers", "ocr_sse,minimal", "--workloads", "parts,small"
    )
    assert doc["servers"] == ["ocr_sse", "minimal"]
    for workload in ("parts", "small"):
        cell = doc["summary"][workload]["minimal"]
        assert cell["ok_runs"] == cell["runs"] >= 1, cell["errors"]
    assert doc["summary"]["small"]["minimal"]["cpu_x_bare"] > 0


def test_a_failed_run_is_listed_and_fails_the_benchmark(tmp_path: Path) -> None:
    """A run that fails (here: longer than `--run-timeout`) is listed under the
    table, and the benchmark exits 1, so a scripted run cannot miss it."""
    done, doc = run_quick_bench(
        tmp_path,
        *("--servers", "ceiling", "--workloads", "drain", "--run-timeout", "0.000001"),
        status=1,
    )
    assert doc["summary"]["drain"]["ceiling"]["ok_runs"] == 0
    assert done.stdout.splitlines()[-2:] == [
        "failed runs:",
        "drain/ceiling: 0/1 ok; ['TimeoutError: ']",
    ]


def bare_context(bench: Any, threads: int) -> Any:
    _, plan = bench.parse_args(["--quick", "--threads", str(threads)])
    return bench.Context(plan=plan, payloads=None, limits=None, session=None)


def test_bare_validation_validates_every_file_once_in_its_threads() -> None:
    """Bare validation runs ocr_sse's validation on each file exactly once,
    off the calling thread, and counts them all in its files/s."""
    bench = load_script(BENCH)
    blobs = [images.png(width=8 + i, height=8) for i in range(9)]
    seen: list[tuple[int, int]] = []
    original = validation.validate

    def recording(data: bytes, **facts: Any) -> Any:
        seen.append((facts["file_index"], threading.get_ident()))
        return original(data, **facts)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "validate", recording)
        out = bench.bare_validation(bare_context(bench, threads=2), blobs)

    assert sorted(index for index, _ in seen) == list(range(9))
    assert threading.get_ident() not in {thread for _, thread in seen}
    assert out["files_per_s"] == pytest.approx(9 / out["wall_s"])


def test_bare_validation_fails_on_a_file_that_does_not_validate() -> None:
    """A file that fails bare validation fails the run, rather than leaving
    a figure timed over fewer files than it claims."""
    bench = load_script(BENCH)
    blobs = [images.png(), images.truncated(images.jpeg()), images.png()]

    with pytest.raises(InvalidImage, match="does not decode"):
        bench.bare_validation(bare_context(bench, threads=2), blobs)


def test_ratios_pair_the_runs_of_one_repetition() -> None:
    """A ratio to the ceiling is the median of each repetition's own ratio,
    so a slow repetition for every server does not skew it."""
    bench = load_script(BENCH)
    runs = [
        {"workload": "drain", "server": server, "rep": rep, "ok": True, "mb_per_s": v}
        for server, rep, v in [
            ("ceiling", 0, 100.0),
            ("ocr_sse", 0, 80.0),
            ("ceiling", 1, 200.0),
            ("ocr_sse", 1, 100.0),
            ("ceiling", 2, 300.0),
            ("ocr_sse", 2, 270.0),
        ]
    ]
    summary = bench.summarize(runs, ["ceiling", "ocr_sse"], ["drain"])

    # Per repetition 0.8, 0.5 and 0.9: the median is 0.8, where the ratio of
    # the medians would be 100 / 200 = 0.5.
    assert summary["drain"]["ocr_sse"]["x_ceiling"] == 0.8
    assert summary["drain"]["ceiling"]["x_ceiling"] == 1.0


def test_the_peers_decode_a_jpeg_as_ocr_sse_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The peers' validation asks Pillow for the same JPEG decode as ocr_sse's
    (draft mode, 1/8 scale), so the large-image rows compare servers, not
    decodes."""
    common = load_script(PEERS / "_common.py")
    drafts: list[tuple[str, tuple[int, int]]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def draft(image: Any, mode: str, size: tuple[int, int]) -> Any:
        drafts.append((mode, size))
        return original(image, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    data = images.jpeg(width=800, height=600)
    info = validate(
        data,
        file_index=0,
        file_name="a.jpg",
        size=len(data),
        allowed={"JPEG"},
        max_pixels=10**8,
        detected=detect_format(data, allowed={"JPEG"}),
    )
    kind, fields = common.validate(
        data, index=0, name="a.jpg", size=len(data), max_file_size=10**8, max_files=1
    )

    assert drafts == [("RGB", (100, 75))] * 2
    assert kind == "image_validation_success"
    assert (fields["file_info"]["width"], fields["file_info"]["height"]) == (
        info.width,
        info.height,
    )


async def test_the_fastapi_peer_decodes_in_its_threads_only(tmp_path: Path) -> None:
    """The FastAPI peer decodes in at most ``--threads`` threads, as the
    other servers do, however many uploads come at once (Starlette's own
    thread pool has 40)."""
    bench = load_script(BENCH)
    limits = bench.Limits(
        max_file_size=2**20,
        max_request_size=2**26,
        max_files=4,
        max_uploads=64,
        threads=1,
    )
    # Under 1 MiB each, so no file spools to disk through Starlette's pool.
    png = bench.noise_image("PNG", 400, 400)
    parts = [bench.Part(f"{i}.png", "image/png", png) for i in range(2)]
    server = bench.Server("fastapi", limits, tmp_path)
    try:
        server.start()
        async with aiohttp.ClientSession() as session:
            await server.ready(session)
            seen = await bench.upload(session, server.url, parts)
            assert bench.check("fastapi", seen, files=2, valid=2) is None
            threads = len(os.listdir(f"/proc/{server.proc.pid}/task"))
            for seen in await asyncio.gather(
                *(bench.upload(session, server.url, parts) for _ in range(16))
            ):
                assert bench.check("fastapi", seen, files=2, valid=2) is None
            assert len(os.listdir(f"/proc/{server.proc.pid}/task")) == threads
    finally:
        server.stop()


async def test_a_failed_upload_stops_the_other_uploads_of_its_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When one of the uploads made at once fails, the run stops the others
    before it ends, rather than leave them running into the next server's."""
    bench = load_script(BENCH)
    running: set[asyncio.Task[Any]] = set()

    async def upload(session: Any, url: str, parts: list[Any]) -> Any:
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            if len(running) == 3:
                raise aiohttp.ClientError("the connection was reset")
            await asyncio.Event().wait()
        finally:
            running.discard(task)

    monkeypatch.setattr(bench, "upload", upload)
    plan = bench.parse_args(["--quick", "--lat-concurrency", "3"])[1]
    payloads = bench.Payloads(blob=b"", small=[b"x"], large=[], rss_images=[b"x"])
    ctx = bench.Context(plan, payloads, None, None)
    server = bench.Server("naive", None, Path())
    server.check_alive = lambda: None
    server.cpu = lambda: 0.0

    for run in (bench.run_latency_n, bench.run_rss_many):
        with pytest.raises(aiohttp.ClientError):
            await run(ctx, server)
        assert not running
