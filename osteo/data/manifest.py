"""The dataset manifest: one CSV row per DPR, validated with errors that name row and column.

Columns: ``image`` (path relative to the CSV), ``patient_id``, ``t_score`` or ``label``
(0/1), optional ``sex``, ``age``, ``dxa_site``, and optional per-image ROI origins
``roi_x0``, ``roi_y0`` (resized pixels; the ROI's size always comes from the config).
Any other columns (for example the phantom's ground truth) are kept as they are.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

KNOWN_COLUMNS = {"image", "patient_id", "t_score", "label", "sex", "age", "dxa_site", "roi_x0", "roi_y0"}
SEX_CODES = {"f": "F", "female": "F", "w": "F", "woman": "F",
             "m": "M", "male": "M", "man": "M"}


class ManifestError(ValueError):
    """A manifest problem; the message lists every bad row with its line, column and reason."""


def label_from_t_score(t: float, threshold: float = -2.5, inclusive: bool = True) -> int:
    """WHO rule: 1 (osteoporosis) when T <= threshold (``inclusive``) or T < threshold."""
    return int(t <= threshold) if inclusive else int(t < threshold)


def _num(value) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    s = str(value).strip()
    if s == "":
        return None
    return float(s)  # raises ValueError on non-numeric text


def handle_bad_rows(path: Path, bad: list[tuple[int, str, str]], skip: bool,
                    skipped_file: str | Path | None, what: str, append: bool = False) -> None:
    """Raise ``ManifestError`` listing every (line, image, reason), or, with ``skip``, print
    them and write them to ``skipped_file`` (CSV: line, image, reason; ``append`` keeps earlier rows)."""
    listing = "\n".join(f"  {path.name} line {ln} ({rel or '-'}): {why}" for ln, rel, why in bad)
    if not skip:
        raise ManifestError(f"{path}: {len(bad)} {what}:\n{listing}\n"
                            "Fix them, or pass data.skip_bad_rows=true to skip and list them.")
    log.warning("skipping %d %s:\n%s", len(bad), what, listing)
    if skipped_file is not None:
        from osteo.io import atomic_write_csv

        new = pd.DataFrame(bad, columns=["line", "image", "reason"])
        if append and Path(skipped_file).exists():
            new = pd.concat([pd.read_csv(skipped_file), new], ignore_index=True)
        atomic_write_csv(skipped_file, new)
        log.warning("skipped rows listed in %s", skipped_file)


def load_manifest(path: str | Path, threshold: float = -2.5, inclusive: bool = True,
                  skip_bad_rows: bool = False, skipped_file: str | Path | None = None) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    Returns a DataFrame with one row per valid image and the columns ``line`` (the CSV line,
    header = 1), ``image`` (absolute path), ``image_rel``, ``patient_id`` (str), ``t_score``,
    ``label`` (0/1), ``sex`` ('F'/'M' or None), ``age``, plus any extra columns (numeric where
    every value parses as a number).
    Bad rows raise ``ManifestError`` listing each of them, or, with ``skip_bad_rows``, are
    dropped, printed and written to ``skipped_file`` (CSV: line, image, reason).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("image", "patient_id") if c not in df.columns]
    if "t_score" not in df.columns and "label" not in df.columns:
        missing.append("t_score (or label)")
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}; "
                            f"found {', '.join(df.columns)}")
    root = path.parent
    rows, bad, seen = [], [], {}
    for i, rec in enumerate(df.to_dict("records")):
        line = i + 2
        errs = []
        rel = rec["image"].strip()
        img = (root / rel).resolve() if rel else None
        if not rel:
            errs.append("column 'image' is empty")
        elif not img.is_file():
            errs.append(f"column 'image': file {img} not found")
        elif str(img) in seen:
            errs.append(f"column 'image': duplicate of line {seen[str(img)]} ({rel})")
        pid = rec["patient_id"].strip()
        if not pid:
            errs.append("column 'patient_id' is empty")
        t = label = None
        if "t_score" in rec and rec["t_score"].strip() != "":
            try:
                t = _num(rec["t_score"])
            except ValueError:
                errs.append(f"column 't_score': {rec['t_score']!r} is not a number")
        if "label" in rec and rec["label"].strip() != "":
            if rec["label"].strip() not in ("0", "1"):
                errs.append(f"column 'label': {rec['label']!r} is not 0 or 1")
            else:
                label = int(rec["label"].strip())
        if t is not None:
            derived = label_from_t_score(t, threshold, inclusive)
            if label is not None and label != derived:
                errs.append(f"column 'label' is {label} but t_score {t} gives {derived}")
            label = derived
        elif label is None and not any("t_score" in e or "label" in e for e in errs):
            errs.append("column 't_score' is missing (and no 'label' is given)")
        sex = None
        if "sex" in rec and rec["sex"].strip():
            sex = SEX_CODES.get(rec["sex"].strip().lower())
            if sex is None:
                errs.append(f"column 'sex': unknown code {rec['sex']!r} (use F/M, female/male)")
        age = None
        if "age" in rec:
            try:
                age = _num(rec["age"])
                if age is not None and not (0 <= age <= 130):
                    errs.append(f"column 'age': {age} is outside 0..130 years")
            except ValueError:
                errs.append(f"column 'age': {rec['age']!r} is not a number")
        for col in ("roi_x0", "roi_y0"):
            if col in rec and rec[col].strip():
                try:
                    rec[col] = int(float(rec[col]))
                except ValueError:
                    errs.append(f"column '{col}': {rec[col]!r} is not a pixel position")
        if errs:
            bad.append((line, rel, "; ".join(errs)))
            continue
        seen[str(img)] = line
        out = dict(rec)
        out.update(line=line, image=str(img), image_rel=rel, patient_id=pid, t_score=t,
                   label=label, sex=sex, age=age)
        rows.append(out)
    if bad:
        handle_bad_rows(path, bad, skip_bad_rows, skipped_file, "bad row(s)")
    if not rows:
        raise ManifestError(f"{path}: no valid rows")
    out = pd.DataFrame(rows)
    for col in set(df.columns) - KNOWN_COLUMNS:  # extra columns: numbers where they all parse
        try:
            out[col] = pd.to_numeric(out[col])
        except (ValueError, TypeError):
            pass
    for col in ("sex", "age", "dxa_site"):
        if col not in out.columns:
            out[col] = None
    return out
