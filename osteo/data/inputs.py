"""Images named on a command line: files, folders (searched recursively) and manifests."""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from osteo.cli import UserError
from osteo.data.images import IMAGE_SUFFIXES, is_dicom

log = logging.getLogger(__name__)

# Folders that hold no radiographs: masks or segmentations kept beside the images (a data set such
# as shared/real-dpr/abdi-dev has images/, masks-1/ and masks-2/). A mask passes the mandible finder
# like a DPR (its lower edge is the border), so a folder given to any command never reads them.
NOT_DPR_FOLDER = re.compile(r"^(masks?|seg|segmentations?|labels?|annotations?|gt|ground[-_ ]?truth)([-_ .].*|\d*)$",
                            re.IGNORECASE)
IMAGE_FOLDER = "images"   # where a folder has folders of this name (any depth), only they are read


class InputImage(NamedTuple):
    """An image to process: its path, the manifest's ROI origin (x0, y0) in resized pixels or
    None, the manifest's pixel size in mm or None, and the manifest row's fields (raw text;
    empty for an image named directly), where covariates such as age and sex are read."""

    path: Path
    origin: tuple[int, int] | None
    pixel_mm: float | None
    fields: dict = {}


def is_image_file(path: Path) -> bool:
    """True for a file with an image suffix (``IMAGE_SUFFIXES``), or a DICOM file by its 'DICM'
    marker whatever its name: PACS exports name files IM000001 or by UID (1.2.840...), without a
    suffix. The DICOMDIR index of an export holds no image and is not one."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return path.name.upper() != "DICOMDIR" and is_dicom(path)


def folder_images(folder: Path, skip: Sequence[str | Path] = ()) -> tuple[list[Path], list[str]]:
    """The radiographs under ``folder`` (searched recursively, sorted; ``is_image_file``) and what
    was left out, a line each: the images in ``skip`` folders below it (osteo's own outputs: a
    command's --out folder, outputs/, whose Grad-CAM overlays and contact sheets are PNGs), in
    folders of masks or segmentations (``NOT_DPR_FOLDER``: masks-1/, segmentations/, labels/,
    gt/, ...), and, where it has ``images/`` folders at any depth (one per device, say A/images
    and B/images), the images outside them. ``folder``'s own name is not judged: a folder of
    masks, or of osteo's outputs, named directly is read."""
    files = [q for q in sorted(folder.rglob("*")) if q.is_file() and is_image_file(q)]
    here = Path(os.path.abspath(folder))
    below = [d for d in (Path(os.path.abspath(x)) for x in skip) if d != here and d.is_relative_to(here)]
    below = [d for d in below if not any(d != e and d.is_relative_to(e) for e in below)]  # outermost only
    # the skip folder each file lies in, or None (one path check per file)
    own = {f: next((d for d in below if Path(os.path.abspath(f)).is_relative_to(d)), None) for f in files}
    notes = []
    where = sorted({str(d.relative_to(here)) + "/" for d in own.values() if d is not None})
    if where:
        n = sum(d is not None for d in own.values())
        notes.append(f"left out {n} images in {', '.join(where)} (osteo's own outputs, not radiographs)")
        files = [f for f in files if own[f] is None]

    def folders(f: Path) -> tuple[str, ...]:
        return f.relative_to(folder).parts[:-1]

    def mask_folder(f: Path) -> str | None:
        """The folder of masks that ``f`` lies in (relative to ``folder``), or None."""
        parts = folders(f)
        return next(("/".join(parts[:k + 1]) for k, d in enumerate(parts) if NOT_DPR_FOLDER.match(d)), None)

    masks = {f: mask_folder(f) for f in files}
    left = sorted({m for m in masks.values() if m is not None})
    if left:
        n = sum(m is not None for m in masks.values())
        notes.append(f"left out {n} images in {', '.join(m + '/' for m in left)} (masks or segmentations, "
                     "not radiographs)")
    files = [f for f in files if masks[f] is None]
    in_image_folders = [f for f in files if any(d.lower() == IMAGE_FOLDER for d in folders(f))]
    if in_image_folders and len(in_image_folders) < len(files):
        notes.append(f"read the {IMAGE_FOLDER}/ folders only: left out {len(files) - len(in_image_folders)} images "
                     "outside them")
    return in_image_folders or files, notes


def no_images_error(inputs: list[str]) -> UserError:
    """The error for ``inputs`` in which ``find_inputs`` found no image: what was looked for, and
    the kinds of file the folders hold instead (by suffix, most common first)."""
    other = Counter(q.suffix.lower() or "(no suffix)" for s in inputs if Path(s).is_dir()
                    for q in Path(s).rglob("*") if q.is_file())
    kinds = sorted(other.items(), key=lambda kv: (-kv[1], kv[0]))
    found = (f"; it holds {', '.join(f'{n} {k}' for k, n in kinds[:6])}{', ...' if len(kinds) > 6 else ''} files"
             if kinds else "")
    return UserError(f"no images found in {', '.join(inputs)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} "
                     f"and DICOM files of any name{found}); pass image files, folders or a manifest CSV")


def find_inputs(inputs: list[str], skip: Sequence[str | Path] = ()) -> list[InputImage]:
    """The images of ``inputs``: files, folders (recursively, as ``folder_images`` reads them:
    never ``skip`` folders below them, osteo's own outputs, nor folders of masks; only the
    ``images/`` folders where there are some; what is left out is logged) and manifest CSVs
    (their 'image' column, with 'roi_x0'/'roi_y0' and 'pixel_mm' where given). An input that
    does not exist is a ``UserError`` naming it (a typo on the command line, said before any model
    is loaded); a manifest's row whose image is missing is left to the caller, as any other
    image that cannot be read."""
    missing = [s for s in inputs if not Path(s).exists()]
    if missing:
        raise UserError(f"{', '.join(missing)}: no such file or folder; pass image files, folders or a manifest CSV")
    out: list[InputImage] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            files, notes = folder_images(p, skip)
            for note in notes:
                log.warning("%s: %s", p, note)
            out += [InputImage(q, None, None) for q in files]
        elif p.suffix.lower() == ".csv":
            from osteo.data.manifest import ManifestError, image_path, read_csv_table

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
                out.append(InputImage(image_path(p.parent, r["image"].strip()), origin, pix, fields))
        else:
            out.append(InputImage(p, None, None))
    return out
