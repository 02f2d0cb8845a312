"""What `ocr-sse upload` prints, from events alone: exact lines, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from ocr_sse import progress
from ocr_sse.events import (
    AllImagesValidated,
    CorruptedFile,
    ErrorType,
    Event,
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
from ocr_sse.progress import ASCII, FileState, Progress

SESSION = uuid.UUID("05ebb451-17db-491c-ba11-be38963aa3e4")
NOW = datetime(2026, 11, 22, 17, 27, 51, tzinfo=UTC)


def received(index: int, name: str | None, size: int) -> ImageReceived:
    return ImageReceived(file_index=index, file_name=name, size_bytes=size)


def start(index: int, name: str | None) -> ImageValidationStart:
    return ImageValidationStart(file_index=index, file_name=name)


def valid(index: int, name: str | None, size: int) -> ImageValidationSuccess:
    info = ImageFileInfo(
        file_name=name,
        content_type="image/jpeg",
        size_bytes=size,
        format="JPEG",
        file_index=index,
        processed_at=NOW,
        processing_duration_ms=18,
        width=1240,
        height=1754,
    )
    return ImageValidationSuccess(file_index=index, file_info=info)


def pdf_error(index: int, name: str | None) -> ImageValidationError:
    return ImageValidationError(
        file_index=index,
        file_name=name,
        error_message="unsupported format: application/pdf",
        error_code=UnsupportedFormat(detected="application/pdf"),
    )


def complete(total: int, successful: int) -> ProcessingComplete:
    return ProcessingComplete(
        session_id=SESSION,
        total_files=total,
        successful_files=successful,
        duration_ms=21,
    )


def run(names: list[str | None], events: list[Event]) -> Progress:
    state = Progress.start(names)
    for event in events:
        state = state.apply(event)
    return state


UPLOAD: list[Event] = [
    UploadStarted(total_files=2, session_id=SESSION),
    received(0, "receipt.jpg", 533_674),
    start(0, "receipt.jpg"),
    received(1, "notes.pdf", 10_010),
    start(1, "notes.pdf"),
    valid(0, "receipt.jpg", 533_674),
    pdf_error(1, "notes.pdf"),
    AllImagesValidated(total_processed=2, successful_count=1, failed_count=1),
    complete(2, 1),
]


def test_each_event_updates_the_live_lines_in_place() -> None:
    """Live lines show every file reported on plus the one being sent, each
    with its latest state, names padded to one column."""
    names: list[str | None] = ["receipt.jpg", "notes.pdf"]
    screens = [progress.live_lines(run(names, UPLOAD[:n])) for n in range(1, 8)]
    assert screens == [
        ["receipt.jpg              sending..."],
        ["receipt.jpg     521 KiB  received", "notes.pdf                sending..."],
        [
            "receipt.jpg     521 KiB  validating...",
            "notes.pdf                sending...",
        ],
        ["receipt.jpg     521 KiB  validating...", "notes.pdf       9.8 KiB  received"],
        [
            "receipt.jpg     521 KiB  validating...",
            "notes.pdf       9.8 KiB  validating...",
        ],
        [
            "receipt.jpg     521 KiB  ✓ JPEG 1240x1754",
            "notes.pdf       9.8 KiB  validating...",
        ],
        [
            "receipt.jpg     521 KiB  ✓ JPEG 1240x1754",
            "notes.pdf       9.8 KiB  ✗ UnsupportedFormat:"
            " unsupported format: application/pdf",
        ],
    ]


def test_final_lines_and_summary_of_a_completed_upload() -> None:
    """A completed upload: one final line per file, then the counts, the
    end and the time taken; a failed file makes the exit status 1."""
    state = run(["receipt.jpg", "notes.pdf"], UPLOAD)
    assert [progress.final_line(state, i) for i in range(2)] == [
        "receipt.jpg     521 KiB  ✓ JPEG 1240x1754",
        "notes.pdf       9.8 KiB  ✗ UnsupportedFormat:"
        " unsupported format: application/pdf",
    ]
    assert progress.live_lines(state) == [
        progress.final_line(state, i) for i in range(2)
    ]
    assert progress.summary(state, 0.0512) == (
        "done: 1 valid, 1 failed of 2 files in 0.05 s"
    )
    assert (state.valid_count, state.failed_count, state.exit_status) == (1, 1, 1)


def test_every_file_valid_and_complete_exits_zero() -> None:
    """Exit status 0 needs processing_complete and every file valid."""
    events: list[Event] = [
        received(0, "a.jpg", 100),
        start(0, "a.jpg"),
        valid(0, "a.jpg", 100),
    ]
    assert run(["a.jpg"], events).exit_status == 1  # no processing_complete yet
    state = run(["a.jpg"], [*events, complete(1, 1)])
    assert state.exit_status == 0
    assert (
        progress.summary(state, 12.345) == "done: 1 valid, 0 failed of 1 file in 12.3 s"
    )


def test_settled_counts_the_files_whose_final_line_can_be_printed() -> None:
    """Off a terminal, a file's line is printed once its result is in; results
    come in file order, and an ended stream settles every file."""
    names: list[str | None] = ["receipt.jpg", "notes.pdf"]
    assert [run(names, UPLOAD[:n]).settled for n in range(len(UPLOAD) + 1)] == [
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        2,
        2,
        2,
    ]
    error = ProcessingError(
        session_id=SESSION,
        error_message="no data for 30 s",
        error_type=ErrorType.SYSTEM_TIMEOUT,
    )
    assert run(names, [error]).settled == 2


def test_processing_error_ends_every_unfinished_file_and_the_summary() -> None:
    """After processing_error, a file without a result says whether it was
    received; the summary names the error type and message; exit 1."""
    state = run(
        ["a.jpg", "b.jpg", "c.jpg"],
        [
            received(0, "a.jpg", 2048),
            start(0, "a.jpg"),
            valid(0, "a.jpg", 2048),
            received(1, "b.jpg", 5 * 1024 * 1024),
            ProcessingError(
                session_id=SESSION,
                error_message="the client sent nothing for 30 s",
                error_type=ErrorType.SYSTEM_TIMEOUT,
            ),
        ],
    )
    assert progress.live_lines(state) == [
        "a.jpg     2.0 KiB  ✓ JPEG 1240x1754",
        "b.jpg     5.0 MiB  ✗ not validated",
        "c.jpg              ✗ not received",
    ]
    assert progress.summary(state, 30.04) == (
        "upload failed: SystemTimeout: the client sent nothing for 30 s;"
        " 1 valid, 0 failed of 3 files in 30.0 s"
    )
    assert state.exit_status == 1


def test_a_stream_that_breaks_off_is_summed_up_as_cut_short() -> None:
    """A stream that ends with neither processing_complete nor
    processing_error is summed up as cut short, not as done; exit 1."""
    state = run(
        ["a.jpg", "b.jpg"],
        [received(0, "a.jpg", 100), start(0, "a.jpg"), valid(0, "a.jpg", 100)],
    )
    assert progress.summary(state, 1.5) == (
        "upload cut short; 1 valid, 0 failed of 2 files in 1.50 s"
    )
    assert state.exit_status == 1


def test_error_codes_show_their_name_and_the_message() -> None:
    """Each error code is shown by its contract name, then the message."""
    state = run(
        ["big.png", "bad.png"],
        [
            ImageValidationError(
                file_index=0,
                file_name="big.png",
                error_message="file is 12000000 bytes, over the limit of 10485760",
                error_code=FileSizeExceeded(actual=12_000_000, limit=10_485_760),
            ),
            ImageValidationError(
                file_index=1,
                file_name="bad.png",
                error_message="the image does not decode",
                error_code=CorruptedFile(),
            ),
        ],
    )
    assert [progress.final_line(state, i, glyphs=ASCII) for i in range(2)] == [
        "big.png              FAILED FileSizeExceeded:"
        " file is 12000000 bytes, over the limit of 10485760",
        "bad.png              FAILED CorruptedFile: the image does not decode",
    ]


def test_a_file_without_a_name_is_shown_by_its_index() -> None:
    """A file named by neither side shows as #index; the server's name fills
    in for one this side did not name."""
    state = run([None, None], [received(0, None, 10), received(1, "x.png", 20)])
    assert progress.live_lines(state) == [
        "#0           10 B  received",
        "x.png        20 B  received",
    ]
    assert state.files[1].state is FileState.RECEIVED


def test_names_cannot_move_the_cursor_or_break_the_line() -> None:
    """Escapes, line breaks and bidi overrides in a name are shown escaped;
    an undecodable byte (a lone surrogate) as U+FFFD."""
    assert progress.printable("a\x1b[2Jb\nc\u202ed\udcff.png") == (
        "a\\x1b[2Jb\\x0ac\\u202ed\ufffd.png"
    )
    state = run(["\x1b[31mred.png"], [received(0, "\x1b[31mred.png", 1)])
    assert progress.live_lines(state) == ["\\x1b[31mred.png         1 B  received"]


def test_long_and_wide_names_are_cut_to_the_name_column() -> None:
    """Names wider than 40 columns are cut with an ellipsis; a wide (CJK)
    character takes two columns."""
    long = "x" * 50 + ".png"
    state = run([long, "請求書.png"], [])
    assert progress.live_lines(state) == [
        "x" * 39 + "…              sending...",
    ]
    state = run(["請求書.png", "a.png"], [received(0, "請求書.png", 1)])
    assert progress.live_lines(state) == [
        "請求書.png         1 B  received",
        "a.png                   sending...",
    ]


def test_fullwidth_characters_take_two_columns() -> None:
    """A fullwidth letter (U+FF21 on) takes two terminal columns, as a CJK
    one does, so a line of them is cut where the terminal would wrap it."""
    a, b, c, d = "\uff21", "\uff22", "\uff23", "\uff24"
    assert progress.fit([a + b + c + d], 6) == [a + b + "…"]
    state = run([a + b + ".png", "a.png"], [received(0, a + b + ".png", 1)])
    assert progress.live_lines(state) == [
        a + b + ".png         1 B  received",
        "a.png                 sending...",
    ]


def test_combining_marks_take_no_column() -> None:
    """An accent written as a combining mark (e + U+0301) adds no column to
    the letter it sits on: a name of six such letters fits in six."""
    accented = "e\u0301" * 6
    assert progress.fit([accented], 7) == [accented]
    assert progress.fit([accented], 6) == ["e\u0301" * 4 + "…"]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (10_010, "9.8 KiB"),
        (100 * 1024 - 52, "99.9 KiB"),
        (100 * 1024, "100 KiB"),
        (533_674, "521 KiB"),
        (1023 * 1024, "1023 KiB"),
        (10 * 1024 * 1024, "10.0 MiB"),
        (3 * 1024**4, "3.0 TiB"),
        (5000 * 1024**4, "5000 TiB"),
    ],
)
def test_sizes_are_in_binary_units(size: int, text: str) -> None:
    """Sizes read in B, KiB, MiB, GiB, TiB; one decimal below 100."""
    assert progress.size_text(size) == text


def test_redraw_rewrites_from_the_first_changed_line() -> None:
    """Redrawing moves the cursor up to the first line that changed, erases
    the rest of the screen, and writes the lines from there."""
    assert progress.redraw([], ["a  sending..."]) == "a  sending...\n"
    assert progress.redraw(
        ["a  ✓ PNG", "b  validating...", "c  sending..."],
        ["a  ✓ PNG", "b  ✓ PNG", "c  received", "d  sending..."],
    ) == ("\r\x1b[2A\x1b[Jb  ✓ PNG\nc  received\nd  sending...\n")
    assert progress.redraw(["a", "b"], ["a", "b", "c"]) == "c\n"
    assert progress.redraw(["a"], ["a"]) == ""


def test_fit_keeps_each_line_on_one_terminal_row() -> None:
    """Lines are cut to one column less than the terminal's width."""
    assert progress.fit(["abcdefghij", "abc", "請求書請求書"], 6) == [
        "abcd…",
        "abc",
        "請求…",
    ]
    assert progress.fit(["abcdef"], 6, cut="~") == ["abcd~"]


def test_a_row_narrower_than_the_cut_mark_is_left_empty() -> None:
    """When even the cut mark would not fit in the row, nothing is written
    there, rather than a mark that wraps."""
    assert progress.fit(["abcdef"], 3, cut="...") == [""]
    assert progress.fit(["abcdef"], 4, cut="...") == ["..."]
