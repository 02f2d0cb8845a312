"""The event stream parser, on bytes: the WHATWG rules, one case at a time."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocr_sse import sse
from ocr_sse.sse import (
    MAX_LENGTH,
    EventStreamError,
    EventStreamParser,
    ServerSentEvent,
    comment,
    event,
)


def parse(*chunks: bytes) -> list[ServerSentEvent]:
    """Feed *chunks* to one parser in turn; return every event it dispatched."""
    parser = EventStreamParser()
    return [dispatched for chunk in chunks for dispatched in parser.feed(chunk)]


def test_lf_line_ends() -> None:
    """LF ends lines; a blank line dispatches the event."""
    assert parse(b"event: a\ndata: x\n\n") == [ServerSentEvent(event="a", data="x")]


def test_crlf_line_ends() -> None:
    """CRLF is one line end, not a line end and then a blank line."""
    assert parse(b"event: a\r\ndata: x\r\ndata: y\r\n\r\n") == [
        ServerSentEvent(event="a", data="x\ny")
    ]


def test_cr_line_ends() -> None:
    """A lone CR ends a line."""
    assert parse(b"event: a\rdata: x\r\r") == [ServerSentEvent(event="a", data="x")]


def test_mixed_line_ends() -> None:
    """LF, CR and CRLF can alternate within one stream."""
    assert parse(b"data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r") == [
        ServerSentEvent(data="a\nb\nc"),
        ServerSentEvent(data="d"),
    ]


def test_crlf_split_across_feeds() -> None:
    """A CR ending one feed and a LF starting the next are one line end."""
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [ServerSentEvent(data="a\nb")]
    assert parser.feed(b"\n") == []  # the LF of that CRLF, not a second blank line


def test_cr_then_empty_feed_then_lf() -> None:
    """An empty feed between the CR and the LF of a CRLF does not split it."""
    assert parse(b"data: a\r", b"", b"\ndata: b\n\n") == [ServerSentEvent(data="a\nb")]


def test_cr_then_other_text_is_a_line_end() -> None:
    """A CR followed by anything but LF ends the line by itself."""
    assert parse(b"data: a\r", b"\r") == [ServerSentEvent(data="a")]


def test_comment_lines_are_ignored() -> None:
    """Lines starting with a colon are comments, inside an event or alone."""
    assert parse(b": keep-alive\n\n:\n\ndata: x\n: between\ndata: y\n\n") == [
        ServerSentEvent(data="x\ny")
    ]


def test_keepalive_comment_frame_dispatches_nothing() -> None:
    """The server's keep-alive comment frames give no event."""
    assert parse(comment(), comment("ping")) == []


def test_one_leading_space_is_stripped() -> None:
    """One space after the colon is dropped; a second one is part of the value."""
    assert parse(b"data: x\n\ndata:y\n\ndata:  z\n\n") == [
        ServerSentEvent(data="x"),
        ServerSentEvent(data="y"),
        ServerSentEvent(data=" z"),
    ]


def test_only_the_first_colon_separates() -> None:
    """Colons after the first one belong to the value."""
    assert parse(b'data: {"a": "b:c"}\n\n') == [ServerSentEvent(data='{"a": "b:c"}')]


def test_field_without_colon_has_an_empty_value() -> None:
    """A line with no colon is a field name with the empty string as value."""
    assert parse(b"data\n\n") == [ServerSentEvent(data="")]


def test_event_field_without_colon_resets_to_message() -> None:
    """A bare ``event`` line sets an empty type, dispatched as ``message``."""
    assert parse(b"event: a\nevent\ndata: x\n\n") == [ServerSentEvent(data="x")]


def test_empty_data_lines_still_count() -> None:
    """Each data line adds a line, even an empty one."""
    assert parse(b"data\ndata\n\n", b"data:\ndata: x\n\n") == [
        ServerSentEvent(data="\n"),
        ServerSentEvent(data="\nx"),
    ]


def test_multi_line_data_joined_with_lf() -> None:
    """Several data lines make one value joined with LF, no trailing LF."""
    assert parse(b"data: one\ndata: two\ndata: three\n\n") == [
        ServerSentEvent(data="one\ntwo\nthree")
    ]


def test_event_type_defaults_to_message() -> None:
    """Without an event field the type is ``message``."""
    assert parse(b"data: x\n\n")[0].event == "message"


