"""Settings (:mod:`ocr_sse.config`): defaults, environment, flags, refusals.

Every test passes its environment as a dict: ``os.environ`` is never touched.
"""

from __future__ import annotations

import math

import attrs
import pytest

from ocr_sse.config import ENV_PREFIX, Config, ConfigError, argument_parser

MiB = 1024 * 1024

#: One valid raw value for each setting and the value it must give.
ENVIRONMENT = {
    "host": ("0.0.0.0", "0.0.0.0"),
    "port": ("8080", 8080),
    "log_level": (" DEBUG", "debug"),
    "max_file_size": ("2MiB", 2 * MiB),
    "max_files": ("7", 7),
    "max_request_size": ("100m", 100 * MiB),
    "allowed_formats": ("png, gif", frozenset({"PNG", "GIF"})),
    "max_pixels": ("1000000", 1_000_000),
    "keepalive_interval": ("2.5", 2.5),
    "read_timeout": ("4", 4.0),
    "upload_timeout": ("60.5", 60.5),
    "write_timeout": ("0.25", 0.25),
    "max_uploads": ("3", 3),
    "max_parts": ("9", 9),
    "max_field_size": ("512k", 512 * 1024),
    "memory_budget": ("16MiB", 16 * MiB),
    "validation_threads": ("5", 5),
    "rate_limit": ("120", 120),
    "shutdown_grace": ("2.5", 2.5),
}


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


# -- defaults ----------------------------------------------------------------------


def test_defaults() -> None:
    """Without any variable: 10 MiB per file, 20 files, the documented values."""
    config = Config.from_environ({})

    assert config.max_file_size == 10 * MiB == 10485760
    assert config.max_files == 20
    assert config.max_request_size is None
    assert config.host == "127.0.0.1"
    assert config.port == 3000
    assert config.log_level == "info"
    assert config.allowed_formats == {"JPEG", "PNG", "WEBP", "TIFF", "BMP"}
    assert config.max_pixels == 50_000_000
    assert config.keepalive_interval == 15.0
    assert config.read_timeout == 30.0
    assert config.upload_timeout == 300.0
    assert config.write_timeout == 30.0
    assert config.max_uploads == 256
    assert config.max_parts == 100
    assert config.max_field_size == 64 * 1024
    assert config.memory_budget == 64 * MiB
    assert config.validation_threads >= 1
    assert config.rate_limit == 0
    assert config.shutdown_grace == 10.0


def test_rate_limit_of_zero_turns_it_off_and_below_is_refused() -> None:
    """OCR_SSE_RATE_LIMIT=0 is the default "no limit"; -1 is refused."""
    assert Config.from_environ({"OCR_SSE_RATE_LIMIT": "0"}).rate_limit == 0
    with pytest.raises(ConfigError, match="rate_limit must be 0 or above, not -1"):
        Config(rate_limit=-1)


def test_from_environ_of_empty_mapping_equals_default_config() -> None:
    """An empty environment gives exactly the defaults of Config()."""
    assert Config.from_environ({}) == Config()


def test_default_request_limit_is_all_files_plus_one_mib() -> None:
    """The request limit defaults to max_file_size x max_files + 1 MiB."""
    assert Config().request_size_limit == 10 * MiB * 20 + MiB


def test_request_limit_follows_file_limits() -> None:
    """The derived request limit follows changed file size and count limits."""
    config = Config.from_environ(
        {"OCR_SSE_MAX_FILE_SIZE": "1MiB", "OCR_SSE_MAX_FILES": "3"}
    )

    assert config.request_size_limit == 4 * MiB


def test_help_shows_the_request_limit_in_force() -> None:
    """--help gives the derived request limit as a number, not only its rule."""
    text = argument_parser(Config(max_file_size=1000, max_files=2)).format_help()

    assert f"[OCR_SSE_MAX_REQUEST_SIZE, now {2000 + MiB}, derived]" in " ".join(
        text.split()
    )


def test_explicit_request_limit_wins() -> None:
    """A set max_request_size is the limit, whatever the file limits are."""
    config = Config.from_environ({"OCR_SSE_MAX_REQUEST_SIZE": "5MiB"})

    assert config.request_size_limit == 5 * MiB


