"""How far phantom ROIs are from real ones: the targets of issue 15.

    python benchmarks/phantom_realism.py --real ../shared/real-dpr/abdi-dev [MORE ...] [--n 160] [--seed 7]
        [--phantom-dir DIR] [--framing-spread 0] [--look look.json] [--params params.json]
        [--out outputs/realism] [--no-cnn] [--reference]

``--real``: one or more folders of real DPRs, searched recursively (where a folder holds
``images/`` folders, at any depth, only those: the layout of ``shared/real-dpr/abdi-dev``, or
one such folder per device), or manifest CSVs with an ``image`` column. Folders of masks or
segmentations (``masks-1/``, ``segmentations/``, ``labels/``, ...) are left out: a mask passes
the mandible finder like a DPR. Both sets go through the same path: the mandible finder places
the 700 x 140 box at each image's traced border in the 1200 x 630 frame (osteo.anatomy), and the
ROI is cut there; images it flags, or that cannot be read, are left out and listed.

Two-sample tests (real = 1, phantom = 0), each scored by out-of-fold predictions of a
stratified 5-fold cross-validation, repeated over 5 shuffles (mean and range printed):

- texture statistics (``texture_features``): log power spectrum in radial and horizontal /
  vertical frequency bands, gradient-magnitude histogram, row and column intensity profiles and
  grey-level percentiles, on the ROI's 0..1 grey values (no per-image normalisation);
  standardised, L2 logistic regression. Target: AUC <= 0.80. Where its separation lies
  (``group_aucs``): for each kind of statistic (power spectrum, h-v power, gradients, row and
  column profiles, percentiles) the AUC on that kind alone and on all but it; and the AUC with
  every phantom statistic moved by the training folds' real-minus-phantom mean, which reads
  about 0.5 when the sets differ in their means only.
- by real set, where the real DPRs come from more than one (two ``--real`` folders, or the
  subfolders of one, e.g. ``A/images`` and ``B/images``): the texture test of each set against
  the phantoms, and of each two sets against each other, the scale on which the phantoms'
  figure reads when real DPRs of two sources are told apart by the same test.
- a small CNN on the ROI at half scale (4 conv blocks, global pooling; 30 epochs, Adam),
  per-image standardised so that it must find texture, not brightness. Reported as it is.

``--reference`` gives the texture test's scale: the same test between the real DPRs and
themselves after one small acquisition-chain change each (``CHAIN_CHANGES``: gamma, noise, an
unsharp mask, Gaussian blurs of 0.5 and 0.7 pixels, 1.25x larger pixels, JPEG at quality 75;
applied at full size, before the finder). The two versions of an image stay in one fold, so an
unchanged copy reads 0.5; the anatomy is the same on both sides, which makes these pairs easier
to tell apart than two sets of different patients would be.

Writes under --out: ``sheet.png`` (real ROIs above, phantom ROIs below, same count),
``curves.png`` (mean row profile and radial power spectrum of both, with 10-90 % bands) and
``realism.json`` (every figure printed: the breakdown under ``texture_groups``, by real set under
``texture_by_set``, the reference's under ``reference``). Phantoms are
generated into --phantom-dir (a temporary folder by default) with the shipped generator's
defaults, or the ``Look`` fields of ``--look``
(e.g. ``benchmarks/looks/*.json``, looks measured and not shipped) and the ``PhantomParams``
fields of ``--params`` (e.g. ``benchmarks/params/dev-framing.json``: the dev DPRs' framing, whose
images end 2-39 rows below the chin, so that the placed box runs past the bottom edge as it does
on them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from osteo.anatomy.mandible import analyse, border_array
from osteo.config import compose
from osteo.data.images import read_gray
from osteo.data.inputs import IMAGE_FOLDER
from osteo.data.roi import extract_roi

RADIAL_EDGES = np.geomspace(1 / 256, 0.5, 13)   # cycles per pixel
GRAD_EDGES = np.r_[0, np.geomspace(0.002, 0.25, 14), np.inf]
PROFILE_BINS = 14


MIN_ROIS = 5   # of each set: the two-sample tests are 5-fold cross-validations
BOOTSTRAP_MIN_IMAGES = 20   # per set: fewer, and resamples can hold fewer distinct images than folds


def check_phantom_count(n: int) -> None:
    """A one-line user error when ``n`` phantoms are too few for the 5-fold two-sample tests."""
    if n < MIN_ROIS:
        from osteo.cli import UserError

        raise UserError(f"--n {n}: the two-sample tests are 5-fold cross-validations; give --n {MIN_ROIS} or more")


def real_images(path: Path) -> list[Path]:
    """The real DPRs named by ``path``: a manifest CSV's images (``osteo.data.inputs``), or a
    folder's, as every osteo command reads a folder (``osteo.data.inputs.folder_images``):
    searched recursively, leaving out folders of masks or segmentations (masks-1/,
    segmentations/, labels/, ...); where the folder has ``images/`` folders at any depth (one per
    device, say A/images and B/images), only the images in them. What is left out is logged. A
    one-line user error when there are none."""
    from osteo.cli import UserError
    from osteo.data.images import IMAGE_SUFFIXES
    from osteo.data.inputs import find_inputs

    if not path.exists():
        raise UserError(f"{path}: no such folder or file; give --real a folder of real DPRs")
    files = [i.path for i in find_inputs([str(path)])]   # folders: masks left out, images/ only where there
    if not files:
        where = path / IMAGE_FOLDER if (path / IMAGE_FOLDER).is_dir() else path
        raise UserError(f"{where}: no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))} and DICOM files of any "
                        "name); give --real a folder of real DPRs, or one whose images/ holds them")
    return files


def distinct_images(files: list[Path]) -> list[int]:
    """Positions in ``files`` of the first of each distinct file content (SHA-256 of the bytes):
    the same DPR twice (in two --real folders, or copied under two names) would sit in the
    training and the test folds at once and inflate the two-sample AUCs. The duplicates left
    out are printed."""
    import hashlib

    first: dict[str, int] = {}
    dups: list[tuple[Path, Path]] = []
    for i, f in enumerate(files):
        try:
            key = hashlib.sha256(f.read_bytes()).hexdigest()
        except OSError:
            key = f"unreadable:{i}"   # the reader lists it, with its reason, when it is cut
        if key in first:
            dups.append((f, files[first[key]]))
        else:
            first[key] = i
    if dups:
        shown = ", ".join(f"{d} (= {o})" for d, o in dups[:5]) + (f", ... ({len(dups) - 5} more)" if len(dups) > 5 else "")
        print(f"  left out {len(dups)} duplicate images (the same bytes as an image before them): {shown}")
    return sorted(first.values())


def real_set_label(f: Path, root: Path, name: str | None = None) -> str:
    """The set (device, clinic) a real DPR ``f`` of ``--real root`` belongs to: the root's name
    (or ``name``), then the first folder below it that is not an ``images/`` folder
    (``A/images/x.jpg`` under ``held-out`` -> ``held-out/A``); a manifest's stem for a manifest."""
    root = Path(os.path.abspath(root))   # normalised, links not followed (an image may link elsewhere)
    if root.is_file():
        return name or root.stem
    sub = [d for d in Path(os.path.abspath(f)).relative_to(root).parts[:-1] if d.lower() != IMAGE_FOLDER]
    return (name or root.name) + (f"/{sub[0]}" if sub else "")


