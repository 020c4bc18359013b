"""Per-image ROI placement from the traced border (resized-frame pixels, x right, y down).

Rule: the box keeps its size (w x h, the thesis's 700 x 140).
- Horizontally it is centred on the midline (the symphysis), found as the column about which
  the image's lower part is most mirror-symmetric; for a steep border (too tall for both
  margins below) it slides sideways by up to ``max_slide_px`` to where the border spans the
  fewest rows.
- Vertically the border's lowest point inside the box's columns sits ``bottom_margin_px`` above
  the box's bottom when its highest point is then at least as far below the box's top;
  otherwise the border is centred vertically in the box. Either way it must stay
  ``min_margin_px`` inside the box's rows, or the image is flagged.
- The box may pass the image's bottom edge by ``max_overhang_px`` (a chin at the film's edge;
  those rows are black).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np


def find_midline(gray: np.ndarray, cfg: Mapping) -> float:
    """Column (resized pixels) about which the image below ``rows_from`` x height is most
    mirror-symmetric, searched within ``search`` x width of the centre."""
    H, W = gray.shape
    f = cv2.resize(gray, (W // 2, H // 2), interpolation=cv2.INTER_AREA).astype(np.float32)
    f = cv2.GaussianBlur(f, (0, 0), 2.0)
    g = np.hypot(cv2.Sobel(f, cv2.CV_32F, 1, 0), cv2.Sobel(f, cv2.CV_32F, 0, 1))
    g = g[int(cfg["rows_from"] * f.shape[0]):]
    w = g.shape[1]
    half = int(cfg["search"] * w)
    reach = int(cfg["reach"] * w)

    def score(xc: int) -> float:
        t = min(xc, w - xc - 1, reach)
        left, right = g[:, xc - t:xc][:, ::-1].ravel(), g[:, xc + 1:xc + 1 + t].ravel()
        return float(np.corrcoef(left, right)[0, 1]) if left.std() > 0 and right.std() > 0 else -1.0

    coarse = range(w // 2 - half, w // 2 + half + 1, 3)  # every third column, then around the best
    best_x = max(coarse, key=score)
    best_x = max(range(best_x - 2, best_x + 3), key=score)
    return 2.0 * best_x + 1.0


def _fit_rows(seg: np.ndarray, h: int, H: int, cfg: Mapping) -> tuple[int, str]:
    """(y0, reason) for the border rows ``seg`` of the box's columns; see the module text."""
    lo, hi, m, mb = float(seg.min()), float(seg.max()), float(cfg["min_margin_px"]), float(cfg["bottom_margin_px"])
    y0 = int(np.ceil(hi + mb)) - h
    if lo < y0 + mb:  # no room for the bottom margin above as well: centre the border in the box
        y0 = int(round((lo + hi - h) / 2))
    y0 = int(np.clip(y0, 0, H + int(cfg["max_overhang_px"]) - h))
    if lo < y0 + m or hi > y0 + h - m:
        return y0, (f"the border spans {hi - lo:.0f} rows, more than the {h}-row box holds" if hi - lo > h - 2 * m
                    else f"the border runs {'above' if lo < y0 + m else 'below'} the image's edge")
    return y0, ""


def place_box(rows: np.ndarray, midline: float, box_wh: Sequence[int], resize_wh: Sequence[int],
              cfg: Mapping) -> tuple[int, int, str]:
    """(x0, y0, reason) of the box for border ``rows`` (float [W], NaN where not traced);
    reason is '' when the border lies inside the box's rows with ``min_margin_px`` to spare.
    A steep border (no room for the bottom margin at the midline) moves the box sideways, by
    up to ``max_slide_px`` (the midline's uncertainty), to where the border spans the fewest rows."""
    w, h = (int(v) for v in box_wh)
    W, H = (int(v) for v in resize_wh)
    centred = int(np.clip(round(midline - w / 2), 0, W - w))
    slide = int(cfg["max_slide_px"])
    starts = range(max(centred - slide, 0), min(centred + slide, W - w) + 1)

    def span(x0: int) -> float:
        seg = rows[x0:x0 + w]
        return float("inf") if np.isnan(seg).any() else float(seg.max() - seg.min())

    x0 = centred
    if span(centred) > h - 2 * float(cfg["bottom_margin_px"]):
        x0 = min(starts, key=lambda x: (span(x), abs(x - centred)))
    seg = rows[x0:x0 + w]
    if np.isnan(seg).any():
        y0 = int(np.clip(np.nanmax(rows) + cfg["bottom_margin_px"] - h, 0, H + cfg["max_overhang_px"] - h))
        return x0, y0, f"the border was traced over too few columns for the box ({int((~np.isnan(seg)).sum())} of {w})"
    y0, why = _fit_rows(seg, h, H, cfg)
    return x0, y0, why


def rows_outside_box(rows: np.ndarray, x0: int, y0: int, box_wh: Sequence[int]) -> float:
    """How far (rows, resized pixels) ``rows`` (float [W], NaN where none) pass above or below
    the box at (``x0``, ``y0``) of size ``box_wh`` within its columns; 0 when they stay inside."""
    w, h = (int(v) for v in box_wh)
    seg = rows[x0:x0 + w]
    seg = seg[~np.isnan(seg)]
    if not len(seg):
        return 0.0
    return float(max(y0 - seg.min(), seg.max() - (y0 + h), 0.0))
