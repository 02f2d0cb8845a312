"""ocr_sse: a streaming image-upload endpoint for aiohttp.

``POST`` a multipart upload of images and read Server-Sent Events that report
each file as it is received and validated, while the upload still arrives.
"""

from __future__ import annotations

from .app import CONFIG, create_app, setup
from .config import Config, ConfigError
from .handler import handle_upload

__all__ = (
    "CONFIG",
    "Config",
    "ConfigError",
    "__version__",
    "create_app",
    "handle_upload",
    "setup",
)

__version__ = "0.1.0"