def cut_roi(g: np.ndarray, roi: dict, anatomy: dict, pixel_mm: float = 0.1,
            scale: float = 1.0) -> tuple[np.ndarray | None, np.ndarray | None, dict]:
    """The ROI (uint8 [140 * scale, 700 * scale]) placed at one image's (uint8 (H, W), ``pixel_mm``
    mm per pixel) traced border, that border in full-scale ROI rows (float [700], NaN where not
    traced) and the finder's result (``osteo.anatomy.mandible.analyse``: status, box, MCW); the
    first two are None when the finder flags the image."""
    res = analyse(g, roi, anatomy, pixel_mm)
    if res["status"] != "ok":
        return None, None, res
    box = (res["roi_x0"], res["roi_y0"], *roi["box_xywh"][2:])
    out = extract_roi(g, roi["resize_wh"], box, scale, anatomy["box"]["max_overhang_px"])
    return out, border_array(res, roi["resize_wh"][0])[box[0]:box[0] + box[2]] - box[1], res


def cut_rois(files: list[Path], roi: dict, anatomy: dict) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """ROIs (uint8 [n, 140, 700]) placed at each image's traced border, the traced border in ROI
    rows (float [n, 700], NaN where not traced) and the positions in ``files`` of the images they
    come from; images the finder flags or that cannot be read are left out, each printed with
    its reason. A one-line user error when fewer than ``MIN_ROIS`` are placed (too few for the
    two-sample tests)."""
    from tqdm import tqdm

    from osteo.data.images import ImageReadError

    out, borders, kept = [], [], []
    for i, f in enumerate(tqdm(files, desc="finding the mandible", unit="img", leave=False)):
        try:
            g = read_gray(f)
        except ImageReadError as e:
            tqdm.write(f"  {e} (left out)")
            continue
        r, b, res = cut_roi(g, roi, anatomy)
        if r is None:
            tqdm.write(f"  {f.name}: {res['status']} (left out)")
            continue
        out.append(r)
        borders.append(b)
        kept.append(i)
    if len(out) < MIN_ROIS:
        from osteo.cli import UserError

        where = files[0].parent if files else "no images"
        if not out:
            raise UserError(f"{where}: the mandible finder placed no ROI on any of the {len(files)} images (each is "
                            "listed above with the finder's reason); give DPRs that show the mandible's lower border")
        raise UserError(f"{where}: the mandible finder placed {len(out)} ROIs on the {len(files)} images; the "
                        f"two-sample tests are 5-fold cross-validations and need at least {MIN_ROIS}; give more DPRs")
    return np.stack(out), np.stack(borders), kept


