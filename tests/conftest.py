"""Fixtures shared by the test modules."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import ocr_sse
from ocr_sse import Config


def load_script(path: Path) -> Any:
    """The script at *path* (``scripts/`` is no package) as a module named
    after its file, registered in ``sys.modules``, where dataclasses look
    their module up."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


#: Starts a test server with the endpoint under the given settings.
Serve = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def serve(aiohttp_client: Any) -> Serve:
    """Start a test server with the endpoint at /api/ocr under *settings*."""

    async def start(**settings: Any) -> TestClient[Any, Any]:
        app = ocr_sse.setup(web.Application(), config=Config(**settings))
        return await aiohttp_client(app)  # type: ignore[no-any-return]

    return start
