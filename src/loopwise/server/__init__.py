"""The HTTP service: FastAPI app over the durable engine (``pip install loopwise[server]``).

Importing this package imports FastAPI; ``import loopwise`` never does.
"""

from .app import MAX_BODY_BYTES, RunEngine, ServerSettings, create_app
from .auth import ApiKeys, AuthSetup, is_loopback, resolve_auth
from .hosts import AllowedHosts
from .principals import LOCAL, Principal, hash_key, load_keys_file

__all__ = [
    "LOCAL",
    "MAX_BODY_BYTES",
    "AllowedHosts",
    "ApiKeys",
    "AuthSetup",
    "Principal",
    "RunEngine",
    "ServerSettings",
    "create_app",
    "hash_key",
    "is_loopback",
    "load_keys_file",
    "resolve_auth",
]
