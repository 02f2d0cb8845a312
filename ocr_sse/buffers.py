"""A file held in memory as the chunks it arrived in, read without joining them.

Joining a large file's chunks into one ``bytes`` copies every byte once more,
into freshly allocated memory, after the chunks have left the CPU's caches,
and holds the file twice meanwhile.  :func:`open_chunks` reads them where
they lie.  No I/O.
"""

from __future__ import annotations

import bisect
import io
import itertools
from collections.abc import Sequence

__all__ = ("open_chunks",)


def open_chunks(chunks: Sequence[bytes | memoryview]) -> io.BufferedReader:
    """A read-only, seekable binary file over *chunks*, in order."""
    return io.BufferedReader(_ChunksRaw(chunks))


class _ChunksRaw(io.RawIOBase):
    def __init__(self, chunks: Sequence[bytes | memoryview]) -> None:
        self._chunks = [chunk for chunk in chunks if chunk]
        #: Where each chunk starts in the file, and the file's size last.
        self._starts = list(itertools.accumulate(map(len, self._chunks), initial=0))
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._starts[-1] + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if position < 0:
            raise OSError(22, f"negative seek position {position}")
        self._position = position
        return position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on closed file")
        out = memoryview(buffer).cast("B")
        index = bisect.bisect_right(self._starts, self._position) - 1
        written = 0
        while written < len(out) and index < len(self._chunks):
            chunk = self._chunks[index]
            offset = self._position - self._starts[index]
            count = min(len(chunk) - offset, len(out) - written)
            out[written : written + count] = memoryview(chunk)[offset : offset + count]
            written += count
            self._position += count
            index += 1
        return written

    def close(self) -> None:
        self._chunks = []
        super().close()
