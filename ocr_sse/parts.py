"""What one multipart part is to an upload, and where its bytes end.

Pure: part headers in, a :class:`PartHead` out, or an
:class:`~ocr_sse.errors.UploadFailed` for a part the endpoint will not read;
body bytes in, the part's data out up to its closing delimiter
(:class:`DelimiterScanner`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote

import attrs

from .errors import UploadFailed
from .events import ErrorType

__all__ = (
    "FILE_FIELD",
    "MAX_FILE_NAME",
    "DelimiterScanner",
    "PartHead",
    "disposition_parameters",
    "read_head",
)

#: The form field whose parts are the uploaded files.
FILE_FIELD = "images"

#: File names are echoed back; longer ones are cut to this many characters.
MAX_FILE_NAME = 255

# Encodings that leave the bytes as they are.  RFC 7578 section 4.7 says
# senders must not use Content-Transfer-Encoding at all, but some old
# clients send "binary", which is harmless.
_IDENTITY = frozenset({"", "binary", "8bit", "7bit", "identity"})

_SURROGATE = re.compile("[\ud800-\udfff]")

# RFC 6266 section 4.1: `; name=value`, the value a token or a quoted string
# (RFC 9110 section 5.6.4, with backslash escapes).
_PARAMETER = re.compile(
    r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)'
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
    (RFC 6266 section 4.1): which one a proxy in front believed is unknown.
    """
    params: dict[str, str] = {}
    for match in _PARAMETER.finditer(header):
        name, value = match.group(1).lower(), match.group(2).strip()
        if value.startswith('"'):
            value = _ESCAPED.sub(r"\1", value[1:-1])
        if name in params:
            raise ValueError(f"a part's Content-Disposition gives {name} twice")
        params[name] = value
    return params


def _file_name(params: Mapping[str, str]) -> str | None:
    name = params.get("filename")
    extended = _EXTENDED.fullmatch(params.get("filename*", ""))
    if extended is not None:
        charset, encoded = extended.groups()
        name = unquote(encoded, encoding=charset, errors="replace")
    if name is None:
        return None
    # Header bytes that are not UTF-8 arrive as lone surrogates, which JSON
    # cannot carry: each shows as U+FFFD.
    return _SURROGATE.sub("\ufffd", name[:MAX_FILE_NAME])


class DelimiterScanner:
    """Splits the bytes of one part's body from the delimiter that ends it.

    RFC 2046 section 5.1.1: a part's body ends at ``CRLF--boundary``.  Feed
    the bytes that follow the part's headers as they arrive; each call
    returns at once the data known to belong to the part, so a part is
    finished the moment its delimiter arrives, with no look-ahead.  Only
    bytes that might begin the delimiter are held back.
    """

    def __init__(self, dash_boundary: bytes) -> None:
        self._delimiter = b"\r\n" + dash_boundary
        self._held = b""

    def feed(self, chunk: bytes) -> tuple[bytes, bytes | None]:
        """Take the next bytes; return ``(data, rest)``.

        *rest* is ``None`` while the part goes on; once the delimiter is
        found it is everything from ``--boundary`` on, which belongs to the
        multipart reader again.
        """
        delimiter = self._delimiter
        if self._held:
            # The delimiter may have begun in the held bytes.  They are few
            # and rare (a CR near the end of the last chunk), so joining
            # costs little.
            chunk, self._held = self._held + chunk, b""
        found = chunk.find(delimiter)
        if found >= 0:
            return chunk[:found], chunk[found + 2 :]
        # Hold back a tail that could be the start of a delimiter: it can
        # only begin at a CR within the last len(delimiter) - 1 bytes.
        tail = chunk.find(b"\r", max(0, len(chunk) - len(delimiter) + 1))
        if tail >= 0:
            self._held = chunk[tail:]
            chunk = chunk[:tail]
        return chunk, None