def region_stats(roi: np.ndarray, border: np.ndarray, spine_px: int = 60) -> dict:
    """Grey levels (0..1) of one ROI's anatomy, measured at its traced border (ROI rows).

    ``below``: 4-14 rows under the border; ``deep``: 25-40 rows under; ``cortex``: 3-9 rows above;
    ``trabecular``: 30-60 rows above (all off the central ``spine_px`` columns either side of the
    ROI's centre); ``spine``: the central 40 columns minus columns 100-160 away, under the border;
    ``hf_noise``: log10 power above 0.3 cycles/pixel of the trabecular patch; ``slope``: log-log
    slope of its radial spectrum between 0.02 and 0.2 cycles/pixel.
    """
    a = roi.astype(np.float64) / 255
    h, w = a.shape
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None]
    off = np.abs(cols - w / 2) > spine_px
    d = border[None] - rows                      # rows above the border (> 0)

    def mean(m):
        m = m & ~np.isnan(d)
        return float(a[m].mean()) if m.any() else float("nan")

    res = {"below": mean(off & (d <= -4) & (d > -14)), "deep": mean(off & (d <= -25) & (d > -40)),
           "cortex": mean(off & (d >= 3) & (d < 9)), "trabecular": mean(off & (d >= 30) & (d < 60))}
    centre = np.abs(cols - w / 2) < 20
    side = (np.abs(cols - w / 2) > 100) & (np.abs(cols - w / 2) < 160)
    res["spine"] = mean(centre & (d <= -4)) - mean(side & (d <= -4))
    top = int(np.nanmax(np.clip(np.nanmin(border) - 60, 0, h - 32)))
    patch = a[top:top + 32, 120:232]
    p, f, _ = power_spectrum(patch)
    lp = np.log10(p + 1e-12)
    res["hf_noise"] = float(lp[f > 0.3].mean())
    sel = (f > 0.02) & (f < 0.2)
    res["slope"] = float(np.polyfit(np.log10(f[sel]), lp[sel], 1)[0])
    res["trab_sd"] = float(patch.std())
    return res


