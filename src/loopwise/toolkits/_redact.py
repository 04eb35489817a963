"""Secrets out of what the system tools show: command lines, log lines, messages.

Another process's command line may carry a key (``loopwise serve --api-key KEY``,
``mysql -pSECRET``, ``curl -u user:pass``); a log line may carry a bearer token. Before a
tool shows such text to the model it is passed through :func:`redact_text` (or
:func:`redact_argv` for a command line), which replaces the value, keeping the name:

- flags and ``NAME=value`` / ``"name": "value"`` pairs whose name looks secret (key,
  token, secret, password, auth, credential, private, session, cookie, signature...);
- a few programs' own short flags (``mysql -pX``, ``sshpass -p X``, ``redis-cli -a X``,
  ``curl -u user:X``, ``zip -P X``, ``docker login -p X``);
- the password (or a lone token) in a URL's userinfo, bearer and basic credentials;
- well-known token shapes (``sk-``, ``ghp_``, ``github_pat_``, ``xoxb-``, ``AKIA``, ``AIza``,
  ``glpat-``, ``hf_``, ``npm_``, ``lw_``, JWTs, PEM private keys);
- with ``entropy=True``, long strings that look random (24+ characters, letters and digits).

It is a best effort: a secret with no name, no known shape and little randomness stays.
The patterns are linear (bounded repeats), so hostile text cannot make them backtrack.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence

__all__ = ["REDACTED", "redact_argv", "redact_text"]

REDACTED = "[REDACTED]"

_SECRET_WORDS = frozenset(
    {"key", "keys", "apikey", "token", "tokens", "secret", "secrets", "password",
     "passwords", "passwd", "pass", "passin", "passout", "passphrase", "pwd", "pw", "auth",
     "oauth", "authorization", "credential", "credentials", "creds", "private", "privkey",
     "session", "sessionid", "sid", "cookie", "cookies", "signature", "sig", "jwt", "bearer",
     "otp", "pin", "dsn", "connstr"}
)  # fmt: skip
_SECRET_ENDINGS = ("key", "keys", "token", "tokens", "secret", "password", "passwd", "pwd")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")

_PAIR = re.compile(
    r"""(?<![A-Za-z0-9_.-])(?P<name>-{0,2}[A-Za-z_][A-Za-z0-9_.-]{0,80})(?P<q>["']?)"""
    r"""(?P<sep>[ \t]{0,3}(?::(?!//)|=)[ \t]{0,3})"""
    r"""(?P<val>"[^"\n]{0,4096}"|'[^'\n]{0,4096}'|[^\s&,;"'<>(){}\[\]]{1,4096})"""
)
_FLAG = re.compile(
    r"""(?P<name>(?<![\w-])--?[A-Za-z][A-Za-z0-9_.-]{0,80})(?P<sep>[ \t]{1,3})"""
    r"""(?P<val>"[^"\n]{0,4096}"|'[^'\n]{0,4096}'|[^\s"'-][^\s"']{0,4095})"""
)
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]{0,30}://)(?P<user>[^\s/@:?#]{1,512})"
    r"(?P<pw>:[^\s/@?#]{0,512})?@"
)
_AUTH = re.compile(
    r"(?i)\b(?P<scheme>bearer|basic|digest)(?P<sep>[ \t]{1,3})(?P<val>[A-Za-z0-9._~+/=:-]{8,4096})"
)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----")
_SHAPES = re.compile(
    r"\bsk-[A-Za-z0-9_-]{16,512}"
    r"|\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,256}"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,255}"
    r"|\bgithub_pat_[A-Za-z0-9_]{20,255}"
    r"|\bxox[abposre]-[A-Za-z0-9-]{10,255}"
    r"|\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"
    r"|\bAIza[0-9A-Za-z_-]{30,40}"
    r"|\bya29\.[0-9A-Za-z_-]{20,2048}"
    r"|\bglpat-[A-Za-z0-9_-]{20,255}"
    r"|\bhf_[A-Za-z0-9]{30,255}"
    r"|\bnpm_[A-Za-z0-9]{30,255}"
    r"|\bpypi-[A-Za-z0-9_-]{50,512}"
    r"|\blw_[A-Za-z0-9_-]{20,255}"
    r"|\beyJ[A-Za-z0-9_-]{5,4096}\.eyJ[A-Za-z0-9_-]{5,8192}\.[A-Za-z0-9_-]{0,4096}"
    r"|hooks\.slack\.com/services/[A-Za-z0-9/]{10,255}"
)
_RANDOM = re.compile(r"[A-Za-z0-9+_=-]{24,4096}")
_WORDLIKE = re.compile(r"[a-z]{4,}|[A-Z][a-z]{3,}")
_HARMLESS = frozenset(
    {"", "none", "null", "true", "false", "yes", "no", "0", "1", "bearer", "basic", "digest"}
)

