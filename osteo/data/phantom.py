"""Synthetic dental panoramic radiographs (DPR phantoms) with known ground truth.

Each phantom has a DXA T-score; osteoporosis (T <= -2.5) thins the mandibular cortex along
the inferior border and erodes its inner margin (Klemetti C1 smooth, C2 semilunar defects,
C3 porous), and makes the trabecular bone sparser. Age and sex follow Table 1 of
Lee et al. (2020) by class. Confounders seen on real DPRs are drawn too: framing, tilt, teeth
(more missing with age), the cervical spine's ghost over the midline, the hyoid's ghost near
the border, contrast, gamma, blur and noise.

Geometry: the inferior border in original pixels is
``y(x) = yc - a*s**2 - c*s**4 + tilt*s`` with ``s = (x - xc) / halfwidth``
(``border_y``); its parameters are manifest columns. In the thesis's resized frame
(1200 x 630) the default framing is that of one device (narrow spread);
``framing_spread=1`` widens it to the multi-device spread measured on real DPRs
(shared/dpr-geometry.md).

    python -m osteo.data.phantom --n 680 --out DIR --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from osteo.io import atomic_save_image, atomic_write_csv, atomic_write_json, available_cpus, file_lock

log = logging.getLogger(__name__)

WORK_WH = (1200, 630)  # the frame phantoms are drawn in: the thesis's resize target (W x H)


@dataclass(frozen=True)
class PhantomParams:
    """Population and rendering parameters (defaults: the thesis's Table 1, one device)."""

    n: int = 680
    seed: int = 0
    difficulty: float = 1.0          # scales the individual noise that blurs the signal
    framing_spread: float = 0.0      # 0: one device (narrow); 1: multi-device spread
    frac_osteoporosis: float = 300 / 680
    female_frac: tuple = (332 / 380, 233 / 300)   # by class (0, 1)
    age_mean: tuple = (58.5, 68.4)
    age_sd: tuple = (11.8, 8.4)
    age_range: tuple = (27.0, 90.0)
    t_threshold: float = -2.5
    cw_at_t_minus1_mm: float = 3.9   # mean cortical width at T = -1
    cw_per_t_mm: float = 0.55        # mm of cortex per unit of T-score
    cw_noise_mm: float = 0.6         # individual variation at difficulty 1
    width_px: tuple = (1348, 2820)   # original image widths seen in the thesis
    fov_mm: float = 250.0            # field of view across the image width
    hyoid_prob: float = 0.2
    low_contrast_prob: float = 0.1


# ----------------------------------------------------------------------------- subjects

def sample_subjects(p: PhantomParams) -> pd.DataFrame:
    """Draw the subjects (no pixels): demographics, T-score, cortex and geometry.

    Returns one row per subject; border parameters are in original pixels.
    """
    rng = np.random.default_rng([p.seed, 0])
    n1 = int(round(p.n * p.frac_osteoporosis))
    label = np.array([0] * (p.n - n1) + [1] * n1)
    rng.shuffle(label)
    d = p.difficulty
    rows = []
    for i, y in enumerate(label):
        sex = "F" if rng.random() < p.female_frac[y] else "M"
        age = float(np.clip(rng.normal(p.age_mean[y], p.age_sd[y]), *p.age_range))
        if y == 0:  # T above the threshold
            t = rng.normal(-1.0, 0.9)
            while t <= p.t_threshold + 0.05:
                t = rng.normal(-1.0, 0.9)
            t = max(round(t, 1), p.t_threshold + 0.1)
        else:       # half-normal below it
            t = min(round(p.t_threshold - abs(rng.normal(0.0, 0.7)), 1), p.t_threshold)
        cw = p.cw_at_t_minus1_mm + p.cw_per_t_mm * (t + 1.0) + rng.normal(0, p.cw_noise_mm * d)
        cw = float(np.clip(cw, 0.8, 6.5))
        erosion = -t + rng.normal(0, 0.7 * d)
        klemetti = "C1" if erosion < 1.9 else ("C2" if erosion < 2.9 else "C3")
        bvf = float(np.clip(0.52 + 0.05 * t + rng.normal(0, 0.05 * d), 0.2, 0.7))  # trabecular density
        W = int(rng.integers(p.width_px[0], p.width_px[1] + 1))
        H = int(np.clip(round(W * rng.uniform(0.49, 0.53)), 685, 1348))
        s = p.framing_spread
        # geometry in the 1200x630 frame, then to original pixels
        yc = np.clip(rng.normal(580 + 3 * s, 5 + s * 12), 568 - 28 * s, 592 + 22 * s)
        # spans (rise + tilt) up to 134 rows across x = 250..950: dpr-geometry.md measured 43..137
        # (median 86), and 17 of its 18 borders fit a 140-row box with margins
        rise = np.clip(rng.normal(72 + 13 * s, 6 + s * 14), 55 - 15 * s, 88 + 30 * s)
        tilt = np.clip(rng.normal(0, 3 + 5 * s), -6 - 10 * s, 6 + 10 * s)
        xc = rng.normal(600 + 12 * s, 5 + 7 * s)
        half = rng.normal(350, 8 + 4 * s)
        a_frac = rng.uniform(0.7, 0.85)
        sx, sy = W / WORK_WH[0], H / WORK_WH[1]
        rows.append(dict(
            patient_id=f"P{i:04d}", label=int(y), t_score=float(t), sex=sex, age=round(age, 1),
            dxa_site="lumbar_spine", cortical_width_mm=round(cw, 3), klemetti=klemetti,
            trabecular_bvf=round(bvf, 3), width=W, height=H,
            pixel_mm=round(p.fov_mm / W, 5),
            border_xc=float(xc * sx), border_yc=float(yc * sy), border_a=float(rise * a_frac * sy),
            border_c=float(rise * (1 - a_frac) * sy), border_tilt=float(tilt * sy),
            border_halfwidth=float(half * sx),
            hyoid=int(rng.random() < p.hyoid_prob),
            low_contrast=int(rng.random() < p.low_contrast_prob),
        ))
    return pd.DataFrame(rows)


def border_y(x: np.ndarray, row) -> np.ndarray:
    """Row (original pixels, y down) of the inferior border at columns ``x`` (original pixels)."""
    g = row.get if isinstance(row, dict) else row.__getitem__
    s = (np.asarray(x, dtype=np.float64) - g("border_xc")) / g("border_halfwidth")
    return g("border_yc") - g("border_a") * s ** 2 - g("border_c") * s ** 4 + g("border_tilt") * s


# ----------------------------------------------------------------------------- rendering

def roi_border_rows(row, roi, box_xywh) -> np.ndarray:
    """Row of the true inferior border in ROI pixels for each ROI column of a phantom.

    ``row`` holds the phantom's border columns, width and height (original pixels); ``roi``
    the ROI settings (resize_wh, scale); ``box_xywh`` the box in resized pixels.
    Returns float [w * scale].
    """
    x0, y0, w, h = box_xywh
    W, H = roi["resize_wh"]
    scale = roi.get("scale", 1.0)
    ow = int(round(w * scale))
    u = x0 + (np.arange(ow) + 0.5) / scale  # resized-frame column of each ROI column centre
    y = border_y(u * row["width"] / W, row) * H / row["height"]
    return (y - y0) * scale


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(a, (0, 0), sigma) if sigma > 0 else a


def render(row: dict, p: PhantomParams) -> np.ndarray:
    """Draw one phantom; returns uint8 (height, width) in original pixels."""
    rng = np.random.default_rng([p.seed, 1, int(row["patient_id"][1:])])
    Wk, Hk = WORK_WH
    W, H = row["width"], row["height"]
    sx, sy = W / Wk, H / Hk
    u = np.arange(Wk, dtype=np.float32)
    v = np.arange(Hk, dtype=np.float32)[:, None]
    xc = row["border_xc"] / sx
    half = row["border_halfwidth"] / sx
    s = (u - xc) / half
    b = border_y(u * sx, row) / sy                                   # border row per column
    mm_per_px = row["pixel_mm"] * H / Hk                     # vertical mm per work pixel
    d = p.difficulty

    # soft tissue and background: brighter skull/maxilla above, darker neck below
    img = 0.30 + 0.18 * np.exp(-v / 180.0) + 0.0 * u
    img = img + 0.05 * _blur(rng.standard_normal((Hk, Wk)).astype(np.float32), 40) * 6
    below = np.clip((v - b) / 90.0, 0, 1)
    img = img - 0.10 * below

    # mandible body between the alveolar crest and the inferior border (ramus rises at the sides)
    body_h = (29.0 - 5.0 * np.abs(s)) / mm_per_px                  # crest to border: ~29 mm
    crest = b - body_h
    inside = (v >= crest) & (v <= b) & (np.abs(s) < 1.45)
    ramus = (np.abs(s) >= 1.25) & (np.abs(s) < 1.6) & (v <= b) & (v > b - 420)
    bone = (inside | ramus).astype(np.float32)

    # trabecular bone: band-pass noise thresholded at the bone volume fraction
    noise = rng.standard_normal((Hk, Wk)).astype(np.float32)
    band = _blur(noise, 1.6) - _blur(noise, 4.5)
    thr = np.quantile(band, 1 - row["trabecular_bvf"])
    trab = 0.42 + 0.13 * _blur((band > thr).astype(np.float32), 0.8) + 0.03 * band
    img = img * (1 - bone) + trab * bone

    # cortex along the inferior border: width in pixels, thickest below the mental foramen
    cw_px = row["cortical_width_mm"] / mm_per_px
    prof = 0.78 + 0.22 * np.exp(-((np.abs(s) - 0.55) / 0.3) ** 2)
    prof = prof / (0.78 + 0.22)  # 1.0 at the measuring site
    # the width is measured perpendicular to the border (in mm, work pixels are not square)
    slope_mm = np.gradient(b) * (mm_per_px / (row["pixel_mm"] * W / Wk))
    inner = b - cw_px * prof * np.sqrt(1 + slope_mm ** 2) \
        + 0.6 * _blur(rng.standard_normal(Wk).astype(np.float32)[None], 3)[0]
    k = row["klemetti"]
    if k in ("C2", "C3"):  # semilunar lacunar defects of the endosteal margin
        n_def = rng.poisson((0.035 if k == "C2" else 0.06) * Wk * 0.6)
        for c in rng.uniform(xc - 1.2 * half, xc + 1.2 * half, n_def):
            r = rng.uniform(0.25, 0.6) * cw_px + 1
            span = np.abs(u - c) < r
            inner[span] += np.sqrt(np.maximum(r ** 2 - (u[span] - c) ** 2, 0)) * 0.8
    inner = np.minimum(inner, b - 0.7)
    cortex = ((v >= inner) & (v <= b) & (np.abs(s) < 1.45)).astype(np.float32)
    if k == "C3":  # porous cortex: dark pores throughout its width
        pores = (rng.random((Hk, Wk)) < 0.05).astype(np.float32)
        pores = _blur(pores, 0.9) > 0.12
        cortex = cortex * (1 - 0.8 * pores)
    img = img * (1 - cortex) + 0.80 * cortex
    # soft edge just below the border (periosteum / soft tissue transition)
    img = img + 0.05 * np.exp(-np.maximum(v - b, 0) / 6.0) * (v > b)

    # teeth: lower and upper arches above the crest, some missing (more with age)
    miss = float(np.clip(0.04 + 0.006 * (row["age"] - 40), 0.0, 0.55))
    crest_c = crest
    for arch in (0, 1):
        xs = np.linspace(xc - 0.95 * half, xc + 0.95 * half, 14)
        wt = (xs[1] - xs[0]) * 0.42
        for x_t in xs:
            if rng.random() < miss:
                continue
            ci = int(np.clip(x_t, 0, Wk - 1))
            top = crest_c[ci] - 55 - (85 if arch else 0) + rng.normal(0, 3)
            tooth_len = 95 + rng.normal(0, 6)
            yy0, yy1 = (top, top + tooth_len) if arch == 0 else (top - tooth_len + 55, top + 10)
            root_end = crest_c[ci] + 42 if arch == 0 else yy1
            y_lo, y_hi = yy0, (root_end if arch == 0 else yy1)
            r0, r1 = int(max(np.floor(y_lo), 0)), int(min(np.ceil(y_hi) + 1, Hk))
            c0, c1 = int(max(np.floor(x_t - wt), 0)), int(min(np.ceil(x_t + wt) + 1, Wk))
            if r1 <= r0 or c1 <= c0:
                continue
            vv, uu = v[r0:r1], u[c0:c1]
            m = (np.abs(uu - x_t) < wt * (1 - 0.5 * np.clip((vv - crest_c[ci]) / 60, 0, 1))) \
                & (vv > y_lo) & (vv < y_hi)
            img[r0:r1, c0:c1] = np.where(m, 0.78 + 0.08 * (vv < crest_c[ci] - 20), img[r0:r1, c0:c1])

    # cervical spine ghost over the midline, hyoid ghost near the border
    img = img + 0.12 * np.exp(-((u - xc) / 60.0) ** 2) * (1 + 0.3 * np.sin(v / 35.0))
    if row["hyoid"]:
        hx = xc + rng.choice([-1, 1]) * rng.uniform(70, 230)
        hy = b[int(np.clip(hx, 0, Wk - 1))] + rng.uniform(-12, 28)
        ang = rng.uniform(-0.3, 0.3)
        du, dv = u - hx, v - hy
        r2 = ((du * np.cos(ang) + dv * np.sin(ang)) / 45) ** 2 + ((-du * np.sin(ang) + dv * np.cos(ang)) / 9) ** 2
        img = img + 0.22 * _blur((r2 < 1).astype(np.float32), 2.5)

    # acquisition: blur, contrast, brightness, gamma, then full-resolution noise
    img = _blur(img.astype(np.float32), rng.uniform(0.5, 1.4) * d)
    contrast = rng.normal(1.0, 0.1) * (0.55 if row["low_contrast"] else 1.0)
    img = 0.5 + contrast * (img - 0.5) + rng.normal(0, 0.035)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    full = cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)
    full += rng.standard_normal((H, W), dtype=np.float32) * np.float32(rng.uniform(0.008, 0.025) * d)
    return np.clip(np.rint(full * 255.0), 0, 255).astype(np.uint8)


