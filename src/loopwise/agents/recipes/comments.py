"""Where a source file's comments are, so a TODO/FIXME scan counts notes, not strings.

Python files are read with :mod:`tokenize` (a docstring is a string, not a comment); other
common languages with a conservative comment-syntax table (``#``, ``//``, ``/* */``,
``--``, ``<!-- -->``) and a scanner that skips their string literals. A marker counts
only inside a comment, as a whole word and not inside a URL; a file of a type not in the
table has no comments here, so its matches are left out rather than guessed at.
"""

from __future__ import annotations

import bisect
import functools
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["MARKERS", "Syntax", "comment_lines", "syntax_for"]

MARKERS = re.compile(r"(?<![A-Za-z0-9_])(?:TODO|FIXME)s?(?![A-Za-z0-9_])")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")


@dataclass(frozen=True, slots=True)
class Quote:
    """A string literal: its delimiters, whether ``\\`` escapes, whether it spans lines."""

    open: str
    close: str
    escapes: bool = True
    multiline: bool = False


@dataclass(frozen=True, slots=True)
class Syntax:
    """A language's comments and the string literals that can hide comment openers."""

    line: tuple[str, ...] = ()
    block: tuple[tuple[str, str], ...] = ()
    quotes: tuple[Quote, ...] = ()
    hash_after_space: bool = False  # "#" opens a comment only at a line start or after space
    char_literals: bool = False  # "'x'" is a character, a lone "'" (a Rust lifetime) is not


_DQ, _SQ = Quote('"', '"'), Quote("'", "'")
_C_LIKE = Syntax(line=("//",), block=(("/*", "*/"),), quotes=(_DQ,), char_literals=True)
_JS = Syntax(
    line=("//",),
    block=(("/*", "*/"),),
    quotes=(Quote("`", "`", multiline=True), _DQ, _SQ),
)
_GO = Syntax(
    line=("//",),
    block=(("/*", "*/"),),
    quotes=(Quote("`", "`", escapes=False, multiline=True), _DQ),
    char_literals=True,
)
_RUST = Syntax(
    line=("//",),
    block=(("/*", "*/"),),
    quotes=(
        Quote('r#"', '"#', escapes=False, multiline=True),
        Quote('r"', '"', escapes=False, multiline=True),
        Quote('"', '"', multiline=True),
    ),
    char_literals=True,
)
_TRIPLE = (
    Quote('"""', '"""', multiline=True),
    Quote("'''", "'''", multiline=True),
    _DQ,
    _SQ,
)
_PYTHON_TEXT = Syntax(line=("#",), quotes=_TRIPLE)  # when tokenize cannot read the file
_HASH = Syntax(line=("#",), quotes=(_DQ, _SQ), hash_after_space=True)
_SHELL = Syntax(
    line=("#",),
    quotes=(Quote('"', '"', multiline=True), Quote("'", "'", escapes=False, multiline=True)),
    hash_after_space=True,
)
_SQL = Syntax(line=("--",), block=(("/*", "*/"),), quotes=(Quote("'", "'", escapes=False), _DQ))
_LUA = Syntax(line=("--",), block=(("--[[", "]]"),), quotes=(_DQ, _SQ))
_HASKELL = Syntax(line=("--",), block=(("{-", "-}"),), quotes=(_DQ,))
_MARKUP = Syntax(block=(("<!--", "-->"),))  # text, not code: quotes are just characters
_CSS = Syntax(block=(("/*", "*/"),), quotes=(_DQ, _SQ))
_SCSS = Syntax(line=("//",), block=(("/*", "*/"),), quotes=(_DQ, _SQ))

_BY_SUFFIX: dict[str, Syntax] = {
    **dict.fromkeys(
        ".c .h .cc .cpp .cxx .hpp .hh .java .cs .kt .kts .scala .swift .dart .m .mm .groovy "
        ".gradle .proto .zig .v .sv".split(),
        _C_LIKE,
    ),
    **dict.fromkeys(".js .jsx .mjs .cjs .ts .tsx .mts .cts .php".split(), _JS),
    ".go": _GO,
    ".rs": _RUST,
    **dict.fromkeys(".py .pyi .pyw".split(), _PYTHON_TEXT),
    **dict.fromkeys(
        ".rb .pl .pm .r .yaml .yml .toml .cfg .conf .ini .tf .nix .jl .ex .exs .cmake "
        ".coffee .ps1 .mk".split(),
        _HASH,
    ),
    **dict.fromkeys(".sh .bash .zsh .ksh .fish".split(), _SHELL),
    **dict.fromkeys(".sql .ada .adb .ads".split(), _SQL),
    ".lua": _LUA,
    **dict.fromkeys(".hs .lhs .elm".split(), _HASKELL),
    **dict.fromkeys(".html .htm .xml .xhtml .svg .vue .svelte .md .markdown".split(), _MARKUP),
    ".css": _CSS,
    **dict.fromkeys(".scss .less".split(), _SCSS),
}
_BY_NAME: dict[str, Syntax] = {
    "makefile": _HASH,
    "gnumakefile": _HASH,
    "dockerfile": _HASH,
    "containerfile": _HASH,
    "cmakelists.txt": _HASH,
    "jenkinsfile": _C_LIKE,
    ".gitignore": _HASH,
    ".dockerignore": _HASH,
    ".bashrc": _SHELL,
    ".profile": _SHELL,
}


