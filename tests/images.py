"""Image files made on the fly with Pillow: tests never ship binaries."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

__all__ = ("image_bytes", "jpeg", "pixel_bomb_png", "png", "truncated")


def image_bytes(
    format: str, *, width: int = 64, height: int = 48, mode: str = "RGB", **save: object
) -> bytes:
    """A *width* x *height* image of varied pixels, saved as *format*."""
    image = Image.new(mode, (width, height))
    # A gradient, so that lossy encoders have real data to code.
    image.putdata(
        [
            ((x * 7) % 256, (y * 5) % 256, (x + y) % 256)[: len(mode)]
            for y in range(height)
            for x in range(width)
        ]
        if mode == "RGB"
        else [(x + y) % 256 for y in range(height) for x in range(width)]
    )
    buffer = io.BytesIO()
    image.save(buffer, format, **save)
    return buffer.getvalue()


def png(*, width: int = 64, height: int = 48) -> bytes:
    return image_bytes("PNG", width=width, height=height)


def jpeg(*, width: int = 64, height: int = 48) -> bytes:
    return image_bytes("JPEG", width=width, height=height, quality=90)


def truncated(data: bytes, *, keep: float = 0.6) -> bytes:
    """The first *keep* part of *data*: right magic bytes, missing pixels."""
    return data[: int(len(data) * keep)]


def pixel_bomb_png(*, width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims *width* x *height* pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def apng(*, width: int = 16, height: int = 12) -> bytes:
    """An animated PNG of two frames (image/apng to magic-byte detection)."""
    frames = [Image.new("RGB", (width, height), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def pdf() -> bytes:
    """A minimal one-page PDF: a document, not an image."""
    return (
        b"%PDF-1.4\n"
        b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
        b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >> endobj\n"
        b"trailer << /Root 1 0 R >>\n"
        b"%%EOF\n"
    )


def noise_jpeg(*, width: int, height: int) -> bytes:
    """A JPEG of random noise: large, and slow to decode for its size."""
    buffer = io.BytesIO()
    Image.effect_noise((width, height), 64).convert("RGB").save(
        buffer, "JPEG", quality=95
    )
    return buffer.getvalue()
