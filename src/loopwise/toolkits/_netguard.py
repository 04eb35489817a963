"""Where ``http_get`` may connect: strict URL parsing, one resolution, an address policy.

A URL is parsed strictly (http/https, no credentials, no odd host spellings), its host is
resolved once and every address is checked. The caller then connects to one of those very
addresses, so a DNS answer that changes between check and use (rebinding) cannot matter.
Numeric spellings such as ``2130706433`` or ``0x7f.1`` are resolved by the C library, as
any client would, and the resulting address is what gets checked.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import quote, urlsplit

from ..errors import ModelRetry, UsageError

__all__ = ["FetchRefused", "IPAddress", "Policy", "Target", "check", "classify", "resolve"]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
_V4_RULES: tuple[tuple[IPNetwork, str], ...] = (
    (_V4("169.254.169.254/32"), "the cloud metadata address"),
    (_V4("100.100.100.200/32"), "a cloud metadata address"),
    (_V4("0.0.0.0/8"), "an unspecified ('this host') address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("10.0.0.0/8"), "a private address (RFC 1918)"),
    (_V4("172.16.0.0/12"), "a private address (RFC 1918)"),
    (_V4("192.168.0.0/16"), "a private address (RFC 1918)"),
    (_V4("100.64.0.0/10"), "a shared CGNAT address (100.64.0.0/10)"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("192.0.0.0/24"), "an IETF special-purpose address"),
    (_V4("192.0.2.0/24"), "a documentation address"),
    (_V4("198.51.100.0/24"), "a documentation address"),
    (_V4("203.0.113.0/24"), "a documentation address"),
    (_V4("198.18.0.0/15"), "a benchmarking address"),
    (_V4("192.88.99.0/24"), "a reserved 6to4 relay address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("255.255.255.255/32"), "the broadcast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
)
_V6_RULES: tuple[tuple[IPNetwork, str], ...] = (
    (_V6("fd00:ec2::254/128"), "the cloud metadata address"),
    (_V6("::/128"), "the unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("::/96"), "an IPv4-compatible IPv6 address (deprecated)"),
    (_V6("::ffff:0:0:0/96"), "an IPv4-translated IPv6 address"),
    (_V6("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_V6("100::/64"), "a discard-only address"),
    (_V6("2001::/32"), "a Teredo tunnel address"),
    (_V6("2001:db8::/32"), "a documentation address"),
    (_V6("3fff::/20"), "a documentation address"),
    (_V6("2001::/23"), "an IETF special-purpose address"),
    (_V6("fc00::/7"), "a unique local address (fc00::/7)"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a site-local address (deprecated)"),
    (_V6("ff00::/8"), "a multicast address"),
)
_NAT64 = _V6("64:ff9b::/96")
_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PATTERN_RE = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_SAFE_PATH_CHARS = "/%:@!$&'()*+,;=-._~?[]"


class FetchRefused(ModelRetry):
    """``http_get`` refused a URL: its scheme, form, host or address is not permitted."""


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, through the C library like any client."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if ip not in found:
            found.append(ip)
    return found


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:
        return "an IPv4-mapped form", ip.ipv4_mapped
    if ip in _NAT64:
        return "a NAT64 form", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "a 6to4 form", ip.sixtofour
    return None


def classify(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (e.g. ``"a loopback address"``), or None."""
    rules = _V4_RULES
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            form, inner = embedded
            why = classify(inner)
            return f"{form} of {inner}, {why}" if why else None
        rules = _V6_RULES
    for network, reason in rules:
        if ip in network:
            return reason
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved or not ip.is_global:
        return "an address that is not globally routable"
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: the host to name in ``Host`` and SNI, the port, the request path."""

    scheme: str
    host: str
    port: int
    path: str
    literal: IPAddress | None = None

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"


def _refuse(url: str, why: str) -> FetchRefused:
    return FetchRefused(f"Refused to fetch {url}: {why}.")


def parse_url(url: str) -> Target:
    """Parse ``url`` strictly; raises :class:`FetchRefused` naming what is wrong."""
    text = url.strip()
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in text):
        raise _refuse(repr(text), "it contains control characters or backslashes")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise _refuse(text, f"it is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise _refuse(text, "it is not an absolute URL; give one starting with https:// or http://")
    if scheme not in ("http", "https"):
        raise _refuse(text, f"only http and https URLs can be fetched, not {scheme!r}")
    if "@" in parts.netloc:
        raise _refuse(text, "URLs with credentials (user@host) are not supported")
    if port == 0:
        raise _refuse(text, "port 0 is not a valid port")
    literal, host = _parse_host(text, parts.netloc, parts.hostname or "")
    path = quote(parts.path or "/", safe=_SAFE_PATH_CHARS)
    if parts.query:
        path += "?" + quote(parts.query, safe=_SAFE_PATH_CHARS)
    default = 443 if scheme == "https" else 80
    return Target(scheme, host, port or default, path, literal)


def _parse_host(url: str, netloc: str, hostname: str) -> tuple[IPAddress | None, str]:
    if not hostname or "%" in hostname:
        raise _refuse(url, "its host is missing, percent-encoded or carries a zone id")
    if netloc.startswith("["):
        try:
            return ipaddress.IPv6Address(hostname), hostname
        except ValueError:
            raise _refuse(url, f"{hostname!r} is not a valid IPv6 address") from None
    try:
        host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _refuse(url, f"its host {hostname!r} is not a valid host name") from None
    host = host.removesuffix(".")
    if len(host) > 253 or not _HOST_RE.fullmatch(host):
        raise _refuse(url, f"its host {hostname!r} is not a valid host name")
    try:
        return ipaddress.IPv4Address(host), host
    except ValueError:
        return None, host


def _matches(host: str, pattern: str) -> bool:
    return host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern


def _normalised(ip: IPAddress) -> IPAddress:
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped if mapped is not None else ip


@dataclass(frozen=True, slots=True)
class Policy:
    """Allowed and denied host names (exact or ``*.domain``) and IP networks."""

    allow_names: tuple[str, ...] = ()
    allow_nets: tuple[IPNetwork, ...] = ()
    deny_names: tuple[str, ...] = ()
    deny_nets: tuple[IPNetwork, ...] = ()
    toolkit: str = "http"
    """The toolkit function whose ``allow=`` the refusal messages point to."""

    @classmethod
    def build(cls, allow: Sequence[str], deny: Sequence[str], toolkit: str = "http") -> Policy:
        """Sort ``allow``/``deny`` entries into names and networks; bad entries raise."""
        allow_names, allow_nets = _entries("allow", allow, toolkit)
        deny_names, deny_nets = _entries("deny", deny, toolkit)
        return cls(allow_names, allow_nets, deny_names, deny_nets, toolkit)

    def check_host(self, target: Target, url: str) -> None:
        """Refuse by name, before any resolution: deny list, allow list, metadata names."""
        for pattern in self.deny_names:
            if _matches(target.host, pattern):
                raise _refuse(url, f"host {target.host} matches the deny entry {pattern!r}")
        if target.literal is not None:
            if self.allow_names and not self._allowed_ip(_normalised(target.literal)):
                raise _refuse(url, f"{target.literal} is not among the allowed hosts")
            return
        named = any(_matches(target.host, p) for p in self.allow_names)
        if self.allow_names and not named:
            hosts = ", ".join(self.allow_names)
            raise _refuse(url, f"host {target.host} is not among the allowed hosts ({hosts})")
        if target.host in _METADATA_NAMES and not named:
            raise _refuse(url, f"{target.host} is a cloud metadata host name")

    def check_address(self, target: Target, ip: IPAddress, url: str) -> None:
        """Refuse a resolved address that is denied, or non-public and not allowed."""
        plain = _normalised(ip)
        embedded = _embedded_v4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        for candidate in {ip, plain, embedded[1] if embedded else plain}:
            for net in self.deny_nets:
                if candidate in net:
                    raise _refuse(url, f"{ip} is in the denied network {net}")
        if self._allowed_ip(plain):
            return
        why = classify(ip)
        if why is not None:
            subject = str(ip) if target.literal is not None else f"{target.host} resolves to {ip}"
            sep = " is" if target.literal is not None else ","
            raise _refuse(
                url,
                f"{subject}{sep} {why}; if that is intended, the developer can allow it "
                f"with {self.toolkit}(allow=[{str(plain)!r}])",
            )

    def _allowed_ip(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.allow_nets if net.version == ip.version)


def _entries(
    kind: str, values: Iterable[str], toolkit: str
) -> tuple[tuple[str, ...], tuple[IPNetwork, ...]]:
    if isinstance(values, str):
        raise UsageError(
            f"{toolkit}({kind}=...) takes a list of entries, not the string {values!r}."
        )
    names: list[str] = []
    nets: list[IPNetwork] = []
    for raw in values:
        entry = raw.strip().lower().removesuffix(".")
        if entry.startswith("[") and entry.endswith("]"):
            entry = entry[1:-1]
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        try:
            entry = entry.encode("idna").decode("ascii")
        except UnicodeError:
            entry = ""
        if not _PATTERN_RE.fullmatch(entry):
            raise UsageError(
                f"{toolkit}({kind}=...): {raw!r} is not a host name, '*.domain' pattern, "
                "IP address or CIDR network (give 'example.com', not a URL)."
            )
        names.append(entry)
    return tuple(names), tuple(nets)


def check(url: str, policy: Policy, *, via: str | None = None) -> tuple[Target, list[IPAddress]]:
    """Parse, check by name, resolve once, check every address; what to connect to.

    ``via`` is the URL that redirected here, named in refusals. Returned addresses are
    normalised (IPv4-mapped IPv6 becomes IPv4).
    """
    try:
        target = parse_url(url)
    except FetchRefused as exc:
        raise _redirected(exc, via) from None
    shown = target.url if via is None else f"{target.url} (redirected from {via})"
    policy.check_host(target, shown)
    if target.literal is not None:
        addresses = [target.literal]
    else:
        try:
            addresses = resolve(target.host, target.port)
        except (OSError, UnicodeError, ValueError) as exc:
            raise ModelRetry(f"Could not resolve the host of {shown}: {exc}.") from None
    if not addresses:
        raise ModelRetry(f"Could not resolve the host of {shown}: no addresses.")
    for ip in addresses:
        policy.check_address(target, ip, shown)
    return target, [_normalised(ip) for ip in addresses]


def _redirected(exc: FetchRefused, via: str | None) -> FetchRefused:
    if via is None:
        return exc
    return FetchRefused(f"{exc.message.removesuffix('.')} (redirected from {via}).")
