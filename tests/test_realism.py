"""benchmarks/phantom_realism.py's reference scale: the texture two-sample test between DPRs and
themselves after one acquisition-chain change, on phantoms standing in for real DPRs."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from osteo.config import compose

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "phantom_realism.py"


@pytest.fixture(scope="module")
def realism():
    """The benchmark's functions (run as a file, not imported: benchmarks/ is not a package)."""
    return runpy.run_path(str(BENCHMARK))


@pytest.fixture(scope="module")
def roi_anatomy():
    cfg = compose([])
    return OmegaConf.to_container(cfg.data.roi, resolve=True), OmegaConf.to_container(cfg.data.anatomy, resolve=True)


def test_chain_changes_change_what_they_say(realism):
    """Each change is real computation on the pixels: gamma < 1 brightens, a blur lowers the
    pixel-to-pixel differences and an unsharp mask raises them, larger pixels shrink the image and grow the spacing by 1/amount,
    JPEG changes pixels but not the mean, and no change leaves the image as it is."""
    change = realism["chain_change"]
    g = np.random.default_rng(0).integers(20, 230, (120, 200)).astype(np.uint8)
    assert np.array_equal(change(g, "blur", 0.0)[0], g)
    assert change(g, "gamma", 0.9)[0].mean() > g.mean() + 5
    assert np.abs(np.diff(change(g, "blur", 0.7)[0].astype(int), axis=1)).mean() < 0.7 * np.abs(np.diff(g.astype(int), axis=1)).mean()
    smooth = change(g, "blur", 3.0)[0]   # an unsharp mask raises what detail is left
    assert np.abs(np.diff(change(smooth, "unsharp", 0.3)[0].astype(int), axis=1)).mean() > np.abs(np.diff(smooth.astype(int), axis=1)).mean()
    small, grow = change(g, "pixels", 0.8)
    assert small.shape == (96, 160) and grow == pytest.approx(1.25)
    j = change(g, "jpeg", 75)[0]
    assert j.shape == g.shape and not np.array_equal(j, g) and abs(float(j.mean()) - float(g.mean())) < 2
    n1, n2 = change(g, "noise", 1.0, seed=1)[0], change(g, "noise", 1.0, seed=2)[0]
    assert not np.array_equal(n1, n2) and abs(float(n1.astype(int).std() - g.std())) < 1
    with pytest.raises(ValueError, match="unknown chain change"):
        change(g, "sharpen", 1.0)


def test_reference_scale_reads_half_for_no_change_and_high_for_a_blur(realism, roi_anatomy, phantom_dir):
    """Real computation on 10 phantoms standing in for real DPRs: an identity "change" reads
    exactly 0.5 (the paired folds keep an image's two versions together; unpaired folds would read
    it far below 0.5, each version's twin being in the training set), and a 2-pixel blur, which
    removes the fine detail that the spectrum and the gradient histogram see, reads near 1."""
    roi, anatomy = roi_anatomy
    files = sorted((phantom_dir / "images").glob("*.png"))[:10]
    res = realism["reference_aucs"](files, roi, anatomy, {"none": ("blur", 0.0), "blur 2 px": ("blur", 2.0)},
                                    repeats=2)
    assert res["none"]["pairs"] == res["blur 2 px"]["pairs"] >= 8
    assert res["none"]["mean"] == pytest.approx(0.5)
    assert res["blur 2 px"]["min"] >= 0.9

    # the same identity pairs without the grouping: the leak the paired folds prevent
    rois = [realism["cut_roi"](realism["read_gray"](f), roi, anatomy)[0] for f in files]
    X = np.array([realism["texture_features"](r) for r in rois if r is not None])
    n = len(X)
    y = np.r_[np.ones(n), np.zeros(n)].astype(int)
    assert np.mean(realism["cv_auc"](np.r_[X, X], y, realism["logistic"], 2)) < 0.3


def test_group_aucs_find_the_kinds_whose_means_differ(realism):
    """On features whose two sets differ only in the means of the power-spectrum and row-profile
    entries: those two kinds separate alone, the others do not, and leaving out one of the two
    leaves the other separating; moving every mean brings the test to chance, moving the means of
    other kinds does not."""
    groups = realism["feature_groups"]()
    n_features = len(realism["feature_names"]())
    assert sorted(np.concatenate(list(groups.values())).tolist()) == list(range(n_features))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, n_features))
    y = np.r_[np.ones(60), np.zeros(100)].astype(int)
    X[np.ix_(y == 1, groups["power spectrum"])] += 0.6
    X[np.ix_(y == 1, groups["row profile"])] += 0.6
    g = realism["group_aucs"](X, y, repeats=2)
    assert g["power spectrum"]["alone"] > 0.85 and g["row profile"]["alone"] > 0.85
    assert all(g[k]["alone"] < 0.7 for k in ("h-v power", "gradients", "column profile", "percentiles"))
    assert g["power spectrum"]["without"] > 0.75 and g["row profile"]["without"] > 0.75
    assert 0.3 < g["all"]["means matched"] < 0.7
    others = np.r_[groups["gradients"], groups["column profile"]]
    assert np.mean(realism["matched_means_auc"](X, y, others, 2)) > 0.85


def test_bootstrap_interval_follows_the_separation(realism):
    """Resampling the images: sets that differ far read near 1 in every resample, sets drawn from
    one distribution read about chance, and a moderate difference's full-sample AUC lies inside
    its 95% interval."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(30), np.zeros(60)].astype(int)
    boot = realism["bootstrap_aucs"]
    far = rng.normal(size=(90, 6)) + 3.0 * y[:, None]
    aucs = boot(far, y, realism["logistic"], n_boot=20)
    assert aucs.shape == (20,) and aucs.min() > 0.95
    same = rng.normal(size=(90, 6))
    assert 0.3 < np.median(boot(same, y, realism["logistic"], n_boot=20)) < 0.7
    moderate = rng.normal(size=(90, 6)) + 0.5 * y[:, None]
    full = np.mean(realism["cv_auc"](moderate, y, realism["logistic"], 5))
    lo, hi = np.percentile(boot(moderate, y, realism["logistic"], n_boot=40), [2.5, 97.5])
    assert lo < full < hi and hi - lo > 0.05
