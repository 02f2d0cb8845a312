#!/usr/bin/env python
"""Compare two versions of ocr_sse side by side, on one workload.

A change worth a few percent cannot be seen in one run: the same code,
run against itself, came out up to 7% apart in files/s.  So each session
here starts one server of each version, fresh, on 127.0.0.1, and alternates
the same uploads between them; a session gives B's median over A's (files/s,
CPU per file) or B's minus A's (latency), and the script prints each
session's figures, then the median over the sessions and their range.

A and B are git revisions, checked out in temporary worktrees for the run,
or directories holding a checkout (``.`` is the working tree as it is)::

    python scripts/compare.py HEAD~1 .                     # 20 KB images
    python scripts/compare.py main . --workload latency    # one upload at a time
    python scripts/compare.py main . --workload large      # 12 MP JPEGs
    python scripts/compare.py main . --workload latency_n  # 100 uploads at once
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # a sibling script, not a package

Run = Callable[[bench.Context, bench.Server], Awaitable[dict[str, Any]]]

_THROUGHPUT = {"files_per_s": "files/s", "cpu_ms_per_file": "CPU ms/file"}


async def _run_latency_n(ctx: bench.Context, server: bench.Server) -> dict[str, Any]:
    """One burst of uploads at once, summed up on its own: under load, a
    burst's median and p99 move with the burst, so each burst gives one
    figure rather than its uploads pooled with the other bursts'."""
    out = await bench.run_latency_n(ctx, server)
    return {
        "ttfe_ms_median": bench.median_of(out["ttfe_ms"]),
        "ttfe_ms_p99": bench.p99_of(out["ttfe_ms"]),
        "file_ms_median": bench.median_of(out["file_ms"]),
        "file_ms_p99": bench.p99_of(out["file_ms"]),
        "wall_s": out["wall_s"],
    }


#: Each workload: the benchmark's run of it, and the figures compared, as
#: named in what the run returns and as printed here.
WORKLOADS: dict[str, tuple[Run, dict[str, str]]] = {
    "small": (bench.run_small, _THROUGHPUT),
    "large": (bench.run_large, _THROUGHPUT),
    "latency": (
        bench.run_latency_1,
        {"ttfe_ms": "first event ms", "file_ms": "last byte->result ms"},
    ),
    "latency_n": (
        _run_latency_n,
        {
            "ttfe_ms_median": "first event median ms",
            "ttfe_ms_p99": "first event p99 ms",
            "file_ms_median": "last byte->result median ms",
            "file_ms_p99": "last byte->result p99 ms",
            "wall_s": "wall s",
        },
    ),
}
#: One upload's latencies are compared as B minus A, a fraction of a
#: millisecond; the rest, those of 100 at once too, as B over A.
DIFFERENCES = ("first event ms", "last byte->result ms")


async def session(
    workload: str,
    sources: dict[str, Path],
    *,
    rounds: int,
    plan: bench.Plan,
    payloads: bench.Payloads,
    logdir: Path,
) -> dict[str, dict[str, float]]:
    """Start a server of each version, alternate *rounds* of *workload*
    between them, stop them; return each one's medians."""
    run, figures = WORKLOADS[workload]
    limits = bench.Limits.of(plan, payloads)
    servers = {
        label: bench.Server("ocr_sse", limits, logdir, source=source)
        for label, source in sources.items()
    }
    measured: dict[str, dict[str, list[float]]] = {
        label: defaultdict(list) for label in servers
    }
    try:
        for server in servers.values():
            server.start()
        async with aiohttp.ClientSession() as http:
            ctx = bench.Context(
                plan=plan, payloads=payloads, limits=limits, session=http
            )
            for server in servers.values():
                await server.ready(http)
                await run(ctx, server)  # warm
            for turn in range(rounds):
                order = list(servers.items())
                for label, server in order[:: 1 if turn % 2 == 0 else -1]:
                    out = await run(ctx, server)
                    for key, figure in figures.items():
                        value = out[key]
                        if isinstance(value, list):
                            measured[label][figure].extend(value)
                        else:
                            measured[label][figure].append(value)
    finally:
        for server in servers.values():
            server.stop()
    return {
        label: {figure: statistics.median(values) for figure, values in of.items()}
        for label, of in measured.items()
    }


def compared(key: str, a: float, b: float) -> float:
    return b - a if key in DIFFERENCES else b / a


def report(results: list[dict[str, dict[str, float]]]) -> Iterator[str]:
    """The lines that sum up the sessions: a median and a range per figure."""
    for key in results[0]["A"]:
        values = sorted(compared(key, r["A"][key], r["B"][key]) for r in results)
        how = "B-A" if key in DIFFERENCES else "B/A"
        yield (
            f"{key}: {how} {statistics.median(values):.3f}, median of"
            f" {len(values)} sessions ({values[0]:.3f} to {values[-1]:.3f})"
        )


@contextlib.contextmanager
def checkouts(revisions: dict[str, str], scratch: Path) -> Iterator[dict[str, Path]]:
    """A directory for each version: as given, or a worktree of a revision."""
    made: list[Path] = []
    sources = {}
    try:
        for label, revision in revisions.items():
            if Path(revision).is_dir():
                sources[label] = Path(revision).resolve()
                continue
            worktree = scratch / label
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(worktree), revision],
                cwd=bench.ROOT,
                check=True,
                capture_output=True,
            )
            made.append(worktree)
            sources[label] = worktree
        yield sources
    finally:
        for worktree in made:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)],
                cwd=bench.ROOT,
                capture_output=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="git revision or checkout directory (A)")
    parser.add_argument("b", help="git revision or checkout directory (B)")
    parser.add_argument("--workload", choices=WORKLOADS, default="small")
    parser.add_argument("--sessions", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=6, help="uploads a session")
    parser.add_argument("--threads", type=int, help="decoding threads of each")
    parser.add_argument(
        "--quick", action="store_true", help="tiny payloads: a smoke run, seconds"
    )
    args = parser.parse_args(argv)
    plan_argv = ["--quick"] if args.quick else []
    if args.threads is not None:
        plan_argv += ["--threads", str(args.threads)]
    plan = bench.parse_args(plan_argv)[1]
    payloads = bench.Payloads.make(plan)
    results = []
    with tempfile.TemporaryDirectory(prefix="ocr-sse-compare-") as scratch:
        try:
            with checkouts({"A": args.a, "B": args.b}, Path(scratch)) as sources:
                for n in range(args.sessions):
                    result = asyncio.run(
                        session(
                            args.workload,
                            sources,
                            rounds=args.rounds,
                            plan=plan,
                            payloads=payloads,
                            logdir=Path(scratch),
                        )
                    )
                    results.append(result)
                    figures = " | ".join(
                        f"{key} A {result['A'][key]:.3f} B {result['B'][key]:.3f}"
                        for key in result["A"]
                    )
                    print(f"session {n + 1}/{args.sessions}: {figures}", flush=True)
        except subprocess.CalledProcessError as failed:
            print(failed.stderr.decode(errors="replace"), file=sys.stderr)
            return 2
    for line in report(results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
