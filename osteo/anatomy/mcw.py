"""Mandibular cortical width (MCW, mm), measured perpendicular to the inferior border.

Site: on each side, at ``site`` x ``half_width_px`` resized-frame pixels from the midline (by
default 0.55 x 350 = 193 px at 1200 wide: below the premolars, where the mental foramen
usually lies), over ``span_mm`` either side. At each sampled column the grey profile along the
border's inward normal is read from the original image (square pixels of ``pixel_mm``); the
periosteal margin is its steepest rise (dark soft tissue to bright cortex) within ``search_mm``
of the traced border, the endosteal margin its steepest fall (cortex to trabecular bone) within
``fall_mm`` beyond the first peak of the profile (the brightest point within +-``peak_mm``)
from ``min_mm`` inside (seen tangentially, the cortex is brightest at its endosteal margin,
where the ray's path through cortical bone is longest); the width is their distance. A side's MCW is the ``percentile`` of its columns'
widths (50: the median).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from scipy.ndimage import map_coordinates, maximum_filter1d


def side_columns(midline: float, cfg: Mapping) -> tuple[float, float]:
    """Resized-frame columns of the left and right measuring sites."""
    d = float(cfg["site"]) * float(cfg["half_width_px"])
    return midline - d, midline + d


def cortical_width_mm(gray: np.ndarray, rows: np.ndarray, resize_wh: Sequence[int], midline: float,
                      pixel_mm: float, cfg: Mapping) -> tuple[float, float]:
    """(left, right) MCW in mm (image left and right; NaN where not measurable).

    ``gray``: the original uint8 DPR (H, W); ``rows``: border rows per resized-frame column
    (float [resize W], NaN where not traced); ``pixel_mm``: the original pixel size in mm.
    """
    H, W = gray.shape
    sx, sy = W / float(resize_wh[0]), H / float(resize_wh[1])
    step = float(cfg["step_mm"]) / pixel_mm
    t = np.arange(-float(cfg["search_mm"]), float(cfg["max_mm"]) + 1e-9, float(cfg["step_mm"])) / pixel_mm
    blur = float(cfg["blur_mm"]) / pixel_mm
    half_span = float(cfg["span_mm"]) / pixel_mm  # original pixels
    cols = np.arange(len(rows))
    slope = np.gradient(rows)
    out = []
    for xc in side_columns(midline, cfg):
        xs = np.arange(xc * sx - half_span, xc * sx + half_span + 1e-9, max(step * 4, 1.0))  # original columns
        u = xs / sx  # resized columns
        ok = (u >= 1) & (u < len(rows) - 2)
        if not ok.any():
            out.append(float("nan"))
            continue
        xs, u = xs[ok], u[ok]
        b = np.interp(u, cols, rows) * sy                         # border row, original pixels
        dy = np.interp(u, cols, slope) * sy / sx                  # rows per column, original
        if np.isnan(b).any() or np.isnan(dy).any():
            out.append(float("nan"))
            continue
        # crop around the site for speed, then sample along the inward (upward) normals
        r0 = int(max(np.floor(b.min() - t[-1] - 4 * blur - 4), 0))
        r1 = int(min(np.ceil(b.max() - t[0] + 4 * blur + 4), H))
        c0 = int(max(np.floor(xs.min() - t[-1] - 4 * blur - 4), 0))
        c1 = int(min(np.ceil(xs.max() + t[-1] + 4 * blur + 4), W))
        crop = cv2.GaussianBlur(gray[r0:r1, c0:c1].astype(np.float32), (0, 0), max(blur, 0.3))
        norm = np.hypot(1.0, dy)
        nx, ny = dy / norm, -1.0 / norm                           # unit normal pointing up (inward)
        px = xs[:, None] + t[None] * nx[:, None] - c0
        py = b[:, None] + t[None] * ny[:, None] - r0 - 0.5        # rows are edges, pixel centres at +0.5
        prof = map_coordinates(crop, [py.ravel(), px.ravel()], order=1, mode="nearest").reshape(px.shape)
        d = np.gradient(prof, axis=1)
        is_peak = prof >= maximum_filter1d(prof, 2 * max(int(round(float(cfg["peak_mm"]) / float(cfg["step_mm"]))), 1) + 1,
                                           axis=1, mode="nearest")
        t_mm = t * pixel_mm
        near = np.abs(t_mm) <= float(cfg["search_mm"])
        widths = []
        for k in range(len(xs)):
            i_p = int(np.flatnonzero(near)[np.argmax(d[k, near])])
            beyond = np.flatnonzero(t_mm >= t_mm[i_p] + float(cfg["min_mm"]))
            if not len(beyond):
                continue
            peaks = beyond[is_peak[k, beyond]]
            i_max = int(peaks[0]) if len(peaks) else int(beyond[np.argmax(prof[k, beyond])])
            fall = np.flatnonzero((t_mm >= t_mm[i_max]) & (t_mm <= t_mm[i_max] + float(cfg["fall_mm"])))
            i_e = int(fall[np.argmin(d[k, fall])])
            if d[k, i_e] < 0 < d[k, i_p]:
                widths.append(t_mm[i_e] - t_mm[i_p])
        out.append(float(np.percentile(widths, float(cfg["percentile"]))) if widths else float("nan"))
    return out[0], out[1]
