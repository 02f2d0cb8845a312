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

__all__ = (
    "MAX_LENGTH",
    "EventStreamError",
    "EventStreamParser",
    "ServerSentEvent",
    "comment",
    "event",
)


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

#: The most characters a line, or the data of one event, may have: far more
#: than an event of the contract needs (a file name is cut to 255
#: characters), and a bound on what a server can make a client hold.  The
#: standard sets none.
MAX_LENGTH = 1024 * 1024


class EventStreamError(ValueError):
    """The stream goes past a limit of the parser: a line, or the data of
    one event, longer than its *max_length*."""


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

    A line, or the data of one event (its data lines and the LFs that join
    them), longer than *max_length* characters raises
    :class:`EventStreamError` as soon as it is fed, so that memory stays
    bounded; the parser is then of no further use.  Each character fed is
    looked at a bounded number of times: a long line costs its length.
    """

    def __init__(self, *, max_length: int = MAX_LENGTH) -> None:
        # "utf-8-sig" drops the one leading byte order mark the standard
        # allows; "replace" is the standard's "UTF-8 decode" for bad bytes.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._max_length = max_length
        # The start of a line whose end has not come yet, a piece a feed, and
        # its length: joined once the line ends, never searched again.
        self._pieces: list[str] = []
        self._held = 0
        self._after_cr = False  # the last line ended on CR: a LF may follow
        self._data: list[str] = []
        self._data_length = -1  # of the data lines joined with LF; -1: none
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
        events: list[ServerSentEvent] = []
        max_length = self._max_length
        start = 0
        # Only the new text is searched: the start of a line held from
        # earlier feeds has no line end in it.
        for match in _LINE_END.finditer(text):
            end = match.start()
            if self._pieces:
                self._hold(text[start:end])
                line = "".join(self._pieces)
                self._pieces.clear()
                self._held = 0
            elif end - start > max_length:
                raise self._too_long("a line")
            else:
                line = text[start:end]
            dispatched = self._line(line)
            if dispatched is not None:
                events.append(dispatched)
            start = match.end()
        if start < len(text):
            self._hold(text[start:])
        self._after_cr = start == len(text) and text[-1] == "\r"
        return events

    def _hold(self, piece: str) -> None:
        """Keep *piece* of a line whose end has not come yet."""
        self._held += len(piece)
        if self._held > self._max_length:
            raise self._too_long("a line")
        self._pieces.append(piece)

    def _too_long(self, what: str) -> EventStreamError:
        return EventStreamError(
            f"{what} of the event stream is over {self._max_length} characters"
        )

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None  # a comment
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data_length += len(value) + 1
            if self._data_length > self._max_length:
                raise self._too_long("the data of an event")
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and _DIGITS.fullmatch(value):
            # Leading zeros do not change the number, but int() counts them
            # towards its limit on digits (4300): 0001000 is 1000.  A number
            # with more digits than int() reads is no reconnection time a
            # client can wait for, and is ignored rather than raised.
            try:
                retry = int(value.lstrip("0") or "0")
            except ValueError:
                return None
            self.retry = self._block_retry = retry
        # Any other field, and a retry that is not all digits, is ignored.
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, self._data = self._data, []
        self._data_length = -1
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
