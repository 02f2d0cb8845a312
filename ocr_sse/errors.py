"""The three ways an upload, or a file of it, can fail.

Each error carries what the wire needs to report it, so the code that
detects a problem decides how the client hears of it:

* :class:`Refused`: the request is turned away before the stream starts,
  with an RFC 9457 problem response;
* :class:`UploadFailed`: the stream ends early with ``processing_error``;
* :class:`InvalidImage`: one file fails validation with an
  ``image_validation_error``, and the upload goes on.

What each says is JSON-safe (:func:`without_surrogates`), whatever client
bytes it quotes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .events import ErrorCode, ErrorType

__all__ = (
    "InvalidImage",
    "Refused",
    "UploadFailed",
    "describe",
    "without_surrogates",
)

_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """*text* with each lone surrogate shown as U+FFFD.

    Header bytes that are not UTF-8 arrive from aiohttp as lone surrogates,
    which JSON cannot carry: orjson refuses them, and so would a client.
    """
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


class Refused(Exception):
    """The request is refused before the stream starts."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        detail = without_surrogates(detail)
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})


class UploadFailed(Exception):
    """The upload cannot go on; the stream ends with ``processing_error``."""

    def __init__(self, error_type: ErrorType, message: str) -> None:
        message = without_surrogates(message)
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class InvalidImage(Exception):
    """One file failed validation."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        message = without_surrogates(message)
        super().__init__(message)
        self.code = code
        self.message = message


def describe(exc: BaseException) -> str:
    """One short line saying what *exc* is about, safe to show a client."""
    # aiohttp's HTTP errors print as "400, message:" with the message on a
    # line of its own; their message attribute is the line worth showing.
    message = getattr(exc, "message", None)
    text = message if isinstance(message, str) else str(exc)
    lines = text.strip().splitlines() or [type(exc).__name__]
    return lines[0][:200]
