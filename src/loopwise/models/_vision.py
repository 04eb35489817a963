"""Images and documents made ready for one provider: resized, or replaced by text.

Adapters call :func:`prepare_image` for every image they send. An image that fits the
provider's limits goes as it is (Pillow is not even imported); a larger one is resized
once and cached, so a long run does not re-encode the same screenshot every step. A model
without vision gets a stand-in such as ``[image: 1200x800 PNG, not shown: model has no
vision]``, and a PDF its extracted text.
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache

from .._imaging import BadMedia, ImageInfo, Limits, fit, image_info, stand_in
from .._pdf import INSTALL, check_pdf, read_text, render_page
from ..messages import DocumentPart, ImagePart

__all__ = [
    "ANTHROPIC_LIMITS",
    "NO_VISION",
    "OPENAI_LIMITS",
    "document_text",
    "guess_vision",
    "pdf_page_images",
    "prepare_image",
]

ANTHROPIC_LIMITS = Limits(long_edge=1568, max_pixels=1_150_000, max_bytes=3_750_000)
"""Anthropic scales anything larger down itself; 3.75 MB encoded is 5 MB of base64."""
OPENAI_LIMITS = Limits(box=2048, short_edge=768, max_bytes=20 * 1024 * 1024)
"""OpenAI's "high detail": fit in 2048 x 2048, then the short side at most 768 px."""
NO_VISION = "model has no vision"
_MAX_RENDERED_PAGES = 20


# OpenAI's own models read images, except these older or "mini" reasoning ones.
_OPENAI_TEXT_ONLY = ("gpt-3.5", "gpt-4-0", "o1-mini", "o3-mini", "davinci", "babbage")
# Name fragments of models that read images, for servers that cannot say (Ollama, vLLM...).
_VISION_NAMES = (
    "gpt-4o", "gpt-4.1", "gpt-5", "llava", "vision", "-vl", "vl-", "2.5vl", "3-vl",
    "gemma3", "minicpm-v", "moondream", "pixtral", "llama4", "mistral-small3",
)  # fmt: skip


def guess_vision(provider: str, model_name: str) -> bool:
    """Whether a model reads images, judged by its name (pass ``vision=`` to be sure)."""
    name = model_name.lower()
    if provider == "openai":
        return name != "gpt-4" and not name.startswith(_OPENAI_TEXT_ONLY)
    return any(fragment in name for fragment in _VISION_NAMES)


def _decode(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadMedia("its data is not valid base64") from None


def _info(part: ImagePart) -> ImageInfo | None:
    try:
        return image_info(_decode(part.data))
    except BadMedia:
        return None


def stand_in_for(part: ImagePart, why: str = NO_VISION) -> str:
    """The text a model without vision (or an unusable image) gets instead."""
    return stand_in(_info(part), why)


@lru_cache(maxsize=64)
def _prepared(data: str, limits: Limits) -> tuple[str, str] | str:
    """``(media_type, base64)`` within ``limits``, or the stand-in text when impossible."""
    info: ImageInfo | None = None
    try:
        raw = _decode(data)
        info = image_info(raw)
        media_type, out = fit(raw, info, limits)
    except BadMedia as exc:
        return stand_in(info, f"it cannot be used: {exc}")
    except ImportError:
        return stand_in(info, f"too large to send and Pillow is missing ({INSTALL})")
    if out is raw:
        return media_type, data
    return media_type, base64.b64encode(out).decode()


def prepare_image(part: ImagePart, limits: Limits, *, vision: bool = True) -> ImagePart | str:
    """The image as the provider should get it, or the text to send instead."""
    if not vision:
        return stand_in_for(part)
    prepared = _prepared(part.data, limits)
    if isinstance(prepared, str):
        return prepared
    media_type, data = prepared
    if media_type == part.media_type and data is part.data:
        return part
    return ImagePart(media_type=media_type, data=data)


@lru_cache(maxsize=16)
def _pdf_text(data: str) -> str:
    try:
        raw = _decode(data)
        check_pdf(raw)
        return read_text(raw).render()
    except BadMedia as exc:
        return f"[document: a PDF that cannot be read: {exc}]"
    except ImportError:
        return f"[document: a PDF of {len(data) * 3 // 4:,} bytes, not shown ({INSTALL})]"


def document_text(part: DocumentPart) -> str:
    """The document as text: its known text, else the PDF's text extracted now."""
    if part.text is not None:
        return part.text
    if part.media_type == "application/pdf":
        return _pdf_text(part.data)
    return f"[document: {part.media_type}, {len(part.data) * 3 // 4:,} bytes, not shown]"


@lru_cache(maxsize=16)
def _rendered(data: str, limits: Limits) -> tuple[ImagePart | str, ...]:
    try:
        raw = _decode(data)
        check_pdf(raw)
        textless = read_text(raw).textless[:_MAX_RENDERED_PAGES]
        out: list[ImagePart | str] = []
        for number in textless:
            png = render_page(raw, number, long_edge=limits.long_edge or limits.box or 1568)
            out.append(f"[page {number} as an image:]")
            out.append(ImagePart(media_type="image/png", data=base64.b64encode(png).decode()))
        return tuple(out)
    except (BadMedia, ImportError):
        return ()


def pdf_page_images(part: DocumentPart, limits: Limits) -> tuple[ImagePart | str, ...]:
    """Pages without a text layer rendered to images (for wires that cannot take a PDF)."""
    if part.media_type != "application/pdf":
        return ()
    return _rendered(part.data, limits)
