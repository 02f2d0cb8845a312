"""The standalone server keeps the memory one upload frees for the next."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Builds the standalone server's app, frees 16 MiB in 256 KiB chunks as an
# upload does, then counts the page faults of doing that five times more.
_CHURN = """
import resource
from ocr_sse.app import standalone_app
from ocr_sse.config import Config

standalone_app(Config.from_environ())

def churn():
    chunks = [b"x" * (256 << 10) for _ in range(64)]
    del chunks

churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(**environ: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _CHURN],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
            **environ,
        },
    )
    return int(result.stdout)


pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="only glibc's malloc is tuned"
)


def test_memory_freed_is_reused_without_page_faults() -> None:
    """Memory freed in the standalone server's process comes back without
    a page fault."""
    assert page_faults() < 100


def test_a_budget_past_what_malloc_takes_still_keeps_freed_memory() -> None:
    """A memory budget of 4 GiB, past the C int mallopt() takes, keeps freed
    memory as a smaller one does, rather than wrapping to a threshold of 0
    that hands every free back to the system."""
    assert page_faults(OCR_SSE_MEMORY_BUDGET="4GiB") < 100


def test_malloc_settings_of_the_environment_win() -> None:
    """With a MALLOC_ variable set, malloc keeps its own ways: the freed
    memory goes back to the system and about every page faults again."""
    assert page_faults(MALLOC_ARENA_MAX="2") > 10_000
    assert page_faults(GLIBC_TUNABLES="glibc.malloc.arena_max=2") > 10_000