def test_config_is_frozen() -> None:
    """A Config cannot be changed after it is made."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Config().port = 1  # type: ignore[misc]


# -- the environment ---------------------------------------------------------------


def test_every_setting_has_an_environment_case() -> None:
    """This file exercises one OCR_SSE_* variable for every Config field."""
    assert set(ENVIRONMENT) == {field.name for field in attrs.fields(Config)}


@pytest.mark.parametrize(
    ("setting", "raw", "value"),
    [(setting, raw, value) for setting, (raw, value) in ENVIRONMENT.items()],
)
def test_each_variable_is_read(setting: str, raw: str, value: object) -> None:
    """OCR_SSE_<NAME> sets the setting <name>, and only that one."""
    config = Config.from_environ({env_name(setting): raw})

    assert getattr(config, setting) == value
    assert attrs.evolve(config, **{setting: getattr(Config(), setting)}) == Config()


def test_all_variables_at_once() -> None:
    """Every variable can be given in one environment."""
    config = Config.from_environ(
        {env_name(setting): raw for setting, (raw, _) in ENVIRONMENT.items()}
    )

    assert attrs.asdict(config, recurse=False) == {
        setting: value for setting, (_, value) in ENVIRONMENT.items()
    }


def test_other_variables_are_ignored() -> None:
    """Variables without the prefix, or with a lower-case name, change nothing."""
    config = Config.from_environ(
        {"PORT": "1", "MAX_FILES": "2", "ocr_sse_port": "3", "OCR_SSE_NOPE": "x"}
    )

    assert config == Config()


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("OCR_SSE_MAX_FILESIZE", "OCR_SSE_MAX_FILE_SIZE"),
        ("OCR_SSE_MAX_FILE", "OCR_SSE_MAX_FILES"),
        ("OCR_SSE_KEEP_ALIVE_INTERVAL", "OCR_SSE_KEEPALIVE_INTERVAL"),
        ("OCR_SSE_READTIMEOUT", "OCR_SSE_READ_TIMEOUT"),
        ("OCR_SSE_LOGLEVEL", "OCR_SSE_LOG_LEVEL"),
    ],
)
def test_misspelt_variable_is_refused(typo: str, meant: str) -> None:
    """An OCR_SSE_ variable that is no setting but close to one's name is a
    ConfigError naming both, not a setting left at its default unsaid."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({typo: "50MiB", "OCR_SSE_MAX_FILES": "3"})

    assert str(caught.value) == f"{typo} is not a setting; did you mean {meant}?"


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("10485760", 10 * MiB),
        ("10MiB", 10 * MiB),
        ("10mib", 10 * MiB),
        ("10 MiB", 10 * MiB),
        ("10M", 10 * MiB),
        ("10MB", 10 * MiB),
        ("512k", 512 * 1024),
        ("512K", 512 * 1024),
        ("512KiB", 512 * 1024),
        ("512kb", 512 * 1024),
        ("1g", 1024 * MiB),
        ("1GiB", 1024 * MiB),
        ("100b", 100),
        ("100B", 100),
        (" 7k ", 7 * 1024),
    ],
)
def test_size_suffixes(raw: str, size: int) -> None:
    """Sizes take a binary suffix: k, m, g (with or without b/ib), any case."""
    assert Config.from_environ({"OCR_SSE_MAX_FILE_SIZE": raw}).max_file_size == size


