"""Content-keyed cache of decoded, resized and cropped ROIs (uint8 arrays, one .npy per image).

ROI key = SHA-1 of (file bytes, ROI settings, the image's box). With ``placement: auto`` the
box comes from the mandible finder (osteo/anatomy), whose result (border, box, status, MCW) is
cached as JSON under ``anatomy/``, keyed by the file bytes, the finder's settings and the pixel
size. A changed file or setting rebuilds only what it touches (a new ``scale`` re-crops but does
not re-find the border); every fold, run and epoch of a sweep reads the same files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from osteo.cli import warn_once
from osteo.data.images import ImageReadError, image_size, read_gray
from osteo.data.roi import check_source_size, extract_roi
from osteo.io import atomic_save_npy, atomic_write_text, available_cpus, file_lock

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # 3: EXIF orientation applied when reading (osteo.data.images)
ANATOMY_VERSION = 2  # 2: the same
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


def anatomy_key(roi: Mapping, anatomy: Mapping) -> str:
    """Digest of the settings that change the mandible finder's result (not ``scale``)."""
    keep = {k: roi.get(k) for k in ("resize_wh", "box_xywh", "window", "min_source_wh")}
    keep = json.loads(json.dumps({**keep, "anatomy": anatomy, "version": ANATOMY_VERSION}, default=list))
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def pixel_mm_of(rec: Mapping, anatomy: Mapping | None) -> tuple[float | None, str]:
    """(pixel size in mm, source) of a manifest row: DICOM, its ``pixel_mm``, or the default."""
    if anatomy is None:
        return None, ""
    from osteo.anatomy.mandible import pixel_size

    v = rec.get("pixel_mm")
    return pixel_size(rec["image"], v if v not in (None, "") else None, anatomy["mcw"]["pixel_mm"])


def manifest_origin(rec: Mapping) -> tuple[int, int] | None:
    """A manifest row's ROI origin (``roi_x0``, ``roi_y0``), or None where either is missing."""
    bx, by = rec.get("roi_x0"), rec.get("roi_y0")
    if bx in (None, "") or by in (None, "") or bx != bx or by != by:  # NaN != NaN
        return None
    return int(bx), int(by)


def image_boxes(df, roi: Mapping) -> list[tuple[int, int, int, int]]:
    """Per-image boxes (x0, y0, w, h): the manifest's ``roi_x0``/``roi_y0`` where given."""
    x0, y0, w, h = (int(v) for v in roi["box_xywh"])
    return [(*(manifest_origin(rec) or (x0, y0)), w, h) for rec in df.to_dict("records")]


def _build_one(args) -> tuple[str, str | None, dict | None]:
    """Build one image's ROI (and, for a placed box, its anatomy JSON first); returns
    (ROI file, error or None, anatomy result or None)."""
    path, roi, box, skey, digest, roi_dir, anatomy, anatomy_file, pixel_mm = args
    info = None
    if anatomy_file is not None and Path(anatomy_file).exists():
        info = json.loads(Path(anatomy_file).read_text())
    gray = None

    def decode() -> np.ndarray:
        if os.path.getsize(path) == 0:
            raise ValueError("the file is empty (0 bytes)")
        check_source_size(*image_size(path), roi.get("min_source_wh", (0, 0)))
        return read_gray(path, roi.get("window", "minmax"))

    try:
        if anatomy_file is not None and info is None:
            gray = decode()
            from osteo.anatomy.mandible import analyse

            info = analyse(gray, roi, anatomy, pixel_mm)
            atomic_write_text(anatomy_file, json.dumps(info))
        placed = box is None
        if placed:  # the finder's box (it may pass the image's bottom edge; a manifest's may not)
            box = (int(info["roi_x0"]), int(info["roi_y0"]), int(roi["box_xywh"][2]), int(roi["box_xywh"][3]))
        out = roi_file(roi_dir, digest, skey, box)
        if not Path(out).exists():
            gray = decode() if gray is None else gray
            overhang = int(anatomy["box"]["max_overhang_px"]) if placed else 0
            atomic_save_npy(out, extract_roi(gray, roi["resize_wh"], box, roi.get("scale", 1.0), overhang))
        return str(out), None, info
    except ImageReadError as e:
        return "", str(e).split(": ", 1)[-1], info
    except ValueError as e:
        return "", str(e), info
    except Exception as e:  # noqa: BLE001 - report any decoder failure with the file
        return "", f"not a readable image; PNG, JPEG, BMP, TIFF or DICOM expected ({type(e).__name__}: {e})", info


def roi_file(roi_dir: str | Path, digest: str, skey: str, box: Sequence[int]) -> Path:
    """The cache file of one image's ROI for settings ``skey`` and box (x0, y0, w, h)."""
    box = tuple(int(v) for v in box)
    return Path(roi_dir) / f"{hashlib.sha1(f'{digest}|{skey}|{box}'.encode()).hexdigest()}.npy"


def _build_many(todo: list, num_workers: int | None, progress: bool) -> list[tuple[str, str | None, dict | None]]:
    """``_build_one`` for every job of ``todo`` with up to ``num_workers`` processes (default:
    the CPUs this job may use); results in the order of ``todo``."""
    workers = min(num_workers or available_cpus(), max(len(todo), 1))
    parallel = workers > 1 and len(todo) > 4
    results = []
    with tqdm(total=len(todo), desc="ROI cache", unit="img", disable=not progress) as bar, \
            (ProcessPoolExecutor(workers) if parallel else nullcontext()) as ex:
        for res in (ex.map(_build_one, todo, chunksize=4) if parallel else map(_build_one, todo)):
            results.append(res)
            bar.update()
    return results


