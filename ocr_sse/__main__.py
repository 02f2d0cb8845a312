"""The command line: ``ocr-sse`` or ``python -m ocr_sse`` runs the server."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from aiohttp import web

from . import __version__
from .app import standalone_app
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
    web.run_app(
        standalone_app(config),
        host=config.host,
        port=config.port,
        # aiohttp waits this long for handlers once ours have had their grace.
        shutdown_timeout=config.shutdown_grace + 10,
        print=lambda text: print(text, flush=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
