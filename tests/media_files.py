"""Real image and PDF files made by the tests: PNG/JPEG, PDFs with and without a text
layer, a truncated PDF, and a PNG decompression bomb (50,000 x 50,000 pixels)."""

from __future__ import annotations

import io
import struct
import zlib


def png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A real PNG drawn by Pillow, with some detail so it does not compress to nothing."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), color)
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 40):
        draw.line([(x, 0), (width - x, height)], fill=(x % 256, 90, 160), width=3)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def noisy_png(width: int, height: int) -> bytes:
    """A PNG of random pixels: large on disk for its size (to test the byte limits)."""
    import os

    from PIL import Image

    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(png(width, height))).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_bomb(side: int = 50_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels, all black: a few hundred KB on disk, 2.5
    billion pixels decoded."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    rows = 1000
    parts = [packer.compress(row * rows) for _ in range(side // rows)]
    parts.append(packer.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def text_pdf(pages: list[str]) -> bytes:
    """A PDF with a real text layer: one line of Helvetica text per page, written by hand."""
    objects: list[bytes] = []
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    font = 3 + 2 * n
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 18 Tf 72 720 Td ({escaped}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _assemble(objects)


def _assemble(objects: list[bytes]) -> bytes:
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def scanned_pdf(pages: int = 1) -> bytes:
    """A PDF of images only (no text layer), as a scanner makes: Pillow saves it."""
    from PIL import Image, ImageDraw

    images = []
    for i in range(pages):
        image = Image.new("RGB", (850, 1100), "white")
        ImageDraw.Draw(image).rectangle([100, 100 + 50 * i, 700, 300 + 50 * i], fill="black")
        images.append(image)
    buf = io.BytesIO()
    images[0].save(buf, "PDF", save_all=True, append_images=images[1:], resolution=100)
    return buf.getvalue()


def truncated(data: bytes) -> bytes:
    """The first half of a file, as a broken download leaves it."""
    return data[: len(data) // 2]
