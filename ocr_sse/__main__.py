"""The command line: ``ocr-sse`` (or ``python -m ocr_sse``) runs the server;
``ocr-sse upload FILE...`` sends files to one and shows their progress."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import logging.handlers
import os
import queue
import shutil
import signal
import socket
import ssl
import sys
import threading
import time
import typing
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from typing import TextIO

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.connector import Connection
from yarl import URL

from . import __version__, client, progress
from .app import standalone_app, stop_uploads
from .config import Config, ConfigError
from .errors import describe
from .events import Event, to_json

__all__ = ("DEFAULT_URL", "CannotListen", "main", "upload_main")


def main(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ
) -> int:
    """Run the standalone server until it is stopped; return the exit status.

    A first argument ``upload`` runs the client instead (:func:`upload_main`).
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "upload":
        return upload_main(argv[1:], environ)
    parser = argparse.ArgumentParser(
        prog="ocr-sse",
        description="Serve POST /api/ocr: multipart image uploads answered with"
        " Server-Sent Events.",
        epilog="Sizes take plain bytes or a K/M/G suffix (10MiB, 512k; binary"
        " units). To send files to a server: ocr-sse upload FILE... (see"
        " ocr-sse upload --help).",
    )
    parser.add_argument("--version", action="version", version=__version__)
    try:
        config = Config.from_args(argv, environ, parser=parser)
    except ConfigError as exc:
        parser.error(str(exc))
    with _logging_off_the_loop(config.log_level.upper()):
        try:
            asyncio.run(serve(config))
        except CannotListen as exc:
            parser.exit(1, f"ocr-sse: {exc}\n")
    return 0


@contextlib.contextmanager
def _logging_off_the_loop(level: str) -> Iterator[None]:
    """Log through a queue: a thread writes the lines, never the event loop.

    A log line per file is written to stderr, which may be a pipe that
    fills; the event loop only puts records in a queue.
    """
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    writer = _LogWriter(
        records,
        sys.stderr,
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"),
    )
    root = logging.getLogger()
    root.addHandler(_QueueHandler(records))
    root.setLevel(level)
    writer.start()
    try:
        yield
    finally:
        writer.stop()


