"""Validation of one file (:mod:`ocr_sse.validation`): codes a client sees."""

from __future__ import annotations

import io
import tracemalloc
import warnings
import zipfile
from datetime import UTC, datetime

import filetype
import pytest
from PIL import Image

from ocr_sse import validation
from ocr_sse.config import Config
from ocr_sse.errors import InvalidImage
from ocr_sse.events import (
    CorruptedFile,
    CountLimitExceeded,
    EmptyFile,
    FileSizeExceeded,
    ImageFileInfo,
    UnsupportedFormat,
)
from ocr_sse.validation import DetectedFormat, check_arrival, decode, detect_format

from . import images

DEFAULT_ALLOWED = Config().allowed_formats
AT = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
JPEG = DetectedFormat(mime="image/jpeg", pillow="JPEG")
PNG = DetectedFormat(mime="image/png", pillow="PNG")


def arrival(*, file_index: int = 0, size: int = 1) -> None:
    check_arrival(file_index=file_index, size=size, max_file_size=100, max_files=10)


# -- check_arrival -------------------------------------------------------------


def test_arrival_within_limits_passes() -> None:
    """A non-empty file within the size limit and the count limit passes."""
    assert arrival(file_index=9, size=100) is None


def test_empty_file() -> None:
    """A zero-byte file is EmptyFile."""
    with pytest.raises(InvalidImage) as caught:
        arrival(size=0)

    assert caught.value.code == EmptyFile()
    assert caught.value.message == "file is empty"


def test_file_one_byte_over_size_limit() -> None:
    """A file one byte over the limit is FileSizeExceeded with actual and limit."""
    with pytest.raises(InvalidImage) as caught:
        arrival(size=101)

    assert caught.value.code == FileSizeExceeded(actual=101, limit=100)
    assert caught.value.message == ("file is 101 bytes, over the limit of 100 bytes")


def test_contract_size_example() -> None:
    """The contract's example: 12000000 bytes against the 10 MiB default."""
    with pytest.raises(InvalidImage) as caught:
        check_arrival(
            file_index=0,
            size=12_000_000,
            max_file_size=Config().max_file_size,
            max_files=Config().max_files,
        )

    assert caught.value.code == FileSizeExceeded(actual=12000000, limit=10485760)


def test_count_limit_counts_from_one() -> None:
    """File index 10 with a limit of 10 files is CountLimitExceeded count 11."""
    with pytest.raises(InvalidImage) as caught:
        arrival(file_index=10)

    assert caught.value.code == CountLimitExceeded(count=11, limit=10)
    assert caught.value.message == "file 11 is over the limit of 10 files per upload"


def test_count_limit_far_past_the_end() -> None:
    """Every file past the limit is refused, with its own 1-based count."""
    with pytest.raises(InvalidImage) as caught:
        arrival(file_index=41)

    assert caught.value.code == CountLimitExceeded(count=42, limit=10)


def test_empty_is_checked_before_count() -> None:
    """An empty file past the count limit is reported as EmptyFile."""
    with pytest.raises(InvalidImage) as caught:
        arrival(file_index=50, size=0)

    assert caught.value.code == EmptyFile()


def test_size_is_checked_before_count() -> None:
    """An oversized file past the count limit is reported as FileSizeExceeded."""
    with pytest.raises(InvalidImage) as caught:
        arrival(file_index=50, size=500)

    assert caught.value.code == FileSizeExceeded(actual=500, limit=100)


# -- detect_format ---------------------------------------------------------------

#: The formats accepted by default, by Pillow's name and their MIME type.
DEFAULT_FORMATS = [
    ("JPEG", "image/jpeg"),
    ("PNG", "image/png"),
    ("WEBP", "image/webp"),
    ("TIFF", "image/tiff"),
    ("BMP", "image/bmp"),
]


@pytest.mark.parametrize(("pillow", "mime"), DEFAULT_FORMATS)
def test_default_allow_list_accepts(pillow: str, mime: str) -> None:
    """JPEG, PNG, WebP, TIFF and BMP are accepted by the default allow-list."""
    head = images.image_bytes(pillow)[: validation.HEAD_SIZE]

    assert detect_format(head, allowed=DEFAULT_ALLOWED) == DetectedFormat(
        mime=mime, pillow=pillow
    )


