"""What one multipart part is to an upload, and where its bytes end.

Pure: part headers in, a :class:`PartHead` out, or an
:class:`~ocr_sse.errors.UploadFailed` for a part the endpoint will not read;
body bytes in, the part's data out up to its closing delimiter
(:class:`DelimiterScanner`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeAlias
from urllib.parse import unquote

import attrs

from .errors import UploadFailed, without_surrogates
from .events import ErrorType

__all__ = (
    "FILE_FIELD",
    "MAX_FILE_NAME",
    "Data",
    "DelimiterScanner",
    "PartHead",
    "disposition_parameters",
    "read_head",
)

#: The form field whose parts are the uploaded files.
FILE_FIELD = "images"

#: A piece of a part's body: a chunk as it arrived, or a view of one.
Data: TypeAlias = bytes | memoryview

#: File names are echoed back; longer ones are cut to this many characters.
MAX_FILE_NAME = 255

# Encodings that leave the bytes as they are.  RFC 7578 section 4.7 says
# senders must not use Content-Transfer-Encoding at all, but some old
# clients send "binary", which is harmless.
_IDENTITY = frozenset({"", "binary", "8bit", "7bit", "identity"})

# RFC 6266 section 4.1: `; name=value`, the value a quoted string (RFC 9110
# section 5.6.4, with backslash escapes; its content is the second group) or
# else a token (the third).  The quoted string is matched a run of plain
# characters at a time, not a character at a time: 0.5 us less a part.
_PARAMETER = re.compile(
    r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^;]*))'
)
_ESCAPED = re.compile(r"\\(.)")
# RFC 8187 section 3.2: charset'language'percent-encoded; only UTF-8 (and the
# ISO-8859-1 of RFC 5987) are decoded, never another codec a client names.
_EXTENDED = re.compile(r"(utf-8|iso-8859-1)'[^']*'(.*)", re.IGNORECASE | re.DOTALL)


@attrs.frozen(kw_only=True)
class PartHead:
    """The form field a part belongs to, and the file name it carries."""

    field_name: str | None
    file_name: str | None

    @property
    def is_file(self) -> bool:
        return self.field_name == FILE_FIELD


def read_head(headers: Mapping[str, str]) -> PartHead:
    """Read the field and file name of a part; refuse encoded parts."""
    for header in ("Content-Transfer-Encoding", "Content-Encoding"):
        value = headers.get(header, "").strip().lower()
        if value not in _IDENTITY:
            # Decoding would hand the validator other bytes than were sent,
            # and a compressed part is a decompression bomb in waiting.
            raise UploadFailed(
                ErrorType.MULTIPART_PARSING,
                f"a part has {header}: {value[:40]}; multipart/form-data parts"
                " must carry their bytes as they are",
            )
    try:
        params = disposition_parameters(headers.get("Content-Disposition", ""))
    except ValueError as exc:
        raise UploadFailed(ErrorType.MULTIPART_PARSING, str(exc)) from None
    return PartHead(field_name=params.get("name"), file_name=_file_name(params))


def disposition_parameters(header: str) -> dict[str, str]:
    """The parameters of a Content-Disposition header, names in lower case.

    A quoted value is unquoted.  A name given twice is a ``ValueError``
    (RFC 6266 section 4.1): which one a proxy in front believed is unknown;
    so is a quote that is never closed.
    """
    params: dict[str, str] = {}
    # findall() hands back plain tuples: a fifth less time than match objects.
    for raw_name, quoted, token in _PARAMETER.findall(header):
        name = raw_name.lower()
        if quoted:
            value = _ESCAPED.sub(r"\1", quoted) if "\\" in quoted else quoted
        else:
            value = token.strip()
            if value.startswith('"'):
                # Read as a token, `filename="a.png` would be `a.pn`, and
                # `name="images` a field that is not the files'.
                raise ValueError(
                    f"a part's Content-Disposition never closes the quote of {name}"
                )
        if name in params:
            raise ValueError(f"a part's Content-Disposition gives {name} twice")
        params[name] = value
    return params


def _file_name(params: Mapping[str, str]) -> str | None:
    name = params.get("filename")
    if "filename*" in params:
        extended = _EXTENDED.fullmatch(params["filename*"])
        if extended is not None:
            charset, encoded = extended.groups()
            name = unquote(encoded, encoding=charset, errors="replace")
    if name is None:
        return None
    return without_surrogates(name[:MAX_FILE_NAME])


class DelimiterScanner:
    """Splits the bytes of one part's body from the delimiter that ends it.

    RFC 2046 section 5.1.1: a part's body ends at ``CRLF--boundary``.  Feed
    the bytes that follow the part's headers as they arrive; each call
    returns at once the data known to belong to the part, so a part is
    finished the moment its delimiter arrives, with no look-ahead.  Only
    bytes that might begin the delimiter are held back.

    Nothing is copied but those few held bytes: the data comes back as the
    chunk itself or as views of it, and the delimiter is looked for where
    the chunk lies.
    """

    def __init__(self, dash_boundary: bytes) -> None:
        #: ``--boundary``: the delimiter without its leading CRLF.
        self.dash_boundary = dash_boundary
        self._delimiter = b"\r\n" + dash_boundary
        self._held = b""

    def feed(self, chunk: bytes, start: int = 0) -> tuple[list[Data], int | None]:
        """Take ``chunk[start:]``; return ``(data, end)``.

        *data* are the pieces of the part's body found in it, in order.
        *end* is ``None`` while the part goes on, and all of the chunk is
        taken; once the delimiter is found it is the index in *chunk* just
        past it, where the rest of the boundary line begins.
        """
        delimiter, held = self._delimiter, self._held
        data: list[Data] = []
        if held:
            # The delimiter may have begun in the held bytes, and if it did,
            # it ends within the next len(delimiter) - 1 bytes.
            self._held = b""
            bridge = held + chunk[start : start + len(delimiter) - 1]
            found = bridge.find(delimiter)
            if found >= 0:
                # It begins in the held bytes (after them there is no room
                # for all of it) and ends this far into the chunk.
                end = start + found + len(delimiter) - len(held)
                return _nonempty(held[:found]), end
            if len(bridge) < len(held) + len(delimiter) - 1:
                # Too few new bytes to tell: the chunk joins the held bytes.
                return self._hold_back(bridge, 0), None
            data.append(held)
        found = chunk.find(delimiter, start)
        if found >= 0:
            return data + _nonempty(_view(chunk, start, found)), found + len(delimiter)
        return data + self._hold_back(chunk, start), None

    def _hold_back(self, chunk: bytes, start: int) -> list[Data]:
        # Hold back a tail that could be the start of a delimiter: it can
        # only begin at a CR within the last len(delimiter) - 1 bytes.
        end = len(chunk)
        tail = chunk.find(b"\r", max(start, end - len(self._delimiter) + 1))
        if tail >= 0:
            self._held, end = chunk[tail:], tail
        return _nonempty(_view(chunk, start, end))


def _view(chunk: bytes, start: int, end: int) -> Data:
    """``chunk[start:end]``, without a copy."""
    if start == 0 and end == len(chunk):
        return chunk
    return memoryview(chunk)[start:end]


def _nonempty(data: Data) -> list[Data]:
    return [data] if len(data) else []
