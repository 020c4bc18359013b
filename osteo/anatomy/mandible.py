"""Find the mandible on DPRs: inferior border, ROI box, quality flag and cortical width.

    python -m osteo.anatomy.mandible PATH... --out boxes.csv [--border] [data.anatomy.X=...]

PATH: image files, folders (recursive) or manifest CSVs (their ``pixel_mm`` and ROI columns
are used). Writes one row per image: ``image``, ``roi_x0``, ``roi_y0`` (resized 1200 x 630
frame, box 700 x 140 by default), ``status`` (``ok``, ``flagged: <reason>`` or
``error: <reason>``), ``confidence``, ``midline_x``, ``mcw_left_mm``, ``mcw_right_mm``,
``mcw_mm`` (image left/right), ``pixel_mm`` and its source, and with ``--border`` the border
rows (``border_x0`` and ``border_rows``: space-separated rows from that column on). Exit 0
when every image was read, 1 when any failed, 2 on a usage mistake.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from osteo.anatomy.border import find_border
from osteo.anatomy.mcw import cortical_width_mm
from osteo.anatomy.placement import find_midline, place_box, rows_outside_box
from osteo.data.roi import resize_bilinear

log = logging.getLogger(__name__)
FLAGGED = "flagged: "


def analyse(gray: np.ndarray, roi: Mapping, anatomy: Mapping, pixel_mm: float) -> dict:
    """Border, box, flag and MCW of one DPR (uint8 (H, W), original pixels of ``pixel_mm``).

    Returns a dict: ``roi_x0``, ``roi_y0`` (resized pixels), ``status`` (``ok`` or
    ``flagged: <reason>``; a flagged image gets the fixed box ``roi.box_xywh`` unless a border
    was traced), ``confidence``, ``midline_x``, ``mcw_left_mm``, ``mcw_right_mm``, ``mcw_mm``,
    ``border_x0`` and ``border_rows`` (float list, resized rows from column ``border_x0``).
    """
    resized = resize_bilinear(gray, roi["resize_wh"])
    border = find_border(resized, anatomy["border"])
    mid = find_midline(resized, anatomy["midline"])
    x0, y0, why = place_box(border.rows, mid, roi["box_xywh"][2:], roi["resize_wh"], anatomy["box"])
    if not (border.reason or why) and border.check_rows is not None:
        off = rows_outside_box(border.check_rows, x0, y0, roi["box_xywh"][2:])
        if off > 0:
            rows = f"{off:.0f} row{'' if round(off) == 1 else 's'}"
            why = (f"a freer trace of the border leaves the box by {rows} (the border may rise more steeply toward "
                   "the box's ends than traced: a narrower or taller framing); check the box")
    reason = border.reason or why
    if border.reason:  # nothing trustworthy traced: the fixed box, and no MCW
        x0, y0 = int(roi["box_xywh"][0]), int(roi["box_xywh"][1])
        left = right = float("nan")
    else:
        left, right = cortical_width_mm(gray, border.rows, roi["resize_wh"], mid, pixel_mm, anatomy["mcw"])
    both = [v for v in (left, right) if not math.isnan(v)]
    c0, c1 = border.columns
    return {"roi_x0": int(x0), "roi_y0": int(y0), "status": FLAGGED + reason if reason else "ok",
            "confidence": round(float(border.confidence), 3), "midline_x": round(float(mid), 1),
            "mcw_left_mm": round(left, 3) if not math.isnan(left) else float("nan"),
            "mcw_right_mm": round(right, 3) if not math.isnan(right) else float("nan"),
            "mcw_mm": round(float(np.mean(both)), 3) if both else float("nan"),
            "border_x0": int(c0), "border_rows": [round(float(v), 2) for v in border.rows[c0:c1]]}


def border_array(result: Mapping, width: int) -> np.ndarray:
    """The border rows of an ``analyse`` result as float [width], NaN where not traced."""
    out = np.full(int(width), np.nan)
    rows = np.asarray(result.get("border_rows") or [], dtype=float)
    x0 = int(result.get("border_x0") or 0)
    out[x0:x0 + len(rows)] = rows
    return out


def pixel_size(path: str | Path, manifest_mm: float | None, default_mm: float) -> tuple[float, str]:
    """(pixel size in mm, where it came from): DICOM PixelSpacing / ImagerPixelSpacing, then the
    manifest's ``pixel_mm``, then ``default_mm`` (the caller warns)."""
    from osteo.data.images import dicom_pixel_mm

    try:
        d = dicom_pixel_mm(path)
    except Exception:  # noqa: BLE001 - an unreadable header falls back like a missing tag
        d = None
    if d:
        return d, "dicom"
    if manifest_mm is not None and manifest_mm == manifest_mm:
        return float(manifest_mm), "manifest"
    return float(default_mm), "default"


