"""``loopwise models``: the providers loopwise knows, which have keys, the default model
(and why), and the embedded model's status."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from ..errors import UsageError
from .display import json_safe, printable

__all__ = ["default_choice", "models"]

_SERVERS = {
    "openai-compatible": "OPENAI_BASE_URL",
    "vllm": "OPENAI_BASE_URL",
    "llamacpp": "OPENAI_BASE_URL",
    "ollama": "OLLAMA_HOST",
}


def default_choice() -> tuple[str | None, str]:
    """The model a plain ``loopwise run`` uses and where that comes from (stored keys
    count once exported): LOOPWISE_MODEL > config file > a key > the embedded model."""
    from .. import models as provided
    from .config import config_path, load_config

    if os.environ.get("LOOPWISE_MODEL", "").strip():
        return os.environ["LOOPWISE_MODEL"].strip(), "LOOPWISE_MODEL"
    configured = load_config().get("model")
    if isinstance(configured, str) and configured:
        return configured, f"config file {config_path()}"
    try:
        choice = provided.choose_default_model()
    except UsageError as exc:
        return None, str(exc)
    return choice.model, choice.source


def _providers() -> list[dict[str, Any]]:
    from ..models import KNOWN_PROVIDERS
    from .keys import KEY_VARS, stored_key_source

    rows: list[dict[str, Any]] = []
    for name in KNOWN_PROVIDERS:
        row: dict[str, Any] = {"provider": name}
        if name in KEY_VARS:
            var = KEY_VARS[name]
            env = bool(os.environ.get(var, "").strip())
            row["key"] = "environment" if env else stored_key_source(name)
            row["key_variable"] = var
        if name in _SERVERS:
            var = _SERVERS[name]
            row["server"] = os.environ.get(var) or None
            row["server_variable"] = var
        rows.append(row)
    return rows


def _embedded() -> dict[str, Any]:
    from importlib.util import find_spec

    from ..models.local import default_weights, local_available

    chosen = os.environ.get("LOOPWISE_LOCAL_MODEL")
    weights = chosen or (str(default_weights()) if default_weights() else None)
    return {
        "model": "local",
        "available": local_available(),
        "runtime_installed": find_spec("llama_cpp") is not None,
        "weights": weights,
        "install": "pip install 'loopwise[local]'",
    }


def models(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object.", metavar="")
    ] = False,
) -> None:
    """List the model providers, which have keys, the default model and the embedded one."""
    from .keys import export_stored_keys

    export_stored_keys()
    try:
        model, source = default_choice()
    except UsageError as exc:
        typer.echo(printable(f"error: {exc}"), err=True)
        raise typer.Exit(2) from None
    data: dict[str, Any] = {
        "default": model,
        "default_source": source,
        "providers": _providers(),
        "embedded": _embedded(),
    }
    if json_output:
        typer.echo(json_safe(json.dumps(data, indent=2, ensure_ascii=False)))
        return
    for row in data["providers"]:
        parts = []
        if "key_variable" in row:
            parts.append(f"key: {row['key'] or 'none'} ({row['key_variable']})")
        if "server_variable" in row:
            parts.append(f"server: {row['server'] or 'default'} ({row['server_variable']})")
        typer.echo(printable(f"{row['provider']:<18} {'; '.join(parts)}"))
    emb = data["embedded"]
    state = "installed" if emb["available"] else f"not installed ({emb['install']})"
    typer.echo(printable(f"{'local':<18} embedded SmolLM2-135M, offline on the CPU: {state}"))
    line = f"default: {model} (from {source})" if model else f"default: none: {source}"
    typer.echo(printable(line))
