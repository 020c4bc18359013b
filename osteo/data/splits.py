"""Patient-level splits: a class-balanced held-out test set, then stratified group k-fold CV.

Images of one patient never cross a split boundary. Splits depend only on the manifest and
``seed``, and are written once to a CSV that every run of a sweep reads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from osteo.io import atomic_write_csv, file_lock


class SplitError(ValueError):
    """The data cannot be split as configured (for example a class is too small)."""


def check_split_sizes(df: pd.DataFrame, test_per_class: int | None = 68, test_fraction: float | None = None,
                      n_folds: int = 5) -> dict[int, int]:
    """Raise ``SplitError`` unless each class of ``df`` (``patient_id``, ``label``) has patients
    enough to hold out its test images and leave one patient for each of ``n_folds`` validation
    parts (a patient ever osteoporotic counts as class 1). Returns {class: test images to hold
    out}. Cheap (no images read): ``make_splits`` checks it, and so do ``train`` and the data
    module before the ROI cache is built."""
    counts = df["label"].value_counts().to_dict()
    for cls in (0, 1):
        if counts.get(cls, 0) == 0:
            raise SplitError(f"class {cls} has no images: a classifier cannot be trained or tested")
    pat_label = df.groupby("patient_id")["label"].max()
    targets = {}
    for cls in (0, 1):
        n_cls = int(counts[cls])
        n_pats = int((pat_label == cls).sum())
        target = (int(round(test_fraction * n_cls)) if test_fraction is not None
                  else int(test_per_class or 0))
        need = target + n_folds  # at least one patient per validation part must remain
        if n_pats < need:
            raise SplitError(
                f"class {cls} has {n_pats} patient(s) ({n_cls} images): too few to hold out "
                f"{target} for testing and stratify {n_folds} folds (needs at least {need}); "
                "lower data.split.test_per_class / n_folds or add data")
        targets[cls] = target
    return targets


def make_splits(df: pd.DataFrame, seed: int = 0, test_per_class: int | None = 68,
                test_fraction: float | None = None, n_folds: int = 5) -> pd.DataFrame:
    """Assign every image to the test set or to one of ``n_folds`` CV parts.

    ``df`` needs ``image_rel``, ``patient_id`` and ``label``. The test set holds
    ``test_per_class`` images of each class, or, when ``test_fraction`` is set, that
    stratified fraction; whole patients are drawn. Returns a DataFrame with ``image``,
    ``patient_id``, ``label``, ``part`` ('test' or '0'..'k-1') and ``role_fold{i}``
    ('train' / 'val' / 'test') for each fold i: fold i validates on part i.
    """
    targets = check_split_sizes(df, test_per_class, test_fraction, n_folds)
    rng = np.random.RandomState(seed)
    d = df[["image_rel", "patient_id", "label"]].rename(columns={"image_rel": "image"}).reset_index(drop=True)
    pat_label = d.groupby("patient_id")["label"].max()  # a patient ever osteoporotic counts as 1
    test_patients: set[str] = set()
    for cls in (0, 1):
        pats = np.array(sorted(pat_label.index[pat_label == cls]))
        rng.shuffle(pats)
        target = targets[cls]
        per_pat = d[d["label"] == cls].groupby("patient_id").size()
        got = 0
        for p in pats:
            if got >= target:
                break
            test_patients.add(p)
            got += int(per_pat.get(p, 0))
    is_test = d["patient_id"].isin(test_patients).to_numpy()
    part = np.array(["test"] * len(d), dtype=object)
    rest = np.flatnonzero(~is_test)
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val_idx) in enumerate(sgkf.split(rest, d["label"].to_numpy()[rest],
                                                 d["patient_id"].to_numpy()[rest])):
        part[rest[val_idx]] = str(k)
    d["part"] = part
    for k in range(n_folds):
        d[f"role_fold{k}"] = np.where(part == "test", "test", np.where(part == str(k), "val", "train"))
    return d


def split_file(df: pd.DataFrame, out_dir: str | Path, seed: int, test_per_class: int | None,
               test_fraction: float | None, n_folds: int) -> Path:
    """Create (once) or reuse the split CSV for this manifest and settings; return its path."""
    content = "\n".join(f"{r.image_rel}|{r.patient_id}|{r.label}" for r in df.itertuples())
    key = hashlib.sha1(f"{content}|{seed}|{test_per_class}|{test_fraction}|{n_folds}".encode()).hexdigest()[:12]
    path = Path(out_dir) / f"splits-{key}.csv"
    if not path.exists():
        with file_lock(path.with_suffix(".lock")):  # parallel jobs: one writes, the others read
            if not path.exists():
                atomic_write_csv(path, make_splits(df, seed, test_per_class, test_fraction, n_folds))
    return path


def fold_indices(splits: pd.DataFrame, df: pd.DataFrame, fold: int) -> dict[str, np.ndarray]:
    """Row indices of ``df`` (by ``image_rel``) for 'train', 'val' and 'test' of ``fold``."""
    col = f"role_fold{fold}"
    if col not in splits.columns:
        n = sum(c.startswith("role_fold") for c in splits.columns)
        raise SplitError(f"fold {fold} does not exist: the splits have folds 0..{n - 1}")
    role = dict(zip(splits["image"], splits[col]))
    roles = np.array([role.get(r) for r in df["image_rel"]], dtype=object)
    if (roles == None).any():  # noqa: E711
        raise SplitError("the split file does not cover every manifest image; delete it to rebuild")
    return {r: np.flatnonzero(roles == r) for r in ("train", "val", "test")}
