"""Whether a model's summary says only what the report's facts say.

Checked: every number (digits, or a number word from two to twenty), every file name or
path, every error code or identifier (``E1234``, ``COVID-19``, ``ECONNREFUSED``,
``payment_service``, ``OrderWorker``) must appear in the facts; and most of its content
words must relate to them, so a summary about something else entirely is caught even when
it names nothing. A failed check is not repaired: the recipe uses its own summary.
"""

from __future__ import annotations

import re

__all__ = ["ungrounded"]

_NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "hundred": 100, "thousand": 1000,
    "dozen": 12, "twice": 2, "thrice": 3,
}  # fmt: skip
# Acronyms a summary may use without the facts spelling them out.
_ACRONYMS = frozenset(
    "API CPU RAM MB GB KB TB OS IO HTTP HTTPS URL DB SQL DNS TLS SSL JSON YAML UTC TODO "
    "FIXME ID PR CI CD OK AM PM UI CLI SHA README".split()
)
# Words of any technical summary, by their first five letters.
_GENERIC = frozenset(
    w[:5]
    for w in """
    error errors issue issues problem problems failure failures failed failing fails occurred
    occur occurring repeated repeatedly several multiple recent recently report summary found
    followed caused causing cause likely suggests suggest indicates indicate appears appear
    investigate investigation should would could check checked review reviewed address fixed
    there their these those which while during between before after since about around within
    without other another overall total number count counts most least first last latest
    single times period window active activity project repository commits authors files
    notes changes changed change modified system systems service services server servers
    incident incidents period highest lowest major minor version versions update updates
    upgrade upgrades behind current package packages dependency dependencies pinned latest
    memory usage space percent health healthy status result results action actions needed
    attention important critical priority immediate further ensure consider resolve
    resolved remaining across entries entry message messages timeline pattern patterns log
    logs logged lines""".split()
)
_STOP = frozenset(
    "about above after again against where which while their there these those would could "
    "should being having other every under until because through".split()
)
_TOKEN = re.compile(r"[^\s,;!?()\[\]{}<>\"'`*]+")
_NUMERIC = re.compile(r"[+-]?\d+(?:[.,:/-]\d+)*")
_UNIT = re.compile(r"([+-]?\d+(?:\.\d+)?)(%|ms|s|m|h|d|kb|mb|gb|tb|x|st|nd|rd|th)", re.I)
_LIST_MARK = re.compile(r"(?m)^\s*(?:[-*•]|\d+[.)])\s+")
_SEPARATORS = re.compile(r"[.,:/-]")
_FILE = re.compile(r"\w[\w-]*\.[A-Za-z][A-Za-z0-9]{0,7}")
_SERVICE_PARTS = frozenset(
    "service svc server api worker db daemon gateway proxy queue cache cluster node pod "
    "app backend frontend job cron".split()
)


def ungrounded(text: str, facts: str) -> list[str]:
    """What ``text`` claims that ``facts`` does not hold, each quoted; empty if none."""
    numbers = _fact_numbers(facts)
    lowered = facts.lower()
    text = _LIST_MARK.sub("", text)
    missing: list[str] = []
    for raw in _TOKEN.findall(text):
        token = raw.strip(".:")
        if token and not _grounded(token, numbers, lowered):
            missing.append(repr(token))
    off = _off_topic(text, lowered)
    if off:
        missing.append(f"words unrelated to the facts ({', '.join(off)})")
    return list(dict.fromkeys(missing))


def _grounded(token: str, numbers: set[str], facts: str) -> bool:
    """Whether one token of the summary is a claim the facts hold (or no claim at all)."""
    word = token.lower()
    spelled = [_NUMBER_WORDS[w] for w in word.split("-") if w in _NUMBER_WORDS]
    if spelled:  # "three", "five-minute", "twenty-two" (checked word by word)
        return all(str(n) in numbers for n in spelled)
    if _NUMERIC.fullmatch(token):
        return _number(token) in numbers
    unit = _UNIT.fullmatch(token)
    if unit:
        return _number(unit[1]) in numbers
    if _is_claim(token):
        return _contains(facts, word)
    return True


def _is_claim(token: str) -> bool:
    """A file name, path, error code or identifier: something the facts must name."""
    if token.upper() in _ACRONYMS or len(token) < 2:
        return False
    if any(c.isdigit() for c in token) or "_" in token or "/" in token:
        return True
    if _FILE.fullmatch(token) and not re.fullmatch(r"(?:[a-z]\.)+[a-z]?", token, re.I):
        return True  # app.log, db.py; not "e.g" / "i.e"
    if token.isupper() or re.search(r"[a-z][A-Z]", token):
        return True  # ECONNREFUSED, OrderWorker
    parts = token.lower().split("-")
    return len(parts) > 1 and bool(_SERVICE_PARTS & set(parts))  # payment-api


def _contains(facts: str, word: str) -> bool:
    return word in facts or word.replace("-", " ") in facts


def _number(token: str) -> str:
    text = token.lstrip("+")
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", text):  # 1,234 is one thousand two hundred ...
        text = text.replace(",", "")
    if re.fullmatch(r"-?\d+\.\d+", text):
        text = text.rstrip("0").rstrip(".")
    return text


def _fact_numbers(facts: str) -> set[str]:
    """Every number in the facts, with the pieces and prefixes of dotted or timed ones
    (``10.0.0.5:5432`` gives ``5432`` and ``10.0.0.5``) and decimals rounded."""
    found: set[str] = set()
    for token in _NUMERIC.findall(facts):
        found.add(_number(token))
        if re.fullmatch(r"\d+\.\d+", token):  # a decimal: itself, and rounded
            value = float(token)
            found.update({str(round(value)), f"{value:.1f}".rstrip("0").rstrip(".")})
            continue
        pieces = _SEPARATORS.split(token)
        cuts = [m.start() for m in _SEPARATORS.finditer(token)]
        found.update(p.lstrip("0") or "0" for p in pieces)
        found.update(pieces)
        found.update(token[:cut] for cut in cuts)
        found.update(token[cut + 1 :] for cut in cuts)
    return found


def _off_topic(text: str, facts: str) -> list[str]:
    """The summary's content words unrelated to the facts, when they are most of them."""
    words = [w for w in re.findall(r"[a-z]{5,}", text.lower()) if w not in _STOP]
    if len(words) < 4:
        return []
    stems = {w[:5] for w in re.findall(r"[a-z]{5,}", facts)}
    unrelated = [w for w in words if w[:5] not in stems and w[:5] not in _GENERIC]
    if len(unrelated) * 2 <= len(words):
        return []
    return list(dict.fromkeys(unrelated))[:5]
