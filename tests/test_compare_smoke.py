"""The side-by-side comparison script runs end to end on tiny workloads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPARE = ROOT / "scripts" / "compare.py"

SUMMARY = re.compile(
    r"(?P<figure>.+): (?P<how>B/A|B-A) (?P<median>-?\d+\.\d{3}), median of 2"
    r" sessions \((?P<low>-?\d+\.\d{3}) to (?P<high>-?\d+\.\d{3})\)"
)


@pytest.mark.parametrize(
    ("workload", "figures"),
    [
        ("small", [("files/s", "B/A"), ("CPU ms/file", "B/A")]),
        (
            "latency",
            [("first event ms", "B-A"), ("last byte->result ms", "B-A")],
        ),
        (
            "latency_n",
            [
                ("first event median ms", "B/A"),
                ("first event p99 ms", "B/A"),
                ("last byte->result median ms", "B/A"),
                ("last byte->result p99 ms", "B/A"),
                ("wall s", "B/A"),
            ],
        ),
    ],
)
def test_quick_compare_sums_up_each_figure_over_the_sessions(
    workload: str, figures: list[tuple[str, str]]
) -> None:
    """`compare.py . . --quick` runs each session against two fresh servers
    and gives each figure's median over the sessions, and their range."""
    done = subprocess.run(
        [
            sys.executable,
            str(COMPARE),
            ".",
            ".",
            "--quick",
            "--sessions",
            "2",
            "--rounds",
            "1",
            "--workload",
            workload,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["session 1/2", "session 2/2"]
    summaries = [SUMMARY.fullmatch(line) for line in lines[2:]]
    assert all(summaries), lines
    assert [(m["figure"], m["how"]) for m in summaries if m] == figures
    for m in summaries:
        assert m is not None
        assert float(m["low"]) <= float(m["median"]) <= float(m["high"])
        if m["how"] == "B/A":
            assert float(m["low"]) > 0