_SHORT_FLAGS: dict[str, tuple[str, ...]] = {
    # program -> its short flags that carry a secret (attached "-pX", or the next argument)
    "mysql": ("-p",), "mysqldump": ("-p",), "mysqladmin": ("-p",), "mariadb": ("-p",),
    "mariadb-dump": ("-p",), "sshpass": ("-p",), "redis-cli": ("-a",), "zip": ("-P",),
    "unzip": ("-P",), "7z": ("-p",), "unrar": ("-p",), "sqlcmd": ("-P",), "curl": ("-u",),
    "smbclient": ("-U",), "ldapsearch": ("-w",), "ldapmodify": ("-w",), "ldapadd": ("-w",),
}  # fmt: skip
_ATTACHED_ONLY = frozenset({"mysql", "mysqldump", "mysqladmin", "mariadb", "mariadb-dump"})
"""Where a bare ``-p`` asks on the terminal, and the next argument is no password."""
_LOGIN_TOOLS = frozenset({"docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "oras"})


def secret_name(name: str) -> bool:
    """Whether a flag or variable name (``--api-key``, ``DB_PASSWORD``, ``apiKey``) names
    a secret, word by word."""
    for word in _WORD_SPLIT.split(name):
        w = word.lower()
        if w in _SECRET_WORDS or (len(w) > 3 and w.endswith(_SECRET_ENDINGS)):
            return True
    return False


def redact_text(text: str, *, entropy: bool = False) -> str:
    """``text`` with what looks like a secret replaced by ``[REDACTED]`` (names kept)."""
    text = _SHAPES.sub(REDACTED, _pem_keys(text))
    text = _USERINFO.sub(_userinfo, text)
    text = _AUTH.sub(_credentials, text)
    text = _FLAG.sub(_named, text)
    text = _PAIR.sub(_named, text)
    if entropy:
        text = _RANDOM.sub(_random, text)
    return text


def redact_argv(argv: Sequence[str]) -> str:
    """A command line (one string per argument) redacted, then joined with spaces."""
    program = os.path.basename(argv[0]) if argv else ""
    short = _SHORT_FLAGS.get(program, ())
    if program in _LOGIN_TOOLS and "login" in argv:
        short = ("-p",)
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next and not arg.startswith("--"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        if arg in short:
            hide_next = program not in _ATTACHED_ONLY
        elif any(arg.startswith(f) and len(arg) > len(f) for f in short):
            value = arg[2:]
            keep = value.split(":", 1)[0] + ":" if program == "curl" and ":" in value else ""
            arg = arg[:2] + keep + REDACTED
        elif arg.startswith("-") and "=" not in arg and len(arg) > 2 and secret_name(arg):
            hide_next = True
        elif program == "curl" and _previous(out) in ("--user", "--proxy-user"):
            user, colon, _ = arg.partition(":")
            arg = f"{user}:{REDACTED}" if colon else arg
        out.append(redact_text(arg, entropy=True))
    return " ".join(out)


def _pem_keys(text: str) -> str:
    """Private keys in PEM armour redacted, up to their end line (or the end of ``text``)."""
    out: list[str] = []
    pos = 0
    while (begin := _PEM_BEGIN.search(text, pos)) is not None:
        end = _PEM_END.search(text, begin.end())
        out.append(text[pos : begin.start()] + REDACTED)
        pos = end.end() if end else len(text)
    return "".join(out) + text[pos:] if out else text


def _previous(out: list[str]) -> str:
    return out[-1] if out else ""


def _named(m: re.Match[str]) -> str:
    value = m["val"].strip("\"'")
    if not secret_name(m["name"]) or value.lower() in _HARMLESS or value == REDACTED:
        return m[0]
    quote = m["val"][0] if m["val"][:1] in "\"'" else ""
    return f"{m[0][: m.start('val') - m.start()]}{quote}{REDACTED}{quote}"


def _credentials(m: re.Match[str]) -> str:
    val = m["val"]
    if val.isalpha() and (val.islower() or val[1:].islower()):
        return m[0]  # a word ("basic authentication"), not a credential
    return f"{m['scheme']}{m['sep']}{REDACTED}"


def _userinfo(m: re.Match[str]) -> str:
    if m["pw"]:
        return f"{m['scheme']}{m['user']}:{REDACTED}@"
    return f"{m['scheme']}{REDACTED}@"  # a lone user part is often a token


def _random(m: re.Match[str]) -> str:
    word = m[0]
    pieces = [p for p in re.split(r"[-_]", word) if p]
    if len(pieces) > 1 and any(_WORDLIKE.fullmatch(p) for p in pieces):
        return word  # words joined by dashes: an option or a file name
    if not (any(c.isdigit() for c in word) and any(c.isalpha() for c in word)):
        return word
    return REDACTED if _bits_per_char(word) >= 3.5 else word


def _bits_per_char(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())
