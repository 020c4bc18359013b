"""The inferior border of the mandible on a DPR, traced as one row per column.

Works in the thesis's resized frame (``data.roi.resize_wh``, 1200 x 630 by default; x right,
y down, pixels). The border is where bright bone (the cortex) meets dark soft tissue below it:

0. padding: constant strips at the image's edges (which exports and devices add) are filled
   with the nearest row or column of content, so that the step into them is not taken for the
   border (``padding_max_sd``);
1. evidence: the vertical brightness drop at two scales (a step of ``step_px`` and a band of
   ``band_px``), capped at its ``clip_percentile`` so that metal and teeth do not dominate,
   weighted up where the rows just below are dark, plus a small bonus for lower rows;
2. trace: a dynamic-programming path across the search columns that maximises the evidence,
   with the slope limited to ``coarse_max_slope`` rows per (down-sampled) column and a cost per
   slope change (``curvature_cost``): the border is long and smooth, teeth and film bands are
   not; then the same within ``fine_band_px`` of that path with ``max_slope``, so that the
   steeper parts toward the angles are followed;
3. refine: in each column the row of the steepest drop within ``refine_px`` of the path, to a
   fraction of a pixel, then a running median over ``smooth_px`` columns;
4. check: a freer trace over the same evidence (``check_max_slope`` rows per down-sampled
   column, not held near the first; 0: none), returned beside the border. Where the mandible
   fills less of the frame (a wider field of view, padding at the sides) or more of its height,
   the border rises toward the angles more steeply than the stiff trace can follow, and the
   trace cuts across the rise; the freer trace follows it, but on some DPRs climbs onto a
   shadow's edge, so it is not the border, only a check: where it leaves the ROI box, the image
   is flagged (``osteo.anatomy.mandible``).

Confidence is the fraction of traced columns where the cortex is brighter than the tissue
below it by ``min_contrast`` of the image's grey range and where the path follows a smooth
curve. The border is flagged (with the reason) when that median contrast is too low, when the
path is rough (median distance from its running mean above ``max_median_roughness_px``), when
it does not curve up toward the angles by ``min_smile_px`` (a quadratic's rise over the traced
half-width), or when the confidence is below ``min_confidence``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import cv2
import numpy as np


class Border(NamedTuple):
    """rows: float [W] border row per column of the resized image, NaN outside ``columns``;
    columns: (first, last + 1) searched; confidence in 0..1; reason: why it is doubtful, or '';
    check_rows: the freer check trace (float [W], whole rows, NaN outside ``columns``), or None
    when ``check_max_slope`` is 0."""

    rows: np.ndarray
    columns: tuple[int, int]
    confidence: float
    reason: str
    check_rows: np.ndarray | None = None


def _drop(f: np.ndarray, k: int) -> np.ndarray:
    """f(y - k) - f(y + k): positive where it is brighter above than below (zero at the edges)."""
    out = np.zeros_like(f)
    out[k:-k] = f[:-2 * k] - f[2 * k:]
    return out


def _band_means(f: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Means over rows [y - h, y) and [y, y + h) for every row y (clipped at the image)."""
    c = np.concatenate([np.zeros((1, f.shape[1]), np.float32), np.cumsum(f, 0, dtype=np.float32)])
    y = np.arange(f.shape[0])
    lo, hi = np.clip(y - h, 0, None), np.clip(y + h, None, f.shape[0])
    above = (c[y] - c[lo]) / np.maximum(y - lo, 1)[:, None]
    below = (c[hi] - c[y]) / np.maximum(hi - y, 1)[:, None]
    return above, below


def grey_range(gray: np.ndarray) -> float:
    """Robust grey range of an image (1st to 99th percentile), at least 1."""
    lo, hi = np.percentile(gray, [1, 99])
    return float(max(hi - lo, 1.0))


def fill_padding(gray: np.ndarray, max_sd: float) -> np.ndarray:
    """A copy of ``gray`` (uint8 (H, W)) whose constant strips at its four edges (rows or
    columns whose grey-level SD is at most ``max_sd``, running to the edge) and the one row or
    column blended into them by resizing are replaced by the nearest row or column beyond;
    unchanged when ``max_sd`` < 0 or when the strip would be the whole image."""
    g = gray.copy()
    if max_sd < 0:
        return g
    H, W = g.shape
    for axis, n in ((0, H), (1, W)):
        content = np.flatnonzero(g.std(axis=1 - axis) > max_sd)
        if not len(content):
            continue
        lead, trail = int(content[0]), n - 1 - int(content[-1])
        if lead + trail + 4 > n:
            continue
        if lead:
            idx = np.r_[np.full(lead + 1, lead + 1), np.arange(lead + 1, n)]
            g = np.take(g, idx, axis=axis)
        if trail:
            idx = np.r_[np.arange(0, n - trail - 1), np.full(trail + 1, n - trail - 2)]
            g = np.take(g, idx, axis=axis)
    return g


