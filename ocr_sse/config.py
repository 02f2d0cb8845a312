"""Settings of the endpoint: one frozen value, read from the environment or flags.

Every setting has one definition here: its default, its parser, its help.
The environment variable (``OCR_SSE_`` + the upper-case name) and the
command-line flag (``--`` + the name with dashes) are derived from it, so the
two can never disagree.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from .validation import KNOWN_FORMATS

__all__ = ("ENV_PREFIX", "Config", "ConfigError")

ENV_PREFIX = "OCR_SSE_"

MiB = 1024 * 1024

_SIZE = re.compile(r"(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": MiB, "g": 1024 * MiB}


class ConfigError(ValueError):
    """A setting has a value that cannot be used; *setting* names it."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


def _parse_size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError("expected a byte count such as 10485760 or 10MiB")
    number, unit = match.groups()
    # K, KB and KiB all mean 1024 here: limits are sized in binary units.
    return int(number) * _UNITS[unit[:1].lower()]


def _parse_int(text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()):
        raise ValueError("expected a whole number")
    return int(text)


def _parse_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise ValueError("expected a number of seconds")
    return seconds


def _format_names(names: str | Iterable[str]) -> frozenset[str]:
    # Config(allowed_formats=...) takes names as the environment does: in any
    # case, and a string as the comma-separated list, not as its letters.
    if isinstance(names, str):
        names = names.split(",")
    elif not isinstance(names, Iterable):
        raise TypeError(f"allowed_formats must be format names, not {names!r}")
    formats = set()
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"allowed_formats must be format names, not {name!r}")
        if name.strip():
            formats.add(name.strip().upper())
    return frozenset(formats)


def _show_formats(formats: frozenset[str]) -> str:
    return ",".join(sorted(formats))


def _strip(text: str) -> str:
    return text.strip() if isinstance(text, str) else text


