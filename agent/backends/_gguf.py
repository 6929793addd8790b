"""Read a GGUF file's metadata (its key-value header) without loading the model.

Only the header is read, and array values (the tokenizer's vocabulary, mostly) are skipped over
rather than kept, so this takes milliseconds where loading even the vocabulary takes seconds.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

_MAGIC = b"GGUF"
# GGUF value types: their struct format, for the fixed-size ones.
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

Scalar = int | float | bool | str


def read_metadata(path: Path) -> dict[str, Scalar]:
    """The file's scalar metadata (arrays are left out). Raises `ValueError` for a file that is
    not GGUF (version 2 or 3), and `OSError` if it cannot be read."""
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        if f.read(4) != _MAGIC:
            raise ValueError(f"{path} is not a GGUF file")
        (version,) = _unpack(f, "I")
        if version not in (2, 3):
            raise ValueError(f"{path} is GGUF version {version}; versions 2 and 3 are read")
        _tensors, count = _unpack(f, "QQ")
        metadata: dict[str, Scalar] = {}
        for _ in range(count):
            key = _string(f, size)
            (kind,) = _unpack(f, "I")
            value = _value(f, kind, size)
            if value is not None:
                metadata[key] = value
        return metadata


def _unpack(f: BinaryIO, fmt: str) -> tuple[Any, ...]:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("the GGUF header ends early")
    return struct.unpack("<" + fmt, data)


def _string(f: BinaryIO, size: int) -> str:
    (length,) = _unpack(f, "Q")
    _check_room(f, length, size)
    return f.read(length).decode("utf-8", errors="replace")


def _check_room(f: BinaryIO, length: int, size: int) -> None:
    """A corrupt length must be an error, not a read of exabytes."""
    if length > size - f.tell():
        raise ValueError("the GGUF header ends early (a length in it runs past the file)")


def _value(f: BinaryIO, kind: int, size: int) -> Scalar | None:
    if kind in _FIXED:
        value: Scalar = _unpack(f, _FIXED[kind])[0]
        return value
    if kind == _STRING:
        return _string(f, size)
    if kind == _ARRAY:
        item, length = _unpack(f, "IQ")
        if item in _FIXED:
            skip = struct.calcsize(_FIXED[item]) * length
            _check_room(f, skip, size)
            f.seek(skip, 1)
        else:
            _check_room(f, length, size)  # every item takes at least a byte
            for _ in range(length):
                _value(f, item, size)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")