def test_event_type_does_not_carry_over() -> None:
    """The event type applies to its own event only."""
    assert parse(b"event: a\ndata: x\n\ndata: y\n\n") == [
        ServerSentEvent(event="a", data="x"),
        ServerSentEvent(data="y"),
    ]


def test_last_event_field_wins() -> None:
    """A later event field replaces an earlier one in the same block."""
    assert parse(b"event: a\nevent: b\ndata: x\n\n")[0].event == "b"


def test_id_is_kept_and_carries_over() -> None:
    """``id`` sets the last event ID, which later events keep until changed."""
    assert parse(b"id: 7\ndata: x\n\ndata: y\n\nid\ndata: z\n\n") == [
        ServerSentEvent(data="x", id="7"),
        ServerSentEvent(data="y", id="7"),
        ServerSentEvent(data="z", id=""),
    ]


def test_id_with_nul_is_ignored() -> None:
    """An id holding U+0000 is ignored; the previous ID stays."""
    assert parse(b"id: 1\ndata: x\n\nid: 2\x003\ndata: y\n\n")[1].id == "1"


def test_id_of_a_block_without_data_still_counts() -> None:
    """An id in a block with no data changes the ID of the next event."""
    assert parse(b"id: 5\n\ndata: x\n\n") == [ServerSentEvent(data="x", id="5")]


def test_retry_with_digits_is_accepted() -> None:
    """``retry`` of ASCII digits sets the reconnection time, in milliseconds."""
    parser = EventStreamParser()
    assert parser.feed(b"retry: 2500\ndata: x\n\ndata: y\n\n") == [
        ServerSentEvent(data="x", retry=2500),
        ServerSentEvent(data="y"),
    ]
    assert parser.retry == 2500


def test_retry_that_is_not_digits_is_ignored() -> None:
    """``retry`` with anything but ASCII digits changes nothing."""
    parser = EventStreamParser()
    assert parser.feed(
        b"retry: 10\n\nretry: 1s\nretry: -5\nretry: \xd9\xa3\ndata: x\n\n"
    ) == [ServerSentEvent(data="x")]
    assert parser.retry == 10


def test_retry_with_thousands_of_digits_does_not_raise() -> None:
    """A ``retry`` of many leading zeros is its number; one of more digits
    than Python reads is ignored, and the events around it still come."""
    parser = EventStreamParser()
    assert parser.feed(
        b"retry: " + b"0" * 5000 + b"1000\ndata: x\n\n"
        b"retry: " + b"9" * 5000 + b"\ndata: y\n\n"
    ) == [ServerSentEvent(data="x", retry=1000), ServerSentEvent(data="y")]
    assert parser.retry == 1000


def test_unknown_fields_are_ignored() -> None:
    """Other fields are ignored; field names are case-sensitive."""
    assert parse(b"foo: bar\nData: no\nEVENT: no\ndata: x\n\n") == [
        ServerSentEvent(data="x")
    ]


def test_block_without_data_dispatches_nothing() -> None:
    """A blank line after a block with no data line dispatches no event."""
    assert parse(b"event: a\n\n\n\nid: 3\n\n") == []


def test_final_event_without_blank_line_is_dropped() -> None:
    """An event the stream ends in the middle of is never dispatched."""
    assert parse(b"data: x\n\ndata: cut") == [ServerSentEvent(data="x")]
    assert parse(b"data: x\n\nevent: a\ndata: cut\n") == [ServerSentEvent(data="x")]


def test_event_is_dispatched_by_the_feed_that_completes_it() -> None:
    """Each feed returns the events its bytes complete, not before."""
    parser = EventStreamParser()
    assert parser.feed(b"event: a\ndata: x\n") == []
    assert parser.feed(b"\ndata: y") == [ServerSentEvent(event="a", data="x")]
    assert parser.feed(b"\n\n") == [ServerSentEvent(data="y")]


def test_multibyte_characters_split_across_feeds() -> None:
    """UTF-8 is decoded incrementally: a character may be cut at any byte."""
    raw = "event: é\ndata: 日本 😀 €\n\n".encode()
    expected = [ServerSentEvent(event="é", data="日本 😀 €")]
    for cut in range(len(raw) + 1):
        assert parse(raw[:cut], raw[cut:]) == expected, cut
    assert parse(*(raw[i : i + 1] for i in range(len(raw)))) == expected


def test_leading_byte_order_mark_is_ignored() -> None:
    """One U+FEFF at the start of the stream is dropped, even split across feeds."""
    assert parse(b"\xef\xbb", b"\xbfdata: x\n\n") == [ServerSentEvent(data="x")]