def power_spectrum(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D power spectrum of a float (H, W) array (mean removed, Hann window).

    Returns (power [H, W] fft-shifted, |f| [H, W], angle [H, W]) with f in cycles per pixel.
    """
    h, w = a.shape
    win = np.hanning(h)[:, None] * np.hanning(w)[None]
    z = (a - a.mean()) * win
    p = np.abs(np.fft.fftshift(np.fft.fft2(z))) ** 2 / (win ** 2).sum()
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None]
    return p, np.hypot(fx, fy), np.arctan2(np.abs(fy), np.abs(fx))


def radial_spectrum(a: np.ndarray, edges: np.ndarray = RADIAL_EDGES) -> np.ndarray:
    """Mean log10 power in radial frequency bands ``edges`` (cycles per pixel): [len(edges) - 1]."""
    p, f, _ = power_spectrum(a)
    lp = np.log10(p + 1e-12)
    return np.array([lp[(f >= lo) & (f < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])


def texture_features(roi: np.ndarray) -> np.ndarray:
    """Simple texture statistics of one ROI (uint8 (H, W)): a float vector.

    Radial log power spectrum (12 bands), horizontal-minus-vertical log power (6 bands),
    gradient-magnitude histogram (15 bins), row and column mean profiles (14 bins each) and
    grey-level percentiles (5, 25, 50, 75, 95).
    """
    a = roi.astype(np.float64) / 255.0
    p, f, ang = power_spectrum(a)
    lp = np.log10(p + 1e-12)
    radial = [lp[(f >= lo) & (f < hi)].mean() for lo, hi in zip(RADIAL_EDGES[:-1], RADIAL_EDGES[1:])]
    aniso = []
    for lo, hi in zip(RADIAL_EDGES[:-1:2], RADIAL_EDGES[2::2]):
        ring = (f >= lo) & (f < hi)
        hor, ver = ring & (ang < np.pi / 8), ring & (ang > 3 * np.pi / 8)
        aniso.append(lp[hor].mean() - lp[ver].mean() if hor.any() and ver.any() else 0.0)
    gy, gx = np.gradient(a)
    gh = np.histogram(np.hypot(gx, gy), GRAD_EDGES)[0] / a.size
    rows = a.mean(1).reshape(PROFILE_BINS, -1).mean(1)
    cols = a.mean(0).reshape(PROFILE_BINS, -1).mean(1)
    pct = np.percentile(a, [5, 25, 50, 75, 95])
    return np.concatenate([radial, aniso, gh, rows, cols, pct])


def feature_names() -> list[str]:
    """Names of ``texture_features``' entries, in order."""
    fc = np.sqrt(RADIAL_EDGES[:-1] * RADIAL_EDGES[1:])
    return ([f"power@{f:.3f}" for f in fc] + [f"h-v@{f:.3f}" for f in fc[::2]]
            + [f"grad<{e:.3f}" for e in GRAD_EDGES[1:]] + [f"row{i}" for i in range(PROFILE_BINS)]
            + [f"col{i}" for i in range(PROFILE_BINS)] + [f"p{q}" for q in (5, 25, 50, 75, 95)])


def out_of_fold_aucs(y: np.ndarray, score_fold, repeats: int = 5,
                     groups: np.ndarray | None = None, progress: str | None = None) -> list[float]:
    """AUC of out-of-fold scores over stratified 5-fold splits, one per shuffle seed:
    ``score_fold(train_idx, test_idx) -> scores`` ([len(test_idx)]) scores each fold's held-out
    rows. With ``groups`` ([n]), the rows of one group stay in one fold (``StratifiedGroupKFold``):
    an image's two versions are never split across train and test. ``progress``: a progress
    bar of that name over the fits, with the time left (for slow ``score_fold``s)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from tqdm import tqdm

    aucs = []
    with tqdm(total=5 * repeats, desc=progress, unit="fit", disable=progress is None) as bar:
        for r in range(repeats):
            s = np.zeros(len(y))   # (split's X only gives the row count: y stands in for it)
            folds = (StratifiedKFold(5, shuffle=True, random_state=r).split(y, y) if groups is None
                     else StratifiedGroupKFold(5, shuffle=True, random_state=r).split(y, y, groups))
            for tr, te in folds:
                s[te] = score_fold(tr, te)
                bar.update()
            aucs.append(float(roc_auc_score(y, s)))
    return aucs


def auc_summary(aucs: list[float]) -> dict[str, float]:
    """{"mean", "min", "max"} of one test's AUCs over its shuffles, as realism.json records them."""
    return {"mean": float(np.mean(aucs)), "min": min(aucs), "max": max(aucs)}


def cv_auc(X: np.ndarray, y: np.ndarray, fit_predict, repeats: int = 5,
           groups: np.ndarray | None = None, progress: str | None = None) -> list[float]:
    """Out-of-fold AUC of ``fit_predict(X_train, y_train, X_test) -> scores`` on X ([n, features])
    (``out_of_fold_aucs``), one AUC per shuffle seed."""
    return out_of_fold_aucs(y, lambda tr, te: fit_predict(X[tr], y[tr], X[te]), repeats, groups, progress)


def bootstrap_aucs(X: np.ndarray, y: np.ndarray, fit_predict, n_boot: int = 200, seed: int = 0) -> np.ndarray:
    """The two-sample test on ``n_boot`` resamples of the images: each set (``y`` 0 and 1) drawn
    with replacement at its own size, an image's copies kept in one fold (``cv_auc`` with
    groups), one shuffle each; each set needs ``BOOTSTRAP_MIN_IMAGES`` or more images. Returns
    the AUCs ([n_boot]): their spread is how far the figure moves with the images drawn, which
    the shuffles' range does not show. The resamples hold about 63% distinct images, so their
    AUCs run a little below the full sample's."""
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(y == c) for c in np.unique(y)]
    aucs = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(c, len(c), replace=True) for c in classes])
        aucs.append(cv_auc(X[idx], y[idx], fit_predict, repeats=1, groups=idx)[0])
    return np.array(aucs)


FEATURE_KINDS = {"power": "power spectrum", "h-v": "h-v power", "grad": "gradients",
                 "row": "row profile", "col": "column profile", "p": "percentiles"}


def feature_groups() -> dict[str, np.ndarray]:
    """``texture_features``' entries by kind, read from ``feature_names``' prefixes: name ->
    column indices (int array)."""
    prefixes = [re.match(r"[a-z-]+", n).group() for n in feature_names()]
    return {kind: np.flatnonzero(np.array(prefixes) == pre) for pre, kind in FEATURE_KINDS.items()}


