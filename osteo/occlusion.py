"""Occlusion beside a known inferior border (phantoms): hide the cortex, or the soft tissue under
it, and see what the model's output loses.

Grad-CAM on the last conv block cannot tell the cortex from the soft tissue below it when one of
its cells spans several cortical widths (block 5 of VGG16: 16 ROI pixels); hiding each band in
turn asks the model itself, at pixel resolution. How a band is hidden changes the answer, so
three fills are offered (``FILLS``): "beyond" moves the texture beyond the band over it, away
from the border (trabecular bone down over the cortex, deeper soft tissue up over the soft tissue
next to the border), so the image keeps its statistics and loses the band; "blur" replaces the
band by the image blurred with an SD of one band width (its mean brightness stays, its edges and
texture go); "mean" fills it with the ROI's mean grey (a flat stripe of the band's width stays).
"""

from __future__ import annotations

import numpy as np

SIDES = ("cortex", "soft")
FILLS = ("beyond", "blur", "mean")


def _per_column(width_px: np.ndarray | float, shape_nw: tuple[int, int]) -> np.ndarray:
    """``width_px`` (one number, [N] or [N, W]) as float [N, W]."""
    w = np.asarray(width_px, dtype=float)
    return np.broadcast_to(w[:, None] if w.ndim == 1 else w, shape_nw)


def band_masks(shape_hw: tuple[int, int], border_rows: np.ndarray, width_px: np.ndarray | float
               ) -> tuple[np.ndarray, np.ndarray]:
    """(cortex, soft) bool masks [N, H, W]: the ``width_px`` rows above the border (the cortex)
    and as many rows from the border down (the soft tissue), as ``osteo.gradcam.cortex_soft_masses``
    counts them. ``border_rows`` [N, W] ROI rows (float); ``width_px`` rows, [N], [N, W] or one
    number."""
    border = np.asarray(border_rows, dtype=float)
    w = _per_column(width_px, border.shape)[:, None, :]
    d = border[:, None, :] - np.arange(shape_hw[0])[None, :, None]  # rows above the border (> 0)
    return (d > 0) & (d <= w), (d <= 0) & (d > -w)


def hide_band(rois: np.ndarray, border_rows: np.ndarray, width_px: np.ndarray | float, side: str,
              fill: str = "beyond") -> np.ndarray:
    """Copies of ``rois`` [N, H, W] with one band beside the border hidden (``band_masks``:
    ``side="cortex"`` the band above the border, ``"soft"`` the one below). ``fill="beyond"``:
    each pixel takes the pixel ``width_px`` rows (rounded, at least 1) further from the border,
    above the cortex or below the soft tissue (rows past the ROI's edge read its first or last
    row); ``"blur"``: the ROI blurred with a Gaussian of SD = the image's mean band width;
    ``"mean"``: the ROI's mean. Every other pixel is unchanged."""
    if side not in SIDES:
        raise ValueError(f"side={side!r}: use one of {', '.join(SIDES)}")
    if fill not in FILLS:
        raise ValueError(f"fill={fill!r}: use one of {', '.join(FILLS)}")
    rois = np.asarray(rois)
    n, h, wd = rois.shape
    width = _per_column(width_px, (n, wd))
    cortex, soft = band_masks((h, wd), border_rows, width)
    mask = cortex if side == "cortex" else soft
    if fill == "beyond":
        shift = np.maximum(np.rint(width), 1).astype(np.int64)[:, None, :]
        rows = np.arange(h)[None, :, None]
        src = np.clip(rows - shift if side == "cortex" else rows + shift, 0, h - 1)
        moved = np.take_along_axis(rois, np.broadcast_to(src, rois.shape), axis=1)
    elif fill == "blur":
        import cv2

        moved = np.stack([cv2.GaussianBlur(r.astype(np.float32), (0, 0), max(float(w.mean()), 0.5))
                          for r, w in zip(rois, width)]).astype(rois.dtype)
    else:
        moved = np.broadcast_to(rois.mean(axis=(1, 2), keepdims=True), rois.shape).astype(rois.dtype)
    return np.where(mask, moved, rois)
