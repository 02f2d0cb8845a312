"""What ``ocr-sse upload`` shows: events in, lines of text out; no I/O.

:class:`Progress` is the state of one upload as seen from its events, one
:class:`FileProgress` per file sent.  :func:`live_lines` is what a terminal
shows while the upload runs, :func:`final_line` the last word on one file,
:func:`summary` the closing line, and :func:`redraw` the text (ANSI cursor
movement included) that turns one screen of lines into the next, once
:func:`fit` has cut them to the terminal's width.

Names and messages come from the server or the file system: every control
character in them is escaped, so that no file name can move the cursor or
break a line.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Sequence

import attrs

from .events import (
    Event,
    ImageFileInfo,
    ImageReceived,
    ImageValidationError,
    ImageValidationStart,
    ImageValidationSuccess,
    ProcessingComplete,
    ProcessingError,
)

__all__ = (
    "ASCII",
    "UNICODE",
    "FileProgress",
    "FileState",
    "Glyphs",
    "Progress",
    "final_line",
    "fit",
    "live_lines",
    "printable",
    "redraw",
    "size_text",
    "summary",
)

#: The widest a name column grows; longer names are cut with an ellipsis.
MAX_NAME_WIDTH = 40

# The width of the size column: "1023.9 KiB".
_SIZE_WIDTH = 10


@attrs.frozen(kw_only=True)
class Glyphs:
    """The marks of a valid file, a failed one, and a cut name."""

    valid: str
    failed: str
    cut: str


#: For terminals and files that take UTF-8.
UNICODE = Glyphs(valid="✓", failed="✗", cut="…")
#: For an output encoding without those characters.
ASCII = Glyphs(valid="ok", failed="FAILED", cut="~")


class FileState(enum.Enum):
    """Where one file stands, from the events of the upload so far."""

    SENDING = "sending"  # not received yet: being sent, or waiting its turn
    RECEIVED = "received"
    VALIDATING = "validating"
    VALID = "valid"
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class FileProgress:
    """One file of the upload: its name, size once received, and result."""

    index: int
    name: str | None
    state: FileState = FileState.SENDING
    size_bytes: int | None = None
    info: ImageFileInfo | None = None
    error: ImageValidationError | None = None

    @property
    def done(self) -> bool:
        """Whether the server gave this file's result."""
        return self.state in (FileState.VALID, FileState.FAILED)


@attrs.frozen(kw_only=True)
class Progress:
    """An upload as its events tell it; :meth:`apply` gives the next state."""

    files: tuple[FileProgress, ...]
    end: ProcessingComplete | ProcessingError | None = None

    @classmethod
    def start(cls, names: Sequence[str | None]) -> Progress:
        """The state before any event: *names* are the files sent, in order."""
        return cls(
            files=tuple(
                FileProgress(index=index, name=name) for index, name in enumerate(names)
            )
        )

    def apply(self, event: Event) -> Progress:
        """The state after *event*."""
        if isinstance(event, (ProcessingComplete, ProcessingError)):
            return attrs.evolve(self, end=event)
        if isinstance(event, ImageReceived):
            file = self._file(event.file_index, event.file_name)
            return self._with(
                attrs.evolve(
                    file, state=FileState.RECEIVED, size_bytes=event.size_bytes
                )
            )
        if isinstance(event, ImageValidationStart):
            file = self._file(event.file_index, event.file_name)
            return self._with(attrs.evolve(file, state=FileState.VALIDATING))
        if isinstance(event, ImageValidationSuccess):
            info = event.file_info
            file = self._file(event.file_index, info.file_name)
            return self._with(
                attrs.evolve(
                    file,
                    state=FileState.VALID,
                    size_bytes=info.size_bytes,
                    info=info,
                )
            )
        if isinstance(event, ImageValidationError):
            file = self._file(event.file_index, event.file_name)
            return self._with(attrs.evolve(file, state=FileState.FAILED, error=event))
        return self  # upload_started, all_images_validated: nothing to show

    def _file(self, index: int, name: str | None) -> FileProgress:
        """The file at *index*, named by the server if this side did not."""
        if index < len(self.files) and self.files[index].name is not None:
            return self.files[index]
        if index < len(self.files):
            return attrs.evolve(self.files[index], name=name)
        # A file the server counts but this side did not send (it cannot
        # happen with one client per upload) is shown under the server's name.
        return FileProgress(index=index, name=name)

    def _with(self, file: FileProgress) -> Progress:
        files = list(self.files)
        files.extend(
            FileProgress(index=index, name=None)
            for index in range(len(files), file.index + 1)
        )
        files[file.index] = file
        return attrs.evolve(self, files=tuple(files))

    @property
    def valid_count(self) -> int:
        return sum(file.state is FileState.VALID for file in self.files)

    @property
    def failed_count(self) -> int:
        return sum(file.state is FileState.FAILED for file in self.files)

    @property
    def settled(self) -> int:
        """How many files, from the first, have their final line.

        Results come in file order, so these are the first files; once the
        stream has ended, every file is settled.
        """
        if self.end is not None:
            return len(self.files)
        count = 0
        while count < len(self.files) and self.files[count].done:
            count += 1
        return count

    @property
    def exit_status(self) -> int:
        """0 when the upload completed and every file is valid, else 1."""
        complete = isinstance(self.end, ProcessingComplete)
        all_valid = self.valid_count == len(self.files)
        return 0 if complete and all_valid else 1


