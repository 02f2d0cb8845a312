"""A gunicorn worker that lets uploads in flight finish when it stops.

Run it with ``gunicorn 'ocr_sse.app:create_app()' --worker-class
ocr_sse.worker.GunicornWorker``.

aiohttp's own worker stops reading request bodies as soon as its shutdown
starts (aio-libs/aiohttp#2298), so an upload still arriving when gunicorn
stops a worker can never finish, whatever ``shutdown_grace`` says.  This
worker, once told to stop (SIGTERM, SIGQUIT, SIGINT, ``max_requests``), first
closes its listening sockets, then awaits :func:`ocr_sse.stop_uploads`, which
gives the uploads in flight their grace period, and only then lets aiohttp
shut down.  It is what ``ocr-sse`` does in ``serve()``, under gunicorn.

It also writes ocr_sse's log lines to gunicorn's error log, at its
``--log-level``, unless the app configured logging itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from types import FrameType
from typing import Any

from aiohttp import web
from aiohttp.worker import GunicornWebWorker

from .app import stop_uploads

__all__ = ("GunicornWorker",)


class GunicornWorker(GunicornWebWorker):
    """``aiohttp.GunicornWebWorker`` that drains uploads before its cleanup.

    Gunicorn's master waits ``--graceful-timeout`` seconds for its workers
    before it kills them, so set that above ``shutdown_grace`` plus a margin
    (``stop_uploads`` may take ``shutdown_grace`` + 5 s); what is left of it,
    less a second, bounds aiohttp's own shutdown.
    """

    #: What gunicorn loaded: an Application, such as ``create_app()``'s, or
    #: an async function that returns one.
    wsgi: object

    async def _run(self) -> None:
        # aiohttp's worker builds its own AppRunner unless the app factory
        # returns one.  Hand it a runner built as it would build it, only
        # with the stop order changed.
        app = self.wsgi
        if inspect.iscoroutinefunction(app):  # an async app factory, as aiohttp's
            app = await app()
        if not isinstance(app, web.Application):
            raise RuntimeError(f"the app factory must return an Application: {app!r}")
        self._log_uploads()
        runner = _DrainingRunner(
            app,
            logger=self.log,
            keepalive_timeout=self.cfg.keepalive,
            access_log=self.log.access_log if self.cfg.accesslog else None,
            access_log_format=self._get_valid_log_format(self.cfg.access_log_format),
            # gunicorn kills a worker still alive after --graceful-timeout: a
            # second is kept for the app's cleanup and the worker's exit.
            stop_within=max(0.0, self.cfg.graceful_timeout - 1),
        )

        async def runner_factory() -> web.AppRunner:
            return runner

        self.wsgi = runner_factory
        await super()._run()

    def _log_uploads(self) -> None:
        # gunicorn configures its own loggers only: with no logging set up
        # by the app, the lines of each upload would reach no handler, and
        # only warnings would be printed, by Python's last resort.
        ours = logging.getLogger("ocr_sse")
        if ours.handlers or logging.getLogger().handlers:
            return
        ours.setLevel(self.log.error_log.level)
        for handler in self.log.error_log.handlers:
            ours.addHandler(handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Gunicorn's SIGTERM handler only clears ``alive``; wake the serve
        # loop so the stop begins now rather than at its next 1 s tick.
        super().handle_exit(sig, frame)
        self._notify_waiter_done()


class _DrainingRunner(web.AppRunner):
    """An AppRunner whose cleanup lets the uploads in flight finish first,
    and is over within *stop_within* seconds of its start."""

    def __init__(
        self, app: web.Application, *, stop_within: float, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._stop_within = stop_within

    async def cleanup(self) -> None:
        loop = asyncio.get_running_loop()
        stop_by = loop.time() + self._stop_within
        for site in self.sites:
            await site.stop()  # no new connections; the open ones keep reading
        if self.server is not None:  # setup() succeeded
            await stop_uploads(self.app)
        # aiohttp then reads on the rest of each body its handler left unread,
        # for up to 10 s, and waits up to its shutdown timeout for that: only
        # what is left of the worker's time, or gunicorn kills it midway.
        self._shutdown_timeout = max(0.0, stop_by - loop.time())
        await super().cleanup()
