"""Putting the endpoint in an aiohttp app: embedded, or as the standalone server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import malloc
from .config import Config, ConfigError
from .errors import describe
from .handler import RUNTIME, OnImage, Runtime, expect_upload, handle_upload
from .limits import MemoryBudget, RateLimiter, UploadSlots
from .metrics import Metrics, PrometheusMetrics
from .pool import ThreadPool

__all__ = ("CONFIG", "create_app", "setup", "standalone_app", "stop_uploads")

#: The settings of the endpoint in an app, for code that embeds it.
CONFIG = web.AppKey("ocr_sse.config", Config)


def setup(
    app: web.Application,
    *,
    config: Config | None = None,
    path: str = "/api/ocr",
    on_image: OnImage | None = None,
    metrics: Metrics | None = None,
) -> web.Application:
    """Add the upload endpoint at ``POST path`` to *app*; return *app*.

    *on_image* is awaited with each valid image (a
    :class:`~ocr_sse.handler.ValidImage`) before its success event is
    written; if it raises, that file fails and the upload goes on.
    *metrics* receives what happens to uploads (see :mod:`ocr_sse.metrics`).

    Works on a sub-application too, once per app.  The decoding threads
    start with the app and are shut down with it.
    """
    if config is None:
        config = Config()
    elif not isinstance(config, Config):
        # config={"max_files": 5} would fail further on, as a dict without
        # the attribute max_uploads.
        raise TypeError(f"config must be an ocr_sse.Config, not {config!r}")
    if RUNTIME in app:
        # The second endpoint's settings would be both endpoints', and the
        # first's decoding threads would outlive the app.
        raise RuntimeError(
            "ocr_sse.setup() was already called on this app; put a second"
            " endpoint on a sub-application"
        )
    app[CONFIG] = config
    # Made here, not as the app starts: an app may be started more than once,
    # and aiohttp deprecates changing one that has started.
    app[RUNTIME] = Runtime(
        config=config,
        slots=UploadSlots(limit=config.max_uploads),
        memory=MemoryBudget(limit=config.memory_budget),
        rate=RateLimiter(per_minute=config.rate_limit) if config.rate_limit else None,
        metrics=metrics if metrics is not None else Metrics(),
        on_image=on_image,
    )
    app.cleanup_ctx.append(_decoders)
    app.on_shutdown.append(stop_uploads)
    app.router.add_post(path, handle_upload, expect_handler=expect_upload)
    return app


def create_app(argv: Sequence[str] | None = None) -> web.Application:
    """The standalone server's app, settings from *argv* and ``OCR_SSE_*``.

    Usable as ``python -m aiohttp.web ocr_sse.app:create_app`` (logging at
    ``log_level``) and with gunicorn (``ocr_sse.app:create_app()`` with the
    worker class ``ocr_sse.worker.GunicornWorker``, which lets uploads finish
    on a stop).
    """
    # Every argument is the factory's (python -m aiohttp.web passes on what
    # it does not take itself): a misspelt flag is refused, not ignored.
    parser = argparse.ArgumentParser(prog="ocr_sse.app:create_app")
    try:
        config = Config.from_args(argv or [], environ=os.environ, parser=parser)
    except ConfigError as exc:
        if argv is None:
            # Called from code, or by gunicorn, which stops on an exception
            # but starts the worker again and again after an exit status 2.
            raise
        parser.error(str(exc))  # a command line's: usage, one line, status 2
    if argv is not None:
        # python -m aiohttp.web has just set the root logger to DEBUG, which
        # writes a line per file, and Pillow's per chunk, whatever log_level
        # says.  Under gunicorn (no argv) its --log-level decides.
        logging.getLogger().setLevel(config.log_level.upper())
    return standalone_app(config)


def standalone_app(config: Config) -> web.Application:
    """The standalone server's app: the endpoint, ``GET /healthz``, and
    ``GET /metrics`` when ``prometheus-client`` is installed.

    It owns its process, so it also has glibc's malloc keep up to
    ``memory_budget`` bytes of freed memory for the next upload
    (:mod:`ocr_sse.malloc`), and logs a request aiohttp cannot parse as one
    warning line rather than an error with a traceback.
    """
    malloc.keep_freed_memory(config.memory_budget)
    logging.getLogger("aiohttp.server").addFilter(_ONE_LINE_PER_BAD_REQUEST)
    try:
        metrics: Metrics = PrometheusMetrics()
    except ImportError:
        metrics = Metrics()
    app = setup(web.Application(), config=config, metrics=metrics)
    app.router.add_get("/healthz", _healthz)
    if isinstance(metrics, PrometheusMetrics):
        app.router.add_get("/metrics", _exposition(metrics))
    return app


class _OneLinePerBadRequest(logging.Filter):
    """aiohttp logs each request it cannot parse at ERROR, with a traceback:
    a client's bad bytes, which are no fault of the server, and a log a client
    could flood.  Each is one WARNING line saying what was wrong.

    A first request that is no HTTP method at all (TLS sent to the port, a
    scanner) aiohttp logs at DEBUG, as the noise of any public address; it
    stays there, as one line too."""

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        if isinstance(failure, web.RequestPayloadError) and isinstance(
            failure.__cause__, HttpProcessingError
        ):
            # Once the handler is done, aiohttp reads what is left of the body
            # (to reuse the connection) and logs "Unhandled exception" for a
            # body it cannot decode, such as one not in its Content-Encoding.
            failure = failure.__cause__
            record.msg, record.args = "the rest of a request body could not be read", ()
        if isinstance(failure, HttpProcessingError):
            record.msg, record.args = "%s: %s", (record.getMessage(), describe(failure))
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


#: One for every app: a logger keeps a filter once, however often it is added.
_ONE_LINE_PER_BAD_REQUEST = _OneLinePerBadRequest()


async def stop_uploads(app: web.Application) -> None:
    """Refuse new uploads; end those in flight after ``shutdown_grace``.

    Stops the endpoint of *app* and of each of its sub-applications, all at
    once.  Runs on the shutdown of each app the endpoint is on.  aiohttp stops
    reading request bodies once its shutdown starts, so an app that wants
    uploads still arriving to finish awaits this itself first, on its
    top-level app, as the standalone server does.
    """
    await asyncio.gather(*(runtime.stop() for runtime in _runtimes(app)))


def _runtimes(app: web.Application) -> Iterator[Runtime]:
    """The endpoint's runtime in *app* and in each app mounted below it."""
    if RUNTIME in app:
        yield app[RUNTIME]
    for resource in app.router.resources():
        # A sub-application's resource names it in its info, and only it.
        mounted = resource.get_info().get("app")
        if isinstance(mounted, web.Application):
            yield from _runtimes(mounted)


async def _decoders(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    runtime.start(ThreadPool(runtime.config.validation_threads, name="ocr_sse-decode"))
    yield
    runtime.decoders.shutdown()


async def _healthz(request: web.Request) -> web.Response:
    if request.config_dict[RUNTIME].stopping:
        return web.json_response({"status": "stopping"}, status=503)
    return web.json_response({"status": "ok"})


def _exposition(
    metrics: PrometheusMetrics,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def exposition(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return exposition
