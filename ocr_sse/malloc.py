"""glibc's malloc, told to keep the memory one upload frees for the next.

Uploads take and free memory by the network chunk (up to 256 KiB) and hold
large files in it.  By default glibc hands the top of its heap back to the
system once 512 KiB of it is free, and the next upload faults it back in a
page at a time: 900 page faults for a 3.5 MB image, 3.8% of the server's CPU
on 12 MP JPEGs (``scripts/bench.py``).  The standalone server keeps as much
freed memory as its memory budget instead (at least 32 MiB, at most 2 GiB);
an app that embeds the endpoint leaves its process's allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

__all__ = ("keep_freed_memory",)

#: mallopt() parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: The highest glibc's own sliding mmap threshold goes on 64-bit systems.
_MMAP_THRESHOLD = 32 * 1024 * 1024
#: mallopt() takes a C int: ctypes would wrap a larger one (4 GiB to 0, which
#: hands back every free at once) or, past 64 bits, raise.
_INT_MAX = 2**31 - 1


def keep_freed_memory(keep: int, environ: Mapping[str, str] = os.environ) -> bool:
    """Have malloc keep up to *keep* bytes of freed memory for reuse, at most
    2 GiB (what mallopt() takes).

    Setting the trim threshold alone would pin the mmap threshold at its
    starting 128 KiB and send every network chunk to mmap, which faults
    just the same, so that one is set to where glibc would slide it.  The
    trim threshold is at least as high, so that no heap allocation is
    handed back the moment it is freed.

    Returns whether anything changed: not with another C library, nor when
    the environment tunes glibc's malloc itself (any ``MALLOC_*`` variable,
    or ``glibc.malloc`` in ``GLIBC_TUNABLES``).
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    if any(name.startswith("MALLOC_") for name in environ):
        return False
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return False
    libc = ctypes.CDLL(None)
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        and libc.mallopt(_M_TRIM_THRESHOLD, min(max(keep, _MMAP_THRESHOLD), _INT_MAX))
    )
