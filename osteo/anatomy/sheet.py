"""A contact sheet of whole radiographs with their ROI box and traced border (preview, report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
def placement_sheet(images: list[str], places: list[dict], captions: list[str], resize_wh, box_wh, out: Path,
                    cols: int = 3, tile_w: int = 400) -> Path:
    """A PNG of resized DPRs (``resize_wh``, W x H) with the ROI box (cyan; red when the image is
    flagged) and the traced border (green), ``cols`` per row, each ``tile_w`` pixels wide with a
    caption. ``places``: dicts with ``roi_x0``, ``roi_y0``, ``status`` and optionally the border
    (``border_x0``, ``border_rows``), as ``build_roi_cache`` gives them."""
    from PIL import Image, ImageDraw

    from osteo.anatomy.mandible import border_array
    from osteo.data.images import read_gray
    from osteo.data.roi import resize_bilinear
    from osteo.io import atomic_save_image

    W, H = (int(v) for v in resize_wh)
    w, h = (int(v) for v in box_wh)
    f = tile_w / W
    th = int(round(H * f)) + 18
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (tile_w + 4), rows * (th + 4)), (20, 20, 20))
    for i, (img, p, cap) in enumerate(zip(images, places, captions)):
        g = resize_bilinear(read_gray(img), (W, H))
        tile = Image.fromarray(g).convert("RGB")
        draw = ImageDraw.Draw(tile)
        flagged = str(p["status"]).startswith("flagged")
        x0, y0 = int(p["roi_x0"]), int(p["roi_y0"])
        draw.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], outline=(255, 60, 60) if flagged else (0, 255, 255), width=3)
        b = border_array(p, W)
        xs = np.flatnonzero(np.isfinite(b))
        if len(xs):
            draw.line([(int(x), float(b[x])) for x in xs], fill=(0, 255, 0), width=2)
        tile = tile.resize((tile_w, th - 18), Image.BILINEAR)
        x, y = (i % cols) * (tile_w + 4), (i // cols) * (th + 4)
        sheet.paste(tile, (x, y + 18))
        ImageDraw.Draw(sheet).text((x + 2, y + 3), cap[:70], fill=(255, 120, 120) if flagged else (255, 255, 255))
    return atomic_save_image(out, sheet)
