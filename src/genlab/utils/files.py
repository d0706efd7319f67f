"""Atomic file writes (readers see the previous file or the complete new one, never a partial one); numpy
files read with one clear line when they are not."""

import os
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from genlab.errors import ConfigError


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Writes ``path`` through ``write(file)``: into a temporary file in the same folder, fsynced, then
    renamed into place (``os.replace``). A failure, or a process killed mid-write, leaves ``path`` as it was;
    the temporary file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


NUMPY_MAGIC = {".npz": b"PK", ".npy": b"\x93NUMPY"}  # a zip archive; numpy's header


def load_numpy(path: Path, what: str) -> Any:
    """``np.load(path)`` of an ``.npy`` or ``.npz`` (no pickled objects); a file that is neither, or cannot be
    read, is one :class:`ConfigError` naming what it should hold (``what``, e.g. "images")."""
    suffix = path.suffix.lower()
    with path.open("rb") as file:
        if not file.read(6).startswith(NUMPY_MAGIC.get(suffix, b"\x93NUMPY")):
            raise ConfigError(
                f"{path} is not a numpy {suffix or '.npy'} file: write {what} with np.save or np.savez."
            )
    try:
        return np.load(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # truncated, or pickled objects
        raise ConfigError(f"{path} is not a readable {suffix} file of {what}: {error}") from None
