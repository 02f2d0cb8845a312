"""The contract's events as JSON and SSE frames (:mod:`ocr_sse.events`)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from ocr_sse import events
from ocr_sse.events import (
    AllImagesValidated,
    CorruptedFile,
    CountLimitExceeded,
    EmptyFile,
    ErrorType,
    FileSizeExceeded,
    ImageFileInfo,
    ImageReceived,
    ImageValidationError,
    ImageValidationStart,
    ImageValidationSuccess,
    ProcessingComplete,
    ProcessingError,
    UnsupportedFormat,
    UploadStarted,
)

AT = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
AT_JSON = '"2026-11-22T10:00:00.123456Z"'
SESSION = uuid.UUID("6f1c0e4a-9a7b-4c3d-8e2f-0123456789ab")
SESSION_JSON = '"6f1c0e4a-9a7b-4c3d-8e2f-0123456789ab"'

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def info(**changes: object) -> ImageFileInfo:
    fields: dict[str, object] = dict(
        file_name="receipt.jpg",
        content_type="image/jpeg",
        size_bytes=48213,
        format="JPEG",
        file_index=0,
        processed_at=AT,
        processing_duration_ms=3,
        width=1240,
        height=1754,
    )
    fields.update(changes)
    return ImageFileInfo(**fields)  # type: ignore[arg-type]


def error_event(code: events.ErrorCode) -> ImageValidationError:
    return ImageValidationError(
        file_index=1,
        file_name="notes.pdf",
        error_message="m",
        error_code=code,
        timestamp=AT,
    )


def error_code_json(code: events.ErrorCode) -> str:
    """The JSON text of *code* as it sits inside an image_validation_error."""
    data = events.to_json(error_event(code)).decode()
    prefix = (
        '{"type":"image_validation_error","data":{"file_index":1,'
        '"file_name":"notes.pdf","error_message":"m","error_code":'
    )
    suffix = f',"timestamp":{AT_JSON}}}}}'
    assert data.startswith(prefix)
    assert data.endswith(suffix)
    return data[len(prefix) : -len(suffix)]


# -- every event type, exact JSON ----------------------------------------------


def test_upload_started_json() -> None:
    """upload_started carries total_files, session_id and timestamp, in order."""
    event = UploadStarted(total_files=2, session_id=SESSION, timestamp=AT)

    assert (
        events.to_json(event)
        == (
            '{"type":"upload_started","data":{"total_files":2,'
            f'"session_id":{SESSION_JSON},"timestamp":{AT_JSON}}}}}'
        ).encode()
    )


def test_upload_started_without_declared_count_is_null() -> None:
    """An undeclared file count is JSON null, never a guess."""
    event = UploadStarted(total_files=None, session_id=SESSION, timestamp=AT)

    assert orjson.loads(events.to_json(event))["data"]["total_files"] is None
    assert b'"total_files":null' in events.to_json(event)


def test_image_received_json() -> None:
    """image_received carries file_index, file_name, size_bytes, timestamp."""
    event = ImageReceived(
        file_index=0, file_name="receipt.jpg", size_bytes=48213, timestamp=AT
    )

    assert (
        events.to_json(event)
        == (
            '{"type":"image_received","data":{"file_index":0,'
            f'"file_name":"receipt.jpg","size_bytes":48213,"timestamp":{AT_JSON}}}}}'
        ).encode()
    )


def test_image_received_without_file_name_is_null() -> None:
    """A part without a file name is reported with file_name null."""
    event = ImageReceived(file_index=3, file_name=None, size_bytes=1, timestamp=AT)

    assert (
        events.to_json(event)
        == (
            '{"type":"image_received","data":{"file_index":3,'
            f'"file_name":null,"size_bytes":1,"timestamp":{AT_JSON}}}}}'
        ).encode()
    )


def test_image_validation_start_json() -> None:
    """image_validation_start carries file_index, file_name and timestamp."""
    event = ImageValidationStart(file_index=0, file_name="receipt.jpg", timestamp=AT)

    assert (
        events.to_json(event)
        == (
            '{"type":"image_validation_start","data":{"file_index":0,'
            f'"file_name":"receipt.jpg","timestamp":{AT_JSON}}}}}'
        ).encode()
    )


def test_image_validation_success_json() -> None:
    """image_validation_success nests file_info with every contract field."""
    event = ImageValidationSuccess(file_index=0, file_info=info(), timestamp=AT)

    assert (
        events.to_json(event)
        == (
            '{"type":"image_validation_success","data":{"file_index":0,"file_info":'
            '{"file_name":"receipt.jpg","content_type":"image/jpeg",'
            '"size_bytes":48213,"format":"JPEG","validation_status":"Valid",'
            f'"file_index":0,"processed_at":{AT_JSON},"processing_duration_ms":3,'
            f'"width":1240,"height":1754}},"timestamp":{AT_JSON}}}}}'
        ).encode()
    )


def test_file_info_validation_status_defaults_to_valid() -> None:
    """file_info.validation_status is the string "Valid" without being given."""
    assert info().validation_status == "Valid"


def test_image_validation_error_json() -> None:
    """image_validation_error carries the message and the serde error code."""
    event = ImageValidationError(
        file_index=1,
        file_name="notes.pdf",
        error_message="unsupported format: application/pdf",
        error_code=UnsupportedFormat(detected="application/pdf"),
        timestamp=AT,
    )

    assert (
        events.to_json(event)
        == (
            '{"type":"image_validation_error","data":{"file_index":1,'
            '"file_name":"notes.pdf",'
            '"error_message":"unsupported format: application/pdf",'
            '"error_code":{"UnsupportedFormat":{"detected":"application/pdf"}},'
            f'"timestamp":{AT_JSON}}}}}'
        ).encode()
    )


def test_all_images_validated_json() -> None:
    """all_images_validated carries the three counts and the timestamp."""
    event = AllImagesValidated(
        total_processed=2, successful_count=1, failed_count=1, timestamp=AT
    )

    assert (
        events.to_json(event)
        == (
            '{"type":"all_images_validated","data":{"total_processed":2,'
            f'"successful_count":1,"failed_count":1,"timestamp":{AT_JSON}}}}}'
        ).encode()
    )


def test_processing_complete_json() -> None:
    """processing_complete carries session, counts, duration and timestamp."""
    event = ProcessingComplete(
        session_id=SESSION,
        total_files=2,
        successful_files=1,
        duration_ms=41,
        timestamp=AT,
    )

    assert (
        events.to_json(event)
        == (
            '{"type":"processing_complete","data":{'
            f'"session_id":{SESSION_JSON},"total_files":2,"successful_files":1,'
            f'"duration_ms":41,"timestamp":{AT_JSON}}}}}'
        ).encode()
    )


def test_processing_error_json() -> None:
    """processing_error carries session, message, error_type and timestamp."""
    event = ProcessingError(
        session_id=SESSION,
        error_message="no 'images' part",
        error_type=ErrorType.MULTIPART_PARSING,
        timestamp=AT,
    )

    assert (
        events.to_json(event)
        == (
            '{"type":"processing_error","data":{'
            f'"session_id":{SESSION_JSON},"error_message":"no \'images\' part",'
            f'"error_type":"MultipartParsingError","timestamp":{AT_JSON}}}}}'
        ).encode()
    )


# -- error codes and error types -------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            FileSizeExceeded(actual=12000000, limit=10485760),
            '{"FileSizeExceeded":{"actual":12000000,"limit":10485760}}',
        ),
        (
            UnsupportedFormat(detected="application/pdf"),
            '{"UnsupportedFormat":{"detected":"application/pdf"}}',
        ),
        (
            UnsupportedFormat(detected="unknown"),
            '{"UnsupportedFormat":{"detected":"unknown"}}',
        ),
        (CorruptedFile(), '"CorruptedFile"'),
        (EmptyFile(), '"EmptyFile"'),
        (
            CountLimitExceeded(count=11, limit=10),
            '{"CountLimitExceeded":{"count":11,"limit":10}}',
        ),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else "",
)
def test_error_code_serde_form(code: events.ErrorCode, expected: str) -> None:
    """Each error code is serde's externally tagged form: a tag or {tag: {...}}."""
    assert error_code_json(code) == expected


