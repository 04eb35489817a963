"""PDFs: checks before parsing, text per page (pypdf), pages rendered to PNG (pypdfium2).

Both libraries come with ``pip install 'loopwise[vision]'`` (BSD and Apache/BSD licences)
and are imported only here, on first use. A PDF is untrusted input: its size is checked,
a truncated file (no ``%%EOF`` at the end) is refused, and any failure of the parser
becomes a :class:`BadMedia` with one sentence.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ._imaging import BadMedia


class TooManyPages(BadMedia):
    """More pages were asked for (or the whole document has more) than ``max_pages``."""


__all__ = [
    "DEFAULT_MAX_PDF_BYTES",
    "DEFAULT_MAX_PDF_PAGES",
    "PdfText",
    "check_pdf",
    "page_numbers",
    "read_text",
    "render_page",
]

DEFAULT_MAX_PDF_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_PDF_PAGES = 100
MAX_PAGE_CHARS = 20_000
TEXT_SECONDS = 30.0
"""A whole read_text call; a few KB of nested forms can keep pypdf busy for hours."""
INSTALL = "pip install 'loopwise[vision]'"
_PDFIUM_LOCK = threading.Lock()  # pdfium is not thread-safe


@dataclass(frozen=True, slots=True)
class PdfText:
    """Text of the chosen pages (1-based numbers); an empty text means no text layer."""

    page_count: int
    pages: tuple[tuple[int, str], ...]

    @property
    def textless(self) -> list[int]:
        return [n for n, text in self.pages if not text.strip()]

    def render(self) -> str:
        """``[page 1]`` headed text per page; pages without text say so."""
        out = []
        for number, text in self.pages:
            if text.strip():
                out.append(f"[page {number}]\n{text.strip()}")
            else:
                out.append(f"[page {number}: no text layer (a scanned or image-only page)]")
        return "\n\n".join(out)


def check_pdf(data: bytes, *, max_bytes: int = DEFAULT_MAX_PDF_BYTES) -> None:
    """Refuse what is not a whole PDF before any parser sees it."""
    if len(data) > max_bytes:
        raise BadMedia(f"it is {len(data):,} bytes, over the limit of {max_bytes:,} bytes")
    if not data.startswith(b"%PDF-"):
        raise BadMedia("it is not a PDF (it does not start with %PDF-)")
    if b"%%EOF" not in data[-4096:]:
        raise BadMedia("it is truncated or corrupt (no %%EOF marker at the end)")


def _reader(data: bytes) -> object:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise ImportError(f"reading PDFs needs pypdf; run: {INSTALL}") from None
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise BadMedia("it is encrypted with a password")
        len(reader.pages)
    except BadMedia:
        raise
    except Exception as exc:  # a hostile file can trip any error inside the parser
        raise BadMedia(f"it cannot be parsed ({type(exc).__name__}: {exc})") from None
    return reader


def page_numbers(spec: str | None, count: int, max_pages: int) -> list[int]:
    """1-based page numbers from ``"1-3,7"`` (None or ``""``: all), at most ``max_pages``."""
    if not spec or not spec.strip():
        numbers = list(range(1, count + 1))
    else:
        numbers = []
        for item in spec.replace(" ", "").split(","):
            first, sep, last = item.partition("-")
            try:
                lo = int(first)
                hi = int(last) if sep else lo
            except ValueError:
                raise BadMedia(f"pages {spec!r} is not like '1-3,7'") from None
            if lo < 1 or hi < lo or hi > count:
                raise BadMedia(f"pages {spec!r} is out of range: the PDF has {count} pages")
            numbers.extend(range(lo, hi + 1))
            if len(numbers) > max_pages:
                break
    if len(numbers) > max_pages:
        raise TooManyPages(
            f"{len(numbers)}+ pages were asked for, over the limit of {max_pages} per call; "
            "ask for fewer pages, like '1-10'"
        )
    return numbers


def read_text(
    data: bytes, pages: str | None = None, *, max_pages: int = DEFAULT_MAX_PDF_PAGES
) -> PdfText:
    """Text of ``pages`` (``"1-3,7"``; all by default), each cut at ``MAX_PAGE_CHARS``."""
    reader = _reader(data)
    all_pages = reader.pages  # type: ignore[attr-defined]
    numbers = page_numbers(pages, len(all_pages), max_pages)
    deadline = time.monotonic() + TEXT_SECONDS

    def check_time(*_: object) -> None:  # called by pypdf before each operator
        if time.monotonic() > deadline:
            raise _OutOfTime

    out: list[tuple[int, str]] = []
    for n in numbers:
        try:
            text = all_pages[n - 1].extract_text(visitor_operand_before=check_time) or ""
        except _OutOfTime:
            raise BadMedia(
                f"reading its text took over {TEXT_SECONDS:g} s (at page {n}); ask for fewer pages"
            ) from None
        except Exception as exc:  # the content stream of one page is broken
            raise BadMedia(f"page {n} cannot be read ({type(exc).__name__}: {exc})") from None
        if len(text) > MAX_PAGE_CHARS:
            text = text[:MAX_PAGE_CHARS] + f"\n[page cut at {MAX_PAGE_CHARS} characters]"
        out.append((n, text))
    return PdfText(len(all_pages), tuple(out))


class _OutOfTime(Exception):
    pass


def render_page(data: bytes, number: int, *, long_edge: int = 1568) -> bytes:
    """Page ``number`` (1-based) as a PNG whose long edge is at most ``long_edge`` pixels."""
    try:
        import pypdfium2 as pdfium
    except ImportError:
        raise ImportError(f"rendering PDF pages needs pypdfium2; run: {INSTALL}") from None
    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except Exception as exc:
            raise BadMedia(f"it cannot be opened for rendering ({exc})") from None
        try:
            page = pdf[number - 1]
            width, height = page.get_size()
            scale = min(2.0, long_edge / max(width, height, 1.0))
            image = page.render(scale=scale).to_pil()
        except Exception as exc:
            raise BadMedia(f"page {number} cannot be rendered ({exc})") from None
        finally:
            pdf.close()
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def render_pages(data: bytes, numbers: Sequence[int], *, long_edge: int = 1568) -> list[bytes]:
    return [render_page(data, n, long_edge=long_edge) for n in numbers]
