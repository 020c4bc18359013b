"""A PNG contact sheet of ROIs: what the network will see, and a second sheet of the whole
images with the ROI box and the traced mandible border (``<out>_boxes.png``).

    python -m osteo.data.preview MANIFEST [--out roi_sheet.png] [--n 16] [data.roi.scale=0.5 ...]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)


def roi_sheet(rois: np.ndarray, captions: list[str], cols: int = 2) -> Image.Image:
    """Grid of uint8 ROIs [N, h, w] with a caption line above each; returns a PIL image."""
    n, h, w = rois.shape
    cap = 16
    rows = (n + cols - 1) // cols
    sheet = Image.new("L", (cols * (w + 4), rows * (h + cap + 4)), 20)
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        x, y = (i % cols) * (w + 4), (i // cols) * (h + cap + 4)
        sheet.paste(Image.fromarray(rois[i]), (x, y + cap))
        draw.text((x + 2, y + 2), captions[i], fill=255)
    return sheet


def draw_border(tile: np.ndarray, border: np.ndarray | None, origin: tuple[int, int], scale: float) -> None:
    """Draw ``border`` (resized-frame rows per column) in white on a ROI tile cut at ``origin``."""
    if border is None:
        return
    h, w = tile.shape
    x0, y0 = origin
    cols = np.arange(w)
    rows = border[np.clip((x0 + (cols + 0.5) / scale).astype(int), 0, len(border) - 1)]
    ok = np.isfinite(rows)
    r = np.round((rows[ok] - y0) * scale - 0.5).astype(int)
    inside = (r >= 0) & (r < h)
    tile[r[inside], cols[ok][inside]] = 255


def main(argv: list[str] | None = None) -> int:
    """Write the ROI sheet of the manifest's valid images; bad rows and unreadable images are
    listed (never drawn). Exit 0 when every picked image was drawn, 1 otherwise."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--out", default="outputs/roi_sheet.png")
    ap.add_argument("--n", type=int, default=16, help="number of ROIs (half per class)")
    a, overrides = ap.parse_known_args(argv)  # the rest: Hydra overrides, e.g. data.roi.scale=0.5
    from osteo.cli import UserError, setup_logging
    from osteo.config import compose
    from osteo.data.cache import build_roi_cache
    from osteo.data.manifest import load_manifest
    from osteo.io import atomic_save_image

    setup_logging()
    if a.n < 1:
        raise UserError(f"--n {a.n}: the sheet needs at least one ROI")
    if not a.out.lower().endswith((".png", ".jpg", ".jpeg")):
        raise UserError(f"--out {a.out}: the sheet is an image; give a .png or .jpg path")
    cfg = compose(overrides)
    d = cfg.data
    bad_rows: list[tuple[int, str, str]] = []
    df = load_manifest(a.manifest, d.label.threshold, d.label.inclusive, skip_bad_rows=True, bad_out=bad_rows)
    pick = np.concatenate([np.flatnonzero(df["label"].to_numpy() == c)[: (a.n + 1) // 2] for c in (0, 1)])
    sub = df.iloc[pick].reset_index(drop=True)
    from omegaconf import OmegaConf

    places: list[dict] = []
    anatomy = OmegaConf.to_container(d.anatomy, resolve=True)
    rois, bad_files = build_roi_cache(sub, OmegaConf.to_container(d.roi, resolve=True), d.cache_dir,
                                      anatomy=anatomy, placements_out=places)
    rois = rois.copy()
    if d.roi.placement == "auto":  # draw the found border (white) and list the flagged images
        from osteo.anatomy.mandible import border_array

        for i, p in enumerate(places):
            if p["status"].startswith("flagged"):
                log.warning("line %s (%s): %s", sub["line"].iloc[i], sub["image_rel"].iloc[i], p["status"])
            if "border_rows" in p:
                draw_border(rois[i], border_array(p, d.roi.resize_wh[0]), (p["roi_x0"], p["roi_y0"]),
                            float(d.roi.scale))
    bad = sorted(bad_rows + bad_files)
    for line, img, why in bad:
        log.warning("line %s (%s): %s", line, img or "-", why)
    good = ~sub["line"].isin([b[0] for b in bad_files]).to_numpy()
    if not good.any():
        raise UserError(f"{a.manifest}: none of the {len(sub)} picked images could be read; see the list above")
    caps = [f"{'OSTEOPOROSIS' if r.label else 'normal'}  T={r.t_score}  {Path(r.image).name}"
            + (f"  MCW {p['mcw_mm']:.2f} mm" if p["mcw_mm"] == p["mcw_mm"] else "")
            + ("  FLAGGED" if p["status"].startswith("flagged") else "")
            for r, p in zip(sub.itertuples(), places) if good[r.Index]]
    atomic_save_image(a.out, roi_sheet(rois[good], caps))
    from osteo.anatomy.sheet import placement_sheet

    boxes_out = Path(a.out).with_name(Path(a.out).stem + "_boxes" + Path(a.out).suffix)
    placement_sheet(list(sub["image"][good]), [p for p, g in zip(places, good) if g],
                    caps, d.roi.resize_wh, d.roi.box_xywh[2:], boxes_out)
    log.info("wrote %s (%d ROIs of %dx%d px, W x H) and %s (the whole images with box and border)%s", a.out,
             int(good.sum()), rois.shape[2], rois.shape[1], boxes_out,
             f"; {len(bad)} bad row(s) or image(s) left out" if bad else "")
    return 1 if bad else 0


if __name__ == "__main__":
    from osteo.cli import run_cli

    raise SystemExit(run_cli(main))
