"""Secrets a run has seen, and whether a call's arguments carry one: verbatim, URL-, base64-,
base32- or hex-encoded, with separators between its characters, reversed, or in pieces
spread over several calls."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import unquote_plus

__all__ = ["SecretTracker", "env_secrets", "is_secret_path", "secret_values"]

_SECRET_PATH = re.compile(
    r"(?:^|[/\s'\"=])(?:\.env(?:\.[\w.-]+)?|[\w.-]+\.env|\.netrc|\.npmrc|\.pypirc|"
    r"\.git-credentials|\.htpasswd|id_(?:rsa|dsa|ecdsa|ed25519)|[\w.-]+\.(?:pem|key|p12|pfx)|"
    r"credentials(?:\.json)?|secrets?\.(?:json|ya?ml|toml|txt|env))(?:$|[\s'\";|&])"
    r"|(?:^|[/\s'\"])\.(?:aws|ssh|gnupg|docker|kube)/",
    re.I,
)
_KEY_LINE = re.compile(
    r"^[ \t]*(?:export[ \t]+)?([A-Za-z_][\w.-]*)[ \t]*[=:][ \t]*['\"]?([^\s'\"#]{6,})", re.M
)
_NAMES = r"secret|token|passw|pwd|api[_-]?key|private|credential|access[_-]?key|passport"
_NAMES += r"|credit[_ -]?card|card[_ -]?number|cvv|ssn|social[_ -]?security"
_SECRET_NAME = re.compile(_NAMES, re.I)
_PAIR = re.compile(
    rf"(?:{_NAMES})[\w .-]{{0,30}}['\"]?[ \t]*[=:][ \t]*['\"]?([^\s'\",}}#]{{6,}})", re.I
)
_TOKENS = re.compile(
    r"sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|AKIA[0-9A-Z]{16}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[\w-]{30,}|glpat-[\w-]{20,}"
    r"|eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]{10,}"
)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----(.*?)-----END", re.S)
_B64 = re.compile(r"[A-Za-z0-9+/_-]{6,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){4,}")
_B32 = re.compile(r"[A-Z2-7]{8,}=*")
_ALNUM = re.compile(r"[^0-9a-z]")
MIN_SECRET = 6
WINDOW = 4


_PATH_HINTS = (
    "env", "netrc", "npmrc", "pypirc", "credentials", "htpasswd", "id_", ".pem", ".key",
    ".p12", ".pfx", "secret", ".aws/", ".ssh/", ".gnupg/", ".docker/", ".kube/",
)  # fmt: skip


def is_secret_path(text: str) -> bool:
    """Whether a path or a command names a secret-bearing file (``.env``, keys, credentials)."""
    low = text.lower()
    return any(h in low for h in _PATH_HINTS) and bool(_SECRET_PATH.search(text))


def secret_values(text: str, *, from_secret_file: bool) -> list[str]:
    """The secret values in ``text``: every ``KEY=value`` of a secret file (else only keys
    named like secrets), well-known token formats, private key bodies."""
    found = [m.group(0) for m in _TOKENS.finditer(text)] if _has_token_prefix(text) else []
    low = text.lower()
    if from_secret_file or any(w in low for w in _NAME_WORDS):
        for m in _KEY_LINE.finditer(text):
            if from_secret_file or _SECRET_NAME.search(m.group(1)):
                found.append(m.group(2))
        found.extend(m.group(1) for m in _PAIR.finditer(text))  # "Card Number": "X", JSON, YAML
    if "PRIVATE KEY-----" in text:
        for m in _PEM.finditer(text):
            found.extend(line for line in m.group(1).split() if len(line) >= 16)
    if from_secret_file and not found:
        found = [w for w in text.split() if len(w) >= 16][:200]
    return [v for v in dict.fromkeys(found) if len(_norm(v)) >= MIN_SECRET]


_TOKEN_PREFIXES = (
    "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "AKIA", "xox", "AIza",
    "glpat-", "eyJ",
)  # fmt: skip
_NAME_WORDS = (
    "secret", "token", "passw", "pwd", "api", "access", "private", "credential", "passport", "card",
    "cvv", "ssn", "social",
)  # fmt: skip


def _has_token_prefix(text: str) -> bool:
    """A cheap first look: does any well-known token's prefix occur at all?"""
    return any(p in text for p in _TOKEN_PREFIXES)


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of this process's environment variables named like secrets."""
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if _SECRET_NAME.search(k) and len(_norm(v)) >= 8]


def _norm(text: str) -> str:
    return _ALNUM.sub("", text.lower())


def _decoded(text: str) -> Iterator[str]:
    """``text`` and what it decodes to: URL escapes (nested), base64, base32, hex."""
    seen = text
    yield text
    for _ in range(3):
        once = unquote_plus(seen)
        if once == seen:
            break
        seen = once
        yield once
    for source in {text, seen}:
        for m in _B64.finditer(source):
            chunk = m.group(0).rstrip("=")
            for alt in (chunk, chunk.replace("-", "+").replace("_", "/")):
                try:
                    yield base64.b64decode(alt + "=" * (-len(alt) % 4)).decode("latin-1")
                except (binascii.Error, ValueError):
                    pass
        for m in _B32.finditer(source):
            chunk = m.group(0).rstrip("=")
            try:
                yield base64.b32decode(chunk + "=" * (-len(chunk) % 8)).decode("latin-1")
            except (binascii.Error, ValueError):
                pass
        for m in _HEX.finditer(source):
            yield bytes.fromhex(m.group(0)).decode("latin-1")


class SecretTracker:
    """The secrets one run has seen and what of each has already gone out (pieces)."""

    def __init__(self, values: Iterable[str] = ()):
        self.secrets: dict[str, bytearray] = {}
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        for v in values:
            n = _norm(v)
            if len(n) >= MIN_SECRET and n not in self.secrets:
                self.secrets[n] = bytearray(len(n))

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def carried(self, texts: Iterable[str], *, record: bool = True) -> str | None:
        """Why the texts carry a secret (one phrase), or ``None``; with ``record``, pieces of
        secrets found are remembered so that a secret sent in parts is caught."""
        if not self.secrets:
            return None
        forms = [_norm(d) for t in texts for d in _decoded(t)]
        blob = "\x00".join(f for f in forms if f)
        if not blob:
            return None
        for secret, covered in self.secrets.items():
            why = self._check(secret, covered, blob, record)
            if why:
                return why
        return None

    @staticmethod
    def _check(secret: str, covered: bytearray, blob: str, record: bool) -> str | None:
        if secret in blob or secret[::-1] in blob:
            return "a secret seen in this run, in plain or encoded form"
        hits = bytearray(len(secret))
        for i in range(len(secret) - WINDOW + 1):
            if secret[i : i + WINDOW] in blob:
                hits[i : i + WINDOW] = b"\x01" * WINDOW
        if not any(hits):
            return None
        if _longest_run(hits) >= min(len(secret), 8):
            return "a piece of a secret seen in this run"
        merged = bytearray(a | b for a, b in zip(covered, hits, strict=True))
        if record:
            covered[:] = merged
        if sum(merged) >= min(len(secret) // 2, 2 * WINDOW):
            return "pieces of a secret seen in this run, sent over several calls"
        return None


def _longest_run(hits: bytearray) -> int:
    run = best = 0
    for h in hits:
        run = run + 1 if h else 0
        best = max(best, run)
    return best
