"""The thesis's ROI: bilinear resize of the whole DPR, then a fixed (or per-image) crop.

All boxes are (x0, y0, width, height) in pixels of the resized image (x right, y down).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def roi_output_hw(box_xywh: Sequence[int], scale: float = 1.0) -> tuple[int, int]:
    """Height and width in pixels of the ROI array after the optional ``scale``."""
    return int(round(box_xywh[3] * scale)), int(round(box_xywh[2] * scale))


def check_box(box_xywh: Sequence[int], resize_wh: Sequence[int], overhang_px: int = 0) -> None:
    """Raise ValueError unless the box lies inside the resized image (its bottom may pass the
    image's bottom edge by ``overhang_px``: a chin at the film's edge)."""
    x0, y0, w, h = (int(v) for v in box_xywh)
    W, H = (int(v) for v in resize_wh)
    if w <= 0 or h <= 0 or x0 < 0 or y0 < 0 or x0 + w > W or y0 + h > H + int(overhang_px):
        raise ValueError(f"ROI box (x0, y0, w, h) = {tuple(box_xywh)} does not fit inside the "
                         f"resized image {W}x{H} (W x H)")


def check_source_size(width: int, height: int, min_source_wh: Sequence[int]) -> None:
    """Raise ValueError when a DPR of ``width`` x ``height`` pixels is smaller than
    ``min_source_wh`` (it would be upsampled too much to give a faithful ROI), or taller than
    wide (a DPR is wider than tall: the image is turned by 90 degrees, or is not a DPR)."""
    mw, mh = (int(v) for v in min_source_wh)
    if width < mw or height < mh:
        raise ValueError(f"image is {width}x{height} (W x H), smaller than the {mw}x{mh} the ROI needs "
                         f"(data.roi.min_source_wh)")
    if height > width:
        raise ValueError(f"image is {width}x{height} (W x H), taller than wide: a panoramic radiograph is wider "
                         "than tall; turn it upright (it may be rotated by 90 degrees) or leave it out")


def resize_bilinear(gray: np.ndarray, size_wh: Sequence[int]) -> np.ndarray:
    """Bilinear resize of a uint8 (H, W) array to ``size_wh`` = (W, H), as Keras/PIL do."""
    im = Image.fromarray(gray)
    return np.asarray(im.resize((int(size_wh[0]), int(size_wh[1])), Image.BILINEAR))


def extract_roi(gray: np.ndarray, resize_wh: Sequence[int], box_xywh: Sequence[int],
                scale: float = 1.0, overhang_px: int = 0) -> np.ndarray:
    """Resize a whole DPR to ``resize_wh`` (W x H), crop ``box_xywh``, optionally shrink.

    Rows of a box that pass the image's bottom (up to ``overhang_px``) are black, as outside
    the film. Returns a uint8 array of shape ``roi_output_hw(box_xywh, scale)`` = (h*scale, w*scale).
    """
    check_box(box_xywh, resize_wh, overhang_px)
    x0, y0, w, h = (int(v) for v in box_xywh)
    crop = resize_bilinear(gray, resize_wh)[y0:y0 + h, x0:x0 + w]
    if crop.shape[0] < h:
        crop = np.concatenate([crop, np.zeros((h - crop.shape[0], w), np.uint8)])
    if scale != 1.0:
        oh, ow = roi_output_hw(box_xywh, scale)
        crop = resize_bilinear(crop, (ow, oh))
    return np.ascontiguousarray(crop)