def build_roi_cache(df, roi: Mapping, cache_dir: str | Path, num_workers: int | None = None,
                    progress: bool = True, anatomy: Mapping | None = None,
                    placements_out: list | None = None) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Return the ROIs of every manifest row as uint8 (N, h, w) and the rows that failed.

    Failures are (line, image, reason) and their slots in the array are zero. Images whose
    bytes duplicate an earlier row are failures too (a leakage guard). With
    ``roi["placement"] == "auto"`` (``anatomy``: the finder's settings, ``data.anatomy``) each
    image's box comes from the mandible finder unless the manifest gives ``roi_x0``/``roi_y0``.
    ``placements_out`` receives one dict per row: ``roi_x0``, ``roi_y0``, ``box_source``
    (auto | manifest | fixed), ``status`` (ok | flagged: reason | error: reason),
    ``confidence``, ``mcw_left_mm``, ``mcw_right_mm``, ``mcw_mm``, ``pixel_mm_source``, and
    with placement=auto the traced border (``border_x0``, ``border_rows``; see
    ``osteo.anatomy.mandible.border_array``).
    """
    cache_dir = Path(cache_dir)
    roi = dict(roi)
    auto = roi.get("placement", "fixed") == "auto"
    if auto and anatomy is None:
        raise ValueError("data.roi.placement=auto needs the finder's settings (data.anatomy)")
    anatomy = dict(anatomy) if auto else None
    paths = list(df["image"])
    digs = digests(paths, cache_dir)
    skey = settings_key(roi)
    akey = anatomy_key(roi, anatomy) if auto else None
    manifest_boxes = image_boxes(df, roi)
    has_box = [manifest_origin(rec) is not None for rec in df.to_dict("records")]
    pix = [pixel_mm_of(rec, anatomy) for rec in df.to_dict("records")]
    n_default = sum(src == "default" for _, src in pix)
    if n_default:
        mm = anatomy["mcw"]["pixel_mm"]
        warn_once(log, f"{n_default} image(s) have no pixel size (no DICOM PixelSpacing, no manifest pixel_mm column): "
                       f"their cortical width uses data.anatomy.mcw.pixel_mm = {mm} mm",
                  f"{n_default} image(s) have no pixel size: cortical width at {mm} mm")
    roi_dir = cache_dir / "roi" / skey
    memo = (str(cache_dir.resolve()), skey, akey, tuple(digs), tuple(manifest_boxes), tuple(pix), tuple(df["line"]))
    if memo in _LOADED:
        arr, bad, places = _LOADED[memo]
        if placements_out is not None:
            placements_out.extend(dict(p) for p in places)
        return arr.copy(), list(bad)
    jobs, bad, first, first_path = [], [], {}, {}
    for i, (p, d) in enumerate(zip(paths, digs)):
        if d in first:
            bad.append((int(df["line"].iloc[i]), p,
                        f"same image content as line {first[d]} ({first_path[d]}): duplicate image"))
        else:
            first[d], first_path[d] = int(df["line"].iloc[i]), p
        box = manifest_boxes[i] if (has_box[i] or not auto) else None
        afile = (cache_dir / "anatomy" / akey / f"{d}-{pix[i][0]:.6g}.json") if auto else None
        jobs.append((p, roi, box, skey, d, str(roi_dir), anatomy, str(afile) if afile else None, pix[i][0]))

    def done(job) -> bool:
        if job[7] is not None and not Path(job[7]).exists():
            return False
        box = job[2]
        if box is None:
            info = json.loads(Path(job[7]).read_text())
            box = (info["roi_x0"], info["roi_y0"], roi["box_xywh"][2], roi["box_xywh"][3])
        return roi_file(roi_dir, job[4], skey, box).exists()

    todo = [i for i, j in enumerate(jobs) if not done(j)]
    built: dict[int, tuple] = {}
    if todo:
        with file_lock(cache_dir / "roi" / f"{skey}.lock"):  # parallel jobs build each file once
            todo = [i for i in todo if not done(jobs[i])]
            built = dict(zip(todo, _build_many([jobs[i] for i in todo], num_workers, progress)))
    # the rest were built earlier: _build_one only reads their files back
    results = [built[i] if i in built else _build_one(j) for i, j in enumerate(jobs)]
    from osteo.data.roi import roi_output_hw

    h, w = roi_output_hw(roi["box_xywh"], roi.get("scale", 1.0))
    arr = np.zeros((len(jobs), h, w), dtype=np.uint8)
    dup_lines = {b[0] for b in bad}
    places, failed = [], False
    for i, (out, err, info) in enumerate(results):
        line = int(df["line"].iloc[i])
        place = {"roi_x0": manifest_boxes[i][0], "roi_y0": manifest_boxes[i][1],
                 "box_source": "manifest" if has_box[i] else ("auto" if auto else "fixed"), "status": "ok",
                 "confidence": float("nan"), "mcw_left_mm": float("nan"), "mcw_right_mm": float("nan"),
                 "mcw_mm": float("nan"), "pixel_mm_source": pix[i][1]}
        if info is not None:
            place.update({k: info[k] for k in ("status", "confidence", "mcw_left_mm", "mcw_right_mm", "mcw_mm",
                                               "border_x0", "border_rows")})
            if not has_box[i]:
                place.update(roi_x0=info["roi_x0"], roi_y0=info["roi_y0"])
        if err:
            failed = True
            place["status"] = f"error: {err}"
            bad.append((line, paths[i], err))
        elif line not in dup_lines:
            arr[i] = np.load(out)
        places.append(place)
    bad.sort()
    if placements_out is not None:
        placements_out.extend(dict(p) for p in places)
    if not failed:
        _LOADED.clear()  # keep one data set in memory
        _LOADED[memo] = (arr, list(bad), places)
    return arr, bad