def test_byte_order_mark_after_the_start_is_data() -> None:
    """A U+FEFF later in the stream is an ordinary character."""
    assert parse(b"data: x\n\ndata: \xef\xbb\xbfy\n\n")[1].data == "\ufeffy"


def test_invalid_utf8_becomes_replacement_character() -> None:
    """Bytes that are not UTF-8 decode to U+FFFD instead of failing."""
    assert parse(b"data: a\xffb\n\n") == [ServerSentEvent(data="a\ufffdb")]


def test_other_unicode_line_breaks_are_data() -> None:
    """Only CR and LF end lines: form feed, NEL and U+2028 are kept in the value."""
    assert parse("data: a\x0cb\x85c\u2028d\n\n".encode()) == [
        ServerSentEvent(data="a\x0cb\x85c\u2028d")
    ]


def test_reads_what_the_server_frames() -> None:
    """The frames of :func:`ocr_sse.sse.event` parse back to name and data."""
    raw = event("upload_started", b'{"type":"upload_started","data":{}}') + comment()
    assert parse(raw) == [
        ServerSentEvent(
            event="upload_started", data='{"type":"upload_started","data":{}}'
        )
    ]


def test_a_long_line_is_searched_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line of MAX_LENGTH characters fed 256 bytes at a time: each character
    is searched for a line end once, not again with every feed (which made a
    40 MiB line take 36 s)."""
    searched = 0
    line_end = sse._LINE_END

    class CountingLineEnd:
        def finditer(self, text: str) -> Iterator[re.Match[str]]:
            nonlocal searched
            searched += len(text)
            return line_end.finditer(text)

    monkeypatch.setattr(sse, "_LINE_END", CountingLineEnd())
    raw = b":" + b"x" * (MAX_LENGTH - 1) + b"\n\ndata: after\n\n"
    parser = EventStreamParser()
    events = [e for i in range(0, len(raw), 256) for e in parser.feed(raw[i : i + 256])]
    assert events == [ServerSentEvent(data="after")]
    assert searched == len(raw)


def test_a_line_over_max_length_raises_before_it_ends() -> None:
    """A line longer than MAX_LENGTH characters raises EventStreamError as
    soon as it is longer, not when (if ever) it ends."""
    parser = EventStreamParser()
    parser.feed(b"data: x\n")
    with pytest.raises(EventStreamError) as raised:
        for _ in range(MAX_LENGTH // 65536 + 1):
            parser.feed(b"x" * 65536)
    assert str(raised.value) == (
        f"a line of the event stream is over {MAX_LENGTH} characters"
    )
    assert isinstance(raised.value, ValueError)


def test_a_line_over_max_length_in_one_feed_raises() -> None:
    """A line that ends in the feed that makes it too long raises too; one
    of exactly max_length characters does not."""
    parser = EventStreamParser(max_length=8)
    assert parser.feed(b"data:123\n\n") == [ServerSentEvent(data="123")]
    with pytest.raises(EventStreamError, match="a line of the event stream"):
        parser.feed(b"data:1234\n")


def test_event_data_over_max_length_raises() -> None:
    """Data lines that together (with the LFs that join them) pass
    max_length raise EventStreamError, though each line is short."""
    parser = EventStreamParser(max_length=10)
    assert parser.feed(b"data:12345\ndata:1234\n\n") == [
        ServerSentEvent(data="12345\n1234")
    ]
    with pytest.raises(EventStreamError) as raised:
        parser.feed(b"data:12345\ndata:12345\n")
    assert str(raised.value) == (
        "the data of an event of the event stream is over 10 characters"
    )


_FIELD_LINES = st.lists(
    st.sampled_from(
        [
            "data: x",
            "data:é€",
            "data",
            "event: a",
            "id: 1",
            "retry: 30",
            ": comment",
            "other: y",
            "",
        ]
    ),
    max_size=20,
)


@given(
    lines=_FIELD_LINES,
    ends=st.lists(st.sampled_from(["\n", "\r", "\r\n"]), min_size=20, max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_any_slicing_gives_the_same_events(
    lines: list[str], ends: list[str], cuts: list[int]
) -> None:
    """However the stream is cut into feeds, the same events come out."""
    raw = "".join(
        line + end for line, end in zip(lines, ends[: len(lines)], strict=True)
    ).encode()
    points = sorted({min(cut, len(raw)) for cut in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    assert parse(*pieces) == parse(raw)