def test_gif_refused_by_default() -> None:
    """A GIF is UnsupportedFormat image/gif when GIF is not allowed."""
    with pytest.raises(InvalidImage) as caught:
        detect_format(images.image_bytes("GIF"), allowed=DEFAULT_ALLOWED)

    assert caught.value.code == UnsupportedFormat(detected="image/gif")
    assert caught.value.message == "unsupported format: image/gif"


def test_gif_accepted_when_allowed() -> None:
    """GIF is accepted once the allow-list names it."""
    detected = detect_format(images.image_bytes("GIF"), allowed={"GIF"})

    assert detected == DetectedFormat(mime="image/gif", pillow="GIF")


def test_allow_list_restricts_known_formats() -> None:
    """A PNG is refused by an allow-list of JPEG only, with its real type."""
    with pytest.raises(InvalidImage) as caught:
        detect_format(images.png(), allowed={"JPEG"})

    assert caught.value.code == UnsupportedFormat(detected="image/png")


def test_animated_png_is_a_png() -> None:
    """An animated PNG (image/apng) is accepted as format PNG."""
    detected = detect_format(images.apng(), allowed=DEFAULT_ALLOWED)

    assert detected == DetectedFormat(mime="image/apng", pillow="PNG")


def test_pdf_is_reported_as_pdf() -> None:
    """PDF bytes are UnsupportedFormat with detected application/pdf."""
    with pytest.raises(InvalidImage) as caught:
        detect_format(images.pdf(), allowed=DEFAULT_ALLOWED)

    assert caught.value.code == UnsupportedFormat(detected="application/pdf")
    assert caught.value.message == "unsupported format: application/pdf"


@pytest.mark.parametrize(
    "head",
    [
        b"just some text, nothing an image would start with\n" * 20,
        bytes(range(16, 256)) * 4,
        b"x",
    ],
    ids=["text", "noise", "one-byte"],
)
def test_unrecognised_bytes_are_unknown(head: bytes) -> None:
    """Bytes no signature matches are UnsupportedFormat with detected unknown."""
    with pytest.raises(InvalidImage) as caught:
        detect_format(head, allowed=DEFAULT_ALLOWED)

    assert caught.value.code == UnsupportedFormat(detected="unknown")
    assert caught.value.message == "unsupported format: unknown"


def test_known_non_image_type_is_never_unknown() -> None:
    """A recognised non-image (a zip archive) is reported by its MIME type."""
    with pytest.raises(InvalidImage) as caught:
        detect_format(b"PK\x03\x04" + b"\x00" * 60, allowed=DEFAULT_ALLOWED)

    assert caught.value.code == UnsupportedFormat(detected="application/zip")


