"""Images and PDFs as message parts: ``Image.from_path("a.png")``, ``Document.from_path(...)``.

Give them to an agent beside the task text::

    agent.run_sync(["What does this diagram show?", Image.from_path("diagram.png")])

The type is taken from the file's magic bytes (not its name), an image's size from its
header before any decoding, and every file is bounded in bytes and pixels or pages, so a
corrupt, truncated or oversized file is a :class:`~loopwise.UsageError` with one sentence,
never a crash. Each provider resizes images to its own limits when it sends them.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from ._imaging import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_PIXELS,
    BadMedia,
    check_complete,
    image_info,
)
from ._pdf import (
    DEFAULT_MAX_PDF_BYTES,
    DEFAULT_MAX_PDF_PAGES,
    TooManyPages,
    check_pdf,
    read_text,
)
from .errors import UsageError
from .messages import DocumentPart, ImagePart

__all__ = ["Document", "Image", "attachment"]


def _read(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The file's bytes, refusing it before reading when it is over ``max_bytes``."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise UsageError(
                    f"{name!r} is {size:,} bytes, over the limit of {max_bytes:,} bytes; "
                    "use a smaller file or raise max_bytes."
                )
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise UsageError(f"Cannot read {name!r}: {exc.strerror or exc}.") from None
    if len(data) > max_bytes:  # the file grew while being read
        raise UsageError(f"{name!r} is over the limit of {max_bytes:,} bytes.")
    return data


class Image:
    """Constructors of :class:`~loopwise.messages.ImagePart` (PNG, JPEG, GIF or WebP)."""

    @staticmethod
    def from_bytes(
        data: bytes,
        *,
        name: str = "the data",
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> ImagePart:
        """An image part from encoded bytes; raises ``UsageError`` if unreadable or too big."""
        if len(data) > max_bytes:
            raise UsageError(
                f"{name} is {len(data):,} bytes, over the limit of {max_bytes:,} bytes."
            )
        try:
            info = image_info(data, max_pixels=max_pixels)
            check_complete(info, data)
        except BadMedia as exc:
            raise UsageError(f"{name} is not a usable image: {exc}.") from None
        return ImagePart(media_type=info.media_type, data=base64.b64encode(data).decode())

    @staticmethod
    def from_path(
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> ImagePart:
        """An image part from a file; its type comes from its content, not its name."""
        data = _read(path, max_bytes)
        return Image.from_bytes(
            data, name=repr(os.fspath(path)), max_bytes=max_bytes, max_pixels=max_pixels
        )


class Document:
    """Constructors of :class:`~loopwise.messages.DocumentPart` for PDFs (needs pypdf).

    The text of every page is extracted once (``[page N]`` headings), for models that
    cannot read the PDF itself; pages without a text layer are marked as such.
    """

    @staticmethod
    def from_bytes(
        data: bytes,
        *,
        name: str = "the data",
        max_bytes: int = DEFAULT_MAX_PDF_BYTES,
        max_pages: int = DEFAULT_MAX_PDF_PAGES,
    ) -> DocumentPart:
        """A PDF part from its bytes; raises ``UsageError`` if corrupt, truncated or too big."""
        try:
            check_pdf(data, max_bytes=max_bytes)
            text = read_text(data, max_pages=max_pages)
        except TooManyPages:  # a whole document: there is no page choice to narrow
            raise UsageError(
                f"{name} has more than max_pages={max_pages} pages; pass a larger max_pages."
            ) from None
        except BadMedia as exc:
            raise UsageError(f"{name} is not a usable PDF: {exc}.") from None
        except ImportError as exc:
            raise UsageError(f"{name}: {exc}.") from None
        return DocumentPart(
            media_type="application/pdf",
            data=base64.b64encode(data).decode(),
            text=text.render(),
        )

    @staticmethod
    def from_path(
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_PDF_BYTES,
        max_pages: int = DEFAULT_MAX_PDF_PAGES,
    ) -> DocumentPart:
        """A PDF part from a file (at most ``max_pages`` pages, ``max_bytes`` bytes)."""
        data = _read(path, max_bytes)
        return Document.from_bytes(
            data, name=repr(os.fspath(path)), max_bytes=max_bytes, max_pages=max_pages
        )


def attachment(path: str | os.PathLike[str]) -> ImagePart | DocumentPart:
    """An image or PDF part for a file, whichever its magic bytes say (``--attach``)."""
    with_limit = max(DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_PDF_BYTES)
    data = _read(path, with_limit)
    name = repr(os.fspath(Path(path)))
    if data.startswith(b"%PDF-"):
        return Document.from_bytes(data, name=name)
    return Image.from_bytes(data, name=name)
