"""The SSE framing of :mod:`ocr_sse.sse`: exact bytes, and no forged lines."""

from __future__ import annotations

import pytest

from ocr_sse import sse


def test_event_frame_is_event_line_data_line_blank_line() -> None:
    """An event is `event: <name>`, `data: <json>`, then a blank line, LF-ended."""
    frame = sse.event("upload_started", b'{"type":"upload_started","data":{}}')

    assert frame == (
        b'event: upload_started\ndata: {"type":"upload_started","data":{}}\n\n'
    )


def test_event_name_is_written_as_utf8() -> None:
    """A non-ASCII event name is encoded as UTF-8, the only SSE encoding."""
    assert sse.event("caf\u00e9", b"1") == b"event: caf\xc3\xa9\ndata: 1\n\n"


def test_event_data_keeps_its_leading_space() -> None:
    """Data starting with a space keeps it: only the separator's space is eaten."""
    assert sse.event("x", b" 1") == b"event: x\ndata:  1\n\n"


def test_event_data_may_hold_unicode_line_separator() -> None:
    """U+2028 is not an SSE line break, so UTF-8 JSON holding it is accepted."""
    data = '"a\u2028b\u0085c"'.encode()

    assert sse.event("x", data) == b"event: x\ndata: " + data + b"\n\n"


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "a\r\nb", "\n", "x\r"])
def test_event_name_with_line_break_is_refused(name: str) -> None:
    """A CR or LF in the event name raises instead of starting a new field."""
    with pytest.raises(ValueError, match="event name must be a single line"):
        sse.event(name, b"{}")


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1}\ndata: forged',
        b'{"a":1}\r',
        b"\r\n",
        b'{"a":1}\n\nevent: processing_complete',
    ],
)
def test_event_data_with_line_break_is_refused(data: bytes) -> None:
    """A CR or LF in the data raises: a value can never forge a field or event."""
    with pytest.raises(ValueError, match="event data must be a single line"):
        sse.event("image_received", data)


def test_empty_comment_is_a_lone_colon() -> None:
    """A comment without text is `:` and a blank line, nothing else."""
    assert sse.comment() == b":\n\n"
    assert sse.comment("") == b":\n\n"


def test_comment_with_text() -> None:
    """A comment with text is `: <text>` and a blank line."""
    assert sse.comment("keep-alive") == b": keep-alive\n\n"


def test_comment_text_is_written_as_utf8() -> None:
    """Non-ASCII comment text is encoded as UTF-8."""
    assert sse.comment("\u00e9") == b": \xc3\xa9\n\n"


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "\r\n", "ping\n\nevent: x"])
def test_comment_with_line_break_is_refused(text: str) -> None:
    """A CR or LF in a comment raises: a comment can never end in an event."""
    with pytest.raises(ValueError, match="comment must be a single line"):
        sse.comment(text)
