"""The load test script: short bounded runs against real server processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocr_sse.events import (
    CorruptedFile,
    ImageFileInfo,
    ImageReceived,
    ImageValidationError,
    ImageValidationStart,
    ImageValidationSuccess,
    ProcessingComplete,
    UploadStarted,
    utc_now,
)

from .conftest import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "loadtest.py"


loadtest = load_script(SCRIPT)


def check_report(doc: dict[str, Any]) -> None:
    """A report of a clean run: every field present, no error, sane numbers."""
    assert set(doc) >= {
        "url",
        "concurrency",
        "elapsed_s",
        "uploads",
        "ok",
        "failed",
        "uploads_per_s",
        "latency_ms",
        "errors",
        "server",
    }
    assert doc["errors"] == {}
    assert doc["failed"] == 0
    assert doc["ok"] == doc["uploads"] > 0
    assert doc["uploads_per_s"] > 0
    for which in ("first_event", "last_event"):
        cells = doc["latency_ms"][which]
        assert 0 < cells["p50"] <= cells["p95"] <= cells["p99"] <= cells["max"]
    assert (
        doc["latency_ms"]["first_event"]["p50"]
        <= doc["latency_ms"]["last_event"]["p50"]
    )
    assert doc["server"]["peak_rss_bytes"] > 1024 * 1024


def test_spawned_run_is_clean_and_bounded_in_time() -> None:
    """`--spawn -c 5 -d 2 --json`: no errors, every field, and the server is stopped."""
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--spawn",
            "--concurrency=5",
            "--duration=2",
            "--invalid=1",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads(done.stdout)
    check_report(doc)
    assert doc["concurrency"] == 5
    assert doc["files_per_upload"] == 3
    assert 2 <= doc["elapsed_s"] < 2 + 10
    with pytest.raises(ProcessLookupError):
        os.kill(doc["server"]["pid"], 0)


@pytest.fixture
def server() -> Iterator[Any]:
    """A real ``python -m ocr_sse`` process on a free port of 127.0.0.1."""
    with loadtest.SpawnedServer() as running:
        yield running


def test_url_run_is_bounded_by_count_and_reads_the_server_rss(server: Any) -> None:
    """`--url --server-pid -n 20`: exactly 20 uploads, all clean; the table has RSS."""
    out = io.StringIO()
    status = loadtest.main(
        [
            "--url",
            server.base_url + "/api/ocr",
            "--server-pid",
            str(server.pid),
            "--concurrency=5",
            "--max-uploads=20",
            "--duration=30",
        ],
        out=out,
    )
    table = out.getvalue()
    assert status == 0, table
    assert "20 done, 20 passed, 0 failed" in table
    assert "errors           none" in table
    assert f"MiB (VmHWM of pid {server.pid})" in table


def test_url_run_json_has_the_fields(server: Any) -> None:
    """`--url --json`: the JSON report of a clean run against a running server."""
    out = io.StringIO()
    status = loadtest.main(
        [
            "--url",
            server.base_url + "/api/ocr",
            "--server-pid",
            str(server.pid),
            "-c",
            "3",
            "-d",
            "1",
            "--json",
        ],
        out=out,
    )
    assert status == 0
    doc = json.loads(out.getvalue())
    check_report(doc)
    assert doc["server"]["pid"] == server.pid


def test_refusals_are_counted_as_errors() -> None:
    """A server refusing uploads gives a failed run with the refusals by status."""
    out = io.StringIO()
    status = loadtest.main(
        [
            "--spawn",
            "--server-arg=--max-request-size=100",
            "-n",
            "4",
            "-d",
            "5",
            "--json",
        ],
        out=out,
    )
    doc = json.loads(out.getvalue())
    assert status == 1
    assert doc["errors"] == {"refused:413": 4}
    assert doc["ok"] == 0


# -- the stream checker flags what the contract forbids ---------------------------

SESSION = uuid.uuid4()


def clean_stream() -> list[Any]:
    return [
        UploadStarted(total_files=1, session_id=SESSION),
        ImageReceived(file_index=0, file_name="a.png", size_bytes=10),
        ImageValidationStart(file_index=0, file_name="a.png"),
        ImageValidationSuccess(file_index=0, file_info=file_info("a.png")),
        ProcessingComplete(
            session_id=SESSION, total_files=1, successful_files=1, duration_ms=1
        ),
    ]


def file_info(name: str) -> ImageFileInfo:
    return ImageFileInfo(
        file_name=name,
        content_type="image/png",
        size_bytes=10,
        format="PNG",
        file_index=0,
        processed_at=utc_now(),
        processing_duration_ms=1,
        width=1,
        height=1,
    )


def violation(events: list[Any]) -> str | None:
    check = loadtest.StreamCheck(names=["a.png"], valid=[True])
    try:
        for event in events:
            check.feed(event)
        check.finish()
    except loadtest.ContractViolation as broken:
        return str(broken.code)
    return None


def test_checker_passes_a_clean_stream() -> None:
    """The contract's own order passes the checker."""
    assert violation(clean_stream()) is None


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (lambda s: s[:-1], "no_terminal"),
        (lambda s: [s[1], s[0], *s[2:]], "started_not_first"),
        (lambda s: [s[0], s[0], *s[1:]], "started_twice"),
        (lambda s: [s[0], s[2], s[1], *s[3:]], "start_before_received"),
        (lambda s: [*s[:3], s[3], s[3], s[4]], "result_order"),
        (lambda s: [*s, s[4]], "event_after_terminal"),
        (lambda s: [s[0], s[1], s[2], s[4]], "missing_results"),
        (
            lambda s: [
                s[0],
                ImageReceived(file_index=0, file_name="other.png", size_bytes=10),
                *s[2:],
            ],
            "foreign_file_name",
        ),
        (
            lambda s: [
                *s[:4],
                ProcessingComplete(
                    session_id=uuid.uuid4(),
                    total_files=1,
                    successful_files=1,
                    duration_ms=1,
                ),
            ],
            "foreign_session",
        ),
        (
            lambda s: [
                *s[:3],
                ImageValidationError(
                    file_index=0,
                    file_name="a.png",
                    error_message="image does not decode",
                    error_code=CorruptedFile(),
                ),
                s[4],
            ],
            "unexpected_result",
        ),
    ],
)
def test_checker_flags_broken_streams(edit: Any, code: str) -> None:
    """Each broken rule of the contract is reported under its own name."""
    assert violation(edit(clean_stream())) == code
