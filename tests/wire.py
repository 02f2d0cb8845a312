"""Building raw multipart bodies and reading raw event streams in tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import orjson

__all__ = (
    "BOUNDARY",
    "CONTENT_TYPE",
    "Part",
    "failed_with",
    "frames",
    "multipart",
    "read_events",
    "stalled",
    "types",
)

BOUNDARY = "testboundary1234"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"

Part = tuple[str, "str | None", bytes]  # field name, file name, bytes

_FRAME = re.compile(rb"event: ([a-z_]+)\ndata: ([^\r\n]*)\n\n|:[^\r\n]*\n\n")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def multipart(parts: Iterable[Part], *, boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body holding *parts*, as a browser would send it."""
    body = b""
    for field, file_name, data in parts:
        disposition = f'form-data; name="{field}"'
        if file_name is not None:
            disposition += f'; filename="{file_name}"'
        body += (
            (
                f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode()


async def stalled(body: bytes, *, until: asyncio.Event) -> AsyncIterator[bytes]:
    """The first 100 bytes of *body*, inside its first part's head, then
    nothing more until *until* is set."""
    yield body[:100]
    await until.wait()


def frames(raw: bytes) -> list[bytes]:
    """Split a whole event stream into frames; fail on any byte out of place."""
    found = []
    position = 0
    while position < len(raw):
        match = _FRAME.match(raw, position)
        assert match is not None, (
            f"not an SSE frame at {position}: {raw[position : position + 80]!r}"
        )
        found.append(match.group(0))
        position = match.end()
    return found


def read_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The events of a whole stream as (type, data); comments are left out.

    Checks the framing the contract fixes: ``event:`` and ``data:`` lines
    naming the same type, one line of JSON, RFC 3339 UTC timestamps.
    """
    events = []
    for frame in frames(raw):
        if frame.startswith(b":"):
            continue
        match = _FRAME.fullmatch(frame)
        assert match is not None
        name, payload = match.group(1).decode(), orjson.loads(match.group(2))
        assert set(payload) == {"type", "data"} and payload["type"] == name
        for key in ("timestamp", "processed_at"):
            stamp = payload["data"].get(key) or payload["data"].get(
                "file_info", {}
            ).get(key)
            if stamp is not None:
                assert _TIMESTAMP.fullmatch(stamp), stamp
        events.append((name, payload["data"]))
    return events


def types(events: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Only the event types, in order."""
    return [name for name, _ in events]


def failed_with(events: Sequence[tuple[str, dict[str, Any]]]) -> tuple[str, str]:
    """The error type and message of a stream that failed before any file
    was received: ``upload_started`` then ``processing_error``, nothing else."""
    assert types(events) == ["upload_started", "processing_error"]
    error = events[-1][1]
    return error["error_type"], error["error_message"]