@pytest.mark.parametrize(
    "raw", ["", "ten", "1.5MiB", "-1", "10 MiB extra", "10TiB", "MiB", "0x10", "1e6"]
)
def test_bad_size_names_the_variable(raw: str) -> None:
    """A size that is not a byte count is a ConfigError naming the variable."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({"OCR_SSE_MAX_FILE_SIZE": raw})

    assert str(caught.value) == (
        f"OCR_SSE_MAX_FILE_SIZE={raw!r}:"
        " expected a byte count such as 10485760 or 10MiB"
    )


@pytest.mark.parametrize("raw", ["", "abc", "-1", "+3", "1.0", "2e3", "1_000"])
def test_bad_count_names_the_variable(raw: str) -> None:
    """A count that is not a whole number is a ConfigError naming the variable."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({"OCR_SSE_MAX_FILES": raw})

    assert str(caught.value) == f"OCR_SSE_MAX_FILES={raw!r}: expected a whole number"


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "Infinity", "soon", ""])
def test_keepalive_not_finite_names_the_variable(raw: str) -> None:
    """A keep-alive interval that is nan, infinite or not a number is refused."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({"OCR_SSE_KEEPALIVE_INTERVAL": raw})

    assert str(caught.value) == (
        f"OCR_SSE_KEEPALIVE_INTERVAL={raw!r}: expected a number of seconds"
    )


@pytest.mark.parametrize("raw", ["0", "0.0", "-0", "-1", "-0.5"])
def test_keepalive_zero_or_negative_is_refused(raw: str) -> None:
    """A keep-alive interval of 0 or below (a busy loop) is a ConfigError
    naming the variable that holds it."""
    with pytest.raises(
        ConfigError,
        match=r"^OCR_SSE_KEEPALIVE_INTERVAL='[^']*': keepalive_interval must be",
    ):
        Config.from_environ({"OCR_SSE_KEEPALIVE_INTERVAL": raw})


INTERVALS = ["keepalive_interval", "read_timeout", "upload_timeout", "write_timeout"]


@pytest.mark.parametrize("setting", INTERVALS)
@pytest.mark.parametrize("value", [0.0, -1.0, -math.inf])
def test_interval_made_in_code_must_be_positive(setting: str, value: float) -> None:
    """Config(...) made by an embedding app refuses 0 and negative intervals."""
    with pytest.raises(ConfigError, match=rf"^{setting} must be 0\.01 or above"):
        Config(**{setting: value})


@pytest.mark.parametrize("setting", [*INTERVALS, "shutdown_grace"])
@pytest.mark.parametrize("raw", ["1e-300", "0.0001", "0.0099"])
def test_seconds_under_a_hundredth_are_refused(setting: str, raw: str) -> None:
    """A setting in seconds under 0.01, whose timer would fire on about every
    turn of the event loop (a busy loop), is a ConfigError naming the
    variable and the least value taken; 0.01 itself is taken."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({env_name(setting): raw})

    assert str(caught.value) == (
        f"{env_name(setting)}={raw!r}: {setting} must be 0.01 or above,"
        f" not {float(raw)}"
    )
    assert getattr(Config.from_environ({env_name(setting): "0.01"}), setting) == 0.01


@pytest.mark.parametrize("setting", INTERVALS)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_interval_made_in_code_must_be_finite(setting: str, value: float) -> None:
    """Config(...) made by an embedding app refuses nan and inf intervals, as the
    environment and the flags do: nan would make every timeout meaningless."""
    with pytest.raises(ConfigError, match=rf"^{setting} "):
        Config(**{setting: value})


WHOLE_NUMBERS = [
    "port",
    "max_file_size",
    "max_files",
    "max_request_size",
    "max_pixels",
    "max_uploads",
    "rate_limit",
    "max_parts",
    "max_field_size",
    "memory_budget",
    "validation_threads",
]


@pytest.mark.parametrize("setting", WHOLE_NUMBERS)
@pytest.mark.parametrize("value", [1.5, 2.0, math.nan, math.inf, True, "20"])
def test_count_made_in_code_must_be_an_int(setting: str, value: object) -> None:
    """Config(...) made by an embedding app refuses a fraction, a float, a bool
    or a string where a whole number goes, naming the setting, rather than
    serving with 1.5 files or failing with a bare TypeError about "<"."""
    with pytest.raises(TypeError) as caught:
        Config(**{setting: value})

    assert str(caught.value) == f"{setting} must be an int, not {value!r}"


@pytest.mark.parametrize("setting", [*INTERVALS, "shutdown_grace"])
@pytest.mark.parametrize("value", ["15", None, True])
def test_seconds_made_in_code_must_be_a_number(setting: str, value: object) -> None:
    """Config(...) refuses a string, None or a bool for a number of seconds,
    naming the setting; an int is a number of seconds like a float."""
    with pytest.raises(TypeError) as caught:
        Config(**{setting: value})

    assert str(caught.value) == f"{setting} must be a number of seconds, not {value!r}"
    assert getattr(Config(**{setting: 5}), setting) == 5


@pytest.mark.parametrize("value", [None, 10])
def test_log_level_made_in_code_must_be_a_level_name(value: object) -> None:
    """Config(log_level=...) that is not a string is a ConfigError listing the
    levels, not an AttributeError from lower-casing it."""
    with pytest.raises(ConfigError) as caught:
        Config(log_level=value)

    assert str(caught.value) == (
        f"log_level must be one of debug, info, warning, error, not {value!r}"
    )


