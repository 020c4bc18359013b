"""Images named on a command line: files, folders (searched recursively) and manifests."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from osteo.cli import UserError
from osteo.data.images import IMAGE_SUFFIXES


class InputImage(NamedTuple):
    """An image to process: its path, the manifest's ROI origin (x0, y0) in resized pixels or
    None, the manifest's pixel size in mm or None, and the manifest row's fields (raw text;
    empty for an image named directly), where covariates such as age and sex are read."""

    path: Path
    origin: tuple[int, int] | None
    pixel_mm: float | None
    fields: dict = {}


def find_inputs(inputs: list[str]) -> list[InputImage]:
    """The images of ``inputs``: files, folders (recursively) and manifest CSVs (their 'image'
    column, with 'roi_x0'/'roi_y0' and 'pixel_mm' where given)."""
    out: list[InputImage] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            out += [InputImage(q, None, None) for q in sorted(p.rglob("*"))
                    if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES]
        elif p.suffix.lower() == ".csv":
            from osteo.data.manifest import ManifestError, read_csv_table

            try:
                m = read_csv_table(p)
            except ManifestError as e:
                raise UserError(str(e)) from None
            if "image" not in m.columns:
                raise UserError(f"{p}: a manifest needs an 'image' column (found {', '.join(m.columns)})")
            for line, r in enumerate(m.to_dict("records"), start=2):
                has_box = r.get("roi_x0", "") != "" and r.get("roi_y0", "") != ""
                try:
                    origin = (int(float(r["roi_x0"])), int(float(r["roi_y0"]))) if has_box else None
                    pix = float(r["pixel_mm"]) if r.get("pixel_mm", "") != "" else None
                except ValueError as e:
                    raise UserError(f"{p} line {line}: {e}; roi_x0, roi_y0 and pixel_mm must be numbers") from None
                fields = {k: v for k, v in r.items() if k != "image"}
                fields["_where"] = f"{p} line {line}"
                out.append(InputImage((p.parent / r["image"]).resolve(), origin, pix, fields))
        else:
            out.append(InputImage(p, None, None))
    return out