def _render_to_file(args) -> str:
    row, p, path = args
    atomic_save_image(path, Image.fromarray(render(row, p)), compress_level=1)
    return path


# ----------------------------------------------------------------------------- the data set

def oracle_auc(subjects: pd.DataFrame, split_seed: int = 0) -> dict:
    """AUC of the true cortical width (thinner = osteoporosis) on the held-out test split
    that the default split settings draw, and on all subjects."""
    from sklearn.metrics import roc_auc_score

    from osteo.data.splits import SplitError, make_splits

    d = subjects.assign(image_rel=subjects["patient_id"])
    n_min = int(d["label"].value_counts().min()) if d["label"].nunique() == 2 else 0
    tpc = 68 if n_min >= 68 + 5 + 30 else None
    try:
        sp = make_splits(d, seed=split_seed, test_per_class=tpc,
                         test_fraction=None if tpc else 0.2, n_folds=5)
    except SplitError:  # too few phantoms to split: no oracle figure
        return {"test": float("nan"), "all": float("nan"), "n_test": 0}
    test = (sp["part"] == "test").to_numpy()
    score = -subjects["cortical_width_mm"].to_numpy()
    y = subjects["label"].to_numpy()
    return {"test": float(roc_auc_score(y[test], score[test])), "all": float(roc_auc_score(y, score)),
            "n_test": int(test.sum())}


