"""The command line: ``ocr-sse`` or ``python -m ocr_sse`` runs the server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from aiohttp import web

from . import __version__
from .app import standalone_app, stop_uploads
from .config import Config, ConfigError, argument_parser

__all__ = ("main",)


def main(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ
) -> int:
    """Run the standalone server until it is stopped; return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="ocr-sse",
        description="Serve POST /api/ocr: multipart image uploads answered with"
        " Server-Sent Events.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    try:
        argument_parser(Config.from_environ(environ), parser)
        parser.parse_args(argv)  # --help, unknown flags and bad values exit here
        config = Config.from_args(argv, environ)
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(serve(config))
    return 0


async def serve(config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then stop without cutting uploads short.

    aiohttp's own shutdown stops reading request bodies at once, so an upload
    still arriving could never finish.  Here the listening socket closes
    first, uploads in flight get their grace period, and only then does
    aiohttp shut down.
    """
    app = standalone_app(config)
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(f"ocr-sse listening on http://{host}:{port}/api/ocr", flush=True)
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


if __name__ == "__main__":
    sys.exit(main())
