"""Response bodies as text a model can read: HTML as Markdown, JSON indented, text as is.

HTML goes through Beautiful Soup (scripts, styles, navigation and forms dropped) and
markdownify; both are imported on first use and belong to the ``http`` extra.
"""

from __future__ import annotations

import codecs
import json
import re
from importlib.util import find_spec
from typing import Literal
from urllib.parse import urljoin

from ..errors import UsageError

__all__ = ["Kind", "decode", "kind_of", "require_html_libraries", "to_text"]

Kind = Literal["html", "json", "text", "binary", "unknown"]

_TEXT_TYPES = frozenset(
    {
        "application/xml",
        "application/javascript",
        "application/ecmascript",
        "application/x-javascript",
        "application/x-www-form-urlencoded",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/sql",
        "application/graphql",
        "application/csv",
        "application/x-sh",
        "application/x-ndjson",
        "application/jsonl",
    }
)
_DROPPED_TAGS = [
    "script", "style", "noscript", "template", "iframe", "svg", "canvas", "object", "embed",
    "nav", "footer", "aside", "form", "button", "select", "input", "textarea", "link", "meta",
]  # fmt: skip
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_INSTALL_HINT = "pip install 'loopwise[http]'"


def require_html_libraries() -> None:
    """Fail early, for the developer, when the ``http`` extra is not installed."""
    missing = [m for m in ("bs4", "markdownify") if find_spec(m) is None]
    if missing:
        raise UsageError(
            f"The http toolkit needs {' and '.join(missing)}; install them with {_INSTALL_HINT}."
        )


def kind_of(media_type: str | None) -> Kind:
    """How to show a body of this media type (``None``: no Content-Type was sent)."""
    if media_type is None:
        return "unknown"
    media = media_type.lower()
    if media in ("text/html", "application/xhtml+xml"):
        return "html"
    if media in ("application/json", "text/json") or media.endswith("+json"):
        return "json"
    if media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+xml", "+yaml")):
        return "text"
    return "binary"


def sniff(body: bytes) -> Kind:
    """Guess text or binary for a body sent without a Content-Type."""
    head = body[:4096]
    if b"\x00" in head:
        return "binary"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:
            return "binary"
    lowered = head.lstrip()[:200].lower()
    return "html" if lowered.startswith((b"<!doctype html", b"<html")) else "text"


def decode(body: bytes, charset: str | None, kind: Kind) -> str:
    """Decode with the declared charset (or an HTML ``<meta charset>``), else UTF-8."""
    if charset is None and kind == "html":
        found = _META_CHARSET.search(body[:4096])
        charset = found.group(1).decode("ascii") if found else None
    try:
        codec = codecs.lookup(charset or "utf-8").name
    except LookupError:
        codec = "utf-8"
    return body.decode(codec, errors="replace")


def to_text(text: str, kind: Kind, base_url: str) -> str:
    """The decoded body as the model should read it."""
    if kind == "html":
        return html_to_markdown(text, base_url)
    if kind == "json":
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            return text
    return text


def html_to_markdown(html: str, base_url: str) -> str:
    """Readable Markdown: title, headings, links (made absolute), lists, tables, code."""
    try:
        from bs4 import BeautifulSoup, Tag
        from markdownify import MarkdownConverter
    except ImportError:
        require_html_libraries()
        raise
    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all([*_DROPPED_TAGS, "title"]):
        tag.decompose()
    for tag in soup.find_all(hidden=True):
        tag.decompose()
    main = soup.find("main")
    root: Tag = main if isinstance(main, Tag) else (soup.body or soup)
    for link in root.find_all("a", href=True):
        href = link.get("href")
        if isinstance(href, str):
            link["href"] = urljoin(base_url, href)
    converter = MarkdownConverter(
        heading_style="ATX",
        bullets="-",
        strip=["img"],
        escape_asterisks=False,
        escape_underscores=False,
        table_infer_header=True,
    )
    text = converter.convert_soup(root)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return f"Title: {title}\n\n{text}" if title else text