def office_document(*entries: tuple[str, bytes]) -> bytes:
    """A ZIP with *entries* (name, content) in order, as office suites write."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return buffer.getvalue()


ODT = "application/vnd.oasis.opendocument.text"


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (
            office_document(
                ("[Content_Types].xml", b"<x/>"),
                ("_rels/.rels", b"<x/>"),
                ("word/document.xml", b"<x/>"),
            ),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (office_document(("mimetype", ODT.encode())), ODT),
        (b"PK\x03\x04" + b"\x00" * 60, "application/zip"),
        (b"%PDF-1.7\n" + bytes(range(256)) * 40, "application/pdf"),
        (b"\x1f\x8b\x08" + b"\x00" * 40, "application/gzip"),
    ],
    ids=["docx", "odt", "zip", "pdf", "gzip"],
)
def test_non_images_are_named_as_filetype_names_them(data: bytes, mime: str) -> None:
    """ZIP-based documents and other non-images get filetype's own name for
    them, though ZIP-document matchers run only on heads that start as a ZIP
    does."""
    assert filetype.guess(data).mime == mime
    with pytest.raises(InvalidImage) as caught:
        detect_format(data, allowed=DEFAULT_ALLOWED)

    assert caught.value.code == UnsupportedFormat(detected=mime)


def test_file_name_plays_no_part_in_detection() -> None:
    """A PNG named photo.jpg is validated as the PNG its bytes say it is."""
    info = validation.validate(
        images.png(),
        file_index=0,
        file_name="photo.jpg",
        size=len(images.png()),
        allowed=DEFAULT_ALLOWED,
        max_pixels=10_000,
    )

    assert (info.format, info.content_type) == ("PNG", "image/png")
    assert info.file_name == "photo.jpg"


# -- decode -----------------------------------------------------------------------


def decode_error(
    data: bytes, detected: DetectedFormat, max_pixels: int
) -> InvalidImage:
    with pytest.raises(InvalidImage) as caught:
        decode(io.BytesIO(data), detected, max_pixels=max_pixels)
    return caught.value


def test_decode_returns_width_and_height() -> None:
    """A valid image decodes to its width and height."""
    assert decode(io.BytesIO(images.png(width=30, height=20)), PNG, max_pixels=600) == (
        30,
        20,
    )


def test_truncated_jpeg_is_corrupted() -> None:
    """A JPEG cut short is CorruptedFile, though Image.verify() passes it."""
    data = images.truncated(images.jpeg(width=256, height=256))
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # the check a decode must not be reduced to

    error = decode_error(data, JPEG, 10**6)

    assert error.code == CorruptedFile()
    assert error.message.startswith("image does not decode: ")


def test_truncated_png_is_corrupted() -> None:
    """A PNG cut short is CorruptedFile."""
    error = decode_error(
        images.truncated(images.png(width=256, height=256)), PNG, 10**6
    )

    assert error.code == CorruptedFile()
    assert error.message.startswith("image does not decode: ")


def test_damaged_png_data_is_corrupted() -> None:
    """A PNG whose compressed pixel data is damaged is CorruptedFile."""
    data = bytearray(images.png(width=128, height=128))
    start = data.index(b"IDAT") + 8
    data[start : start + 32] = b"\xff" * 32

    assert decode_error(bytes(data), PNG, 10**6).code == CorruptedFile()


def test_pixel_bomb_is_refused_without_allocating() -> None:
    """A PNG claiming 100000x100000 pixels is CorruptedFile, decoded not at all."""
    bomb = images.pixel_bomb_png()
    tracemalloc.start()
    try:
        error = decode_error(bomb, PNG, 50_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert error.code == CorruptedFile()
    assert error.message == ("image has more pixels than the limit of 50000000 pixels")
    assert peak < 5 * 1024 * 1024


def test_bomb_under_pillow_guard_names_its_size() -> None:
    """A header claiming 8000x8000 pixels over a 50M limit names both numbers."""
    error = decode_error(
        images.pixel_bomb_png(width=8000, height=8000), PNG, 50_000_000
    )

    assert error.code == CorruptedFile()
    assert error.message == (
        "image is 8000x8000 pixels, over the limit of 50000000 pixels"
    )


def test_bomb_past_pillow_warning_is_refused_when_warnings_are_ignored() -> None:
    """With Pillow's bomb warning silenced (as in production), 10000x10000 px
    over a 50M limit is still CorruptedFile naming its size."""
    bomb = images.pixel_bomb_png(width=10_000, height=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        error = decode_error(bomb, PNG, 50_000_000)

    assert error.code == CorruptedFile()
    assert error.message == (
        "image is 10000x10000 pixels, over the limit of 50000000 pixels"
    )


def test_bomb_past_pillow_warning_is_refused_when_warnings_are_errors() -> None:
    """With Pillow's bomb warning raised as an error, 10000x10000 px is still
    CorruptedFile, not a crash."""
    bomb = images.pixel_bomb_png(width=10_000, height=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        error = decode_error(bomb, PNG, 50_000_000)

    assert error.code == CorruptedFile()
    assert error.message == ("image has more pixels than the limit of 50000000 pixels")


def test_max_pixels_above_pillows_own_limit_is_held_to_pillows() -> None:
    """A max_pixels over Pillow's MAX_IMAGE_PIXELS lets no larger image in:
    the lower limit holds, and is the one named."""
    bomb = images.pixel_bomb_png(width=10_000, height=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        error = decode_error(bomb, PNG, 10**9)

    assert error.code == CorruptedFile()
    assert error.message == (
        f"image is 10000x10000 pixels, over the limit of {Image.MAX_IMAGE_PIXELS}"
        " pixels"
    )


def test_image_just_over_max_pixels() -> None:
    """A 64x48 image under a 3071-pixel limit is CorruptedFile naming its size."""
    error = decode_error(images.png(width=64, height=48), PNG, 64 * 48 - 1)

    assert error.code == CorruptedFile()
    assert error.message == "image is 64x48 pixels, over the limit of 3071 pixels"


def test_image_exactly_at_max_pixels_passes() -> None:
    """An image of exactly max_pixels pixels is accepted."""
    data = images.png(width=64, height=48)

    assert decode(io.BytesIO(data), PNG, max_pixels=64 * 48) == (64, 48)


def test_jpeg_magic_on_png_body_is_corrupted() -> None:
    """JPEG magic bytes followed by a PNG body are detected JPEG, then corrupt."""
    png = images.png()
    forged = b"\xff\xd8\xff\xe0" + png

    detected = detect_format(forged, allowed=DEFAULT_ALLOWED)
    assert detected == JPEG
    assert decode_error(forged, detected, 10**6).code == CorruptedFile()


def test_decode_only_tries_the_detected_format() -> None:
    """PNG bytes decoded as the JPEG they were detected as are CorruptedFile."""
    error = decode_error(images.png(), JPEG, 10**6)

    assert error.code == CorruptedFile()
    assert error.message == "image does not decode: not a JPEG file Pillow can read"


def test_decode_message_is_one_short_line() -> None:
    """The message of a decode failure is one line of at most 200 characters."""
    error = decode_error(images.truncated(images.jpeg()), JPEG, 10**6)

    assert "\n" not in error.message
    assert len(error.message) <= len("image does not decode: ") + 200


# -- validate ---------------------------------------------------------------------


@pytest.mark.parametrize(("pillow", "mime"), DEFAULT_FORMATS)
def test_validate_returns_file_info(pillow: str, mime: str) -> None:
    """validate() reports name, type, size, format, index, time and dimensions."""
    data = images.image_bytes(pillow, width=33, height=17)

    info = validation.validate(
        data,
        file_index=4,
        file_name="scan",
        size=len(data),
        allowed=DEFAULT_ALLOWED,
        max_pixels=10_000,
        clock=lambda: AT,
    )

    assert info == ImageFileInfo(
        file_name="scan",
        content_type=mime,
        size_bytes=len(data),
        format=pillow,
        validation_status="Valid",
        file_index=4,
        processed_at=AT,
        processing_duration_ms=info.processing_duration_ms,
        width=33,
        height=17,
    )
    assert 0 <= info.processing_duration_ms < 10_000


def test_processing_duration_is_the_time_validation_took_in_ms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """processing_duration_ms is the time from the start of validate() to its
    end, rounded to whole milliseconds."""
    readings = iter([100.0, 100.2504])

    class Clock:
        @staticmethod
        def perf_counter() -> float:
            return next(readings)

    monkeypatch.setattr(validation, "time", Clock)
    data = images.png()

    info = validation.validate(
        data,
        file_index=0,
        file_name=None,
        size=len(data),
        allowed=DEFAULT_ALLOWED,
        max_pixels=10_000,
    )

    assert info.processing_duration_ms == 250


def test_validate_reads_a_file_object() -> None:
    """validate() accepts an open binary file as well as bytes."""
    data = images.jpeg(width=10, height=12)

    info = validation.validate(
        io.BytesIO(data),
        file_index=0,
        file_name=None,
        size=len(data),
        allowed=DEFAULT_ALLOWED,
        max_pixels=10_000,
    )

    assert (info.width, info.height, info.format) == (10, 12, "JPEG")
    assert info.file_name is None


def test_validate_trusts_a_format_already_detected() -> None:
    """validate() given the format its caller detected decodes as that
    format without detecting it again: a JPEG said to be a PNG is corrupt."""
    data = images.jpeg(width=10, height=12)
    facts = dict(
        file_index=0,
        file_name=None,
        size=len(data),
        allowed=DEFAULT_ALLOWED,
        max_pixels=10_000,
    )

    info = validation.validate(
        data, detected=validation.detect_format(data, allowed=DEFAULT_ALLOWED), **facts
    )
    assert (info.content_type, info.format, info.width) == ("image/jpeg", "JPEG", 10)
    with pytest.raises(InvalidImage) as caught:
        validation.validate(
            data,
            detected=validation.DetectedFormat(mime="image/png", pillow="PNG"),
            **facts,
        )
    assert type(caught.value.code) is CorruptedFile


def test_validate_refuses_unsupported_before_decoding() -> None:
    """validate() of a PDF raises UnsupportedFormat application/pdf."""
    with pytest.raises(InvalidImage) as caught:
        validation.validate(
            images.pdf(),
            file_index=0,
            file_name="notes.pdf",
            size=len(images.pdf()),
            allowed=DEFAULT_ALLOWED,
            max_pixels=10_000,
        )

    assert caught.value.code == UnsupportedFormat(detected="application/pdf")


def test_validate_refuses_a_truncated_jpeg() -> None:
    """validate() of a truncated JPEG raises CorruptedFile."""
    data = images.truncated(images.jpeg(width=200, height=200))

    with pytest.raises(InvalidImage) as caught:
        validation.validate(
            data,
            file_index=0,
            file_name="a.jpg",
            size=len(data),
            allowed=DEFAULT_ALLOWED,
            max_pixels=10**6,
        )

    assert caught.value.code == CorruptedFile()


def test_known_formats_are_what_pillow_names() -> None:
    """The allow-list vocabulary is the six Pillow format names, GIF included."""
    assert validation.KNOWN_FORMATS == {"JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF"}


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, 0.99])
def test_truncated_jpeg_is_caught_by_the_fast_decode(
    progressive: bool, keep: float
) -> None:
    """JPEGs decode at 1/8 scale for speed, yet a cut anywhere still fails
    as CorruptedFile, and the full size is reported for whole files."""
    data = images.image_bytes(
        "JPEG", width=800, height=600, quality=85, progressive=progressive
    )
    detected = detect_format(data, allowed={"JPEG"})

    assert decode(io.BytesIO(data), detected, max_pixels=10**8) == (800, 600)
    with pytest.raises(InvalidImage) as caught:
        decode(
            io.BytesIO(images.truncated(data, keep=keep)), detected, max_pixels=10**8
        )
    assert caught.value.code == CorruptedFile()


@pytest.mark.parametrize("cut", [1000, 2**20 - 1, 2**20, 2**20 + 1, -1])
def test_a_truncated_jpeg_over_a_decode_block_is_caught(cut: int) -> None:
    """A JPEG longer than the 1 MiB the decoder is handed at a time is still
    caught when cut short, before, at, after a block's end or at its last
    byte."""
    data = images.noise_jpeg(width=1600, height=1200)
    assert len(data) > 2**20 + 1000
    detected = detect_format(data, allowed={"JPEG"})

    assert decode(io.BytesIO(data), detected, max_pixels=10**8) == (1600, 1200)
    with pytest.raises(InvalidImage) as caught:
        decode(io.BytesIO(data[:cut]), detected, max_pixels=10**8)
    assert caught.value.code == CorruptedFile()


def test_a_file_object_is_validated_from_its_start() -> None:
    """validate() reads a file from the start, wherever it was left, as a
    freshly written temporary file is left at its end."""
    data = images.png(width=30, height=20)
    file = io.BytesIO(data)
    file.seek(0, io.SEEK_END)

    info = validation.validate(
        file,
        file_index=0,
        file_name=None,
        size=len(data),
        allowed={"PNG"},
        max_pixels=10**6,
    )
    assert (info.format, info.width, info.height) == ("PNG", 30, 20)
