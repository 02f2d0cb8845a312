"""ocr_sse: a streaming image-upload endpoint for aiohttp.

``POST`` a multipart upload of images and read Server-Sent Events that report
each file as it is received and validated, while the upload still arrives.
The event classes live in :mod:`ocr_sse.events`.
"""

from __future__ import annotations

from .app import CONFIG, create_app, setup, stop_uploads
from .client import StreamError, UploadError, UploadRefused, upload
from .config import Config, ConfigError
from .handler import OnImage, ValidImage, handle_upload

__all__ = (
    "CONFIG",
    "Config",
    "ConfigError",
    "OnImage",
    "StreamError",
    "UploadError",
    "UploadRefused",
    "ValidImage",
    "__version__",
    "create_app",
    "handle_upload",
    "setup",
    "stop_uploads",
    "upload",
)

__version__ = "0.1.0"
