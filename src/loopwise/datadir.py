"""Where loopwise keeps its files: workspaces, the run database, memories.

``LOOPWISE_DATA_DIR`` wins; otherwise the platform's user data directory (platformdirs),
e.g. ``~/.local/share/loopwise`` on Linux. Nothing is created until a caller asks.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

__all__ = ["data_dir", "new_workspace"]


def data_dir(*, create: bool = False) -> Path:
    """The data directory (created, private to the user, when ``create`` is true)."""
    configured = os.environ.get("LOOPWISE_DATA_DIR")
    if configured:
        path = Path(configured).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("loopwise", appauthor=False))
    if create:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def new_workspace() -> Path:
    """A fresh, empty directory under ``<data dir>/workspaces`` named by time and a nonce."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = data_dir(create=True) / "workspaces" / f"{stamp}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, mode=0o755)
    return path