@pytest.mark.parametrize(
    "setting",
    [
        "max_file_size",
        "max_files",
        "max_request_size",
        "max_pixels",
        "max_uploads",
        "max_parts",
        "max_field_size",
    ],
)
def test_zero_limit_is_refused(setting: str) -> None:
    """A limit of 0, which would refuse everything, is a ConfigError naming
    the variable and the setting."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({env_name(setting): "0"})

    assert str(caught.value) == (
        f"{env_name(setting)}='0': {setting} must be above 0, not 0"
    )


@pytest.mark.parametrize("raw", ["0", "1025", str(10**30)])
def test_validation_threads_out_of_range_are_refused(raw: str) -> None:
    """Decoding threads, which all start with the app, are 1 to 1024: 10**30
    would never be done starting.  Out of range is a ConfigError naming the
    variable and the range."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({"OCR_SSE_VALIDATION_THREADS": raw})

    assert str(caught.value) == (
        f"OCR_SSE_VALIDATION_THREADS={raw!r}: validation_threads must be between"
        f" 1 and 1024, not {raw}"
    )
    assert Config.from_environ({"OCR_SSE_VALIDATION_THREADS": "1024"}) == Config(
        validation_threads=1024
    )


@pytest.mark.parametrize("raw", ["", " ", "\t"])
def test_empty_host_is_refused(raw: str) -> None:
    """An empty OCR_SSE_HOST, which asyncio would take for every interface,
    is a ConfigError naming the variable, not a server open to the network."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({"OCR_SSE_HOST": raw})

    assert str(caught.value) == (
        f"OCR_SSE_HOST={raw!r}: host must be an address or a host name"
        " (0.0.0.0 for every interface), not ''"
    )


def test_empty_host_flag_or_none_in_code_is_refused() -> None:
    """--host '' and Config(host=None), every interface to asyncio too, are
    refused as the empty variable is."""
    with pytest.raises(ConfigError) as caught:
        Config.from_args(["--host", ""], {})
    assert str(caught.value) == (
        "argument --host: host must be an address or a host name"
        " (0.0.0.0 for every interface), not ''"
    )
    with pytest.raises(ConfigError, match=r"^host must be .*, not None$"):
        Config(host=None)  # type: ignore[arg-type]


def test_host_is_stripped() -> None:
    """Spaces around OCR_SSE_HOST are dropped, as around every other value."""
    assert Config.from_environ({"OCR_SSE_HOST": " ::1 "}).host == "::1"


@pytest.mark.parametrize(("raw", "port"), [("0", 0), ("1", 1), ("65535", 65535)])
def test_port_range_accepted(raw: str, port: int) -> None:
    """Ports 0 (any free port) to 65535 are accepted."""
    assert Config.from_environ({"OCR_SSE_PORT": raw}).port == port


def test_port_above_range_is_refused() -> None:
    """Port 65536 is a ConfigError naming the range."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({"OCR_SSE_PORT": "65536"})

    assert str(caught.value) == (
        "OCR_SSE_PORT='65536': port must be between 0 and 65535, not 65536"
    )


def test_negative_port_is_refused() -> None:
    """Port -1 is a ConfigError naming the variable."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({"OCR_SSE_PORT": "-1"})

    assert str(caught.value) == "OCR_SSE_PORT='-1': expected a whole number"


def test_port_made_in_code_out_of_range_is_refused() -> None:
    """Config(port=-1) is refused as the environment's value would be."""
    with pytest.raises(ConfigError, match=r"^port must be between 0 and 65535"):
        Config(port=-1)


def test_formats_are_case_and_space_insensitive() -> None:
    """Format names are upper-cased and stripped; empty items are skipped."""
    config = Config.from_environ({"OCR_SSE_ALLOWED_FORMATS": " jpeg ,Png,, webp "})

    assert config.allowed_formats == {"JPEG", "PNG", "WEBP"}