def matched_means_auc(X: np.ndarray, y: np.ndarray, cols: np.ndarray, repeats: int = 5) -> list[float]:
    """The texture test as if the phantoms (``y`` 0) had the real images' (``y`` 1) mean in the
    columns ``cols`` of X ([n, features]): in each fold every phantom's ``cols`` move by the
    training fold's real-minus-phantom mean (the held-out real images take no part), then the
    logistic regression is fitted and scored as in ``cv_auc``. One AUC per shuffle seed."""
    def score_fold(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        Xs = X.copy()
        real_tr, ph_tr = tr[y[tr] == 1], tr[y[tr] == 0]
        Xs[np.ix_(y == 0, cols)] += X[np.ix_(real_tr, cols)].mean(0) - X[np.ix_(ph_tr, cols)].mean(0)
        return logistic(Xs[tr], y[tr], Xs[te])

    return out_of_fold_aucs(y, score_fold, repeats)


def group_aucs(X: np.ndarray, y: np.ndarray, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Where the texture test's separation lies: for each ``feature_groups`` group, the mean AUC
    of the test on that group alone and on all but it; and ``all``, with every mean matched
    (``matched_means_auc``: about 0.5 when the sets differ in their means only, as a linear test
    sees them). No group's means are matched on their own: the kinds are tied (the row and
    column profiles and the percentiles share the image's mean), so moving one kind alone would
    make phantoms that no image could be."""
    out = {}
    every = np.arange(X.shape[1])
    for name, cols in feature_groups().items():
        out[name] = {"alone": float(np.mean(cv_auc(X[:, cols], y, logistic, repeats))),
                     "without": float(np.mean(cv_auc(X[:, np.setdiff1d(every, cols)], y, logistic, repeats)))}
    out["all"] = {"means matched": float(np.mean(matched_means_auc(X, y, every, repeats)))}
    return out


def set_aucs(X: np.ndarray, y: np.ndarray, sets: np.ndarray, repeats: int = 5) -> dict[str, dict]:
    """The texture test by real set (device, clinic): each set against all the phantoms, and each
    two sets against each other (how far apart real DPRs of two sources read on the same test:
    the scale on which a phantom figure reads). ``X`` [n, features], ``y`` (1 real, 0 phantom),
    ``sets`` [n] the real rows' set labels (ignored for phantoms). Sets with fewer than
    ``MIN_ROIS`` ROIs are listed with their count only. Returns {"vs phantoms": {set: {"n",
    "mean", "min", "max"}}, "between sets": {"A vs B": {...}}}."""
    labels = sorted(set(sets[y == 1]))
    rows = {s: np.flatnonzero((y == 1) & (sets == s)) for s in labels}
    phantoms = np.flatnonzero(y == 0)

    def test(a: np.ndarray, b: np.ndarray) -> dict:
        idx = np.r_[a, b]
        aucs = cv_auc(X[idx], np.r_[np.ones(len(a)), np.zeros(len(b))].astype(int), logistic, repeats)
        return auc_summary(aucs)

    out = {"vs phantoms": {}, "between sets": {}}
    for s in labels:
        out["vs phantoms"][s] = {"n": len(rows[s])} | (test(rows[s], phantoms) if len(rows[s]) >= MIN_ROIS else {})
    big = [s for s in labels if len(rows[s]) >= MIN_ROIS]
    for i, a in enumerate(big):
        for b in big[i + 1:]:
            out["between sets"][f"{a} vs {b}"] = test(rows[a], rows[b])
    return out


# Small acquisition-chain changes, applied to the real DPRs themselves (full size, before the
# finder): the scale on which the phantoms' texture AUC reads. Devices differ by more than any
# one of them (the two of shared/ export images 2048 and 2600-3138 px wide, each with its own
# processing). name: (kind, amount); see ``chain_change``.
CHAIN_CHANGES = {
    "gamma 0.9": ("gamma", 0.9),
    "noise, SD 1 grey level": ("noise", 1.0),
    "unsharp mask, 0.3 at 2 px": ("unsharp", 0.3),
    "Gaussian blur, 0.5 px": ("blur", 0.5),
    "Gaussian blur, 0.7 px": ("blur", 0.7),
    "pixels 1.25x larger": ("pixels", 0.8),
    "JPEG, quality 75": ("jpeg", 75),
}
UNSHARP_SIGMA_PX = 2.0   # the unsharp mask's Gaussian (full-size pixels)


def chain_change(g: np.ndarray, kind: str, amount: float, seed: int = 0) -> tuple[np.ndarray, float]:
    """One DPR (uint8 (H, W), full size) after one acquisition-chain change, and the factor by
    which its pixel spacing grows. ``kind``: 'gamma' (grey ** amount), 'noise' (Gaussian, SD
    ``amount`` grey levels; ``seed``), 'unsharp' (``amount`` times the detail above a Gaussian of
    ``UNSHARP_SIGMA_PX``), 'blur' (Gaussian, sigma ``amount`` pixels), 'pixels' (resized by
    ``amount``, bilinear) or 'jpeg' (re-encoded at quality ``amount``)."""
    import io

    import cv2

    x = g.astype(np.float32)
    if kind == "gamma":
        x = 255.0 * (x / 255.0) ** amount
    elif kind == "noise":
        x = x + np.random.default_rng(seed).normal(0.0, amount, x.shape)
    elif kind == "unsharp":
        x = x + amount * (x - cv2.GaussianBlur(x, (0, 0), UNSHARP_SIGMA_PX))
    elif kind == "blur":
        x = cv2.GaussianBlur(x, (0, 0), amount) if amount > 0 else x
    elif kind == "pixels":
        h, w = g.shape
        return np.asarray(Image.fromarray(g).resize((round(w * amount), round(h * amount)), Image.BILINEAR)), 1 / amount
    elif kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(g).save(buf, "JPEG", quality=int(amount))
        return np.asarray(Image.open(buf).convert("L")), 1.0
    else:
        raise ValueError(f"unknown chain change {kind!r}")
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), 1.0


def reference_aucs(files: list[Path], roi: dict, anatomy: dict, changes: dict = CHAIN_CHANGES,
                   repeats: int = 5, pixel_mm: float = 0.1) -> dict:
    """The texture two-sample AUC between real DPRs ``files`` and the same DPRs after each of
    ``changes`` (``CHAIN_CHANGES``' form), on ROIs the finder places on each version. Paired:
    5-fold splits keep an image's two versions in one fold (identical versions read 0.5).
    Returns {name: {"mean", "min", "max", "pairs"}}; a change with fewer than ``MIN_ROIS`` placed
    pairs is left out."""
    t0 = time.perf_counter()
    pairs = {name: ([], []) for name in changes}     # texture features of (the original, the changed) ROIs
    from tqdm import tqdm

    from osteo.data.images import ImageReadError

    for i, f in enumerate(tqdm(files, desc="reference", unit="img")):   # one image in memory at a time
        try:
            g = read_gray(f)
        except ImageReadError:   # cut_rois has said so
            continue
        r0 = cut_roi(g, roi, anatomy, pixel_mm)[0]
        if r0 is None:
            continue
        x0 = texture_features(r0)
        for name, (kind, amount) in changes.items():
            h, grow = chain_change(g, kind, amount, seed=i)
            r1 = cut_roi(h, roi, anatomy, pixel_mm * grow)[0]
            if r1 is not None:
                pairs[name][0].append(x0)
                pairs[name][1].append(texture_features(r1))
    print(f"  ({len(files)} images x {len(changes)} changes placed in {time.perf_counter() - t0:.0f} s)")
    out = {}
    for name, (X0, X1) in pairs.items():
        n = len(X0)
        if n < MIN_ROIS:
            print(f"  {name}: {n} pairs placed, fewer than {MIN_ROIS} (left out)")
            continue
        X = np.array(X0 + X1)
        y = np.r_[np.ones(n), np.zeros(n)].astype(int)
        aucs = cv_auc(X, y, logistic, repeats, groups=np.r_[np.arange(n), np.arange(n)])
        out[name] = auc_summary(aucs) | {"pairs": n}
        print(f"  {name:28s} {np.mean(aucs):.3f} ({min(aucs):.3f} to {max(aucs):.3f}; {n} pairs)")
    return out


def logistic(X_tr, y_tr, X_te, C: float = 1.0):
    """Scores of a standardised L2 logistic regression (inverse regularisation ``C``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    return m.fit(X_tr, y_tr).predict_proba(X_te)[:, 1]


def small_cnn(X_tr, y_tr, X_te, epochs: int = 30, seed: int = 0):
    """A 4-block CNN on per-image standardised ROIs [n, 1, h, w]; returns test scores."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    blocks, c = [], 1
    for k in (8, 16, 32, 32):
        blocks += [nn.Conv2d(c, k, 3, padding=1), nn.BatchNorm2d(k), nn.ReLU(), nn.MaxPool2d(2)]
        c = k
    net = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4)
    xt, yt = torch.as_tensor(X_tr), torch.as_tensor(y_tr, dtype=torch.float32)
    w = torch.where(yt > 0, (yt == 0).sum() / yt.sum().clamp(min=1), torch.tensor(1.0))
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 16):
            b = perm[i:i + 16]
            xb = xt[b]
            if torch.rand(()) < 0.5:
                xb = xb.flip(-1)
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb)[:, 0], yt[b], weight=w[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return net(torch.as_tensor(X_te))[:, 0].numpy()


def standardised(rois: np.ndarray, scale: float = 0.5) -> np.ndarray:
    """ROIs shrunk by ``scale`` and standardised per image: float32 [n, 1, h, w]."""
    h, w = rois.shape[1:]
    small = np.stack([np.asarray(Image.fromarray(r).resize((int(w * scale), int(h * scale)), Image.BILINEAR))
                      for r in rois]).astype(np.float32)
    small = (small - small.mean((1, 2), keepdims=True)) / (small.std((1, 2), keepdims=True) + 1e-6)
    return small[:, None]


def sheet(real: np.ndarray, phantom: np.ndarray, out: Path, k: int = 8) -> None:
    """k real ROIs (left column) beside k phantom ROIs (right column), at half scale."""
    k = min(k, len(real), len(phantom))
    h, w = real.shape[1] // 2, real.shape[2] // 2
    canvas = np.full((k * (h + 4), 2 * w + 8), 0, np.uint8)
    for i in range(k):
        for j, src in enumerate((real, phantom)):
            t = np.asarray(Image.fromarray(src[i]).resize((w, h), Image.BILINEAR))
            canvas[i * (h + 4):i * (h + 4) + h, j * (w + 8):j * (w + 8) + w] = t
    from osteo.io import atomic_save_image

    atomic_save_image(out, Image.fromarray(canvas))


def curves(real: np.ndarray, phantom: np.ndarray, out: Path) -> None:
    """Mean row profile and radial log power spectrum of both sets, 10-90 % bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    fc = np.sqrt(RADIAL_EDGES[:-1] * RADIAL_EDGES[1:])
    for name, s, col in (("real", real, "C0"), ("phantom", phantom, "C1")):
        a = s.astype(np.float64) / 255
        rp = a.mean(2)
        q = np.percentile(rp, [10, 50, 90], axis=0)
        ax[0].plot(np.arange(rp.shape[1]), q[1], col, label=name)
        ax[0].fill_between(np.arange(rp.shape[1]), q[0], q[2], color=col, alpha=0.2)
        hist = np.stack([np.histogram(x, 64, (0, 1), density=True)[0] for x in a])
        ax[1].plot(np.linspace(0, 1, 64), hist.mean(0), col, label=name)
        sp = np.stack([radial_spectrum(x) for x in a])
        q = np.percentile(sp, [10, 50, 90], axis=0)
        ax[2].semilogx(fc, q[1], col, label=name)
        ax[2].fill_between(fc, q[0], q[2], color=col, alpha=0.2)
    ax[0].set(xlabel="ROI row (0 = top)", ylabel="mean grey (0..1)", title="row profile (median, 10-90 %)")
    ax[1].set(xlabel="grey (0..1)", ylabel="density", title="grey-level histogram (mean)")
    ax[2].set(xlabel="frequency (cycles/pixel)", ylabel="log10 power", title="radial power spectrum")
    for a_ in ax:
        a_.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, required=True, nargs="+",
                    help="real DPRs: folders (searched recursively; where they hold images/ folders, those) or "
                         "manifest CSVs; each folder, and each subfolder holding images, is one set in the breakdown")
    ap.add_argument("--n", type=int, default=160, help=f"phantoms to generate (default 160; at least {MIN_ROIS})")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--framing-spread", type=float, default=None,
                    help="PhantomParams.framing_spread (default: --params' value, else 0)")
    ap.add_argument("--phantom-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("outputs/realism"))
    ap.add_argument("--no-cnn", action="store_true", help="skip the CNN two-sample test")
    ap.add_argument("--reference", action="store_true",
                    help="also measure the texture test between the real DPRs and themselves after small "
                         "acquisition-chain changes (CHAIN_CHANGES): the scale the phantoms' AUC reads on")
    ap.add_argument("--bootstrap", type=int, default=200,
                    help="resamples of the images for the texture test's interval (0: none)")
    ap.add_argument("--look", type=Path, default=None, help="JSON of Look fields (default: the shipped Look)")
    ap.add_argument("--params", type=Path, default=None,
                    help="JSON of PhantomParams fields (default: the generator's; n and seed from the flags)")
    a = ap.parse_args(argv)
    check_phantom_count(a.n)
    if a.bootstrap < 0:
        from osteo.cli import UserError

        raise UserError(f"--bootstrap {a.bootstrap}: give a number of resamples, or 0 for none")
    real_files, real_sets = [], []
    names = [Path(os.path.abspath(r)).name for r in a.real]
    for root, name in zip(a.real, names):
        files = real_images(root)
        real_files += files   # two --real of one name are told apart by their paths as given
        real_sets += [real_set_label(f, root, None if names.count(name) == 1 else str(root)) for f in files]
    keep = distinct_images(real_files)
    real_files, real_sets = [real_files[i] for i in keep], [real_sets[i] for i in keep]
    cfg = compose([])
    roi = OmegaConf.to_container(cfg.data.roi, resolve=True)
    anatomy = OmegaConf.to_container(cfg.data.anatomy, resolve=True)
    a.out.mkdir(parents=True, exist_ok=True)

    from osteo.data.phantom import generate, read_look, read_params

    look = read_look(a.look)
    spread = {} if a.framing_spread is None else {"framing_spread": a.framing_spread}
    params = read_params(a.params, n=a.n, seed=a.seed, **spread)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pdir = a.phantom_dir or Path(tmp) / "phantoms"
        if not (pdir / "phantom.json").exists():
            generate(pdir, params, progress=False, look=look)
        ph_files = sorted(p for p in (pdir / "images").glob("*") if p.suffix in (".png", ".jpg"))[:a.n]
        print(f"cutting ROIs: {len(real_files)} real, {len(ph_files)} phantoms")
        real, real_border, kept = cut_rois(real_files, roi, anatomy)
        phantom, phantom_border, _ = cut_rois(ph_files, roi, anatomy)
    print(f"  {len(real)} real and {len(phantom)} phantom ROIs in {time.perf_counter() - t0:.0f} s")

    import pandas as pd

    regions = {name: pd.DataFrame([region_stats(r, b) for r, b in zip(rois, borders)]).median()
               for name, rois, borders in (("real", real, real_border), ("phantom", phantom, phantom_border))}
    print("anatomy at the traced border (medians; grey 0..1, log10 power):")
    print(pd.DataFrame(regions).round(3).to_string())
    X = np.stack([texture_features(r) for r in np.concatenate([real, phantom])])
    y = np.r_[np.ones(len(real)), np.zeros(len(phantom))].astype(int)
    tex = cv_auc(X, y, logistic)
    from sklearn.metrics import roc_auc_score

    single = sorted(((max(roc_auc_score(y, x), 1 - roc_auc_score(y, x)), n)
                     for x, n in zip(X.T, feature_names())), reverse=True)
    print("statistics that separate most on their own (AUC):",
          ", ".join(f"{n} {a:.2f}" for a, n in single[:8]))
    res = {"n_real": len(real), "n_phantom": len(phantom), "regions": pd.DataFrame(regions).to_dict(),
           "texture_auc": auc_summary(tex)}
    print(f"two-sample AUC, texture statistics + logistic regression: {np.mean(tex):.3f} "
          f"(5 shuffles: {min(tex):.3f} to {max(tex):.3f}; target <= 0.80)")
    if a.bootstrap > 0:
        if min(len(real), len(phantom)) < BOOTSTRAP_MIN_IMAGES:
            print(f"  (no bootstrap interval: it needs {BOOTSTRAP_MIN_IMAGES} or more ROIs in each set)")
        else:
            lo, med, hi = np.percentile(bootstrap_aucs(X, y, logistic, a.bootstrap), [2.5, 50, 97.5])
            res["texture_auc"]["bootstrap"] = {"resamples": a.bootstrap, "median": med, "2.5%": lo, "97.5%": hi}
            print(f"  with the images drawn again ({a.bootstrap} bootstrap resamples of both sets): "
                  f"median {med:.3f}, 95% interval {lo:.3f} to {hi:.3f}")
    groups = group_aucs(X, y)
    res["texture_groups"] = groups
    print("  by kind of statistic (mean AUC of 5 shuffles): that kind alone / all but it")
    for name, g in groups.items():
        if name != "all":
            print(f"    {name:15s} {g['alone']:.3f} / {g['without']:.3f}")
    print(f"    all, with the phantoms' means moved to the real images' (training folds' means): "
          f"{groups['all']['means matched']:.3f}")
    sets = np.r_[np.array(real_sets, dtype=object)[kept], np.full(len(phantom), "", dtype=object)]
    if len(set(sets[y == 1])) > 1:
        res["texture_by_set"] = by_set = set_aucs(X, y, sets)
        print("  by real set (subfolder or --real): against the phantoms, then against each other (5 shuffles)")
        for name, r in by_set["vs phantoms"].items():
            print(f"    {name}: {r['n']} ROIs, " + (f"{r['mean']:.3f} ({r['min']:.3f} to {r['max']:.3f})" if "mean" in r
                                                 else f"fewer than {MIN_ROIS}: not tested"))
        for name, r in by_set["between sets"].items():
            print(f"    {name}: {r['mean']:.3f} ({r['min']:.3f} to {r['max']:.3f})")
    if not a.no_cnn:
        t1 = time.perf_counter()
        Xc = standardised(np.concatenate([real, phantom]))
        cnn = cv_auc(Xc, y, small_cnn, repeats=2, progress="small CNN (2 shuffles x 5 folds)")
        res["cnn_auc"] = auc_summary(cnn)
        print(f"two-sample AUC, small CNN on standardised half-scale ROIs: {np.mean(cnn):.3f} "
              f"(2 shuffles: {min(cnn):.3f} to {max(cnn):.3f}; {time.perf_counter() - t1:.0f} s)")
    if a.reference:
        print(f"reference: the same texture test between the {len(real_files)} real DPRs and themselves after one small "
              "acquisition-chain change (full size, before the finder; paired 5-fold, 5 shuffles):")
        res["reference"] = reference_aucs(real_files, roi, anatomy)
    rng = np.random.default_rng(0)
    sheet(real[rng.permutation(len(real))], phantom[rng.permutation(len(phantom))], a.out / "sheet.png")
    curves(real, phantom, a.out / "curves.png")
    from osteo.io import atomic_write_text

    atomic_write_text(a.out / "realism.json", json.dumps(res, indent=1))   # never half-written
    print(f"wrote {a.out / 'sheet.png'}, {a.out / 'curves.png'}, {a.out / 'realism.json'}")
    return 0


if __name__ == "__main__":
    from osteo.cli import run_cli

    raise SystemExit(run_cli(main))