@pytest.mark.parametrize(
    ("error_type", "wire"),
    [
        (ErrorType.MULTIPART_PARSING, "MultipartParsingError"),
        (ErrorType.SYSTEM_TIMEOUT, "SystemTimeout"),
        (ErrorType.INTERNAL, "InternalServerError"),
        (ErrorType.CLIENT_DISCONNECTED, "ClientDisconnected"),
    ],
)
def test_error_type_wire_value(error_type: ErrorType, wire: str) -> None:
    """Each error_type is written as the contract's exact string."""
    event = ProcessingError(
        session_id=SESSION, error_message="m", error_type=error_type, timestamp=AT
    )

    assert orjson.loads(events.to_json(event))["data"]["error_type"] == wire


def test_error_types_are_exactly_the_contracts_four() -> None:
    """No error_type exists beyond the four the contract lists."""
    assert {member.value for member in ErrorType} == {
        "MultipartParsingError",
        "SystemTimeout",
        "InternalServerError",
        "ClientDisconnected",
    }


# -- timestamps ------------------------------------------------------------------


def test_default_timestamp_is_now_in_utc() -> None:
    """An event made without a timestamp is stamped with the current UTC time."""
    before = datetime.now(UTC)
    event = UploadStarted(total_files=None, session_id=SESSION)
    after = datetime.now(UTC)

    assert event.timestamp.utcoffset() == timedelta(0)
    assert before <= event.timestamp <= after
    written = orjson.loads(events.to_json(event))["data"]["timestamp"]
    assert RFC3339_UTC.fullmatch(written), written


