"""Bearer API keys: configured, or generated once; each key names a principal.

A key arrives as ``Authorization: Bearer <key>``; its SHA-256 is compared with every stored
hash in constant time (:func:`hmac.compare_digest`), and the matching entry's
:class:`~loopwise.server.principals.Principal` is who the request is from. The server
never logs a key. Beyond loopback a generated key is kept only as its hash in
``<data dir>/api_keys`` (one hex hash per line, mode 0600). On loopback the generated key
itself is kept in ``<data dir>/local_api_key`` (mode 0600), so that the same user's
``loopwise runs`` and ``loopwise approve`` find it; other local users and processes
without that file get 401. ``--no-auth`` (loopback only) keeps the API open.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import UsageError
from .errors import error_response
from .principals import LOCAL, MIN_KEY_LENGTH, Principal, hash_key, parse_key_entry

__all__ = [
    "KEY_FILE_NAME",
    "LOCAL_KEY_FILE_NAME",
    "MIN_KEY_LENGTH",
    "ApiKeys",
    "AuthSetup",
    "BearerAuth",
    "hash_key",
    "is_loopback",
    "resolve_auth",
]

KEY_FILE_NAME = "api_keys"
LOCAL_KEY_FILE_NAME = "local_api_key"
_REALM = 'Bearer realm="loopwise"'
ADMIN = Principal("admin", admin=True)
"""The principal of the key ``serve`` generates (the operator's)."""


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """The hashes of the keys that may use the API, each with its principal."""

    entries: tuple[tuple[str, Principal], ...] = ()

    @classmethod
    def of(cls, keys: Iterable[str]) -> ApiKeys:
        """From ``name:key`` or plain ``key`` strings (see :mod:`.principals`)."""
        return cls(tuple(parse_key_entry(k) for k in keys))

    @classmethod
    def admin(cls, hashes: Iterable[str], principal: Principal = ADMIN) -> ApiKeys:
        return cls(tuple((h, principal) for h in hashes))

    def __add__(self, other: ApiKeys) -> ApiKeys:
        return ApiKeys(self.entries + other.entries)

    @property
    def hashes(self) -> tuple[str, ...]:
        return tuple(h for h, _ in self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def identify(self, key: str) -> Principal | None:
        """The principal of ``key``, or None; every stored hash is compared, in constant
        time."""
        digest = hash_key(key)
        found: Principal | None = None
        for stored, principal in self.entries:
            if hmac.compare_digest(digest, stored):
                found = principal
        return found

    def check(self, key: str) -> bool:
        """Whether ``key`` is one of ours."""
        return self.identify(key) is not None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class AuthSetup:
    """What ``serve`` decided: the keys, whether they are required, a key to show once."""

    keys: ApiKeys
    require_auth: bool
    generated_key: str | None = None
    key_file: Path | None = None
    local: bool = False
    """The key is kept in ``key_file`` itself, for this user's CLI (loopback)."""


def resolve_auth(
    configured: Collection[str],
    *,
    host: str,
    data_dir: Path,
    extra: ApiKeys | None = None,
    no_auth: bool = False,
) -> AuthSetup:
    """Keys from configuration (``configured`` entries and ``extra``, e.g. a keys file);
    else a generated admin key: beyond loopback shown once and stored hashed, on loopback
    stored for this user's CLI. ``no_auth`` opens the API (loopback only)."""
    keys = ApiKeys.of(configured) + (extra or ApiKeys())
    if no_auth:
        if keys:
            raise UsageError("--no-auth cannot go with configured API keys; drop one of them.")
        if not is_loopback(host):
            raise UsageError(f"--no-auth is for loopback only; {host!r} is reachable from others.")
        return AuthSetup(ApiKeys(), require_auth=False)
    if keys:
        return AuthSetup(keys, require_auth=True)
    if is_loopback(host):
        return _local_key(data_dir / LOCAL_KEY_FILE_NAME)
    path = data_dir / KEY_FILE_NAME
    hashes = _read_hashes(path)
    if hashes:
        return AuthSetup(ApiKeys.admin(hashes), require_auth=True, key_file=path)
    key = "lw_" + secrets.token_urlsafe(32)
    _write_private(path, hash_key(key))
    return AuthSetup(
        ApiKeys.admin([hash_key(key)]), require_auth=True, generated_key=key, key_file=path
    )


def _local_key(path: Path) -> AuthSetup:
    """The loopback key kept (itself, mode 0600) for this user's CLI; made once."""
    key = read_local_key(path)
    if key is None:
        key = "lw_" + secrets.token_urlsafe(32)
        try:
            _write_private(path, key)
        except FileExistsError:  # another server made it at the same moment
            key = read_local_key(path)
    if key is None:
        raise UsageError(f"The local API key file {str(path)!r} is empty; delete it.")
    keys = ApiKeys.admin([hash_key(key)], LOCAL)
    return AuthSetup(keys, require_auth=True, key_file=path, local=True)


def read_local_key(path: Path) -> str | None:
    """The key in a local key file, or None when there is none."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return None
    return key if len(key) >= MIN_KEY_LENGTH else None


def _read_hashes(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text().split()
    except FileNotFoundError:
        return ()
    return tuple(line for line in lines if len(line) == 64)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


class BearerAuth:
    """ASGI middleware: every path but the open ones needs a valid bearer key (when required);
    the key's principal goes into the request's state (``request.state.principal``).

    It sits outside routing, so unknown routes and the OpenAPI document are guarded too and
    a caller without a key learns nothing about which paths exist. Without required keys
    every caller is :data:`~loopwise.server.principals.LOCAL`.
    """

    def __init__(self, app: ASGIApp, *, keys: ApiKeys, required: bool, open_paths: Collection[str]):
        self.app = app
        self.keys = keys
        self.required = required
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if not self.required or scope["path"] in self.open_paths:
            state["principal"] = LOCAL if not self.required else None
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, key = header.partition(" ")
        principal = self.keys.identify(key.strip()) if scheme.lower() == "bearer" else None
        if principal is not None:
            state["principal"] = principal
            await self.app(scope, receive, send)
            return
        if scheme.lower() != "bearer" or not key.strip():
            response = error_response(
                401,
                "unauthorized",
                "This API needs a key: send the header 'Authorization: Bearer <key>'.",
                {"WWW-Authenticate": _REALM},
            )
        else:
            response = error_response(
                401,
                "unauthorized",
                "The API key is not valid; check it or ask for a new one.",
                {"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
        await response(scope, receive, send)