def test_unknown_format_is_refused() -> None:
    """An unknown format name is a ConfigError listing the known and the unknown."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({"OCR_SSE_ALLOWED_FORMATS": "png,pdf,jpg"})

    assert str(caught.value) == (
        "OCR_SSE_ALLOWED_FORMATS='png,pdf,jpg': allowed_formats must be a"
        " non-empty list of BMP,GIF,JPEG,PNG,TIFF,WEBP; unknown: JPG,PDF"
    )


@pytest.mark.parametrize("raw", ["", " ", ",", " , "])
def test_empty_format_list_is_refused(raw: str) -> None:
    """An allow-list with no format at all is a ConfigError."""
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({"OCR_SSE_ALLOWED_FORMATS": raw})

    assert str(caught.value) == (
        f"OCR_SSE_ALLOWED_FORMATS={raw!r}: allowed_formats must be a"
        " non-empty list of BMP,GIF,JPEG,PNG,TIFF,WEBP"
    )


def test_formats_made_in_code_become_a_frozenset() -> None:
    """Config(allowed_formats=[...]) stores an immutable frozenset."""
    assert Config(allowed_formats=["PNG", "GIF"]).allowed_formats == frozenset(
        {"PNG", "GIF"}
    )


def test_formats_made_in_code_are_read_as_the_environment_reads_them() -> None:
    """Config(allowed_formats=...) takes names in any case and skips empty
    ones, as OCR_SSE_ALLOWED_FORMATS does, and reads a string as its
    comma-separated list, not as one-letter names."""
    assert Config(allowed_formats=["png", " Jpeg ", ""]).allowed_formats == {
        "PNG",
        "JPEG",
    }
    assert Config(allowed_formats="png, gif").allowed_formats == {"PNG", "GIF"}


@pytest.mark.parametrize(
    ("value", "shown"), [(5, "5"), ([b"PNG"], "b'PNG'"), (["PNG", None], "None")]
)
def test_formats_made_in_code_must_be_names(value: object, shown: str) -> None:
    """Config(allowed_formats=...) that is not a string or strings is a
    TypeError naming the setting and what is not a name."""
    with pytest.raises(TypeError) as caught:
        Config(allowed_formats=value)

    assert str(caught.value) == f"allowed_formats must be format names, not {shown}"


def test_unknown_log_level_is_refused() -> None:
    """OCR_SSE_LOG_LEVEL takes debug, info, warning or error, in any case."""
    with pytest.raises(ConfigError, match="log_level must be one of") as refused:
        Config.from_environ({"OCR_SSE_LOG_LEVEL": "verbose"})
    assert refused.value.setting == "log_level"


def test_config_error_is_a_value_error() -> None:
    """ConfigError is a ValueError, for callers that catch the broad kind."""
    assert issubclass(ConfigError, ValueError)


# -- flags -----------------------------------------------------------------------------


def test_flag_overrides_environment() -> None:
    """A flag beats the environment variable of the same setting."""
    config = Config.from_args(
        ["--max-file-size", "1MiB", "--port", "9000"],
        {"OCR_SSE_MAX_FILE_SIZE": "5MiB", "OCR_SSE_PORT": "8000"},
    )

    assert (config.max_file_size, config.port) == (MiB, 9000)


def test_environment_fills_what_flags_leave_out() -> None:
    """Settings without a flag keep their environment value, then the default."""
    config = Config.from_args(["--max-files", "2"], {"OCR_SSE_MAX_PIXELS": "1000"})

    assert (config.max_files, config.max_pixels, config.port) == (2, 1000, 3000)


@pytest.mark.parametrize(
    ("setting", "raw", "value"),
    [(setting, raw, value) for setting, (raw, value) in ENVIRONMENT.items()],
)
def test_each_flag_is_read(setting: str, raw: str, value: object) -> None:
    """--<name-with-dashes> sets the setting <name>."""
    flag = "--" + setting.replace("_", "-")

    assert getattr(Config.from_args([flag, raw], {}), setting) == value


def test_flag_with_equals_sign() -> None:
    """--flag=value works as well as --flag value."""
    assert Config.from_args(["--keepalive-interval=0.5"], {}).keepalive_interval == 0.5


def test_bad_flag_value_exits_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A flag value that does not parse is a usage error naming the flag."""
    with pytest.raises(SystemExit) as caught:
        Config.from_args(["--max-file-size", "huge"], {})

    assert caught.value.code == 2
    assert "argument --max-file-size: 'huge': expected a byte count" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("raw", ["0", "-1"])
def test_flag_keepalive_zero_or_negative_is_refused(raw: str) -> None:
    """--keepalive-interval 0 or below is refused, naming the flag."""
    with pytest.raises(
        ConfigError,
        match=r"^argument --keepalive-interval: keepalive_interval must be 0\.01 or",
    ):
        Config.from_args([f"--keepalive-interval={raw}"], {})


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_flag_keepalive_not_finite_is_refused(
    raw: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--keepalive-interval nan or inf is a usage error naming the flag."""
    with pytest.raises(SystemExit):
        Config.from_args([f"--keepalive-interval={raw}"], {})

    assert (
        f"argument --keepalive-interval: '{raw}': expected a number of seconds"
        in capsys.readouterr().err
    )


def test_flag_port_out_of_range_is_refused() -> None:
    """--port 70000 is a ConfigError naming the flag and the range."""
    with pytest.raises(
        ConfigError, match=r"^argument --port: port must be between 0 and 65535"
    ):
        Config.from_args(["--port", "70000"], {})
