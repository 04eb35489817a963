"""Document tools: ``read_image`` and ``read_pdf``, confined to a workspace like the file tools.

Use them as ``Agent(model, tools=documents("./workspace"))`` (``pip install
'loopwise[vision]'``). Paths are resolved, checked and opened exactly as ``read_file``
does (see :mod:`loopwise.toolkits._paths`). A file is refused by its size before it is
read and by its header before it is decoded, so a truncated PDF or a 50,000 x 50,000
pixel PNG is a one-sentence error for the model, never a crash or a memory blow-up.
"""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass
from pathlib import Path

from .._imaging import DEFAULT_MAX_PIXELS, BadMedia, check_complete, image_info
from .._pdf import DEFAULT_MAX_PDF_BYTES, check_pdf, read_text, render_page
from ..errors import ModelRetry, UsageError
from ..messages import ImagePart
from ..tools import MAX_RESULT_IMAGES, Tool, tool
from ._paths import READ_FLAGS, Workspace, path_error, shown

__all__ = ["documents"]

_MAX_IMAGE_BYTES = 20 * 1024 * 1024


def documents(
    workspace: str | Path,
    *,
    max_image_bytes: int = _MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_pdf_bytes: int = DEFAULT_MAX_PDF_BYTES,
    max_pages: int = 20,
    render_textless: bool = True,
    max_chars: int = 40_000,
    allow_hardlinks: bool = False,
) -> list[Tool]:
    """``read_image`` and ``read_pdf`` for files in the directory ``workspace``.

    ``read_pdf`` returns the text of each page (pypdf); pages without a text layer are
    rendered to PNG images (pypdfium2) when ``render_textless``, which vision models read
    and other models get as a text stand-in. ``max_pages`` bounds one call; files over
    ``max_image_bytes``/``max_pdf_bytes`` or ``max_pixels`` are refused.
    """
    if min(max_image_bytes, max_pixels, max_pdf_bytes, max_pages, max_chars) < 1:
        raise UsageError("documents() limits must be positive integers.")
    reader = _Reader(
        Workspace(workspace, allow_hardlinks=allow_hardlinks),
        max_image_bytes,
        max_pixels,
        max_pdf_bytes,
        max_pages,
        render_textless,
        max_chars,
    )

    async def read_image(path: str) -> list[str | ImagePart]:
        """Look at an image file (PNG, JPEG, GIF or WebP) from the workspace.

        Args:
            path: Image path relative to the workspace root, e.g. "screens/home.png".
        """
        return await asyncio.to_thread(reader.image, path)

    async def read_pdf(path: str, pages: str | None = None) -> str | list[str | ImagePart]:
        """Read a PDF from the workspace: the text of each page, and pages that have no
        text layer (scans) as images.

        Args:
            path: PDF path relative to the workspace root, e.g. "reports/q3.pdf".
            pages: Pages to read, like "1-3,7" (1-based); all pages when omitted.
        """
        return await asyncio.to_thread(reader.pdf, path, pages)

    return [
        tool(max_output_chars=max_chars + 500, trusted=False, effects=["read"])(read_image),
        tool(max_output_chars=max_chars + 500, trusted=False, effects=["read"])(read_pdf),
    ]


@dataclass(frozen=True, slots=True)
class _Reader:
    """Blocking reads for the tools (run in a worker thread), within the limits."""

    ws: Workspace
    max_image_bytes: int
    max_pixels: int
    max_pdf_bytes: int
    max_pages: int
    render_textless: bool
    max_chars: int

    def load(self, path: str, max_bytes: int) -> bytes:
        """The file's bytes; refused by its size before reading."""
        ws = self.ws
        fd = ws.open_file(ws.resolve(path), READ_FLAGS)
        try:
            with open(fd, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if size > max_bytes:
                    raise ModelRetry(
                        f"{shown(path)} is {size:,} bytes, over the limit of {max_bytes:,} "
                        "bytes; it cannot be read."
                    )
                data = f.read(max_bytes + 1)
        except OSError as exc:
            raise path_error(path, exc) from None
        if len(data) > max_bytes:
            raise ModelRetry(f"{shown(path)} is over the limit of {max_bytes:,} bytes.")
        return data

    def image(self, path: str) -> list[str | ImagePart]:
        data = self.load(path, self.max_image_bytes)
        try:
            info = image_info(data, max_pixels=self.max_pixels)
            check_complete(info, data)
        except BadMedia as exc:
            raise ModelRetry(f"{shown(path)} cannot be read as an image: {exc}.") from None
        part = ImagePart(media_type=info.media_type, data=base64.b64encode(data).decode())
        return [f"{path}: {info.label}, {len(data):,} bytes", part]

    def pdf(self, path: str, pages: str | None) -> str | list[str | ImagePart]:
        data = self.load(path, self.max_pdf_bytes)
        try:
            check_pdf(data, max_bytes=self.max_pdf_bytes)
            text = read_text(data, pages, max_pages=self.max_pages)
            numbers = text.textless[:MAX_RESULT_IMAGES] if self.render_textless else []
            images = [render_page(data, n) for n in numbers]
        except BadMedia as exc:
            raise ModelRetry(f"{shown(path)} cannot be read as a PDF: {exc}.") from None
        except ImportError as exc:
            raise UsageError(str(exc)) from None
        head = f"{path}: PDF, {text.page_count} pages; showing {_span(text.pages)}."
        page_text = _bounded(f"{head}\n\n{text.render()}", self.max_chars)
        out: list[str | ImagePart] = [page_text]
        for number, png in zip(numbers, images, strict=True):
            out.append(f"[page {number} rendered as an image]")
            out.append(ImagePart(media_type="image/png", data=base64.b64encode(png).decode()))
        if self.render_textless and len(numbers) < len(text.textless):
            out.append(
                f"[{len(text.textless) - len(numbers)} more pages without text were not "
                "rendered; ask for them with pages='...']"
            )
        return out if len(out) > 1 else page_text


def _span(pages: tuple[tuple[int, str], ...]) -> str:
    numbers = [n for n, _ in pages]
    if not numbers:
        return "no pages"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"page {numbers[0]}" if len(numbers) == 1 else f"pages {numbers[0]}-{numbers[-1]}"
    return "pages " + ",".join(map(str, numbers))


def _bounded(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + "\n[text cut: ask for fewer pages with pages='...' to see more]"
