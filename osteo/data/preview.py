"""A PNG contact sheet of ROIs: what the network will see.

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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--out", default="outputs/roi_sheet.png")
    ap.add_argument("--n", type=int, default=16, help="number of ROIs (half per class)")
    a, overrides = ap.parse_known_args(argv)  # the rest: Hydra overrides, e.g. data.roi.scale=0.5
    from osteo.cli import setup_logging

    setup_logging()
    from osteo.config import compose
    from osteo.data.cache import build_roi_cache
    from osteo.data.manifest import load_manifest

    cfg = compose(overrides)
    d = cfg.data
    df = load_manifest(a.manifest, d.label.threshold, d.label.inclusive)
    pick = np.concatenate([np.flatnonzero(df["label"].to_numpy() == c)[: (a.n + 1) // 2] for c in (0, 1)])
    sub = df.iloc[pick].reset_index(drop=True)
    rois, bad = build_roi_cache(sub, d.roi, cfg.paths.cache)
    for line, img, why in bad:
        log.warning("line %s (%s): %s", line, img, why)
    caps = [f"{'OSTEOPOROSIS' if r.label else 'normal'}  T={r.t_score}  {Path(r.image).name}"
            for r in sub.itertuples()]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    roi_sheet(rois, caps).save(a.out)
    log.info("wrote %s (%d ROIs of %dx%d px, W x H)", a.out, len(sub), rois.shape[2], rois.shape[1])


if __name__ == "__main__":
    main()