# -- lines -------------------------------------------------------------------


def live_lines(progress: Progress, *, glyphs: Glyphs = UNICODE) -> list[str]:
    """The lines a terminal shows now: the files the server has reported on,
    and the one being sent next; every file once the stream has ended."""
    if progress.end is not None:
        return [
            final_line(progress, index, glyphs=glyphs)
            for index in range(len(progress.files))
        ]
    shown = 0
    for file in progress.files:
        if file.state is not FileState.SENDING:
            shown = file.index + 1
    shown = min(shown + 1, len(progress.files))
    width = _name_width(progress)
    return [_line(file, width, glyphs, final=False) for file in progress.files[:shown]]


def final_line(progress: Progress, index: int, *, glyphs: Glyphs = UNICODE) -> str:
    """The last word on the file at *index*: its result, or why it has none."""
    return _line(progress.files[index], _name_width(progress), glyphs, final=True)


def summary(progress: Progress, seconds: float) -> str:
    """The closing line: counts, how the stream ended, and the time taken."""
    counts = (
        f"{progress.valid_count} valid, {progress.failed_count} failed"
        f" of {len(progress.files)} {'file' if len(progress.files) == 1 else 'files'}"
        f" in {_duration(seconds)}"
    )
    end = progress.end
    if isinstance(end, ProcessingError):
        return (
            f"upload failed: {end.error_type}: {printable(end.error_message)}; {counts}"
        )
    if end is None:
        return f"upload cut short; {counts}"
    return f"done: {counts}"


def _line(file: FileProgress, name_width: int, glyphs: Glyphs, *, final: bool) -> str:
    name = _pad(_fit(_name(file), name_width, glyphs.cut), name_width)
    size = "" if file.size_bytes is None else size_text(file.size_bytes)
    return f"{name}  {size:>{_SIZE_WIDTH}}  {_status(file, glyphs, final=final)}"


def _status(file: FileProgress, glyphs: Glyphs, *, final: bool) -> str:
    if file.info is not None:
        info = file.info
        return f"{glyphs.valid} {info.format} {info.width}x{info.height}"
    if file.error is not None:
        code = type(file.error.error_code).__name__
        return f"{glyphs.failed} {code}: {printable(file.error.error_message)}"
    if final:
        unfinished = "not received" if file.size_bytes is None else "not validated"
        return f"{glyphs.failed} {unfinished}"
    if file.state is FileState.VALIDATING:
        return "validating..."
    if file.state is FileState.RECEIVED:
        return "received"
    return "sending..."


def _name(file: FileProgress) -> str:
    return printable(file.name) if file.name is not None else f"#{file.index}"


def _name_width(progress: Progress) -> int:
    widths = (_cells(_name(file)) for file in progress.files)
    return min(max(widths, default=0), MAX_NAME_WIDTH)


def size_text(size: int) -> str:
    """*size* bytes in binary units: ``512 B``, ``9.8 KiB``, ``521 KiB``."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


# -- text that is safe on a terminal -----------------------------------------

# Control and format characters (escapes, line breaks, bidi overrides), line
# and paragraph separators, and lone surrogates (undecodable file names).
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """*text* with every character that could move the cursor or break the
    line escaped (``\\x1b``, ``\\n``, ``\\u202e``); lone surrogates become
    U+FFFD."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":
            out.append("\ufffd")
        elif category in _UNSAFE:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def _char_cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _cells(text: str) -> int:
    """How many terminal columns *text* takes: wide CJK characters take two."""
    return sum(_char_cells(char) for char in text)


def _fit(text: str, cells: int, cut: str) -> str:
    """*text* cut to at most *cells* columns, ending in *cut* when it was cut."""
    if _cells(text) <= cells:
        return text
    room = cells - _cells(cut)
    kept = []
    for char in text:
        room -= _char_cells(char)
        if room < 0:
            break
        kept.append(char)
    return "".join(kept) + cut if cells >= _cells(cut) else ""


def _pad(text: str, cells: int) -> str:
    return text + " " * max(cells - _cells(text), 0)


# -- drawing in place --------------------------------------------------------


def fit(lines: Sequence[str], columns: int, *, cut: str = "…") -> list[str]:
    """*lines* cut to one column less than *columns*, to be redrawn.

    A line that wrapped would take two rows, and the cursor would no longer
    go back up to the right one; the last column is left free because some
    terminals wrap as soon as it is written.
    """
    return [_fit(line, max(columns - 1, 1), cut) for line in lines]


def redraw(before: Sequence[str], after: Sequence[str]) -> str:
    """The text that turns the lines *before*, drawn last, into *after*.

    The cursor stands at the start of the line below *before*, and is left
    below *after*; each line of *before* took one row (:func:`fit`).  Lines
    equal at the top are left alone; from the first that differs, the cursor
    goes back up (``CSI n A``), the rest of the screen is erased (``CSI J``)
    and the lines are written again.
    """
    same = 0
    while same < min(len(before), len(after)) and before[same] == after[same]:
        same += 1
    up = len(before) - same
    text = f"\r\x1b[{up}A\x1b[J" if up else ""
    return text + "".join(line + "\n" for line in after[same:])