def border_evidence(gray: np.ndarray, cfg: Mapping, top: int | None = None) -> np.ndarray:
    """Evidence (float32, same shape as ``gray``) that the border passes through each pixel;
    its scale is set by the rows from ``top`` (default ``search_top`` x height) down."""
    f = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), float(cfg["blur_px"]))
    above, below = _band_means(f, int(cfg["band_px"]))
    e = np.maximum(_drop(f, int(cfg["step_px"])), 0) + float(cfg["band_weight"]) * np.maximum(above - below, 0)
    if cfg["row_median"]:  # a detector band is a straight edge across most of a row; the border is curved
        e = np.maximum(e - np.median(e, axis=1, keepdims=True), 0)
    top = int(round(cfg["search_top"] * gray.shape[0])) if top is None else top
    cap = float(np.percentile(e[top:], cfg["clip_percentile"])) + 1e-6
    e = np.minimum(e / cap, 1.0)
    if cfg["dark_weight"]:
        lo, hi = np.percentile(f, [5, 95])
        _, dark_below = _band_means(np.roll(f, -int(cfg["step_px"]), 0), int(cfg["dark_band_px"]))
        e = e * (1 + float(cfg["dark_weight"]) * np.clip((hi - dark_below) / (hi - lo + 1e-6), 0, 1))
    return e


def trace_path(evidence: np.ndarray, max_slope: int, curvature_cost: float) -> np.ndarray:
    """Rows (int [W]) of the path through ``evidence`` (H, W) with the highest total evidence,
    moving at most ``max_slope`` rows per column and paying ``curvature_cost`` per unit change
    of slope between neighbouring columns (the slope changes by at most one per column)."""
    H, W = evidence.shape
    S = 2 * max_slope + 1
    neg = np.float32(-1e30)
    d = np.arange(S)[:, None] - max_slope                 # row step of each slope state
    src = np.arange(H)[None] - d                          # the previous row of (slope, row)
    valid = (src >= 0) & (src < H)
    src = np.clip(src, 0, H - 1)
    s_idx = np.arange(S)[:, None]
    step_cost = np.float32(curvature_cost) * np.array([1, 0, 1], np.float32)[:, None, None]
    score = np.tile(evidence[:, 0], (S, 1)).astype(np.float32)
    back = np.zeros((W, S, H), np.int8)
    for x in range(1, W):
        padded = np.concatenate([np.full((1, H), neg), score, np.full((1, H), neg)])
        cand = np.stack([padded[:-2], padded[1:-1], padded[2:]]) - step_cost  # from slope si-1, si, si+1
        j = np.argmax(cand, 0)                                                # (S, H)
        best = cand.max(0)
        score = np.where(valid, best[s_idx, src], neg) + evidence[:, x][None]
        back[x] = np.where(valid, (j - 1 + s_idx)[s_idx, src], 0)
    si, y = np.unravel_index(int(np.argmax(score)), score.shape)
    rows = np.zeros(W, np.int64)
    rows[-1] = y
    for x in range(W - 1, 0, -1):
        prev = back[x, si, y]
        y = y - (si - max_slope)
        si = prev
        rows[x - 1] = y
    return rows


def refine_rows(gray: np.ndarray, rows: np.ndarray, x0: int, cfg: Mapping) -> np.ndarray:
    """Sub-pixel border rows (float) for columns ``x0 .. x0 + len(rows)``: the steepest
    bright-to-dark drop within ``refine_px`` of ``rows``, then a running median."""
    from scipy.ndimage import median_filter

    f = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), float(cfg["refine_blur_px"]))
    gy = np.zeros_like(f)
    gy[1:-1] = (f[:-2] - f[2:]) / 2
    r = int(cfg["refine_px"])
    cols = np.arange(x0, x0 + len(rows))
    Y = np.clip(rows[None] + np.arange(-r, r + 1)[:, None], 1, gray.shape[0] - 2)
    G = gy[Y, cols[None]]
    i = np.clip(np.argmax(G, 0), 1, 2 * r - 1)
    k = np.arange(len(cols))
    gm, g0, gp = G[i - 1, k], G[i, k], G[i + 1, k]
    den = gm - 2 * g0 + gp
    sub = np.where(den < 0, 0.5 * (gm - gp) / np.where(den < 0, den, -1), 0.0)
    y = Y[i, k] + np.clip(sub, -0.5, 0.5) + 0.5  # pixel centres at +0.5: rows are edges
    return median_filter(y, int(cfg["smooth_px"]), mode="nearest")


