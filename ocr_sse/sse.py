"""Server-Sent Events framing: the bytes of one event or one comment, no I/O.

The framing follows the WHATWG "server-sent events" rules: a field line is
``name: value`` ended by LF, and a blank line dispatches the event.  A value
may never hold a line break, so callers hand in one line of JSON.
"""

from __future__ import annotations

__all__ = ("comment", "event")

_LINE_BREAKS = (b"\r", b"\n")


def event(name: str, data: bytes) -> bytes:
    """Return the frame of one event named *name* carrying one line of *data*."""
    raw_name = name.encode("utf-8")
    _require_one_line(raw_name, "event name")
    _require_one_line(data, "event data")
    return b"event: " + raw_name + b"\ndata: " + data + b"\n\n"


def comment(text: str = "") -> bytes:
    """Return a comment frame; clients ignore it, proxies see traffic."""
    raw = text.encode("utf-8")
    _require_one_line(raw, "comment")
    return b": " + raw + b"\n\n" if raw else b":\n\n"


def _require_one_line(value: bytes, what: str) -> None:
    # A line break inside a field would let the value start a field of its
    # own: the one way a file name could forge an event.
    if any(brk in value for brk in _LINE_BREAKS):
        raise ValueError(f"{what} must be a single line")
