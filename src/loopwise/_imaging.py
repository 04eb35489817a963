"""Image formats without decoding: type from magic bytes, size from the header; resizing.

The header is read by hand (PNG, JPEG, GIF, WebP), so an image's pixel count is known and
checked before any decoder runs: a 50,000 x 50,000 "decompression bomb" of a few kilobytes
is refused from its first bytes. Pillow is imported only when an image must be resized.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_TYPES",
    "BadMedia",
    "ImageInfo",
    "Limits",
    "check_complete",
    "fit",
    "image_info",
    "image_tokens",
    "sniff",
    "stand_in",
]

DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
"""About 8000 x 5000: decoded as RGBA that is 160 MB at most, whatever the file says."""
IMAGE_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WebP",
}
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class BadMedia(ValueError):
    """An image or document that is corrupt, of an unsupported type, or over a limit."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    media_type: str
    width: int
    height: int

    @property
    def label(self) -> str:
        """``1200x800 PNG``: how stand-ins and errors name the image."""
        return f"{self.width}x{self.height} {IMAGE_TYPES[self.media_type]}"


def sniff(data: bytes) -> str | None:
    """The media type from the magic bytes: an image type, ``application/pdf`` or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def image_info(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Type and size from the header; raises :class:`BadMedia` if unreadable or too big."""
    media_type = sniff(data)
    if media_type not in IMAGE_TYPES:
        raise BadMedia("it is not a PNG, JPEG, GIF or WebP image (unknown magic bytes)")
    try:
        width, height = _size(media_type, data)
    except (struct.error, IndexError):
        width = height = 0
    if width <= 0 or height <= 0:
        raise BadMedia(f"its {IMAGE_TYPES[media_type]} header is truncated or corrupt")
    if width * height > max_pixels:
        raise BadMedia(
            f"it is {width}x{height} pixels ({width * height:,}), over the limit of "
            f"{max_pixels:,} pixels"
        )
    return ImageInfo(media_type, width, height)


def check_complete(info: ImageInfo, data: bytes) -> None:
    """Refuse a file cut short after a valid header (a broken download or copy): PNG ends
    with its IEND chunk, JPEG with its end marker, GIF with its trailer, WebP with the
    length its RIFF header gives. Cheap: only the end of the file is read."""
    tail = data[-4096:]
    complete = {
        "image/png": b"IEND" in tail[-64:],
        "image/jpeg": b"\xff\xd9" in tail,  # 0xFF in the coded data is always escaped
        "image/gif": tail.rstrip(b"\0")[-1:] == b";",
        "image/webp": int.from_bytes(data[4:8], "little") + 8 <= len(data),
    }.get(info.media_type, True)
    if not complete:
        raise BadMedia(f"the {IMAGE_TYPES[info.media_type]} file is truncated (it ends early)")


def _size(media_type: str, data: bytes) -> tuple[int, int]:
    if media_type == "image/png":
        if data[12:16] != b"IHDR":
            return 0, 0
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if media_type == "image/gif":
        w, h = struct.unpack("<HH", data[6:10])
        return int(w), int(h)
    if media_type == "image/webp":
        return _webp_size(data)
    return _jpeg_size(data)


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    return 0, 0


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return 0, 0
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        if marker == 0xDA or length < 2:  # image data before any frame header
            return 0, 0
        i += 2 + length
    return 0, 0


@dataclass(frozen=True, slots=True)
class Limits:
    """What a provider accepts: ``long_edge``/``box``/``short_edge`` in pixels (0: none),
    ``max_pixels`` after scaling, ``max_bytes`` of the encoded file."""

    long_edge: int = 0
    box: int = 0
    short_edge: int = 0
    max_pixels: int = 0
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES


