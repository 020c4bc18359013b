"""Atomic file writes (a killed run never leaves a half-written file) and inter-process locks
(parallel jobs do one-time work once)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
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


def atomic_save_tensors(path: str | Path, tensors: dict) -> Path:
    """Write a dict of torch tensors as a safetensors file, atomically."""
    from safetensors.torch import save

    return _atomic(path, lambda f: f.write(save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})))


def atomic_write_csv(path: str | Path, df) -> Path:
    """Write a pandas DataFrame as CSV atomically."""
    return _atomic(path, lambda f: f.write(df.to_csv(index=False).encode()))


def atomic_save_image(path: str | Path, image, **save_kwargs) -> Path:
    """Save a PIL image atomically; the format follows ``path``'s suffix."""
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower(), "PNG")
    return _atomic(path, lambda f: image.save(f, format=fmt, **save_kwargs))


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` block: parallel
    jobs that reach the same one-time work (phantoms, splits, caches) do it one at a time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextmanager
def staged_folder(final: str | Path, last: Sequence[str] = ("index.html",),
                  replace: Sequence[str] = ()) -> Iterator[Path]:
    """A new folder beside ``final`` to write ``final``'s files into. When the block ends without
    error they are moved into ``final``, each by one rename (files named in ``last`` after the
    others, the shallowest last, so a reader never finds a new page over old figures), replacing
    files of the same name and keeping the rest, except in the subfolders named in ``replace``,
    whose other files are removed after the move (their content is the new one's alone); on any
    error, Ctrl-C included, ``final`` is left as it was. The staging folder is removed either way."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield stage
        files = sorted((p for p in stage.rglob("*") if p.is_file()),
                       key=lambda p: (p.name in last, -len(p.relative_to(stage).parts), str(p)))
        moved = set()
        for f in files:
            dest = final / f.relative_to(stage)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dest)
            moved.add(dest)
        for sub in replace:
            old = final / sub
            for f in sorted(old.rglob("*")) if old.is_dir() else ():
                if (f.is_file() or f.is_symlink()) and f not in moved:
                    f.unlink()
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def available_cpus(cap: int | str | None = None) -> int:
    """CPUs this process may use: its CPU affinity, capped by ``cap`` (a launcher's
    cpus_per_task, 'auto' or None for no cap) and by SLURM_CPUS_PER_TASK when set."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    for limit in (cap, os.environ.get("SLURM_CPUS_PER_TASK")):
        if limit not in (None, "", "auto"):
            n = min(n, max(int(limit), 1))
    return max(n, 1)


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