def analyse_files(images: Sequence, roi: Mapping, anatomy: Mapping, progress: bool = True) -> list[dict]:
    """``analyse`` for each ``InputImage``; unreadable files get an ``error: ...`` status and
    NaNs. A manifest's ROI origin replaces the placed box (status stays that of the border)."""
    from tqdm.auto import tqdm

    from osteo.data.images import ImageReadError, read_gray
    from osteo.data.roi import check_source_size

    rows = []
    for item in tqdm(images, desc="mandible", unit="img", disable=not progress):
        pix, src = pixel_size(item.path, item.pixel_mm, anatomy["mcw"]["pixel_mm"])
        row = {"image": str(item.path), "pixel_mm": pix, "pixel_mm_source": src}
        try:
            gray = read_gray(item.path, roi.get("window", "minmax"))
            check_source_size(gray.shape[1], gray.shape[0], roi.get("min_source_wh", (0, 0)))
            res = analyse(gray, roi, anatomy, pix)
            if item.origin is not None:
                res["roi_x0"], res["roi_y0"] = item.origin
                res["box_source"] = "manifest"
            row.update(res)
        except (ImageReadError, ValueError, OSError) as e:
            why = str(e).split(": ", 1)[-1] if isinstance(e, ImageReadError) else str(e)
            row.update(status=f"error: {why}", roi_x0=np.nan, roi_y0=np.nan, confidence=np.nan,
                       mcw_left_mm=np.nan, mcw_right_mm=np.nan, mcw_mm=np.nan)
            log.warning("%s: %s", item.path, row["status"])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("inputs", nargs="+", help="image files, folders (recursive) or manifest CSVs")
    ap.add_argument("--out", required=True, help="CSV file to write (one row per image)")
    ap.add_argument("--border", action="store_true", help="add the traced border rows to each row")
    ap.add_argument("--force", action="store_true", help="overwrite an existing --out")
    a, overrides = ap.parse_known_args(argv)
    from omegaconf import OmegaConf

    from osteo.cli import UserError, setup_logging
    from osteo.config import compose
    from osteo.data.inputs import find_inputs, no_images_error
    from osteo.io import atomic_write_csv

    setup_logging()
    # argparse gives the positional inputs every plain argument: a 'key=value' that is no file is an override
    given = [i for i in a.inputs if "=" in i and not Path(i).exists()]
    a.inputs, overrides = [i for i in a.inputs if i not in given], given + overrides
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"unknown argument(s) {' '.join(bad)}: give image paths, --out FILE, --border, "
                        "or config overrides such as data.anatomy.box.bottom_margin_px=12")
    if not a.inputs:
        raise UserError("no images given: pass image files, folders or a manifest CSV before the overrides")
    cfg = compose(overrides)   # a misspelt override is said before any image is read
    out = Path(a.out)
    if out.suffix.lower() != ".csv":
        raise UserError(f"--out {a.out}: the result is a table; give a .csv path")
    if out.exists() and not a.force:
        raise UserError(f"{out} exists; pass --force to overwrite it, or choose another --out")
    from osteo.config import outputs_root

    images = find_inputs(a.inputs, skip=[outputs_root()])
    if not images:
        raise no_images_error(a.inputs)
    missing = [str(i.path) for i in images if not i.path.is_file()]
    roi = OmegaConf.to_container(cfg.data.roi, resolve=True)
    anatomy = OmegaConf.to_container(cfg.data.anatomy, resolve=True)
    rows = analyse_files(images, roi, anatomy)
    n_default = sum(r.get("pixel_mm_source") == "default" for r in rows)
    if n_default:
        log.warning("%d image(s) have no pixel size (no DICOM PixelSpacing, no manifest pixel_mm): their MCW "
                    "uses data.anatomy.mcw.pixel_mm = %s mm", n_default, anatomy["mcw"]["pixel_mm"])
    import pandas as pd

    df = pd.DataFrame(rows)
    if not a.border:
        df = df.drop(columns=[c for c in ("border_x0", "border_rows") if c in df.columns])
    elif "border_rows" in df.columns:
        df["border_rows"] = [" ".join(f"{v:.2f}" for v in r) if isinstance(r, list) else "" for r in df["border_rows"]]
    atomic_write_csv(out, df)
    failed = int(df["status"].str.startswith("error").sum())
    flagged = int(df["status"].str.startswith("flagged").sum())
    log.info("%d image(s): %d placed, %d flagged, %d failed; %s", len(df), len(df) - flagged - failed,
             flagged, failed, out)
    for r in df[df["status"] != "ok"].itertuples():
        log.info("  %s: %s", r.image, r.status)
    if missing:
        log.warning("%d file(s) not found: %s", len(missing), ", ".join(missing[:5]))
    return 1 if failed else 0


if __name__ == "__main__":
    from osteo.cli import run_cli

    raise SystemExit(run_cli(main))
