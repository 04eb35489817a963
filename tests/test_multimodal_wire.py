"""Images and PDFs reach the model in each wire's own form, through the real SDKs.

Real files made here (PNG, JPEG, PDFs with and without a text layer, a truncated PDF, a
PNG decompression bomb) go into runs of a real Agent against the local Anthropic and
OpenAI-compatible wire servers, which record exactly what was sent.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PIL")
pytest.importorskip("pypdf")
pytest.importorskip("pypdfium2")

from PIL import Image as PILImage

import media_files
from figures import figure
from loopwise import Agent, Document, Image, UsageError
from loopwise.context import estimate_tokens
from loopwise.messages import (
    ImagePart,
    ToolResultPart,
    UserMessage,
    dump_messages,
    load_messages,
)
from loopwise.models.anthropic import AnthropicModel
from loopwise.models.openai import OpenAIModel
from loopwise.models.retry import RetryPolicy
from loopwise.toolkits import documents
from wire_servers import Reply, ToolCall, WireServer

FAST = RetryPolicy(initial_delay=0.01)


@pytest.fixture
def server() -> Any:
    with WireServer() as wire:
        yield wire


@functools.cache
def corpus() -> dict[str, bytes]:
    """The files, made once per test session (the bomb takes about a second)."""
    return {
        "photo.png": media_files.png(3000, 2000),
        "photo.jpg": media_files.jpeg(640, 480),
        "report.pdf": media_files.text_pdf(["Revenue grew 12%", "Costs fell"]),
        "scan.pdf": media_files.scanned_pdf(2),
        "broken.pdf": media_files.truncated(media_files.text_pdf(["x"] * 3)),
        "bomb.png": media_files.png_bomb(),
    }


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    for name, data in corpus().items():
        (root / name).write_bytes(data)
    return root


def anthropic(server: WireServer, **kwargs: Any) -> AnthropicModel:
    return AnthropicModel("claude-test", base_url=server.url, api_key="k", retry=FAST, **kwargs)


def openai(server: WireServer, provider: str = "openai", **kwargs: Any) -> OpenAIModel:
    return OpenAIModel(
        "gpt-4.1", base_url=server.openai_url, api_key="k", provider=provider, retry=FAST, **kwargs
    )


def size_of(data_b64: str) -> tuple[int, int]:
    with PILImage.open(io.BytesIO(base64.b64decode(data_b64))) as im:
        return im.size


def data_url_size(url: str) -> tuple[str, tuple[int, int]]:
    head, _, data = url.partition(",")
    return head.removeprefix("data:").removesuffix(";base64"), size_of(data)


# -- task inputs ---------------------------------------------------------------------------


def test_anthropic_gets_resized_image_and_pdf_blocks(server: WireServer, ws: Path) -> None:
    server.push(Reply(text="A chart and a report."))
    image = Image.from_path(ws / "photo.png")
    pdf = Document.from_path(ws / "report.pdf")
    result = Agent(anthropic(server)).run_sync(["Describe both", image, pdf])
    assert result.status == "completed"
    content = server.bodies[0]["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "Describe both"}
    block = content[1]
    assert block["type"] == "image" and block["source"]["type"] == "base64"
    w, h = size_of(block["source"]["data"])
    assert max(w, h) <= 1568 and w * h <= 1_150_000 and abs(w / h - 1.5) < 0.01
    assert len(block["source"]["data"]) <= 5 * 1024 * 1024
    assert content[2]["type"] == "document"
    assert content[2]["source"] == {
        "type": "base64",
        "media_type": "application/pdf",
        "data": pdf.data,
    }
    figure(
        f"multimodal: 3000x2000 PNG {len(image.data):,} base64 bytes -> Anthropic "
        f"{w}x{h} {len(block['source']['data']):,} bytes"
    )


def test_openai_gets_data_urls_and_a_pdf_file(server: WireServer, ws: Path) -> None:
    server.push(Reply(text="ok"))
    image = Image.from_path(ws / "photo.png")
    pdf = Document.from_path(ws / "report.pdf")
    Agent(openai(server)).run_sync(["Look", image, Image.from_path(ws / "photo.jpg"), pdf])
    content = server.bodies[0]["messages"][-1]["content"]
    media, (w, h) = data_url_size(content[1]["image_url"]["url"])
    # Resampled, this drawing grows as a PNG; a JPEG under half its bytes goes instead.
    assert media == "image/jpeg" and max(w, h) <= 2048 and min(w, h) <= 768
    assert (w, h) == (1152, 768)
    media, size = data_url_size(content[2]["image_url"]["url"])
    assert (media, size) == ("image/jpeg", (640, 480))  # fits: sent as it is
    assert content[2]["image_url"]["url"].endswith(Image.from_path(ws / "photo.jpg").data)
    assert content[3] == {
        "type": "file",
        "file": {
            "filename": "document.pdf",
            "file_data": f"data:application/pdf;base64,{pdf.data}",
        },
    }
    figure(f"multimodal: 3000x2000 PNG -> OpenAI high detail {w}x{h}")


def test_resized_diagrams_and_transparent_images_stay_png() -> None:
    import io
    import os

    from PIL import Image as PILImage
    from PIL import ImageDraw

    from loopwise._imaging import fit, image_info
    from loopwise.models._vision import ANTHROPIC_LIMITS

    def encoded(im: PILImage.Image) -> bytes:
        buf = io.BytesIO()
        im.save(buf, "PNG")
        return buf.getvalue()

    diagram = PILImage.new("RGB", (3000, 2000), "white")
    ImageDraw.Draw(diagram).rectangle([500, 500, 2500, 1500], fill="black")
    # Noise compresses badly as a PNG (a JPEG would win), but a JPEG would lose the alpha.
    noisy = PILImage.frombytes("RGB", (2000, 1000), os.urandom(2000 * 1000 * 3)).convert("RGBA")
    noisy.putalpha(128)
    for name, im in (("diagram", diagram), ("transparent noise", noisy)):
        data = encoded(im)
        media, out = fit(data, image_info(data), ANTHROPIC_LIMITS)
        assert media == "image/png", name
        assert image_info(out).width <= 1568
    opaque = noisy.copy()
    opaque.putalpha(255)  # the same noise, opaque: the JPEG is taken
    data = encoded(opaque)
    assert fit(data, image_info(data), ANTHROPIC_LIMITS)[0] == "image/jpeg"


def test_compatible_server_without_vision_gets_stand_ins_and_text(
    server: WireServer, ws: Path
) -> None:
    server.push(Reply(text="ok"))
    model = openai(server, provider="vllm", vision=False)
    inputs = ["Look", Image.from_path(ws / "photo.png"), Document.from_path(ws / "report.pdf")]
    Agent(model).run_sync(inputs)
    content = server.bodies[0]["messages"][-1]["content"]
    assert isinstance(content, str)  # plain text only: what text-only servers accept
    assert "[image: 3000x2000 PNG, not shown: model has no vision]" in content
    assert "[page 1]\nRevenue grew 12%" in content and "[page 2]\nCosts fell" in content
    assert "base64" not in content


def test_compatible_vision_server_gets_pdf_text_and_scanned_pages(
    server: WireServer, ws: Path
) -> None:
    server.push(Reply(text="ok"))
    Agent(openai(server, provider="vllm", vision=True)).run_sync(
        ["Read", Document.from_path(ws / "scan.pdf")]
    )
    content = server.bodies[0]["messages"][-1]["content"]
    assert "[page 1: no text layer" in content[1]["text"]
    images = [c for c in content if c["type"] == "image_url"]
    assert len(images) == 2
    assert data_url_size(images[0]["image_url"]["url"])[0] == "image/png"


def test_anthropic_without_vision_gets_text(server: WireServer, ws: Path) -> None:
    server.push(Reply(text="ok"))
    inputs = ["Look", Image.from_path(ws / "photo.jpg"), Document.from_path(ws / "report.pdf")]
    Agent(anthropic(server, vision=False)).run_sync(inputs)
    content = server.bodies[0]["messages"][0]["content"]
    assert content[1] == {
        "type": "text",
        "text": "[image: 640x480 JPEG, not shown: model has no vision]",
    }
    assert content[2]["type"] == "text" and "Revenue grew 12%" in content[2]["text"]


def test_vision_defaults_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOPWISE_VISION", raising=False)
    url = "http://127.0.0.1:9/v1"
    assert OpenAIModel("gpt-4o", api_key="k", base_url=url).vision is True
    assert OpenAIModel("gpt-3.5-turbo", api_key="k", base_url=url).vision is False
    assert OpenAIModel("qwen2.5vl:7b", base_url=url, provider="ollama").vision is True
    assert OpenAIModel("qwen3:8b", base_url=url, provider="ollama").vision is False
    monkeypatch.setenv("LOOPWISE_VISION", "1")
    assert OpenAIModel("qwen3:8b", base_url=url, provider="ollama").vision is True


# -- bad files -----------------------------------------------------------------------------


def test_bad_inputs_are_clear_usage_errors(ws: Path, tmp_path: Path) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(UsageError, match=r"50000x50000 pixels .* over the limit"):
        Image.from_path(ws / "bomb.png")
    took = time.perf_counter() - started
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert took < 1 and grew_mb < 50
    figure(
        f"multimodal: 50,000x50,000 PNG bomb ({(ws / 'bomb.png').stat().st_size:,} bytes) "
        f"refused in {took * 1000:.1f} ms, peak RSS +{grew_mb:.0f} MB"
    )
    with pytest.raises(UsageError, match="truncated"):
        Document.from_path(ws / "broken.pdf")
    with pytest.raises(UsageError, match="not a usable image"):
        Image.from_path(ws / "report.pdf")
    (tmp_path / "cut.png").write_bytes(media_files.png(100, 100)[:20])
    with pytest.raises(UsageError, match="truncated or corrupt"):
        Image.from_path(tmp_path / "cut.png")
    with pytest.raises(UsageError, match="over the limit of 1,000 bytes"):
        Image.from_path(ws / "photo.png", max_bytes=1000)
    with pytest.raises(UsageError, match="Cannot read"):
        Document.from_path(tmp_path / "missing.pdf")


def test_unusable_image_data_becomes_a_stand_in_not_a_crash(server: WireServer) -> None:
    server.push(Reply(text="ok"))
    forged = ImagePart(media_type="image/png", data=base64.b64encode(corpus()["bomb.png"]).decode())
    result = Agent(anthropic(server)).run_sync(["Look", forged])
    assert result.status == "completed"
    block = server.bodies[0]["messages"][0]["content"][1]
    assert block["type"] == "text"
    assert block["text"].startswith("[image: unreadable, not shown: it cannot be used: it is")


# -- tool results --------------------------------------------------------------------------


def test_read_pdf_scanned_pages_reach_anthropic_as_images(server: WireServer, ws: Path) -> None:
    server.push(
        Reply(tool_calls=(ToolCall("read_pdf", {"path": "scan.pdf"}, id="call_1"),)),
        Reply(text="Two black boxes."),
    )
    result = Agent(anthropic(server), tools=documents(ws)).run_sync("What is in scan.pdf?")
    assert result.status == "completed"
    turn = server.bodies[1]["messages"][-1]["content"][0]
    assert turn["type"] == "tool_result" and turn["tool_use_id"] == "call_1"
    assert turn["is_error"] is False
    text, *images = turn["content"]
    assert "scan.pdf: PDF, 2 pages" in text["text"] and "no text layer" in text["text"]
    assert [b["type"] for b in images] == ["image", "image"]
    assert images[0]["source"]["media_type"] == "image/png"
    assert max(size_of(images[0]["source"]["data"])) <= 1568
    # The history keeps the images, and it round-trips through JSON.
    part = next(
        p
        for m in result.messages
        if isinstance(m, UserMessage)
        for p in m.parts
        if isinstance(p, ToolResultPart)
    )
    assert len(part.images) == 2
    assert load_messages(dump_messages(result.messages)) == result.messages


def test_tool_images_follow_the_tool_message_on_openai(server: WireServer, ws: Path) -> None:
    server.push(
        Reply(tool_calls=(ToolCall("read_image", {"path": "photo.png"}, id="call_7"),)),
        Reply(text="A red picture."),
    )
    Agent(openai(server), tools=documents(ws)).run_sync("Look at photo.png")
    wire = server.bodies[1]["messages"]
    tool_msg, user_msg = wire[-2], wire[-1]
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == "call_7"
    assert "photo.png: 3000x2000 PNG" in tool_msg["content"]
    assert user_msg["role"] == "user"
    assert user_msg["content"][0]["text"] == "[images returned by tool call call_7 (read_image):]"
    assert data_url_size(user_msg["content"][1]["image_url"]["url"])[1] == (1152, 768)


def test_read_pdf_text_pages_and_page_ranges(server: WireServer, ws: Path) -> None:
    server.push(
        Reply(tool_calls=(ToolCall("read_pdf", {"path": "report.pdf", "pages": "2"}),)),
        Reply(text="done"),
    )
    Agent(anthropic(server), tools=documents(ws)).run_sync("Read page 2")
    turn = server.bodies[1]["messages"][-1]["content"][0]
    assert isinstance(turn["content"], str)  # text only: no image blocks
    assert "showing page 2" in turn["content"] and "[page 2]\nCosts fell" in turn["content"]
    assert "Revenue" not in turn["content"]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ({"path": "broken.pdf"}, "broken.pdf' cannot be read as a PDF: it is truncated"),
        ({"path": "report.pdf", "pages": "9"}, "out of range: the PDF has 2 pages"),
        ({"path": "../outside.pdf"}, "is outside the workspace"),
        ({"path": "photo.png"}, "cannot be read as a PDF: it is not a PDF"),
    ],
)
def test_bad_pdfs_are_error_observations(
    server: WireServer, ws: Path, call: dict[str, str], expected: str
) -> None:
    (ws.parent / "outside.pdf").write_bytes(media_files.text_pdf(["secret"]))
    server.push(Reply(tool_calls=(ToolCall("read_pdf", call),)), Reply(text="gave up"))
    result = Agent(anthropic(server), tools=documents(ws)).run_sync("Read it")
    assert result.status == "completed"
    turn = server.bodies[1]["messages"][-1]["content"][0]
    assert turn["is_error"] is True and expected in turn["content"]
    assert "secret" not in turn["content"]


def test_bomb_and_symlink_images_are_refused(server: WireServer, ws: Path) -> None:
    (ws.parent / "outside.png").write_bytes(media_files.png(10, 10))
    (ws / "link.png").symlink_to(ws.parent / "outside.png")
    server.push(
        Reply(
            tool_calls=(
                ToolCall("read_image", {"path": "bomb.png"}),
                ToolCall("read_image", {"path": "link.png"}),
            )
        ),
        Reply(text="no"),
    )
    Agent(anthropic(server), tools=documents(ws)).run_sync("Look")
    first, second = server.bodies[1]["messages"][-1]["content"]
    assert first["is_error"] and "50000x50000 pixels" in first["content"]
    assert second["is_error"] and "outside the workspace" in second["content"]


def test_images_are_counted_by_size_and_dropped_when_shortened() -> None:
    small = Image.from_bytes(media_files.png(200, 150))
    large = Image.from_bytes(media_files.png(3000, 2000))
    assert estimate_tokens(UserMessage(parts=(small,))) == 40 + 4
    assert 1500 <= estimate_tokens(UserMessage(parts=(large,))) - 4 <= 1540
    result = ToolResultPart(call_id="c", name="shot", content="see", images=(large,))
    assert estimate_tokens(UserMessage(parts=(result,))) > 1500


def test_cli_attach_sends_the_files(server: WireServer, ws: Path, tmp_path: Path) -> None:
    server.push(Reply(text="A picture and a report."))
    env = {k: v for k, v in os.environ.items() if k not in ("LOOPWISE_MODEL", "COLUMNS")}
    env.update(
        ANTHROPIC_BASE_URL=server.url, ANTHROPIC_API_KEY="k", LOOPWISE_DATA_DIR=str(tmp_path)
    )
    done = subprocess.run(
        [sys.executable, "-m", "loopwise", "run", "Describe", "-m", "anthropic:claude-test",
         "--attach", str(ws / "photo.jpg"), "--attach", str(ws / "report.pdf")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "A picture and a report." in done.stdout
    content = server.bodies[0]["messages"][0]["content"]
    assert [b["type"] for b in content] == ["text", "image", "document"]
    bad = subprocess.run(
        [sys.executable, "-m", "loopwise", "run", "x", "-m", "anthropic:claude-test",
         "--attach", str(ws / "broken.pdf")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "truncated" in bad.stderr
