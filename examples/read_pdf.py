"""Read a PDF with the documents toolkit: text per page, scanned pages as images.

The model here is a ``FunctionModel`` (offline, no key): it calls ``read_pdf`` and answers
with what the tool returned, so you can see exactly what a real model would be shown. Swap
in ``"anthropic:claude-sonnet-4-6"`` to have Claude read it (it sees the scanned page).

    pip install -e '.[vision]'
    python examples/read_pdf.py [file.pdf]    # default: a two-page PDF made here
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

from loopwise import Agent, Message, ToolResultPart, UserMessage
from loopwise.models.testing import FunctionModel, Turn, call
from loopwise.toolkits import documents


def sample_pdf(folder: Path) -> Path:
    """A PDF with one text page (written by hand) and one scanned page (an image)."""
    from PIL import Image, ImageDraw
    from pypdf import PdfReader, PdfWriter

    text = b"BT /F1 18 Tf 72 720 Td (Quarterly revenue grew 12 percent.) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 6\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    scan = Image.new("RGB", (850, 1100), "white")
    ImageDraw.Draw(scan).rectangle([100, 100, 700, 300], fill="black")
    scanned = io.BytesIO()
    scan.save(scanned, "PDF", resolution=100)
    writer = PdfWriter()
    for data in (bytes(out), scanned.getvalue()):
        writer.add_page(PdfReader(io.BytesIO(data)).pages[0])
    path = folder / "report.pdf"
    with path.open("wb") as f:
        writer.write(f)
    return path


def reader(messages: list[Message], tools: object) -> Turn:
    """Call read_pdf once, then report what it returned."""
    results = [
        p
        for m in messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    ]
    if not results:
        return call("read_pdf", path="report.pdf")
    return f"{results[0].content}\n(images attached: {len(results[0].images)})"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        workspace = Path(folder)
        if len(sys.argv) > 1:
            (workspace / "report.pdf").write_bytes(Path(sys.argv[1]).read_bytes())
        else:
            sample_pdf(workspace)
        agent = Agent(FunctionModel(reader), tools=documents(workspace))
        result = agent.run_sync("What does report.pdf say?")
        print(result.status)
        print(result.output)


if __name__ == "__main__":
    main()