class _QueueHandler(logging.handlers.QueueHandler):
    """Queues each record as it is, for the log thread to format.

    The stock handler formats the message and copies the record in the event
    loop, so that a record can cross to another process.  This queue stays in
    the process, and what is logged here does not change once logged:
    strings, numbers, session ids, and exceptions whose tracebacks the log
    thread writes out.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _AccessLogger(AbstractAccessLogger):
    """aiohttp's access line, formatted by the log thread rather than the loop.

    ``client "METHOD path HTTP/x.y" status bytes "referer" "user agent"``:
    the Common Log Format's time is left out, as the line starts with it.
    """

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d "%s" "%s"',
            request.remote,
            request.method,
            request.path_qs,
            *request.version,
            response.status,
            response.body_length,
            request.headers.get("Referer", "-"),
            request.headers.get("User-Agent", "-"),
        )


#: Seconds between two turns of the thread that writes the log.
LOG_WRITE_INTERVAL = 0.02


class _LogWriter:
    """A thread that writes the queued log records, a turn every 20 ms.

    Woken for each record, the thread took the GIL while the event loop was
    reading an upload, and the loop then waited for it.  While records keep
    coming, it now writes what has gathered once a turn, in one write: with
    one upload at a time, the median time from a file's last byte to its
    result went down by 0.09 ms and the first event's by 0.03 ms (side by
    side, seven sessions).  After a turn with nothing to write, it sleeps
    until a record comes.
    """

    def __init__(
        self,
        records: queue.SimpleQueue[logging.LogRecord | None],
        stream: TextIO | None,
        formatter: logging.Formatter,
    ) -> None:
        self._records = records
        self._stream = stream
        self._formatter = formatter
        self._thread = threading.Thread(target=self._run, name="ocr-sse-log")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._records.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = list(self._queued())
            if not batch:
                # Nothing came in the last turn: sleep until something does.
                batch.append(self._records.get())
            self._write([record for record in batch if record is not None])
            if None in batch:
                return
            time.sleep(LOG_WRITE_INTERVAL)

    def _queued(self) -> Iterator[logging.LogRecord | None]:
        while True:
            try:
                yield self._records.get_nowait()
            except queue.Empty:
                return

    def _write(self, records: list[logging.LogRecord]) -> None:
        # Without stderr (closed when the server started, so None) the
        # records are still taken: left in the queue, they would pile up.
        if not records or self._stream is None:
            return
        text = "".join(map(self._format, records))
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stderr is gone: there is nowhere left to say so

    def _format(self, record: logging.LogRecord) -> str:
        try:
            return self._formatter.format(record) + "\n"
        except Exception as failed:
            # A call with the wrong arguments for its message, in any
            # library's code, must not end the thread, as it would not end
            # a logging.Handler: the queue would then grow for ever.
            return (
                f"--- Logging error: {type(failed).__name__}: {describe(failed)},"
                f" in a record of {record.name} ({record.pathname}:{record.lineno})\n"
            )


#: Seconds a connection may sit idle, with no request under way, before it
#: is closed: web.run_app's value.  A bare AppRunner keeps aiohttp's default
#: of 3630, which holds the connection of a client that went silent (or that
#: never sent a request) for an hour.  Above nginx's upstream keepalive_timeout
#: (60 s in docs/nginx.conf), as docs/deploy.md asks of gunicorn's --keep-alive.
KEEPALIVE_TIMEOUT = 75


class CannotListen(Exception):
    """The server cannot listen on its address: taken, not this machine's,
    or a port it may not use."""


async def serve(config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then stop without cutting uploads short.

    aiohttp's own shutdown stops reading request bodies at once, so an upload
    still arriving could never finish.  Here the listening socket closes
    first, uploads in flight get their grace period, and only then does
    aiohttp shut down.
    """
    app = standalone_app(config)
    runner = web.AppRunner(
        app,
        shutdown_timeout=5,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        access_log_class=_AccessLogger,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as exc:
            if isinstance(exc, socket.gaierror):
                # The resolver's own code, not an errno: os.strerror(-2) is
                # "Unknown error -2" where it means "Name or service not known".
                reason = exc.strerror or str(exc)
            else:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise CannotListen(
                f"cannot listen on {_host_port(config.host, config.port)}: {reason}"
            ) from None
        host, port = runner.addresses[0][:2]
        print(
            f"ocr-sse listening on http://{_host_port(host, port)}/api/ocr", flush=True
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        logging.getLogger("ocr_sse").info("stopping: no new uploads")
        await site.stop()
        await stop_uploads(app)
    finally:
        await runner.cleanup()


def _host_port(host: str, port: int) -> str:
    # An IPv6 address in brackets, as in a URL: ::1:3000 could be read as
    # the address ::1:3000.
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the client: ocr-sse upload ----------------------------------------------

DEFAULT_URL = "http://127.0.0.1:3000/api/ocr"

# Exit statuses of ``ocr-sse upload`` beyond 0 (every file valid) and 1 (a
# file failed, or the upload ended with processing_error).
_USAGE = 2  # bad arguments, a file that cannot be read, a refusal (4xx/5xx)
_UNREACHABLE = 3  # no connection to the server, or it broke
_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT

# Terminals whose name says they do not move the cursor.
_DUMB_TERMINALS = frozenset({"", "dumb", "unknown"})

# The seconds to wait for `100 Continue` before the body is sent anyway, as
# curl waits.  RFC 9110 section 10.1.1: "since 100 (Continue) responses
# cannot be sent through an HTTP/1.0 intermediary, such a client SHOULD NOT
# wait for an indefinite period before sending the content."
_CONTINUE_WAIT = 1.0


def upload_main(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> int:
    """``ocr-sse upload FILE... [--url URL]``: send the files, show each one's
    events as they arrive; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="ocr-sse upload",
        description="Upload image files to an ocr-sse server in one request and"
        " show each file as it is received and validated.",
        epilog="Exit status: 0 every file valid; 1 a file failed, the upload"
        " ended with processing_error, the stream broke the contract, a file"
        " changed size while it was sent, or the output cannot be written; 2 bad"
        " arguments, a file that cannot be read, or a refusal (4xx, 5xx); 3 the"
        " server cannot be reached, or the connection broke; 130 interrupted.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="an image to send")
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"the endpoint (default: {DEFAULT_URL})"
    )
    parser.add_argument(
        "--total-files",
        type=_count,
        metavar="N",
        help="declare N files in the total_files query parameter (default: none)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print each event as one line of the contract's JSON, nothing else",
    )
    args = parser.parse_args(argv)
    url = URL(args.url)
    if url.scheme not in ("http", "https") or not url.host:
        parser.error(f"--url must be an http:// or https:// URL, not {args.url!r}")
    for path in args.files:
        # Every file is checked before anything is sent: a typo should not
        # cost a half-sent upload.
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            parser.error(f"cannot read {path}: {exc.strerror or exc}")
    stdout = _stdout()
    terminal = (
        not args.json
        and stdout.isatty()
        and environ.get("TERM", "") not in _DUMB_TERMINALS
    )
    glyphs = progress.UNICODE if _can_encode(stdout, "✓✗…") else progress.ASCII
    try:
        return asyncio.run(
            _upload(
                url,
                args.files,
                total_files=args.total_files,
                json=args.json,
                terminal=terminal,
                glyphs=glyphs,
            )
        )
    except KeyboardInterrupt:
        return _INTERRUPTED
    except _OutputFailed as failed:
        _silence_stdout()
        if isinstance(failed.error, BrokenPipeError):
            return 1  # the reader of stdout is gone (`| head`): stop quietly
        reason = failed.error.strerror or _reason(failed.error)
        return _fail(1, f"cannot write the output: {reason}")


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}")
    return int(text)


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(stream.encoding or "ascii")
    except (LookupError, UnicodeEncodeError):
        return False
    return True


async def _upload(
    url: URL,
    paths: Sequence[str],
    *,
    total_files: int | None,
    json: bool,
    terminal: bool,
    glyphs: progress.Glyphs,
) -> int:
    """Send *paths*, print as the events come; return the exit status."""
    state = progress.Progress.start([os.path.basename(path) for path in paths])
    started = time.monotonic()
    drawn: list[str] = []  # the lines on the terminal, to redraw in place
    printed = 0  # the files whose final line is out, off a terminal
    # No overall time limit: an upload of large files may take long, and the
    # server ends a stalled one itself (read_timeout, upload_timeout).
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    try:
        async with (
            aiohttp.ClientSession(
                timeout=timeout, request_class=_ContinueOrSend
            ) as session,
            contextlib.aclosing(
                # upload() is an async generator: it can be closed at once.
                typing.cast(
                    "AsyncGenerator[Event, None]",
                    client.upload(
                        session,
                        str(url),
                        paths,
                        total_files=total_files,
                        # A refusal is then answered before the body is
                        # sent, by a server that answers Expect at all.
                        expect_continue=True,
                    ),
                )
            ) as events,
        ):
            async for event in events:
                state = state.apply(event)
                if json:
                    _out(to_json(event) + b"\n")
                elif terminal:
                    lines = progress.live_lines(state, glyphs=glyphs)
                    if state.end is None:
                        columns = shutil.get_terminal_size().columns
                        lines = progress.fit(lines, columns, cut=glyphs.cut)
                    # else the last lines are drawn whole: no redraw follows.
                    _out(progress.redraw(drawn, lines))
                    drawn = lines
                else:
                    for index in range(printed, state.settled):
                        _out(progress.final_line(state, index, glyphs=glyphs) + "\n")
                    printed = state.settled
    except client.UploadRefused as exc:
        return _fail(_USAGE, str(exc))
    except aiohttp.ClientConnectorError as exc:
        return _fail(_UNREACHABLE, f"cannot reach {url}: {_os_reason(exc.os_error)}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _fail(_UNREACHABLE, f"the connection to {url} failed: {_reason(exc)}")
    except client.UploadError as exc:
        # The stream broke the contract, or a file changed while it was sent.
        return _fail(1, str(exc))
    except OSError as exc:
        # A file that was readable when checked failed while it was sent.
        return _fail(_USAGE, f"cannot read {exc.filename}: {exc.strerror or exc}")
    if not json:
        _out(progress.summary(state, time.monotonic() - started) + "\n")
    return state.exit_status


class _ContinueOrSend(aiohttp.ClientRequest):
    """A request that waits at most _CONTINUE_WAIT seconds for `100 Continue`.

    aiohttp waits for it with no time limit, and has no setting for one: a
    server that ignores `Expect` (many do, and an HTTP/1.0 proxy cannot pass
    it on) would wait for a body that never comes.  This ends aiohttp's wait
    as the response to `Expect` would.
    """

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        response = await super().send(conn)
        # aiohttp's own waiter, which a 1xx response sets and a final
        # response leaves pending; the body is written once it is set.
        waiter = self._continue
        if waiter is not None:
            timer = self.loop.call_later(_CONTINUE_WAIT, _go_on, waiter)
            waiter.add_done_callback(lambda _: timer.cancel())
        return response


def _go_on(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


def _stdout() -> TextIO:
    """sys.stdout, made such that no text fails to be written to it."""
    if sys.stdout is None:
        # Started with stdout closed (`>&-`): what is shown goes nowhere.
        sys.stdout = open(os.devnull, "w", encoding="utf-8")
    elif isinstance(sys.stdout, io.TextIOWrapper):
        # A name the output's encoding cannot carry is shown as \xe7.
        sys.stdout.reconfigure(errors="backslashreplace")
    return sys.stdout


class _OutputFailed(Exception):
    """stdout cannot be written: its reader is gone, or its disk is full."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def _out(data: str | bytes) -> None:
    """Write *data* to stdout (bytes, as they are, to its buffer) at once."""
    stream: typing.IO[typing.Any] = (
        sys.stdout.buffer if isinstance(data, bytes) else sys.stdout
    )
    try:
        stream.write(data)
        stream.flush()
    except OSError as exc:
        raise _OutputFailed(exc) from exc


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not fail
    again on what is left in its buffer."""
    try:
        fileno = sys.stdout.fileno()
    except (OSError, ValueError):  # a stdout without a file descriptor
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fileno)
    os.close(null)


def _fail(status: int, message: str) -> int:
    try:
        sys.stdout.flush()
    except OSError:
        _silence_stdout()
    if sys.stderr is not None:  # None when started with stderr closed
        # The message may quote the server or a file name: escaped as the
        # lines on stdout are, it cannot move the cursor or break the line.
        print(f"ocr-sse upload: error: {progress.printable(message)}", file=sys.stderr)
    return status


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        # Its errno is OpenSSL's kind of error, not the system's: strerror
        # would make a wrong TLS version "Operation not permitted".
        reason = getattr(exc, "reason", None) or exc.strerror or _reason(exc)
        detail = getattr(exc, "verify_message", None)  # "self-signed certificate"
        return f"TLS handshake failed: {reason}" + (f" ({detail})" if detail else "")
    # "Connection refused" rather than "Connect call failed ('127.0.0.1', 3000)".
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or _reason(exc)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