def _host(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    # asyncio listens on every interface for an empty host (or None): an
    # OCR_SSE_HOST= left empty must not open the server to the network.
    if not isinstance(value, str) or not value:
        raise ConfigError(
            "host must be an address or a host name (0.0.0.0 for every"
            f" interface), not {value!r}",
            setting=attribute.name,
        )


LOG_LEVELS = ("debug", "info", "warning", "error")


def _lower(text: str) -> str:
    # Anything but a string is left for the validator to name and refuse.
    return text.strip().lower() if isinstance(text, str) else text


def _log_level(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in LOG_LEVELS:
        raise ConfigError(
            f"log_level must be one of {', '.join(LOG_LEVELS)}, not {value!r}",
            setting=attribute.name,
        )


def _whole(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    # Config(...) from code is not parsed: 1.5 files, True threads or "20"
    # would pass the range checks, or fail them with a TypeError about "<".
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, not {value!r}")


def _seconds(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number of seconds, not {value!r}")


#: The fewest seconds a setting in seconds takes.  The keep-alive interval and
#: the read and write timeouts are timers that re-arm themselves that often:
#: one of 1e-300 s is due at once, on every turn of the event loop, a busy
#: loop, and one of 0.1 ms still woke it about a thousand times a second for
#: each upload.  The upload timeout and the shutdown grace share the floor,
#: so that every setting in seconds has the one range.
MIN_SECONDS = 0.01


def _duration(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not MIN_SECONDS <= value < math.inf:
        raise ConfigError(
            f"{attribute.name} must be {MIN_SECONDS} or above, not {value}",
            setting=attribute.name,
        )


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    # Zero is never a usable limit: it would refuse everything.
    if not 0 < value < math.inf:
        raise ConfigError(
            f"{attribute.name} must be above 0, not {value}", setting=attribute.name
        )


#: The most decoding threads.  They all start with the app: 10**30 of them
#: would never be done starting, and 100,000 failed with "can't start new
#: thread"; more threads than cores decode no faster.
MAX_THREADS = 1024


def _threads(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= MAX_THREADS:
        raise ConfigError(
            f"{attribute.name} must be between 1 and {MAX_THREADS}, not {value}",
            setting=attribute.name,
        )


def _not_negative(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ConfigError(
            f"{attribute.name} must be 0 or above, not {value}", setting=attribute.name
        )


def _port(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(
            f"port must be between 0 and 65535, not {value}", setting=attribute.name
        )


def _formats(
    instance: Any, attribute: attrs.Attribute[Any], value: frozenset[str]
) -> None:
    unknown = value - KNOWN_FORMATS
    if unknown or not value:
        known = _show_formats(KNOWN_FORMATS)
        raise ConfigError(
            f"allowed_formats must be a non-empty list of {known}"
            + (f"; unknown: {_show_formats(frozenset(unknown))}" if unknown else ""),
            setting=attribute.name,
        )


def _setting(
    default: Any,
    parse: Callable[[str], Any],
    help: str,
    *,
    validator: Any = None,
    converter: Any = None,
    show: Callable[[Any], str] = str,
) -> Any:
    return attrs.field(
        default=default,
        validator=validator,
        converter=converter,
        kw_only=True,
        metadata={"parse": parse, "help": help, "show": show},
    )


@attrs.frozen
class Config:
    """Every setting of the endpoint and of the standalone server."""

    host: str = _setting(
        "127.0.0.1",
        str,
        "address the server listens on",
        converter=_strip,
        validator=_host,
    )
    port: int = _setting(
        3000, _parse_int, "port the server listens on", validator=[_whole, _port]
    )
    log_level: str = _setting(
        "info",
        str,
        "log level of the standalone server; debug adds a line per file",
        converter=_lower,
        validator=_log_level,
    )
    max_file_size: int = _setting(
        10 * MiB,
        _parse_size,
        "largest accepted file, in bytes",
        validator=[_whole, _positive],
    )
    max_files: int = _setting(
        20, _parse_int, "most files validated per upload", validator=[_whole, _positive]
    )
    max_request_size: int | None = _setting(
        None,
        _parse_size,
        "largest request body, in bytes (default: max_file_size x max_files + 1 MiB)",
        validator=attrs.validators.optional([_whole, _positive]),
    )
    allowed_formats: frozenset[str] = _setting(
        frozenset({"JPEG", "PNG", "WEBP", "TIFF", "BMP"}),
        _format_names,
        "accepted image formats, comma-separated",
        converter=_format_names,
        validator=_formats,
        show=_show_formats,
    )
    max_pixels: int = _setting(
        50_000_000,
        _parse_int,
        "most pixels (width x height) of an accepted image, at most Pillow's"
        " own MAX_IMAGE_PIXELS",
        validator=[_whole, _positive],
    )
    keepalive_interval: float = _setting(
        15.0,
        _parse_seconds,
        "seconds of silence before a keep-alive comment is sent",
        validator=[_seconds, _duration],
    )

    read_timeout: float = _setting(
        30.0,
        _parse_seconds,
        "seconds the client may send nothing before the upload ends",
        validator=[_seconds, _duration],
    )
    upload_timeout: float = _setting(
        300.0,
        _parse_seconds,
        "seconds a whole upload may take, validation included",
        validator=[_seconds, _duration],
    )
    write_timeout: float = _setting(
        30.0,
        _parse_seconds,
        "seconds a client may leave the event stream unread before it is dropped",
        validator=[_seconds, _duration],
    )
    max_uploads: int = _setting(
        256,
        _parse_int,
        "most uploads in flight at once; more are refused with 503",
        validator=[_whole, _positive],
    )
    rate_limit: int = _setting(
        0,
        _parse_int,
        "uploads a minute from one client address, in bursts of up to that"
        " many; 0 for no limit",
        validator=[_whole, _not_negative],
    )
    shutdown_grace: float = _setting(
        10.0,
        _parse_seconds,
        "seconds uploads in flight may take to finish when the server stops",
        validator=[_seconds, _duration],
    )
    max_parts: int = _setting(
        100,
        _parse_int,
        "most multipart parts, files and other fields, in one upload",
        validator=[_whole, _positive],
    )
    max_field_size: int = _setting(
        64 * 1024,
        _parse_size,
        "largest non-file form field, in bytes",
        validator=[_whole, _positive],
    )
    memory_budget: int = _setting(
        64 * MiB,
        _parse_size,
        "bytes of files over 1 MiB kept in memory across all uploads; the rest"
        " go to temporary files",
        validator=[_whole, _not_negative],
    )
    validation_threads: int = _setting(
        min(os.cpu_count() or 1, MAX_THREADS),
        _parse_int,
        "threads that decode images, shared by all uploads (1 to 1024)",
        validator=[_whole, _threads],
    )

    @property
    def request_size_limit(self) -> int:
        """The request body limit in force, derived when not set."""
        if self.max_request_size is not None:
            return self.max_request_size
        return self.max_file_size * self.max_files + MiB

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Config:
        """Read every ``OCR_SSE_*`` variable of *environ*; defaults for the rest.

        A variable with the prefix whose name is close to a setting's is
        refused as a misspelling; others are left alone.
        """
        _refuse_misspelt(environ, [field.name for field in attrs.fields(cls)])
        values = {}
        for field in attrs.fields(cls):
            raw = environ.get(_variable(field.name))
            if raw is not None:
                values[field.name] = _parse(field, raw, _variable(field.name))
        try:
            return cls(**values)
        except ConfigError as exc:
            if exc.setting is None or exc.setting not in values:
                raise
            variable = _variable(exc.setting)
            raise ConfigError(
                f"{variable}={environ[variable]!r}: {exc}", setting=exc.setting
            ) from None

    @classmethod
    def from_args(
        cls,
        argv: Sequence[str],
        environ: Mapping[str, str] = os.environ,
        *,
        parser: argparse.ArgumentParser | None = None,
    ) -> Config:
        """Read command-line flags over the environment over the defaults.

        Arguments that are not settings are left alone, unless *parser* is
        given: the settings' flags are then added to it, and it parses
        *argv* whole (``--help``, unknown flags and bad values exit there).
        """
        base = cls.from_environ(environ)
        if parser is None:
            args, _ = argument_parser(base).parse_known_args(argv)
        else:
            args = argument_parser(base, parser).parse_args(argv)
        given = {
            field.name: getattr(args, field.name)
            for field in attrs.fields(cls)
            if getattr(args, field.name) is not None
        }
        try:
            return attrs.evolve(base, **given)
        except ConfigError as exc:
            if exc.setting is None or exc.setting not in given:
                raise
            flag = "--" + exc.setting.replace("_", "-")
            raise ConfigError(f"argument {flag}: {exc}", setting=exc.setting) from None


def argument_parser(
    defaults: Config, parser: argparse.ArgumentParser | None = None
) -> argparse.ArgumentParser:
    """Add one flag per setting to *parser*, with *defaults* in its help."""
    parser = parser or argparse.ArgumentParser(add_help=False)
    for field in attrs.fields(type(defaults)):
        value = getattr(defaults, field.name)
        if value is None:  # max_request_size: the limit in force comes from others
            shown = f"{defaults.request_size_limit}, derived"
        else:
            shown = field.metadata["show"](value)
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag,
            dest=field.name,
            type=_flag_type(field, flag),
            default=None,
            metavar=field.name.upper(),
            help=f"{field.metadata['help']} [{_variable(field.name)}, now {shown}]",
        )
    return parser


def _variable(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _refuse_misspelt(environ: Mapping[str, str], settings: Sequence[str]) -> None:
    # OCR_SSE_MAX_FILESIZE would leave max_file_size at its default without a
    # word.  Only names close to a setting's are refused: the prefix is not
    # the settings' alone (the tests read OCR_SSE_FUZZ_EXAMPLES).
    names = [name.upper() for name in settings]
    for variable in sorted(environ):
        name = variable.removeprefix(ENV_PREFIX)
        if name == variable or name in names:
            continue
        near = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
        if near:
            raise ConfigError(
                f"{variable} is not a setting; did you mean {ENV_PREFIX}{near[0]}?"
            )


def _parse(field: attrs.Attribute[Any], raw: str, where: str) -> Any:
    try:
        return field.metadata["parse"](raw)
    except ValueError as exc:
        raise ConfigError(f"{where}={raw!r}: {exc}", setting=field.name) from None


def _flag_type(field: attrs.Attribute[Any], flag: str) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            return field.metadata["parse"](raw)
        except ValueError as exc:
            # argparse turns ArgumentTypeError into "argument --x: message".
            raise argparse.ArgumentTypeError(f"{raw!r}: {exc}") from None

    parse.__name__ = field.name
    return parse
