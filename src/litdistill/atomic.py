"""File helpers: atomic writes (readers see the old file or the new one, never half of
one) and content hashes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_file(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Create file ``path`` by letting ``fill`` write a temp file beside it, then renaming.

    The temp file keeps ``path``'s suffix (writers such as ``savefig`` choose the format
    from it); it is removed whatever happens, so a crash leaves the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        fill(Path(tmp))
        with open(tmp, "rb+") as fh:  # on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`write_file`)."""
    return write_file(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`write_file`)."""
    return write_file(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`write_text`)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_dir(path: str | Path, fill: Callable[[Path], None], *, replace: bool = True) -> Path:
    """Create folder ``path`` by letting ``fill`` write into a temp folder, then renaming.

    An existing folder is replaced only after the new one is complete, so a crash leaves
    either the old folder or the new one in place.

    Args:
        path: The folder to create.
        fill: Writes the folder's content into the (empty) folder it is given.
        replace: False: a folder already at ``path`` once ``fill`` is done (e.g. written by a
            concurrent process computing the same thing) wins, and the new one is dropped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = path.with_name(f".{path.name}.old")
    try:
        fill(tmp)
        if path.exists() or path.is_symlink():
            if not replace:
                return path
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
