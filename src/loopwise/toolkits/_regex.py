"""Regular expressions from the model, matched in linear time by RE2 (``google-re2``).

Python's ``re`` backtracks: ``(a|a)*c`` on a line of 30,000 ``a`` runs for hours, in C,
holding the GIL, so one tool call freezes every thread and the event loop. RE2 matches in
time linear in the text (and releases the GIL), at the price of the features that need
backtracking: backreferences, lookaround, atomic groups and possessive repeats are refused
with a sentence saying so. Python spellings RE2 lacks are translated (``\\Z``, ``{,n}``,
``\\uXXXX``).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol

from ..errors import ModelRetry

__all__ = [
    "MAX_PATTERN_CHARS",
    "Regex",
    "compile_glob",
    "compile_pattern",
    "re2_home",
    "re2_module",
    "translate",
]

MAX_PATTERN_CHARS = 2_000
_MAX_MEM = 4 << 20
"""RE2's memory for one compiled pattern: bounds the program, and so the time per character."""
_HEX = frozenset("0123456789abcdefABCDEF")


class Regex(Protocol):
    """The part of a compiled RE2 pattern the tools use."""

    def search(self, text: str) -> Any: ...

    def fullmatch(self, text: str) -> Any: ...


def re2_module() -> Any:
    """The ``re2`` module, or a ModelRetry telling the model the setup lacks it."""
    try:
        return importlib.import_module("re2")
    except ImportError:
        raise ModelRetry(
            "Regular expressions cannot be used here: the google-re2 package is not "
            "installed (pip install google-re2). This is a setup problem; tell the user."
        ) from None


def re2_home() -> str | None:
    """The directory to put on ``sys.path`` to import ``re2`` (for a child process), or None."""
    try:
        module = importlib.import_module("re2")
    except ImportError:
        return None
    return os.path.dirname(os.path.dirname(os.path.abspath(module.__file__ or "")))


def compile_pattern(pattern: str, *, ignore_case: bool = False) -> Regex:
    """``pattern`` (Python syntax) compiled by RE2, or a ModelRetry saying what to change."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ModelRetry(
            f"The regular expression is {len(pattern)} characters long, over the limit of "
            f"{MAX_PATTERN_CHARS}; use a shorter pattern."
        )
    compiled = _compile(translate(pattern), ignore_case=ignore_case, dot_nl=False)
    if isinstance(compiled, str):
        raise ModelRetry(_refusal(pattern, compiled))
    return compiled


def compile_glob(regex: str, glob: str) -> Regex:
    """The regular expression ``regex`` made from the glob ``glob``, compiled by RE2."""
    compiled = _compile(regex, ignore_case=False, dot_nl=True)
    if isinstance(compiled, str):
        raise ModelRetry(f"The glob {_shown(glob)} is invalid ({compiled}); fix it.")
    return compiled


def _compile(source: str, *, ignore_case: bool, dot_nl: bool) -> Regex | str:
    """The compiled pattern, or RE2's reason for refusing it."""
    re2 = re2_module()
    options = re2.Options()
    options.log_errors = False  # RE2 would print the pattern to stderr
    options.case_sensitive = not ignore_case
    options.dot_nl = dot_nl
    options.max_mem = _MAX_MEM
    try:
        compiled: Regex = re2.compile(source, options)
    except re2.error as exc:
        return _message(exc)
    return compiled


def _shown(text: str) -> str:
    return repr(text if len(text) <= 200 else text[:200] + "...")


def _message(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else ""
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def translate(pattern: str) -> str:
    """Python spellings RE2 lacks, rewritten: ``\\Z``, ``{,n}``, ``\\uXXXX``, ``\\UXXXXXXXX``."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            escape, i = _escape(pattern, i)
            out.append(escape)
            continue
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            i += 1
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):  # a leading "]" is a literal
                out.append("\\]")
                i += 1
            continue
        if c == "]" and in_class:
            in_class = False
        elif c == "{" and not in_class and pattern.startswith("{,", i):
            end = pattern.find("}", i)
            if end > i + 2 and pattern[i + 2 : end].isdigit():
                out.append("{0," + pattern[i + 2 : end] + "}")
                i = end + 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _escape(pattern: str, i: int) -> tuple[str, int]:
    """The RE2 spelling of the escape at ``pattern[i]`` (a backslash) and where it ends."""
    c = pattern[i + 1]
    if c == "Z":
        return "\\z", i + 2
    width = {"u": 4, "U": 8}.get(c, 0)
    digits = pattern[i + 2 : i + 2 + width]
    if width and len(digits) == width and set(digits) <= _HEX:
        return "\\x{" + digits + "}", i + 2 + width
    if c == "C":  # one byte in RE2, an error in Python: neither helps a search
        raise ModelRetry("\\C is not supported in a regular expression here; use '.' instead.")
    return pattern[i : i + 2], i + 2


_FEATURES = {
    "GROUPREF": "a backreference (like \\1 or (?P=name))",
    "GROUPREF_EXISTS": "a conditional group (like (?(1)a|b))",
    "ASSERT": "a lookahead or lookbehind (like (?=...) or (?<=...))",
    "ASSERT_NOT": "a negative lookahead or lookbehind (like (?!...) or (?<!...))",
    "ATOMIC_GROUP": "an atomic group (?>...)",
    "POSSESSIVE_REPEAT": "a possessive repeat (like a*+ or a++)",
}


def _refusal(pattern: str, reason: str) -> str:
    """One sentence: why ``pattern`` cannot be used and what to do instead."""
    shown = _shown(pattern)
    feature, invalid = _python_view(pattern)
    if invalid:
        return f"The regular expression {shown} is invalid ({invalid}); fix it and call again."
    if feature:
        return (
            f"The regular expression {shown} uses {feature}, which is not supported: "
            "patterns are matched in linear time (RE2 syntax, no backtracking); rewrite it "
            "without that, or search more broadly and filter the results yourself."
        )
    if "repetition" in reason:
        detail = "a counted repeat {n,m} allows at most 1000 (nested ones count together)"
    elif "too large" in reason or "too big" in reason:
        detail = "the pattern is too large once its repeats are expanded"
    else:
        detail = reason
    return (
        f"The regular expression {shown} cannot be used ({detail}); patterns use RE2 "
        "syntax (like Python's, without backreferences or lookaround); fix it and call again."
    )


def _python_view(pattern: str) -> tuple[str, str]:
    """The backtracking-only feature ``pattern`` uses as Python parses it, and Python's
    objection if it is invalid; "" for none."""
    parser: Any = importlib.import_module("re._parser")
    try:
        parsed = parser.parse(pattern)
    except RecursionError:
        return "", "it is nested too deeply"
    except Exception as exc:
        return "", str(exc)
    stack: list[Any] = [parsed]
    while stack:
        node = stack.pop()
        if isinstance(node, parser.SubPattern):
            stack.extend(node.data)
        elif isinstance(node, (list, tuple)):
            if len(node) == 2 and str(node[0]) in _FEATURES:
                return _FEATURES[str(node[0])], ""
            stack.extend(node)
    return "", ""
