"""The events of the wire contract, as values, and their JSON form.

Each event is a frozen attrs class whose fields are the contract's ``data``
fields, in the contract's order.  :func:`to_json` gives the one-line JSON
``{"type": ..., "data": {...}}`` and :func:`encode` the whole SSE frame.

The error codes keep serde's externally tagged form (``"EmptyFile"`` or
``{"FileSizeExceeded": {...}}``) so that a frontend written against the
original Rust design keeps parsing them.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any, ClassVar, Union

import attrs
import orjson

from . import sse

__all__ = (
    "AllImagesValidated",
    "CorruptedFile",
    "CountLimitExceeded",
    "EmptyFile",
    "ErrorCode",
    "ErrorType",
    "Event",
    "FileSizeExceeded",
    "ImageFileInfo",
    "ImageReceived",
    "ImageValidationError",
    "ImageValidationStart",
    "ImageValidationSuccess",
    "ProcessingComplete",
    "ProcessingError",
    "UnsupportedFormat",
    "UploadStarted",
    "encode",
    "to_json",
    "utc_now",
)


def utc_now() -> datetime:
    """The current time as an aware UTC datetime, the clock of every event."""
    return datetime.now(timezone.utc)


# -- error codes of a file that fails validation -----------------------------


@attrs.frozen(kw_only=True)
class FileSizeExceeded:
    """The file is larger than the per-file limit."""

    actual: int
    limit: int


@attrs.frozen(kw_only=True)
class UnsupportedFormat:
    """The file is not one of the accepted image types."""

    detected: str


@attrs.frozen
class CorruptedFile:
    """The magic bytes are right but the image does not decode."""


@attrs.frozen
class EmptyFile:
    """The file has no bytes at all."""


@attrs.frozen(kw_only=True)
class CountLimitExceeded:
    """The file comes after the last one the upload may hold."""

    count: int
    limit: int


ErrorCode = Union[
    FileSizeExceeded, UnsupportedFormat, CorruptedFile, EmptyFile, CountLimitExceeded
]


class ErrorType(str, enum.Enum):
    """Why a whole upload ended early (``processing_error.error_type``)."""

    MULTIPART_PARSING = "MultipartParsingError"
    SYSTEM_TIMEOUT = "SystemTimeout"
    INTERNAL = "InternalServerError"
    CLIENT_DISCONNECTED = "ClientDisconnected"


# -- the events --------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ImageFileInfo:
    """What validation learnt of a valid image (``file_info``)."""

    file_name: str | None
    content_type: str
    size_bytes: int
    format: str
    validation_status: str = "Valid"
    file_index: int
    processed_at: datetime
    processing_duration_ms: int
    width: int
    height: int


@attrs.frozen(kw_only=True)
class UploadStarted:
    type: ClassVar[str] = "upload_started"
    total_files: int | None
    session_id: uuid.UUID
    timestamp: datetime = attrs.field(factory=utc_now)


@attrs.frozen(kw_only=True)
class ImageReceived:
    type: ClassVar[str] = "image_received"
    file_index: int
    file_name: str | None
    size_bytes: int
    timestamp: datetime = attrs.field(factory=utc_now)


@attrs.frozen(kw_only=True)
class ImageValidationStart:
    type: ClassVar[str] = "image_validation_start"
    file_index: int
    file_name: str | None
    timestamp: datetime = attrs.field(factory=utc_now)


@attrs.frozen(kw_only=True)
class ImageValidationSuccess:
    type: ClassVar[str] = "image_validation_success"
    file_index: int
    file_info: ImageFileInfo
    timestamp: datetime = attrs.field(factory=utc_now)


@attrs.frozen(kw_only=True)
class ImageValidationError:
    type: ClassVar[str] = "image_validation_error"
    file_index: int
    file_name: str | None
    error_message: str
    error_code: ErrorCode
    timestamp: datetime = attrs.field(factory=utc_now)


@attrs.frozen(kw_only=True)
class AllImagesValidated:
    type: ClassVar[str] = "all_images_validated"
    total_processed: int
    successful_count: int
    failed_count: int
    timestamp: datetime = attrs.field(factory=utc_now)


@attrs.frozen(kw_only=True)
class ProcessingComplete:
    type: ClassVar[str] = "processing_complete"
    session_id: uuid.UUID
    total_files: int
    successful_files: int
    duration_ms: int
    timestamp: datetime = attrs.field(factory=utc_now)


@attrs.frozen(kw_only=True)
class ProcessingError:
    type: ClassVar[str] = "processing_error"
    session_id: uuid.UUID
    error_message: str
    error_type: ErrorType
    timestamp: datetime = attrs.field(factory=utc_now)


Event = Union[
    UploadStarted,
    ImageReceived,
    ImageValidationStart,
    ImageValidationSuccess,
    ImageValidationError,
    AllImagesValidated,
    ProcessingComplete,
    ProcessingError,
]

_ERROR_CODES = (
    FileSizeExceeded,
    UnsupportedFormat,
    CorruptedFile,
    EmptyFile,
    CountLimitExceeded,
)


def _fields(value: Any) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in attrs.fields(type(value))}


def _default(value: Any) -> Any:
    # orjson writes str, int, None, UUID, enums and datetimes itself; it calls
    # this for the attrs classes only.
    if isinstance(value, _ERROR_CODES):
        name = type(value).__name__
        fields = _fields(value)
        return {name: fields} if fields else name
    if attrs.has(type(value)):
        return _fields(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(event: Event) -> bytes:
    """The one-line JSON of *event*: ``{"type": ..., "data": {...}}``."""
    return orjson.dumps(
        {"type": event.type, "data": _fields(event)},
        default=_default,
        option=orjson.OPT_UTC_Z,
    )


def encode(event: Event) -> bytes:
    """The SSE frame of *event*, ready for the wire."""
    return sse.event(event.type, to_json(event))
