"""Odd and hostile images and PDFs: 16-bit PNGs, rotated photos, and a few KB of PDF built
to keep the text extractor busy for hours."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from loopwise import _pdf
from loopwise._imaging import BadMedia, fit, image_info
from loopwise.models._vision import ANTHROPIC_LIMITS
from media_files import _assemble

pytest.importorskip("PIL")


def _save(image: object, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)  # type: ignore[attr-defined]
    return buf.getvalue()


def test_a_resized_16_bit_png_keeps_its_greys() -> None:
    from PIL import Image, ImageStat

    ramp = Image.linear_gradient("L").resize((3000, 2000)).convert("I")
    data = _save(ramp.point(lambda v: v * 256).convert("I;16"), "PNG")
    _, out = fit(data, image_info(data), ANTHROPIC_LIMITS)
    with Image.open(io.BytesIO(out)) as sent:
        mean = ImageStat.Stat(sent.convert("L")).mean[0]
    assert 110 < mean < 145  # was ~254: every value above 255 clipped to white


def test_a_resized_rotated_photo_is_sent_upright() -> None:
    from PIL import Image

    photo = Image.new("RGB", (3000, 1000), "red")
    photo.paste((0, 0, 255), (0, 0, 1500, 1000))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show it rotated 90° clockwise
    data = _save(photo, "JPEG", exif=exif)
    _, out = fit(data, image_info(data), ANTHROPIC_LIMITS)
    with Image.open(io.BytesIO(out)) as sent:
        assert sent.height > sent.width  # the copy has no EXIF: it must be upright itself
        top = sent.convert("RGB").getpixel((sent.width // 2, 10))
    assert isinstance(top, tuple) and top[2] > 200 and top[0] < 60  # blue on top


def _form_bomb(fan: int, padding: int) -> bytes:
    """One page drawing a form ``fan`` times; the form's stream is ``padding`` blanks."""
    import zlib

    form = zlib.compress(b"BT /F1 12 Tf 72 720 Td (hello) Tj ET" + b" " * padding, 9)
    draw = b"/X0 Do " * fan
    return _assemble(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 5 0 R "
            b"/Resources << /Font << /F1 4 0 R >> /XObject << /X0 6 0 R >> >> >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Length %d >>\nstream\n" % len(draw) + draw + b"\nendstream",
            b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /Font "
            b"<< /F1 4 0 R >> >> /Filter /FlateDecode /Length %d >>\nstream\n"
            % len(form)
            + form
            + b"\nendstream",
        ]
    )


def test_a_pdf_text_bomb_stops_at_the_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pypdf")
    bomb = _form_bomb(fan=2000, padding=1_000_000)  # 16 KB; minutes of pypdf parsing
    assert len(bomb) < 20_000
    monkeypatch.setattr(_pdf, "TEXT_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(BadMedia, match=r"took over 0\.5 s"):
        _pdf.read_text(bomb)
    assert time.monotonic() - started < 5


def test_an_ordinary_form_still_gives_its_text() -> None:
    pytest.importorskip("pypdf")
    text = _pdf.read_text(_form_bomb(fan=3, padding=0))
    assert text.render().count("hello") == 3


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_an_image_cut_short_after_its_header_is_refused(fmt: str, tmp_path: Path) -> None:
    """Small enough to be sent as it is, so nothing decodes it: the end is checked instead."""
    import asyncio

    from PIL import Image as PILImage

    from loopwise import Image, ModelRetry, UsageError
    from loopwise.toolkits.documents import documents

    image = PILImage.effect_noise((64, 48), 60).convert("RGB" if fmt != "GIF" else "P")
    whole = _save(image, fmt)
    assert Image.from_bytes(whole).media_type  # the whole file is fine
    cut = whole[: len(whole) * 2 // 3]
    with pytest.raises(UsageError, match="is truncated"):
        Image.from_bytes(cut)
    (tmp_path / "cut.img").write_bytes(cut)
    [read_image, _] = documents(tmp_path)
    with pytest.raises(ModelRetry, match="truncated"):
        asyncio.run(read_image.function(path="cut.img"))


def test_a_document_over_max_pages_says_how_to_allow_it() -> None:
    from loopwise import Document, UsageError
    from media_files import text_pdf

    with pytest.raises(UsageError, match=r"has more than max_pages=2 pages; pass a larger"):
        Document.from_bytes(text_pdf(["a", "b", "c"]), max_pages=2)
    assert Document.from_bytes(text_pdf(["a", "b", "c"]), max_pages=3).text
