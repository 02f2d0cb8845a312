"""Server-Sent Events framing: the bytes of one event or one comment, no I/O.

The framing follows the WHATWG "server-sent events" rules: a field line is
``name: value`` ended by LF, and a blank line dispatches the event.  A value
may never hold a line break, so callers hand in one line of JSON.
"""

from __future__ import annotations

import codecs
import functools
import re

import attrs

__all__ = ("EventStreamParser", "ServerSentEvent", "comment", "event")


def event(name: str, data: bytes) -> bytes:
    """Return the frame of one event named *name* carrying one line of *data*."""
    _require_one_line(data, "event data")
    return _event_head(name) + data + b"\n\n"


# A stream has a handful of event names and writes each many times: a head
# made once halves the time a frame takes (0.4 us less an event).  Bounded,
# as a caller may name events as it likes.
@functools.lru_cache(maxsize=64)
def _event_head(name: str) -> bytes:
    raw_name = name.encode("utf-8")
    _require_one_line(raw_name, "event name")
    return b"event: " + raw_name + b"\ndata: "


def comment(text: str = "") -> bytes:
    """Return a comment frame; clients ignore it, proxies see traffic."""
    raw = text.encode("utf-8")
    _require_one_line(raw, "comment")
    return b": " + raw + b"\n\n" if raw else b":\n\n"


def _require_one_line(value: bytes, what: str) -> None:
    # A line break inside a field would let the value start a field of its
    # own: the one way a file name could forge an event.
    # Looked for as ints: a bytes needle costs ``in`` a buffer export, nine
    # times as long on a line of event JSON.
    if 10 in value or 13 in value:  # LF, CR
        raise ValueError(f"{what} must be a single line")


# -- reading an event stream -------------------------------------------------
#
# The reverse of the framing above, for clients: bytes in, events out, in
# any slicing of the stream.  It follows the WHATWG HTML standard, section
# 9.2.6 "Interpreting an event stream", and holds no I/O of its own.

# "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE
# FEED (CRLF) character pair, a single U+000A LINE FEED (LF) character, or a
# single U+000D CARRIAGE RETURN (CR) character."  Not str.splitlines(): that
# also splits on form feeds, U+2028 and others that are data here.
_LINE_END = re.compile(r"\r\n|\r|\n")
_DIGITS = re.compile(r"[0-9]+")


@attrs.frozen(kw_only=True)
class ServerSentEvent:
    """One dispatched event of an event stream.

    *event* is the event type (``"message"`` when the stream named none),
    *data* the data lines joined with ``"\\n"``, *id* the stream's last event
    ID when the event was dispatched (it carries over from earlier events),
    and *retry* the reconnection time in milliseconds given in this event's
    block, if any.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


class EventStreamParser:
    """Incremental parser of a ``text/event-stream`` body, without I/O.

    Feed it the body in chunks of any size, split anywhere (inside a CRLF or
    a multi-byte UTF-8 character too); each :meth:`feed` returns the events
    completed by that chunk.  An event is dispatched on a blank line and
    only when it has data; an event the stream ends in the middle of is
    never returned, as the standard requires.
    """

    def __init__(self) -> None:
        # "utf-8-sig" drops the one leading byte order mark the standard
        # allows; "replace" is the standard's "UTF-8 decode" for bad bytes.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._tail = ""  # the start of a line whose end has not come yet
        self._after_cr = False  # the last line ended on CR: a LF may follow
        self._data: list[str] = []
        self._event_type = ""
        self._block_retry: int | None = None
        self.last_event_id = ""
        #: The reconnection time the stream last asked for, in milliseconds.
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse the next *chunk* of the stream; return the events it completes."""
        text = self._decoder.decode(chunk)
        if self._after_cr and text:
            # A CRLF split across two chunks is one line end, not two.
            if text[0] == "\n":
                text = text[1:]
            self._after_cr = False
        if not text:
            return []
        buffer = self._tail + text
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            dispatched = self._line(buffer[start : match.start()])
            if dispatched is not None:
                events.append(dispatched)
            start = match.end()
        self._tail = buffer[start:]
        self._after_cr = start == len(buffer) and buffer.endswith("\r")
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None  # a comment
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and _DIGITS.fullmatch(value):
            self.retry = self._block_retry = int(value)
        # Any other field, and a retry that is not all digits, is ignored.
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, self._data = self._data, []
        event_type, self._event_type = self._event_type, ""
        retry, self._block_retry = self._block_retry, None
        if not data:
            return None
        return ServerSentEvent(
            event=event_type or "message",
            data="\n".join(data),
            id=self.last_event_id,
            retry=retry,
        )
