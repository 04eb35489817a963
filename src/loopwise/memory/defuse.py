"""Text from memory made inert for a prompt, in every Unicode normal form: no invisible
characters, no angle bracket (so no closing tag and no ``<|...|>`` chat-template token), no
``[INST]``-style control token; and a folded form of text for the wording signal."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["LEFT", "RIGHT", "defuse", "one_line", "skeleton", "strip_invisible"]

# What every "<"-like and ">"-like character becomes: single angle quotation marks, which
# no normal form turns back into a bracket.
LEFT = "\u2039"
RIGHT = "\u203a"
_JOINERS = "\u200c\u200d"  # kept between two non-ASCII characters (emoji, Indic, Persian)
_VISIBLE_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5")
# Bracket look-alikes no normal form folds to "<" or ">"; they read as one all the same.
_LEFT_LIKE = frozenset("\u02c2\u1438\u27e8\u276e\u276c\u2770\u29fc\u3008\u2329")
_RIGHT_LIKE = frozenset("\u02c3\u1433\u27e9\u276f\u276d\u2771\u29fd\u3009\u232a")
_ESCAPED_LEFT = re.compile(r"&(?:lt|#0*60|#x0*3c);|\\(?:u003c|x3c)", re.IGNORECASE)
_ESCAPED_RIGHT = re.compile(r"&(?:gt|#0*62|#x0*3e);|\\(?:u003e|x3e)", re.IGNORECASE)
# [INST], [/INST], [TOOL_CALLS], [SYSTEM_PROMPT], [gMASK]: control tokens of chat templates.
_CONTROL_WORD = re.compile(r"\[(\s*/?\s*[A-Za-z][A-Za-z0-9_]{0,39}\s*)\]")


def _invisible(ch: str) -> bool:
    if ch in _VISIBLE_BLANKS:
        return True
    category = unicodedata.category(ch)
    if category in ("Cf", "Zl", "Zp") or (category == "Cc" and ch != "\t"):
        return True
    code = ord(ch)
    return 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF  # variation selectors


def strip_invisible(text: str) -> tuple[str, int]:
    """``text`` without invisible characters (format, control, tag characters, variation
    selectors, blank fillers), and how many went. A zero-width joiner between two non-ASCII
    characters stays (emoji sequences, Indic and Persian text)."""
    out: list[str] = []
    removed = 0
    for i, ch in enumerate(text):
        if ch in _JOINERS and 0 < i < len(text) - 1:
            if not text[i - 1].isascii() and not text[i + 1].isascii() and out:
                out.append(ch)
                continue
        if _invisible(ch):
            removed += 1
        else:
            out.append(ch)
    return "".join(out), removed


def _fold(ch: str) -> str:
    """One character made safe: anything that is, or decomposes to, an angle bracket."""
    if ch.isascii():
        return LEFT if ch == "<" else RIGHT if ch == ">" else ch
    if ch in _LEFT_LIKE:
        return LEFT
    if ch in _RIGHT_LIKE:
        return RIGHT
    decomposed = unicodedata.normalize("NFKD", ch)
    if decomposed == ch:
        return ch
    if "<" in decomposed:
        return LEFT
    if ">" in decomposed:
        return RIGHT
    if decomposed in ("[", "]"):  # full-width brackets: folded so the check below sees them
        return decomposed
    return ch


def _control_word(found: re.Match[str]) -> str:
    inner = found[1]
    if any(c.isupper() or c == "_" for c in inner):
        return f"\u27e6{inner}\u27e7"  # white square brackets
    return found[0]


def defuse(line: str) -> str:
    """One line of quoted text, inert: see the module docstring. ``line`` has no breaks."""
    line = _ESCAPED_LEFT.sub(LEFT, line)
    line = _ESCAPED_RIGHT.sub(RIGHT, line)
    line = "".join(_fold(ch) for ch in line)
    return _CONTROL_WORD.sub(_control_word, line)


def one_line(text: str) -> str:
    """``text`` defused onto a single line (every line break becomes a space)."""
    visible, _ = strip_invisible(" ".join(text.splitlines()))
    return defuse(visible)


# -- the folded form for the wording signal ---------------------------------------------

_CONFUSABLES = str.maketrans(
    "аеорсухіјѕһԁԛԝɡАВЕКМНОРСТХІЈЅαονρικτυΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijshdqwgABEKMHOPCTXIJSaovpiktuABEZHIKMNOPTYX",
)


def skeleton(text: str) -> str:
    """``text`` folded for matching words: compatibility forms, no invisible characters or
    accents, Cyrillic and Greek look-alikes as Latin letters, lower case, single spaces."""
    visible, _ = strip_invisible(text)
    decomposed = unicodedata.normalize("NFKD", visible)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.translate(_CONFUSABLES).casefold().split())