def target_size(width: int, height: int, limits: Limits) -> tuple[int, int]:
    """The largest size within ``limits`` with the same aspect ratio (never enlarged)."""
    scale = 1.0
    if limits.long_edge:
        scale = min(scale, limits.long_edge / max(width, height))
    if limits.box:
        scale = min(scale, limits.box / max(width, height))
    if limits.short_edge:
        scale = min(scale, limits.short_edge / min(width, height))
    if limits.max_pixels:
        scale = min(scale, math.sqrt(limits.max_pixels / (width * height)))
    if scale >= 1.0:
        return width, height
    return max(1, int(width * scale)), max(1, int(height * scale))


def fit(data: bytes, info: ImageInfo, limits: Limits) -> tuple[str, bytes]:
    """The image within ``limits``: the original bytes when they fit, else resized (Pillow).

    Raises :class:`BadMedia` when the image cannot be decoded or made small enough, and
    ``ImportError`` when it must be resized and Pillow is not installed.
    """
    size = target_size(info.width, info.height, limits)
    if size == (info.width, info.height) and len(data) <= limits.max_bytes:
        return info.media_type, data
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > info.width * info.height:
                raise BadMedia("its frames are larger than its header says")
            im.thumbnail(size)  # JPEG: decodes at a reduced scale (draft mode)
            # The copy is sent without EXIF, so turn a rotated photo upright now (the
            # limits are the same either way round).
            upright = ImageOps.exif_transpose(im)
            return _encode(_eight_bit(upright), info.media_type, limits.max_bytes)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise BadMedia(f"it cannot be decoded ({exc})") from None
    except (ValueError, struct.error, EOFError) as exc:
        if isinstance(exc, BadMedia):
            raise
        raise BadMedia(f"it cannot be decoded ({exc})") from None


def _encode(im: object, media_type: str, max_bytes: int) -> tuple[str, bytes]:
    from PIL import Image

    assert isinstance(im, Image.Image)
    if media_type in ("image/png", "image/gif"):
        if im.mode not in ("RGB", "RGBA", "L", "LA"):
            im = im.convert("RGBA")
        out = _save(im, "PNG")
        if _opaque(im):
            # A resampled photo or gradient can grow as a PNG (more colours); a JPEG at
            # less than half the bytes is sent instead. Flat diagrams stay PNG.
            photo = _save(im.convert("RGB"), "JPEG", quality=90)
            if 2 * len(photo) < len(out) and len(photo) <= max_bytes:
                return "image/jpeg", photo
        if len(out) <= max_bytes:
            return "image/png", out
    rgb = im.convert("RGB")
    for _ in range(8):
        out = _save(rgb, "JPEG", quality=85)
        if len(out) <= max_bytes:
            return "image/jpeg", out
        rgb = rgb.resize((max(1, rgb.width * 3 // 4), max(1, rgb.height * 3 // 4)))
    raise BadMedia(f"it cannot be made smaller than {max_bytes:,} bytes")


def _eight_bit(im: Any) -> Any:
    """16- and 32-bit grey scaled to 8 bits: Pillow's own conversion clips at 255, which
    turns a 16-bit PNG almost white."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    return im


def _opaque(im: object) -> bool:
    """No transparency to lose in a JPEG."""
    from PIL import Image

    assert isinstance(im, Image.Image)
    if im.mode not in ("RGBA", "LA"):
        return True
    low, _ = im.getchannel("A").getextrema()
    return bool(low == 255)


def _save(im: object, fmt: str, **options: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)  # type: ignore[attr-defined]
    return buf.getvalue()


def image_tokens(width: int, height: int) -> int:
    """Anthropic's estimate, width x height / 750, after its own downscaling (≤ ~1600)."""
    w, h = target_size(width, height, Limits(long_edge=1568, max_pixels=1_150_000))
    return max(1, math.ceil(w * h / 750))


def stand_in(info: ImageInfo | None, why: str) -> str:
    """Text sent instead of an image: ``[image: 1200x800 PNG, not shown: <why>]``."""
    label = info.label if info is not None else "unreadable"
    return f"[image: {label}, not shown: {why}]"
