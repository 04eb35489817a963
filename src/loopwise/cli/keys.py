"""``loopwise keys set|list|delete PROVIDER``: API keys kept for the CLI.

A key goes to the OS keyring when the ``keyring`` package is installed and has a usable
backend, else to ``<config dir>/credentials.json`` (mode 0600, in a 0700 directory). It is
read from the terminal without echo, or from stdin, never from the command line (shell
history). At a run, a stored key is used only when its environment variable is unset (the
environment wins); keys are never printed, stored with runs or shown in events.
"""

from __future__ import annotations

import getpass
import json
import os
import stat
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .config import config_dir

__all__ = ["KEY_VARS", "export_stored_keys", "keys_app", "stored_key_source"]

KEY_VARS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
"""Providers that take a key, and the environment variable that holds it."""
_SERVICE = "loopwise"
_FILE = "credentials.json"

keys_app = typer.Typer(
    name="keys",
    help="API keys for the CLI: in the OS keyring, else a 0600 file.",
    no_args_is_help=True,
)


class KeyStoreError(Exception):
    """A key could not be stored or read (one sentence)."""


def _keyring() -> Any:
    """The ``keyring`` module when it has a usable backend, else None."""
    import importlib

    try:
        keyring = importlib.import_module("keyring")
        fail = importlib.import_module("keyring.backends.fail")
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:
        return None
    if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 0) <= 0:
        return None
    return keyring


def _file() -> Path:
    return config_dir() / _FILE


def _read_file() -> dict[str, str]:
    path = _file()
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or info.st_uid != os.getuid():
        raise KeyStoreError(
            f"{path} is readable by others or not yours; fix it (chmod 600) or delete it."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise KeyStoreError(f"{path} is not a JSON object; delete it and set the keys again.")
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _write_file(data: dict[str, str]) -> None:
    folder = config_dir(create=True)
    temp = folder / f".{_FILE}.{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(temp, folder / _FILE)


def _provider(name: str) -> str:
    provider = name.strip().lower()
    if provider not in KEY_VARS:
        typer.echo(
            f"error: {name!r} takes no key here; providers with keys: {', '.join(KEY_VARS)}.",
            err=True,
        )
        raise typer.Exit(2)
    return provider


def stored_key_source(provider: str) -> str | None:
    """Where ``provider``'s key is stored: ``keyring``, ``file`` or None."""
    ring = _keyring()
    try:
        if ring is not None and ring.get_password(_SERVICE, provider):
            return "keyring"
        return "file" if provider in _read_file() else None
    except (KeyStoreError, Exception):
        return None


def _stored_key(provider: str) -> str | None:
    ring = _keyring()
    if ring is not None:
        try:
            found = ring.get_password(_SERVICE, provider)
        except Exception:
            found = None
        if found:
            return str(found)
    return _read_file().get(provider)


def export_stored_keys() -> list[str]:
    """Put stored keys into the environment of this process where their variable is
    unset; returns the variables set. A problem with the keys file is a warning."""
    done: list[str] = []
    for provider, var in KEY_VARS.items():
        if os.environ.get(var, "").strip():
            continue
        try:
            key = _stored_key(provider)
        except KeyStoreError as exc:
            sys.stderr.write(f"warning: stored keys not used: {exc}\n")
            return done
        if key:
            os.environ[var] = key
            done.append(var)
    return done


@keys_app.command("set")
def set_key(
    provider: Annotated[str, typer.Argument(help="anthropic or openai.")],
) -> None:
    """Store PROVIDER's API key (typed without echo, or piped on stdin)."""
    name = _provider(provider)
    if sys.stdin.isatty():
        key = getpass.getpass(f"{name} API key: ")
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key or any(ord(c) < 33 or ord(c) == 127 for c in key):
        typer.echo("error: the key is empty or has spaces or control characters.", err=True)
        raise typer.Exit(2)
    ring = _keyring()
    if ring is not None:
        ring.set_password(_SERVICE, name, key)
        where = "the OS keyring"
    else:
        try:
            data = _read_file()
        except KeyStoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        data[name] = key
        _write_file(data)
        where = str(_file())
    typer.echo(f"stored the {name} key in {where} (the {KEY_VARS[name]} variable still wins)")


@keys_app.command("list")
def list_keys() -> None:
    """Which providers have a key, and where it comes from (keys are never shown)."""
    for name, var in KEY_VARS.items():
        source = "environment" if os.environ.get(var, "").strip() else stored_key_source(name)
        typer.echo(f"{name:<10} {var:<18} {source or '-'}")


@keys_app.command("delete")
def delete_key(provider: Annotated[str, typer.Argument(help="anthropic or openai.")]) -> None:
    """Forget PROVIDER's stored key (the keyring's and the file's)."""
    name = _provider(provider)
    ring = _keyring()
    removed = False
    if ring is not None:
        try:
            ring.delete_password(_SERVICE, name)
            removed = True
        except Exception:
            pass
    try:
        data = _read_file()
    except KeyStoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if data.pop(name, None) is not None:
        _write_file(data)
        removed = True
    typer.echo(f"deleted the stored {name} key" if removed else f"no {name} key was stored")
