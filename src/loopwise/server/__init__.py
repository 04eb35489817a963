"""The HTTP service: FastAPI app over the durable engine (``pip install loopwise[server]``).

Importing this package imports FastAPI; ``import loopwise`` never does.
"""

from .app import MAX_BODY_BYTES, RunEngine, ServerSettings, create_app
from .auth import ApiKeys, AuthSetup, hash_key, is_loopback, resolve_auth

__all__ = [
    "MAX_BODY_BYTES",
    "ApiKeys",
    "AuthSetup",
    "RunEngine",
    "ServerSettings",
    "create_app",
    "hash_key",
    "is_loopback",
    "resolve_auth",
]