def generate(out: str | Path, p: PhantomParams = PhantomParams(), workers: int | None = None,
             progress: bool = True) -> Path:
    """Write ``images/*.png``, ``manifest.csv``, ``phantom.json`` and ``contact_sheet.png``
    into ``out``; returns the manifest path. The same parameters give byte-identical files."""
    from tqdm.auto import tqdm

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subjects = sample_subjects(p)
    subjects.insert(0, "image", [f"images/dpr_{i:04d}.png" for i in range(len(subjects))])
    jobs = [(r, p, str(out / r["image"])) for r in subjects.to_dict("records")]
    workers = workers or min(available_cpus(), 8)
    with tqdm(total=len(jobs), desc="phantoms", unit="img", disable=not progress) as bar:
        if workers > 1 and len(jobs) > 2:
            with ProcessPoolExecutor(workers) as ex:
                for _ in ex.map(_render_to_file, jobs, chunksize=2):
                    bar.update()
        else:
            for j in jobs:
                _render_to_file(j)
                bar.update()
    manifest = atomic_write_csv(out / "manifest.csv", subjects)
    contact_sheet(subjects, out, out / "contact_sheet.png")
    summary = {"params": asdict(p), "oracle_auc": oracle_auc(subjects),
               "seconds": round(time.perf_counter() - t0, 1), "workers": workers,
               "class_stats": class_stats(subjects)}
    atomic_write_json(out / "phantom.json", summary)  # last: marks the set complete
    return manifest


