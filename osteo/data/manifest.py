"""The dataset manifest: one CSV row per DPR, validated with errors that name row and column.

Columns: ``image`` (path relative to the CSV), ``patient_id``, ``t_score`` or ``label``
(0/1), optional ``sex``, ``age``, ``dxa_site``, and optional per-image ROI origins
``roi_x0``, ``roi_y0`` (resized pixels; the ROI's size always comes from the config), and
``pixel_mm`` (the original image's pixel size in mm, for the cortical width).
Any other columns (for example the phantom's ground truth) are kept as they are.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

KNOWN_COLUMNS = {"image", "patient_id", "t_score", "label", "sex", "age", "dxa_site", "roi_x0", "roi_y0", "pixel_mm"}
SEX_CODES = {"f": "F", "female": "F", "w": "F", "woman": "F",
             "m": "M", "male": "M", "man": "M"}


class ManifestError(ValueError):
    """A manifest problem; the message lists every bad row with its line, column and reason."""


def label_from_t_score(t: float, threshold: float = -2.5, inclusive: bool = True) -> int:
    """WHO rule: 1 (osteoporosis) when T <= threshold (``inclusive``) or T < threshold."""
    return int(t <= threshold) if inclusive else int(t < threshold)


MINUS_SIGN = "\u2212"   # the minus of word processors and lab reports: read as "-"
DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015"   # hyphen .. horizontal bar: not read, but named


def _num(value) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    s = str(value).strip().replace(MINUS_SIGN, "-")
    if s == "":
        return None
    return float(s)  # raises ValueError on non-numeric text


def image_path(root: Path, rel: str) -> Path:
    """A manifest's image path ``rel`` as an absolute path, relative to ``root`` (the manifest's
    folder). A path written on Windows (``images\\dpr_001.png``) is read with '/' where the file
    is not found as written but is found so."""
    img = (root / rel).resolve()
    if "\\" in rel and not img.is_file():
        posix = (root / rel.replace("\\", "/")).resolve()
        if posix.is_file():
            return posix
    return img


def _not_a_number(column: str, raw: str) -> str:
    """The error for a cell that is not a number, with a hint where its text is a number written
    another way (a dash for the minus sign, a decimal comma)."""
    hint = ""
    if any(d in raw for d in DASHES):
        hint = " (a dash where the minus sign '-' belongs)"
    else:
        try:
            float(raw.strip().replace(MINUS_SIGN, "-").replace(",", "."))
            hint = " (a decimal comma: write the number with a point, as 2.5)"
        except ValueError:
            pass
    return f"column '{column}': {raw!r} is not a number{hint}"


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


def read_csv_table(path: Path) -> pd.DataFrame:
    """A CSV file as strings, with a ManifestError that names the file for a missing, empty,
    non-UTF-8 or unparsable one."""
    if path.is_dir():
        raise ManifestError(f"{path}: is a folder; pass the manifest CSV file inside it")
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):  # zip (.xlsx, .ods) or OLE2 (.xls)
        raise ManifestError(f"{path}: is a spreadsheet workbook, not a CSV file; save it as CSV UTF-8 "
                            "(comma-separated) and pass that file")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise ManifestError(f"{path}: the manifest is empty; it needs a header line "
                            "(image,patient_id,t_score) and one row per image") from None
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text (byte {e.start}); save the manifest as UTF-8 CSV") from None
    except pd.errors.ParserError as e:
        raise ManifestError(f"{path}: not a readable CSV ({str(e).strip().splitlines()[-1]}); "
                            "check quoting and that every row has the header's number of fields") from None


def consistency_warnings(df: pd.DataFrame) -> list[str]:
    """Problems that do not stop a run but deserve a look: one patient's rows disagreeing on
    sex, and a class with fewer than 2 patients (no SD, no split)."""
    out = []
    if "sex" in df.columns and df["sex"].notna().any():
        per = df.dropna(subset=["sex"]).groupby("patient_id")["sex"].nunique()
        for pid in per[per > 1].index:
            lines = df.loc[df["patient_id"] == pid, "line"].tolist()
            out.append(f"patient {pid!r}: rows disagree on sex (lines {', '.join(map(str, lines))})")
    for y, g in df.groupby("label"):
        if g["patient_id"].nunique() < 2:
            out.append(f"class {int(y)} has {g['patient_id'].nunique()} patient(s): too few to estimate a spread "
                       "or to split")
    return out


def load_manifest(path: str | Path, threshold: float = -2.5, inclusive: bool = True,
                  skip_bad_rows: bool = False, skipped_file: str | Path | None = None,
                  bad_out: list | None = None) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    Returns a DataFrame with one row per valid image and the columns ``line`` (the CSV line,
    header = 1), ``image`` (absolute path), ``image_rel``, ``patient_id`` (str), ``t_score``,
    ``label`` (0/1), ``sex`` ('F'/'M' or None), ``age``, plus any extra columns (numeric where
    every value parses as a number).
    Bad rows raise ``ManifestError`` listing each of them, or, with ``skip_bad_rows``, are
    dropped, printed and written to ``skipped_file`` (CSV: line, image, reason); with
    ``bad_out`` they are appended to that list instead (line, image, reason) and not printed.
    A manifest with no valid row always raises.
    """
    path = Path(path)
    df = read_csv_table(path)
    missing = [c for c in ("image", "patient_id") if c not in df.columns]
    if "t_score" not in df.columns and "label" not in df.columns:
        missing.append("t_score (or label)")
    if missing:
        header = ",".join(df.columns)
        names = {";": "semicolon", "\t": "tab", "|": "bar"}
        sep = next((s for s in names if s in header), None)
        hint = (f"; the header looks {names[sep]}-separated: save the manifest as a comma-separated CSV" if sep
                else "; the columns are image, patient_id and t_score (or label), optional sex, age")
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)} (found {header[:120]}){hint}")
    root = path.parent
    rows, bad, seen = [], [], {}
    for i, rec in enumerate(df.to_dict("records")):
        line = i + 2
        errs = []
        rel = rec["image"].strip()
        img = image_path(root, rel) if rel else None
        if not rel:
            errs.append("column 'image' is empty")
        elif img.is_dir():
            errs.append(f"column 'image': {img} is a folder, not an image file")
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
                errs.append(_not_a_number("t_score", rec["t_score"]))
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
                errs.append(_not_a_number("age", rec["age"]))
        for col in ("roi_x0", "roi_y0"):
            if col in rec and rec[col].strip():
                try:
                    rec[col] = int(float(rec[col]))
                except ValueError:
                    errs.append(f"column '{col}': {rec[col]!r} is not a pixel position")
        if "pixel_mm" in rec and str(rec["pixel_mm"]).strip():
            try:
                rec["pixel_mm"] = float(rec["pixel_mm"])
                if not 0.005 <= rec["pixel_mm"] <= 2.0:
                    errs.append(f"column 'pixel_mm': {rec['pixel_mm']} mm is not a radiograph's pixel size "
                                "(0.005 to 2 mm)")
            except ValueError:
                errs.append(f"column 'pixel_mm': {rec['pixel_mm']!r} is not a number (mm per pixel)")
        elif "pixel_mm" in rec:
            rec["pixel_mm"] = None
        if errs:
            bad.append((line, rel, "; ".join(errs)))
            continue
        seen[str(img)] = line
        out = dict(rec)
        out.update(line=line, image=str(img), image_rel=rel, patient_id=pid, t_score=t,
                   label=label, sex=sex, age=age)
        rows.append(out)
    if not rows:
        listing = "".join(f"\n  {path.name} line {ln} ({rel or '-'}): {why}" for ln, rel, why in bad[:20])
        raise ManifestError(f"{path}: no valid rows{' (' + str(len(bad)) + ' bad)' if bad else ''}{listing}")
    if bad and bad_out is not None:
        bad_out.extend(bad)
    elif bad:
        handle_bad_rows(path, bad, skip_bad_rows, skipped_file, "bad row(s)")
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
