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
import types
import typing
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Union, cast

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
    "InvalidEventError",
    "ProcessingComplete",
    "ProcessingError",
    "UnknownEventType",
    "UnsupportedFormat",
    "UploadStarted",
    "encode",
    "from_json",
    "to_json",
    "utc_now",
)


def utc_now() -> datetime:
    """The current time as an aware UTC datetime, the clock of every event."""
    return datetime.now(UTC)


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


ErrorCode = (
    FileSizeExceeded
    | UnsupportedFormat
    | CorruptedFile
    | EmptyFile
    | CountLimitExceeded
)


class ErrorType(enum.StrEnum):
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


Event = (
    UploadStarted
    | ImageReceived
    | ImageValidationStart
    | ImageValidationSuccess
    | ImageValidationError
    | AllImagesValidated
    | ProcessingComplete
    | ProcessingError
)

_ERROR_CODES = typing.get_args(ErrorCode)


_FieldReader = Callable[[Any], dict[str, Any]]
_FIELD_READERS: dict[type[Any], _FieldReader] = {}


def _fields(value: Any) -> dict[str, Any]:
    """The wire fields of *value*, an instance of an attrs class: a dict."""
    reader = _FIELD_READERS.get(type(value))
    if reader is None:
        reader = _FIELD_READERS[type(value)] = _field_reader(type(value))
    return reader(value)


def _field_reader(cls: type[Any]) -> _FieldReader:
    # Written out for each class as one dict display, as attrs writes its
    # methods: half the time of a loop over the fields (0.26 against 0.52 us
    # an event).  The names are the class's own fields, never input.
    hints = _hints(cls)
    items = ", ".join(
        f"{name!r}: wire_time(value.{name})"
        if hints[name] is datetime
        else f"{name!r}: value.{name}"
        for name in (field.name for field in attrs.fields(cls))
    )
    namespace = {"wire_time": _wire_time}
    exec(f"def fields(value):\n    return {{{items}}}\n", namespace)
    return cast(_FieldReader, namespace["fields"])


def _wire_time(moment: datetime) -> datetime | str:
    # Always UTC with six digits of fraction, as in the contract's example.
    # orjson writes an aware UTC time so itself (OPT_UTC_Z), in a sixth of
    # isoformat()'s time, but it drops the fraction at a whole second: a
    # parser expecting it would fail once in a million events.
    if moment.tzinfo is UTC and moment.microsecond:
        return moment
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def _default(value: Any) -> Any:
    # orjson writes str, int, None, UUID, enums and datetimes itself; it
    # calls this for the attrs classes.
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


# -- reading events back -----------------------------------------------------


class InvalidEventError(ValueError):
    """The JSON of an event does not follow the contract."""


class UnknownEventType(InvalidEventError):
    """The JSON names an event type this version does not know."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"unknown event type {type_name!r}")
        self.type_name = type_name


_EVENT_TYPES: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (
        UploadStarted,
        ImageReceived,
        ImageValidationStart,
        ImageValidationSuccess,
        ImageValidationError,
        AllImagesValidated,
        ProcessingComplete,
        ProcessingError,
    )
}
_ERROR_CODE_NAMES: dict[str, type[Any]] = {cls.__name__: cls for cls in _ERROR_CODES}


def from_json(data: bytes | str) -> Event:
    """The event whose contract JSON is *data*: the reverse of :func:`to_json`.

    Fields the contract may add later are ignored.  Raises
    :class:`UnknownEventType` for a type this version does not know and
    :class:`InvalidEventError` for any other JSON that is not an event.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError(f"event is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidEventError("event JSON must be an object")
    type_name = document.get("type")
    if not isinstance(type_name, str):
        raise InvalidEventError("event JSON has no string 'type'")
    cls = _EVENT_TYPES.get(type_name)
    if cls is None:
        raise UnknownEventType(type_name)
    event: Event = _read_object(cls, document.get("data"), type_name)
    return event


def _read_object(cls: type[Any], value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise InvalidEventError(f"{where} must be an object")
    hints = _hints(cls)
    values = {}
    for field in attrs.fields(cls):
        if field.name not in value:
            raise InvalidEventError(f"{where} has no {field.name!r}")
        values[field.name] = _read_value(
            hints[field.name], value[field.name], f"{where}.{field.name}"
        )
    return cls(**values)


def _read_value(hint: Any, value: Any, where: str) -> Any:
    # One reader per type the event classes use; a new field type fails
    # loudly here rather than passing a raw value through.
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        options = typing.get_args(hint)
        if hint == ErrorCode:
            return _read_error_code(value, where)
        if value is None and type(None) in options:
            return None
        (inner,) = (option for option in options if option is not type(None))
        return _read_value(inner, value, where)
    if hint is int:
        # JSON true is not a count, although bool is an int to Python.
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidEventError(f"{where} must be an integer")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise InvalidEventError(f"{where} must be a string")
        return value
    if hint is uuid.UUID:
        return _parse(uuid.UUID, value, where, "a UUID")
    if hint is datetime:
        moment = _parse(_rfc3339, value, where, "an RFC 3339 time")
        if moment.tzinfo is None:  # RFC 3339 times always carry an offset
            raise InvalidEventError(f"{where} must be an RFC 3339 time, not {value!r}")
        return moment
    if hint is ErrorType:
        return _parse(ErrorType, value, where, "an error type")
    if attrs.has(hint):
        return _read_object(hint, value, where)
    raise TypeError(f"no JSON reader for {hint!r} ({where})")


def _read_error_code(value: Any, where: str) -> ErrorCode:
    # serde's externally tagged form: "EmptyFile" for a code without
    # fields, {"FileSizeExceeded": {...}} for one with fields.
    if isinstance(value, str):
        name, fields = value, None
    elif isinstance(value, dict) and len(value) == 1:
        ((name, fields),) = value.items()
    else:
        raise InvalidEventError(f"{where} must be a string or an object of one key")
    cls = _ERROR_CODE_NAMES.get(name)
    if cls is None:
        raise InvalidEventError(f"{where} has an unknown error code {name!r}")
    if not attrs.fields(cls):
        if fields is not None:
            raise InvalidEventError(f"{where}: {name} carries no fields")
        code: ErrorCode = cls()
        return code
    code = _read_object(cls, fields, f"{where}.{name}")
    return code


def _rfc3339(value: str) -> datetime:
    # RFC 3339 section 5.6: "the "T" and "Z" characters in this syntax may
    # alternatively be lower case "t" or "z"", which fromisoformat() refuses.
    return datetime.fromisoformat(value.upper())


def _parse(parse: Any, value: Any, where: str, what: str) -> Any:
    if not isinstance(value, str):
        raise InvalidEventError(f"{where} must be {what} in a string")
    try:
        return parse(value)
    except ValueError:
        raise InvalidEventError(f"{where} must be {what}, not {value!r}") from None


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints
