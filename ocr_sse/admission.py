"""Whether a request may start an upload stream, decided from its head alone.

Pure: headers and query in, the declared file count or a
:class:`~ocr_sse.errors.Refused` out.  Nothing here reads the body, so a
refusal can be answered before the client sends it (``Expect: 100-continue``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiohttp.helpers import parse_mimetype
from multidict import MultiMapping

from .errors import Refused

__all__ = ("check_request",)

# RFC 2046 section 5.1.1: a boundary is 1 to 70 characters, of
#   bchars := bcharsnospace / " "
#   bcharsnospace := DIGIT / ALPHA / "'" / "(" / ")" / "+" / "_" / "," / "-"
#                    / "." / "/" / ":" / "=" / "?"
# (a last space is stripped with the others by the Content-Type's parser).
# Other characters would not even be bytes to look for: headers that are not
# UTF-8 arrive as lone surrogates.
_MAX_BOUNDARY = 70
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]+")
# Nine digits are a billion files: anything longer is not a count.
_COUNT = re.compile(r"[0-9]{1,9}")


def check_request(
    headers: Mapping[str, str],
    query: MultiMapping[str],
    *,
    content_length: int | None,
    request_size_limit: int,
) -> int | None:
    """Refuse a request that cannot be an upload; return its ``total_files``."""
    mimetype = parse_mimetype(headers.get("Content-Type", ""))
    if (mimetype.type, mimetype.subtype) != ("multipart", "form-data"):
        raise Refused(
            415,
            "Unsupported Media Type",
            "the body must be multipart/form-data with the images in 'images' parts",
        )
    boundaries = mimetype.parameters.getall("boundary", [""])
    if len(boundaries) > 1:
        # Which one a proxy in front believed is unknown.
        raise Refused(400, "Bad Request", "the boundary is given more than once")
    boundary = boundaries[0]
    if not 0 < len(boundary) <= _MAX_BOUNDARY:
        raise Refused(
            400,
            "Bad Request",
            "the multipart/form-data Content-Type needs a boundary of 1 to 70"
            " characters",
        )
    if not _BOUNDARY.fullmatch(boundary):
        raise Refused(
            400,
            "Bad Request",
            "the boundary may hold only letters, digits, spaces and '()+_,-./:=?"
            " (RFC 2046 section 5.1.1)",
        )
    if content_length is not None and content_length > request_size_limit:
        raise Refused(
            413,
            "Content Too Large",
            f"the body is {content_length} bytes, over the limit of"
            f" {request_size_limit} bytes",
        )
    return _total_files(query)


def _total_files(query: MultiMapping[str]) -> int | None:
    declared = query.getall("total_files", [])
    if not declared:
        return None
    if len(declared) > 1 or not _COUNT.fullmatch(declared[0]):
        raise Refused(
            400,
            "Bad Request",
            "total_files must be given once, as a whole number from 0 to 999999999",
        )
    return int(declared[0])
