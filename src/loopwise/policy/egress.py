"""Egress allow-lists: the hosts and recipients a run may send to, and whether a call's
destinations are among them (URLs, e-mail addresses, bare host names, plain names)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["AllowList", "hosts_named", "named"]

_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_BARE = re.compile(r"^([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?::\d+)?(?:[/?#].*)?$")
_EMAIL = re.compile(r"^[^\s@]+@([A-Za-z0-9.-]+)$")
_NAMED_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]{0,15}://[^\s\"'<>`)\]]+")
_NAMED_HOST = re.compile(r"(?<![\w@.-])((?:[a-z0-9-]+\.)+[a-z]{2,24})(?![\w-])", re.I)
_FILE_SUFFIXES = frozenset(
    "txt md py json csv pdf png jpg jpeg gif html htm yaml yml toml log sh env ini cfg js ts "
    "go rs c h cpp java rb php sql xml lock zip gz tar db".split()
)


def _host(netloc_host: str) -> str | None:
    host = netloc_host.strip().rstrip(".").lower()
    if not host.isascii():
        try:
            host = unicodedata.normalize("NFKC", host).encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return host if _HOSTNAME.fullmatch(host) else None


def host_of(destination: str) -> str | None:
    """The host a destination names, ``""`` for a plain name (a person, a channel, an
    account), ``None`` for something that cannot be checked safely (an odd scheme, a URL
    with a user name, backslashes, an unparsable host)."""
    d = destination.strip()
    if any(c.isspace() or ord(c) < 32 or c == "\\" for c in d) and "://" in d:
        return None
    if "://" in d:
        try:
            parts = urlsplit(d)
            host = parts.hostname
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            return None
        if parts.scheme.lower() not in _SCHEMES or "@" in parts.netloc or not host:
            return None
        return _host(host)
    email = _EMAIL.match(d)
    if email:
        return _host(email.group(1))
    bare = _BARE.match(d)
    if bare and bare.group(1).rsplit(".", 1)[-1].isalpha():
        return _host(bare.group(1))
    return ""


def hosts_named(text: str) -> set[str]:
    """Hosts a trusted text names: in URLs, e-mail addresses and bare names (``docs.python.org``;
    file names such as ``notes.txt`` are not hosts)."""
    found: set[str] = set()
    for m in _NAMED_URL.finditer(text):
        host = host_of(m.group(0))
        if host:
            found.add(host)
    for m in _NAMED_HOST.finditer(text):
        name = m.group(1).lower()
        if name.rsplit(".", 1)[-1] not in _FILE_SUFFIXES:
            found.add(name)
    return found


def named(value: str, trusted: str) -> bool:
    """Whether ``value`` appears in the (lower-cased) trusted text as a whole token."""
    v = value.strip().lower()
    if not v:
        return True
    if len(v) < 2 and not v.isdigit():
        return True  # single characters carry nothing worth guarding
    start = trusted.find(v)
    while start >= 0:
        end = start + len(v)
        before = trusted[start - 1] if start else " "
        after = trusted[end] if end < len(trusted) else " "
        if not (v[0].isalnum() and before.isalnum()) and not (v[-1].isalnum() and after.isalnum()):
            return True
        start = trusted.find(v, start + 1)
    return False


class AllowList:
    """Hosts (``example.com``; ``*.example.com`` for its subdomains) and plain recipients
    a run may send to; ``configured`` are the policy's own, the rest come from the task."""

    def __init__(self, configured: Iterable[str] = (), named_hosts: Iterable[str] = ()):
        self.configured = {h.lower().rstrip(".") for h in configured}
        self.named_hosts = {h.lower().rstrip(".") for h in named_hosts}

    def host_allowed(self, host: str, *, configured_only: bool = False) -> bool:
        pools = [self.configured] if configured_only else [self.configured, self.named_hosts]
        bare = host.removeprefix("www.")
        for pool in pools:
            if host in pool or bare in pool or f"www.{host}" in pool:
                return True
            labels = host.split(".")
            if any("*." + ".".join(labels[i:]) in pool for i in range(1, len(labels) - 1)):
                return True
        return False

    def refused(
        self, destination: str, trusted: str, *, configured_only: bool = False
    ) -> str | None:
        """Why ``destination`` is not allowed (one phrase), or ``None`` when it is."""
        host = host_of(destination)
        email = _EMAIL.match(destination.strip())
        if email and host:
            if named(destination, trusted) and not configured_only:
                return None
            if destination.strip().lower() in self.configured or self.host_allowed(
                host, configured_only=True
            ):
                return None
            return f"{_short(destination)} is not an address named by the user or allowed"
        if host is None:
            return f"{_short(destination)} cannot be checked (scheme, user name or host)"
        if host == "":
            if not configured_only and named(destination, trusted):
                return None
            if destination.strip().lower() in self.configured:
                return None
            return f"{_short(destination)} is not a recipient named by the user"
        if self.host_allowed(host, configured_only=configured_only):
            return None
        which = "configured in the policy" if configured_only else "named by the user or allowed"
        return f"{host} is not a host {which}"


def _short(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")