def test_utc_now_is_aware_utc() -> None:
    """utc_now() is timezone-aware with a zero offset, never naive."""
    now = events.utc_now()

    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)


def test_every_default_timestamp_ends_in_z() -> None:
    """Each of the 8 event types, stamped by default, writes an RFC 3339 Z time."""
    made = [
        UploadStarted(total_files=1, session_id=SESSION),
        ImageReceived(file_index=0, file_name="a", size_bytes=1),
        ImageValidationStart(file_index=0, file_name="a"),
        ImageValidationSuccess(file_index=0, file_info=info()),
        ImageValidationError(
            file_index=0, file_name="a", error_message="m", error_code=EmptyFile()
        ),
        AllImagesValidated(total_processed=1, successful_count=1, failed_count=0),
        ProcessingComplete(
            session_id=SESSION, total_files=1, successful_files=1, duration_ms=1
        ),
        ProcessingError(
            session_id=SESSION, error_message="m", error_type=ErrorType.INTERNAL
        ),
    ]

    for event in made:
        stamp = orjson.loads(events.to_json(event))["data"]["timestamp"]
        assert RFC3339_UTC.fullmatch(stamp), (event.type, stamp)


# -- hostile file names ------------------------------------------------------------

HOSTILE_NAMES = [
    'a"b.png',
    "line\nbreak.png",
    "carriage\rreturn.png",
    "crlf\r\n\r\nevent: processing_complete\ndata: {}.png",
    "nul\x00byte.png",
    "back\\slash.png",
    "\u00e9t\u00e9 \u65e5\u672c \U0001f600.png",
    "sep\u2028para\u2029nel\u0085.png",
    "ctl\x1b[31m\x7f.png",
    "",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_file_name_stays_one_json_line(name: str) -> None:
    """A file name with CR, LF, quotes, NUL or unicode keeps the JSON one line."""
    data = events.to_json(ImageReceived(file_index=0, file_name=name, size_bytes=1))

    assert b"\n" not in data
    assert b"\r" not in data
    assert orjson.loads(data)["data"]["file_name"] == name


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_file_name_frame_parses_as_one_event(name: str) -> None:
    """The SSE frame of an event named by a hostile file name is one event."""
    frame = events.encode(
        ImageValidationStart(file_index=4, file_name=name, timestamp=AT)
    )

    lines = frame.split(b"\n")
    assert lines[0] == b"event: image_validation_start"
    assert lines[1].startswith(b"data: ")
    assert lines[2:] == [b"", b""]
    assert orjson.loads(lines[1][len(b"data: ") :]) == {
        "type": "image_validation_start",
        "data": {"file_index": 4, "file_name": name, "timestamp": AT_JSON[1:-1]},
    }


def test_file_name_quotes_and_controls_are_json_escaped() -> None:
    """Quotes, CR, LF and NUL are written as JSON escapes, unicode as UTF-8."""
    data = events.to_json(
        ImageValidationStart(file_index=0, file_name='"\r\n\x00\u00e9', timestamp=AT)
    )

    assert b'"file_name":"\\"\\r\\n\\u0000\xc3\xa9"' in data


# -- the SSE frame of an event -----------------------------------------------------


def test_encode_frames_the_json_under_its_type() -> None:
    """encode() gives `event: <type>` and `data: <to_json>` with the same type."""
    event = UploadStarted(total_files=2, session_id=SESSION, timestamp=AT)

    assert events.encode(event) == (
        b"event: upload_started\ndata: " + events.to_json(event) + b"\n\n"
    )


@pytest.mark.parametrize(
    ("cls", "name"),
    [
        (UploadStarted, "upload_started"),
        (ImageReceived, "image_received"),
        (ImageValidationStart, "image_validation_start"),
        (ImageValidationSuccess, "image_validation_success"),
        (ImageValidationError, "image_validation_error"),
        (AllImagesValidated, "all_images_validated"),
        (ProcessingComplete, "processing_complete"),
        (ProcessingError, "processing_error"),
    ],
)
def test_event_type_names(cls: type[events.Event], name: str) -> None:
    """Each event class carries the contract's event name."""
    assert cls.type == name


def test_events_are_frozen() -> None:
    """An event cannot be changed once made: what was sent is what it says."""
    event = ImageReceived(file_index=0, file_name="a", size_bytes=1, timestamp=AT)

    with pytest.raises(AttributeError):
        event.file_name = "b"  # type: ignore[misc]


def test_event_fields_are_keyword_only() -> None:
    """Events take keywords only, so fields cannot be swapped by position."""
    with pytest.raises(TypeError):
        ImageReceived(0, "a", 1)  # type: ignore[misc]


def test_timestamps_always_carry_six_digits_of_fraction() -> None:
    """At a whole second, and from another time zone, a time is still written
    as UTC with microseconds: 2026-11-22T10:00:00.000000Z, in an event's
    timestamp as in a file's processed_at."""
    for stamp, written in (
        (datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC), "2026-11-22T10:00:00.000000Z"),
        (
            datetime(2026, 11, 22, 11, 0, 0, tzinfo=timezone(timedelta(hours=1))),
            "2026-11-22T10:00:00.000000Z",
        ),
        (
            datetime(2026, 11, 22, 11, 0, 0, 5, tzinfo=timezone(timedelta(hours=1))),
            "2026-11-22T10:00:00.000005Z",
        ),
    ):
        event = ImageValidationSuccess(
            file_index=0, file_info=info(processed_at=stamp), timestamp=stamp
        )
        data = orjson.loads(events.to_json(event))["data"]
        assert (data["timestamp"], data["file_info"]["processed_at"]) == (
            written,
            written,
        )