def confidence(gray: np.ndarray, rows: np.ndarray, x0: int, cfg: Mapping) -> tuple[float, str]:
    """(confidence 0..1, reason when below ``min_confidence``) of border ``rows`` (float,
    columns from ``x0``): contrast across it, smoothness, and the smile shape."""
    f = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), float(cfg["blur_px"]))
    above, below = _band_means(f, int(cfg["band_px"]) + 4)
    cols = np.arange(x0, x0 + len(rows))
    yi = np.clip(np.round(rows).astype(int), 0, gray.shape[0] - 1)
    contrast = (above[np.clip(yi - 2, 0, None), cols] - below[np.clip(yi + 2, None, gray.shape[0] - 1), cols])
    contrast = contrast / grey_range(gray)
    from scipy.ndimage import uniform_filter1d

    smooth = uniform_filter1d(rows, int(cfg["smooth_check_px"]), mode="nearest")
    rough = np.abs(rows - smooth) > float(cfg["max_roughness_px"])
    good = (contrast > float(cfg["min_contrast"])) & ~rough
    conf = float(good.mean())
    s = np.linspace(-1, 1, len(rows))
    rise = -np.polyfit(s, rows, 2)[0]  # y down: a smile's ends lie above its middle (rows smaller)
    roughness = float(np.median(np.abs(rows - smooth)))
    reason = ""
    if float(np.median(contrast)) < float(cfg["min_contrast"]):
        reason = f"no bone-to-soft-tissue edge found (contrast {np.median(contrast):.3f} of the grey range)"
    elif roughness > float(cfg["max_median_roughness_px"]):
        conf *= 0.5
        reason = f"the traced edge is too irregular for a mandible's lower border ({roughness:.1f} px)"
    elif rise < float(cfg["min_smile_px"]):
        conf *= 0.5
        reason = (f"the traced edge does not curve up toward the angles as a mandible's lower border does "
                  f"(rise {rise:.0f} px < {cfg['min_smile_px']})")
    if not reason and conf < float(cfg["min_confidence"]):
        reason = (f"border not clear along {100 * (1 - conf):.0f}% of its length "
                  f"(confidence {conf:.2f} < {cfg['min_confidence']})")
    return conf, reason


def find_border(gray: np.ndarray, cfg: Mapping) -> Border:
    """Trace the inferior border on a resized grey DPR (uint8 (H, W)); see the module text.

    ``cfg`` is ``data.anatomy.border``: ``columns`` as fractions of the width, ``search_top``
    as a fraction of the height, the other lengths in pixels of ``gray``.
    """
    gray = fill_padding(gray, float(cfg["padding_max_sd"]))
    H, W = gray.shape
    x0, x1 = (int(round(c * W)) for c in cfg["columns"])
    top = int(round(cfg["search_top"] * H))
    pad = int(cfg["dark_band_px"]) + int(cfg["band_px"]) + 4 * int(np.ceil(cfg["blur_px"]))
    r0 = max(top - pad, 0)  # work on the search rows (and a margin) only
    e = border_evidence(gray[r0:], cfg, top - r0)[top - r0:, x0:x1]
    e = e + float(cfg["depth_bonus"]) * (np.arange(e.shape[0], dtype=np.float32)[:, None] / e.shape[0])
    dn = int(cfg["downsample"])
    n = (e.shape[1] // dn) * dn
    ed = e[:, :n].reshape(e.shape[0], -1, dn).mean(2)
    # a stiff trace first (it cannot climb onto detector bands), then a freer one near it
    coarse = trace_path(ed, int(cfg["coarse_max_slope"]), float(cfg["curvature_cost"]))
    band = int(cfg["fine_band_px"])
    lo, hi = max(int(coarse.min()) - band, 0), min(int(coarse.max()) + band + 1, ed.shape[0])
    near = np.abs(np.arange(lo, hi)[:, None] - coarse[None]) <= band
    fine = trace_path(np.where(near, ed[lo:hi], np.float32(-1e3)), int(cfg["max_slope"]),
                      float(cfg["curvature_cost"])) + lo
    rows = refine_rows(gray[:, x0:x1], _full_width(fine, dn, e.shape[1]) + top, 0, cfg)
    conf, reason = confidence(gray[:, x0:x1], rows, 0, cfg)
    out = np.full(W, np.nan)
    out[x0:x1] = rows
    check, check_slope = None, int(cfg.get("check_max_slope", 0))   # 0 in runs' configs from before the check
    if check_slope > 0:
        check = np.full(W, np.nan)
        free = trace_path(ed, check_slope, float(cfg["curvature_cost"]))
        check[x0:x1] = _full_width(free, dn, e.shape[1]) + top
    return Border(out, (x0, x1), conf, reason, check)


def _full_width(path: np.ndarray, dn: int, width: int) -> np.ndarray:
    """A path over down-sampled columns (``dn`` columns each) at the full ``width``: each row
    repeated ``dn`` times, the last carried over the columns the down-sampling left out."""
    full = np.repeat(path, dn)
    return np.concatenate([full, np.full(width - len(full), full[-1])])