def class_stats(df: pd.DataFrame) -> dict:
    """Per class: count, female/male, age mean/SD, cortical width mean/SD (mm)."""
    res = {}
    for y, g in df.groupby("label"):
        res[str(int(y))] = {"n": int(len(g)), "female": int((g["sex"] == "F").sum()),
                            "male": int((g["sex"] == "M").sum()),
                            "age_mean": float(g["age"].mean()), "age_sd": float(g["age"].std()),
                            "cw_mean": float(g["cortical_width_mm"].mean()),
                            "cw_sd": float(g["cortical_width_mm"].std())}
    return res


def contact_sheet(subjects: pd.DataFrame, root: Path, out: Path, per_class: int = 4,
                  tile_w: int = 480) -> Path:
    """A PNG grid of phantoms of both classes (rows), captioned with T-score and cortex."""
    from PIL import ImageDraw

    tiles = []
    for y in (0, 1):
        pick = subjects[subjects["label"] == y].head(per_class)
        for r in pick.to_dict("records"):
            im = Image.open(root / r["image"]).convert("L")
            im = im.resize((tile_w, int(tile_w * im.height / im.width)), Image.BILINEAR)
            tile = Image.new("L", (tile_w, im.height + 22), 0)
            tile.paste(im, (0, 22))
            ImageDraw.Draw(tile).text(
                (4, 4), f"{'OSTEOPOROSIS' if y else 'normal'}  T={r['t_score']:.1f}  "
                f"cortex={r['cortical_width_mm']:.2f} mm  {r['klemetti']}  {r['sex']} {r['age']:.0f}y", fill=255)
            tiles.append(tile)
    if not tiles:
        raise ValueError("no phantoms to show")
    th = max(t.height for t in tiles)
    cols = per_class
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("L", (cols * tile_w, rows * th), 30)
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * tile_w, (i // cols) * th))
    atomic_save_image(out, sheet)
    return out


def ensure_phantom(out_dir: str | Path, workers: int | None = None, **params) -> Path:
    """Generate the phantom set in ``out_dir`` unless one with the same parameters is there.

    Parallel jobs wait on one lock: the first generates, the others reuse its files (every
    file is written atomically, and phantom.json, written last, marks the set complete).
    """
    p = PhantomParams(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()})
    out = Path(out_dir)
    info = out / "phantom.json"

    def complete() -> bool:
        return ((out / "manifest.csv").exists() and info.exists()
                and json.loads(info.read_text()).get("params") == json.loads(json.dumps(asdict(p))))

    if complete():
        return out / "manifest.csv"
    with file_lock(out.parent / f".{out.name}.lock"):
        if complete():
            return out / "manifest.csv"
        log.info("generating %d phantom DPRs (seed %d) in %s ...", p.n, p.seed, out)
        return generate(out, p, workers=workers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=680, help="number of phantoms (default 680)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--difficulty", type=float, default=1.0)
    ap.add_argument("--framing-spread", type=float, default=0.0,
                    help="0: one device (default); 1: multi-device spread of real DPRs")
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args(argv)
    from osteo.cli import UserError, setup_logging

    setup_logging()
    if a.n < 1:
        raise UserError(f"--n {a.n}: give the number of phantoms to make (1 or more)")
    if a.difficulty < 0 or a.framing_spread < 0:
        raise UserError("--difficulty and --framing-spread must be 0 or more")
    if a.workers is not None and a.workers < 1:
        raise UserError(f"--workers {a.workers}: give 1 or more")
    if Path(a.out).is_file():
        raise UserError(f"--out {a.out} is a file; give a folder for the images and manifest")
    p = PhantomParams(n=a.n, seed=a.seed, difficulty=a.difficulty, framing_spread=a.framing_spread)
    manifest = generate(a.out, p, workers=a.workers)
    info = json.loads((Path(a.out) / "phantom.json").read_text())
    log.info(f"wrote {p.n} phantoms and {manifest} in {info['seconds']} s ({info['workers']} workers)")
    log.info(f"oracle AUC (true cortical width as score): test split {info['oracle_auc']['test']:.3f} "
             f"(n={info['oracle_auc']['n_test']}), all {info['oracle_auc']['all']:.3f}")
    for y, st in info["class_stats"].items():
        log.info(f"  class {y}: n={st['n']} F/M={st['female']}/{st['male']} age {st['age_mean']:.1f} +- "
                 f"{st['age_sd']:.1f} cortex {st['cw_mean']:.2f} +- {st['cw_sd']:.2f} mm")
    log.info(f"contact sheet: {Path(a.out) / 'contact_sheet.png'}")
    return 0


if __name__ == "__main__":
    from osteo.cli import run_cli

    raise SystemExit(run_cli(main))