def syntax_for(path: str) -> Syntax | None:
    """The comment syntax of a file by its name, or None for a type not in the table."""
    name = PurePosixPath(path).name.lower()
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith("dockerfile.") or name.endswith(".dockerfile"):
        return _HASH
    return _BY_SUFFIX.get(PurePosixPath(name).suffix)


def comment_lines(path: str, text: str) -> set[int]:
    """The 1-based numbers of the lines (counted by ``\\n``, as git does) on which a marker
    stands inside a comment of ``text``, the content of ``path``."""
    if PurePosixPath(path).suffix.lower() in (".py", ".pyi", ".pyw"):
        found = _python_comment_lines(text)
        if found is not None:
            return found
    syntax = syntax_for(path)
    if syntax is None:
        return set()
    offsets = [
        start + m.start()
        for start, end in comment_spans(text, syntax)
        for m in _markers(text[start:end])
    ]
    if not offsets:
        return set()
    newlines = [m.start() for m in re.finditer("\n", text)]
    return {bisect.bisect_left(newlines, offset) + 1 for offset in offsets}


def _markers(comment: str) -> list[re.Match[str]]:
    """The markers in a comment's text that are not part of a URL."""
    urls = [(u.start(), u.end()) for u in _URL.finditer(comment)]
    return [m for m in MARKERS.finditer(comment) if not any(a <= m.start() < b for a, b in urls)]


def _python_comment_lines(text: str) -> set[int] | None:
    """Lines with a marker in a ``#`` comment token; None when tokenize cannot read it."""
    lines: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT and _markers(token.string):
                lines.add(token.start[0])
    except (tokenize.TokenError, SyntaxError):
        return None
    return lines


def comment_spans(text: str, syntax: Syntax) -> list[tuple[int, int]]:
    """The (start, end) offsets of every comment in ``text``, string literals skipped."""
    spans: list[tuple[int, int]] = []
    starts = _starts(syntax)
    i, n = 0, len(text)
    while i < n:
        jump = starts.search(text, i)
        if jump is None:
            break
        i = jump.start()
        found = _comment_at(text, i, syntax)
        if found is not None:
            spans.append(found)
            i = max(found[1], i + 1)
            continue
        i = _after_string(text, i, syntax)
    return spans


@functools.lru_cache(maxsize=64)
def _starts(syntax: Syntax) -> re.Pattern[str]:
    """Where a comment or a string literal may start (the scanner jumps between these)."""
    openers = [o for o, _ in syntax.block] + list(syntax.line) + [q.open for q in syntax.quotes]
    openers += ["'"] * syntax.char_literals
    return re.compile("|".join(re.escape(o) for o in sorted(set(openers), key=len, reverse=True)))


def _comment_at(text: str, i: int, syntax: Syntax) -> tuple[int, int] | None:
    """The comment that starts at ``i``, if one does."""
    for opener, closer in syntax.block:
        if text.startswith(opener, i):
            end = text.find(closer, i + len(opener))
            return (i, len(text) if end < 0 else end + len(closer))
    for opener in syntax.line:
        if not text.startswith(opener, i):
            continue
        if opener == "#" and syntax.hash_after_space and i > 0 and not text[i - 1].isspace():
            return None
        end = text.find("\n", i)
        return (i, len(text) if end < 0 else end)
    return None


def _after_string(text: str, i: int, syntax: Syntax) -> int:
    """The offset after the string literal that starts at ``i``, or ``i + 1``."""
    if syntax.char_literals and text[i] == "'":
        return _after_char(text, i)
    for quote in syntax.quotes:
        if text.startswith(quote.open, i):
            return _string_end(text, i + len(quote.open), quote)
    return i + 1


def _after_char(text: str, i: int) -> int:
    """A character literal (``'a'``, ``'\\n'``, ``'\\u{1F600}'``) is skipped; a lone
    quote (a lifetime, an apostrophe) is one character."""
    found = re.compile(r"'(?:\\[^\n]{1,10}?|[^\\'\n]{1,2})'").match(text, i)
    return found.end() if found else i + 1


def _string_end(text: str, i: int, quote: Quote) -> int:
    """The offset after the closing delimiter (or the line's end, for a one-line string)."""
    stops = _stops(quote)
    while True:
        found = stops.search(text, i)
        if found is None:
            return len(text)
        if found.group() == "\\":
            i = found.end() + 1
        elif found.group() == "\n":
            return found.start()
        else:
            return found.end()


@functools.lru_cache(maxsize=64)
def _stops(quote: Quote) -> re.Pattern[str]:
    """What can end or escape inside a string literal of this kind."""
    stops = [re.escape(quote.close)]
    stops += [r"\\"] * quote.escapes + [r"\n"] * (not quote.multiline)
    return re.compile("|".join(stops))
