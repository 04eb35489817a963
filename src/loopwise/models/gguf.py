"""Read one fact from a GGUF file's header without loading the model: its context length."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["gguf_context_length"]

# Sizes of the fixed-width GGUF value types; 8 is a string, 9 an array.
_SCALARS = dict(zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), "BbHhIif?Qqd", strict=True))


def gguf_context_length(path: Path) -> int | None:
    """``<architecture>.context_length`` from a GGUF header, read without loading the model."""
    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                return None
            _version, _tensors, count = struct.unpack("<IQQ", f.read(20))
            arch = None
            for _ in range(count):
                key = _gguf_string(f)
                value = _gguf_value(f, struct.unpack("<I", f.read(4))[0])
                if key == "general.architecture":
                    arch = value
                elif arch and key == f"{arch}.context_length" and isinstance(value, int):
                    return value
    except (OSError, KeyError, struct.error, UnicodeDecodeError):
        return None
    return None


def _gguf_string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", f.read(8))
    return f.read(length).decode()


def _gguf_value(f: BinaryIO, kind: int) -> Any:
    if kind == 8:
        return _gguf_string(f)
    if kind == 9:
        item_kind, length = struct.unpack("<IQ", f.read(12))
        if item_kind in _SCALARS:
            f.seek(length * struct.calcsize("<" + _SCALARS[item_kind]), os.SEEK_CUR)
        else:
            for _ in range(length):
                _gguf_value(f, item_kind)
        return None
    fmt = "<" + _SCALARS[kind]
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
