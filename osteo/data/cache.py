"""Content-keyed cache of decoded, resized and cropped ROIs (uint8 arrays, one .npy per image).

Key = SHA-1 of (file bytes, ROI settings, the image's box). A changed file or setting rebuilds
only what changed; every fold, run and epoch of a sweep reads the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from osteo.data.images import ImageReadError, image_size, read_gray
from osteo.data.roi import check_source_size, extract_roi
from osteo.io import atomic_save_npy, atomic_write_text, available_cpus, file_lock

CACHE_VERSION = 1
# ROIs already loaded in this process, by (cache dir, settings, digests, boxes): the runs of a
# one-process sweep (Hydra's basic launcher) read the .npy files once.
_LOADED: dict[tuple, tuple[np.ndarray, list]] = {}


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-1 hex digest of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def digests(paths: Sequence[str], cache_dir: str | Path) -> list[str]:
    """Content digests of many files, memoised by (path, size, mtime) in ``cache_dir``."""
    index_file = Path(cache_dir) / "digests.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    out, changed = [], False
    for p in paths:
        st = os.stat(p)
        key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
        if key not in index:
            index[key] = file_digest(p)
            changed = True
        out.append(index[key])
    if changed:
        atomic_write_text(index_file, json.dumps(index))
    return out


def settings_key(roi: Mapping) -> str:
    """Digest of the ROI settings that change the cached pixels."""
    keep = {k: (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v)
            for k, v in roi.items() if k in ("resize_wh", "box_xywh", "scale", "window", "min_source_wh")}
    keep["version"] = CACHE_VERSION
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def image_boxes(df, roi: Mapping) -> list[tuple[int, int, int, int]]:
    """Per-image boxes (x0, y0, w, h): the manifest's ``roi_x0``/``roi_y0`` where given."""
    x0, y0, w, h = (int(v) for v in roi["box_xywh"])
    boxes = []
    for rec in df.to_dict("records"):
        bx = rec.get("roi_x0")
        by = rec.get("roi_y0")
        boxes.append((int(bx) if bx not in (None, "") and bx == bx else x0,
                      int(by) if by not in (None, "") and by == by else y0, w, h))
    return boxes


def _build_one(args) -> tuple[str, str | None]:
    path, out, roi, box = args
    if os.path.getsize(path) == 0:
        return out, "the file is empty (0 bytes)"
    try:
        check_source_size(*image_size(path), roi.get("min_source_wh", (0, 0)))
        gray = read_gray(path, roi.get("window", "minmax"))
        arr = extract_roi(gray, roi["resize_wh"], box, roi.get("scale", 1.0))
    except ImageReadError as e:
        return out, str(e).split(": ", 1)[-1]
    except ValueError as e:
        return out, str(e)
    except Exception as e:  # noqa: BLE001 - report any decoder failure with the file
        return out, f"not a readable image; PNG, JPEG, BMP, TIFF or DICOM expected ({type(e).__name__}: {e})"
    atomic_save_npy(out, arr)
    return out, None


def _build_many(todo: list, num_workers: int | None, progress: bool) -> dict[str, str]:
    """Build the cache files of ``todo`` with up to ``num_workers`` processes (default: the
    CPUs this job may use); returns {cache file: reason} for the images that failed."""
    errors: dict[str, str] = {}
    workers = min(num_workers or available_cpus(), max(len(todo), 1))
    parallel = workers > 1 and len(todo) > 4
    with tqdm(total=len(todo), desc="ROI cache", unit="img", disable=not progress) as bar, \
            (ProcessPoolExecutor(workers) if parallel else nullcontext()) as ex:
        for out, err in (ex.map(_build_one, todo, chunksize=4) if parallel else map(_build_one, todo)):
            if err:
                errors[out] = err
            bar.update()
    return errors


def build_roi_cache(df, roi: Mapping, cache_dir: str | Path, num_workers: int | None = None,
                    progress: bool = True) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Return the ROIs of every manifest row as uint8 (N, h, w) and the rows that failed.

    Failures are (line, image, reason) and their slots in the array are zero. Images whose
    bytes duplicate an earlier row are failures too (a leakage guard).
    """
    cache_dir = Path(cache_dir)
    paths = list(df["image"])
    digs = digests(paths, cache_dir)
    skey = settings_key(roi)
    boxes = image_boxes(df, roi)
    memo = (str(cache_dir.resolve()), skey, tuple(digs), tuple(boxes), tuple(df["line"]))
    if memo in _LOADED:
        arr, bad = _LOADED[memo]
        return arr.copy(), list(bad)
    outs, todo, bad, first, first_path = [], [], [], {}, {}
    for i, (p, d, box) in enumerate(zip(paths, digs, boxes)):
        if d in first:
            bad.append((int(df["line"].iloc[i]), p,
                        f"same image content as line {first[d]} ({first_path[d]}): duplicate image"))
        else:
            first[d], first_path[d] = int(df["line"].iloc[i]), p
        key = hashlib.sha1(f"{d}|{skey}|{box}".encode()).hexdigest()
        out = cache_dir / "roi" / skey / f"{key}.npy"
        outs.append(out)
        if not out.exists():
            todo.append((p, str(out), dict(roi), box))
    errors = {}
    if todo:
        with file_lock(cache_dir / "roi" / f"{skey}.lock"):  # parallel jobs build each file once
            todo = [t for t in todo if not Path(t[1]).exists()]
            errors = _build_many(todo, num_workers, progress)
    from osteo.data.roi import roi_output_hw

    h, w = roi_output_hw(roi["box_xywh"], roi.get("scale", 1.0))
    arr = np.zeros((len(outs), h, w), dtype=np.uint8)
    dup_lines = {b[0] for b in bad}
    for i, out in enumerate(outs):
        if str(out) in errors:
            bad.append((int(df["line"].iloc[i]), paths[i], errors[str(out)]))
        elif int(df["line"].iloc[i]) not in dup_lines:
            arr[i] = np.load(out)
    bad.sort()
    if not errors:
        _LOADED.clear()  # keep one data set in memory
        _LOADED[memo] = (arr, list(bad))
    return arr, bad
