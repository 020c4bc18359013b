"""Atomic file writes: a killed run never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _atomic(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to ``path`` through a temporary file and a rename."""
    return _atomic(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON (indented, NaN allowed) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def atomic_save_npy(path: str | Path, arr: np.ndarray) -> Path:
    """Save one array as .npy atomically."""
    return _atomic(path, lambda f: np.save(f, arr))


def atomic_write_csv(path: str | Path, df) -> Path:
    """Write a pandas DataFrame as CSV atomically."""
    return _atomic(path, lambda f: f.write(df.to_csv(index=False).encode()))


def _jsonable(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
