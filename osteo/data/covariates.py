"""Clinical covariates (age, sex, BMI, ...) for fusion with the image: read from a manifest,
standardised and, where asked, imputed with statistics of one fold's training rows only.

Any numeric manifest column may be a covariate; ``sex`` is coded F = 1, M = 0 (``female``,
``male`` and lower case are accepted). The transform is a dict (JSON-ready) with the covariate
``names`` and, per covariate, the training rows' ``fill`` (median, used for missing values when
imputing), ``mean`` and ``std`` (after filling); it is saved with each run as
``covariates.json`` so that screening applies the very same transform.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

TRANSFORM_FILE = "covariates.json"
SEX_CODES = {"f": 1.0, "female": 1.0, "m": 0.0, "male": 0.0}
# columns osteo adds to a manifest's rows (not the user's): left out of "its columns" in errors
DERIVED = {"line", "image_rel", "roi_status", "mcw_mm", "mcw_left_mm", "mcw_right_mm"}


class CovariateError(ValueError):
    """A covariate column is absent, not numeric, or has missing values where none may be."""


def _parse(name: str, values: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(float [N] with NaN where empty, positions of values that are neither empty nor readable)."""
    s = pd.Series(list(values), dtype=object)
    empty = (s.isna() | (s.astype(str).str.strip().isin(["", "nan", "NaN", "None"]))).to_numpy()
    if name == "sex":
        out = s.astype(str).str.strip().str.lower().map(SEX_CODES).to_numpy(dtype=np.float64, copy=True)
    else:
        from osteo.data.manifest import MINUS_SIGN

        text = s.where(~empty).map(lambda v: v.replace(MINUS_SIGN, "-") if isinstance(v, str) else v)
        out = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    out[empty] = np.nan
    return out, np.flatnonzero(np.isnan(out) & ~empty)


def value_kind(name: str) -> str:
    """What a covariate's values must be, for messages: 'F or M' for sex, else 'a number'."""
    return "F or M" if name == "sex" else "a number"


def parse_covariate(name: str, values: Sequence) -> np.ndarray:
    """One covariate's raw values as float [N] (NaN where empty); ``sex`` coded F = 1, M = 0.
    Raises ``CovariateError`` naming the unreadable values (0-based positions)."""
    out, bad = _parse(name, values)
    if len(bad):
        shown = ", ".join(f"{int(i)} ({list(values)[i]!r})" for i in bad[:5])
        raise CovariateError(f"covariate {name}: {len(bad)} value(s) are not {value_kind(name)}, at position(s) {shown}"
                             f"{' ...' if len(bad) > 5 else ''}")
    return out


def covariate_matrix(df: pd.DataFrame, names: Sequence[str], where: str = "the manifest") -> np.ndarray:
    """The raw covariates of every row of ``df``: float [N, len(names)], NaN where missing.

    Raises ``CovariateError`` for a column ``df`` lacks (naming the columns it has) or a value
    that is not readable (naming the manifest lines, from ``df['line']`` when present)."""
    cols = []
    for n in names:
        if n not in df.columns:
            have = ", ".join(str(c) for c in df.columns if not str(c).startswith("_") and c not in DERIVED)
            raise CovariateError(f"{where} has no column {n!r} for covariates={list(names)} (its columns: {have}); "
                                 "add the column or set covariates=[]")
        out, bad = _parse(n, df[n].to_numpy())
        if len(bad):
            ids = df["line"].to_numpy()[bad] if "line" in df.columns else bad
            raise CovariateError(f"{where}: covariate {n} is not {value_kind(n)} on {'line' if 'line' in df.columns else 'row'}(s) "
                                 f"{', '.join(str(int(i)) for i in ids[:10])}{' ...' if len(bad) > 10 else ''}")
        cols.append(out)
    return np.column_stack(cols) if cols else np.zeros((len(df), 0))


def missing_report(raw: np.ndarray, names: Sequence[str], lines: Sequence[int] | None = None) -> str:
    """'' when nothing is missing, else one line per covariate: its count and first lines."""
    parts = []
    for k, n in enumerate(names):
        miss = np.flatnonzero(np.isnan(raw[:, k]))
        if len(miss):
            ids = sorted(int(lines[i]) for i in miss) if lines is not None else [int(i) for i in miss]
            where = [str(i) for i in ids[:10]]
            parts.append(f"{n}: {len(miss)} missing (line(s) {', '.join(where)}{' ...' if len(miss) > 10 else ''})")
    return "; ".join(parts)


def fit_transform(raw_train: np.ndarray, names: Sequence[str]) -> dict:
    """Fill (median), mean and standard deviation of each covariate over the training rows
    ``raw_train`` float [n, k] only. A constant or empty column gets std 1."""
    names = list(names)
    fill, mean, std = [], [], []
    for k in range(len(names)):
        col = raw_train[:, k]
        ok = col[~np.isnan(col)]
        f = float(np.median(ok)) if len(ok) else 0.0
        filled = np.where(np.isnan(col), f, col)
        sd = float(filled.std())
        fill.append(f)
        mean.append(float(filled.mean()) if len(filled) else 0.0)
        std.append(sd if sd > 1e-12 else 1.0)
    return {"names": names, "fill": fill, "mean": mean, "std": std}


def apply_transform(raw: np.ndarray, transform: Mapping) -> np.ndarray:
    """Standardised covariates float32 [N, k]: missing values take the transform's ``fill``."""
    raw = np.asarray(raw, dtype=np.float64).reshape(len(raw), len(transform["names"]))
    filled = np.where(np.isnan(raw), np.asarray(transform["fill"])[None], raw)
    return ((filled - np.asarray(transform["mean"])[None]) / np.asarray(transform["std"])[None]).astype(np.float32)


def save_transform(transform: Mapping, run_dir: str | Path) -> Path:
    """Write the transform as ``covariates.json`` into a run directory (atomically)."""
    from osteo.io import atomic_write_json

    return atomic_write_json(Path(run_dir) / TRANSFORM_FILE, dict(transform))


def load_transform(run_dir: str | Path) -> dict | None:
    """A run's saved transform, or None for a run without covariates."""
    p = Path(run_dir) / TRANSFORM_FILE
    return json.loads(p.read_text()) if p.exists() else None
