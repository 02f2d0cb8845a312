"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import ocr_sse
from ocr_sse import Config

#: Starts a test server with the endpoint under the given settings.
Serve = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def serve(aiohttp_client: Any) -> Serve:
    """Start a test server with the endpoint at /api/ocr under *settings*."""

    async def start(**settings: Any) -> TestClient[Any, Any]:
        app = ocr_sse.setup(web.Application(), config=Config(**settings))
        return await aiohttp_client(app)  # type: ignore[no-any-return]

    return start
