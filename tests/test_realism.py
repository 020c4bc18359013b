"""benchmarks/phantom_realism.py's reference scale: the texture two-sample test between DPRs and
themselves after one acquisition-chain change, on phantoms standing in for real DPRs."""

from __future__ import annotations

import json
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


def test_real_images_leave_out_masks_and_read_image_folders(realism, tmp_path, caplog):
    """A held-out set laid out per device (A/images, B/Images beside masks-1/, labels/, ...):
    only the images/ folders are read and masks never join the real set (a mask passes the
    mandible finder like a DPR); each image's set is its device folder. A plain folder gives
    every image but those in folders of masks; a folder merely named like one ("labelled") stays."""
    def touch(*rel):
        for r in rel:
            (tmp_path / r).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / r).write_bytes(b"")

    touch("held/A/images/a1.png", "held/A/masks-1/a1.png", "held/B/Images/b1.jpg", "held/B/labels/b1.png",
          "held/B/Segmentation_2/b1.png", "held/C/c1.png", "held/notes.txt")
    files = realism["real_images"](tmp_path / "held")
    assert sorted(f.relative_to(tmp_path / "held").as_posix() for f in files) == ["A/images/a1.png", "B/Images/b1.jpg"]
    out = caplog.text   # the rule of every command's folders (osteo.data.inputs), logged
    assert "left out 3 images in A/masks-1/, B/Segmentation_2/, B/labels/" in out
    assert "left out 1 images outside them" in out
    assert sorted(realism["real_set_label"](f, tmp_path / "held") for f in files) == ["held/A", "held/B"]
    assert realism["real_set_label"](files[0], tmp_path / "held", "site-2/held") == "site-2/held/A"   # a name given

    touch("plain/2025/p1.png", "plain/labelled/p2.png", "plain/mask/p1.png", "plain/gt/p1.png")
    files = realism["real_images"](tmp_path / "plain")
    assert sorted(f.name for f in files) == ["p1.png", "p2.png"]
    assert {realism["real_set_label"](f, tmp_path / "plain") for f in files} == {"plain/2025", "plain/labelled"}


def test_benchmark_breaks_the_test_down_by_real_set(realism, roi_anatomy, phantom_dir, tmp_path, capsys, caplog):
    """Real computation: two "devices" of 6 phantoms each stand in for real DPRs, the second
    through another acquisition chain (a 3-pixel blur), with a folder of masks beside the first
    (copies of its images, which the finder would place) and an unreadable file in the second.
    The masks are left out, the unreadable file is listed and left out, and the breakdown tells
    the two devices apart, and the blurred device from the phantoms, at AUC near 1."""
    import cv2

    roi, anatomy = roi_anatomy
    root = tmp_path / "held-out"
    for name in ("devA", "devB"):
        (root / name / "images").mkdir(parents=True)
    placed = 0   # 12 phantoms from the end whose ROI the finder places, blurred or not: 6 to each device
    for f in sorted((phantom_dir / "images").glob("*.png"))[::-1]:
        g = realism["read_gray"](f)
        versions = {"devA": g, "devB": cv2.GaussianBlur(g, (0, 0), 3.0)}
        if any(realism["cut_roi"](v, roi, anatomy)[0] is None for v in versions.values()):
            continue
        name = "devA" if placed < 6 else "devB"
        cv2.imwrite(str(root / name / "images" / f.name), versions[name])
        placed += 1
        if placed == 12:
            break
    (root / "devA" / "masks-1").mkdir()
    for f in (root / "devA" / "images").iterdir():
        (root / "devA" / "masks-1" / f.name).write_bytes(f.read_bytes())
    (root / "devB" / "images" / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    assert realism["main"](["--real", str(root), "--phantom-dir", str(phantom_dir), "--n", "12", "--no-cnn",
                            "--bootstrap", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out + caplog.text   # folders are read as every command reads them (logged)
    assert "left out 6 images in devA/masks-1/" in text and "broken.png: cannot be read as an image" in text
    res = json.loads((out / "realism.json").read_text())
    assert res["n_real"] == 12 and res["n_phantom"] == 12
    by_set = res["texture_by_set"]
    assert {k: v["n"] for k, v in by_set["vs phantoms"].items()} == {"held-out/devA": 6, "held-out/devB": 6}
    assert by_set["between sets"]["held-out/devA vs held-out/devB"]["mean"] > 0.9
    assert by_set["vs phantoms"]["held-out/devB"]["mean"] > 0.9
    assert "held-out/devA vs held-out/devB" in text


def test_duplicate_images_are_left_out_once_each(realism, tmp_path, capsys):
    """The same DPR twice (a copy under another name, or the same folder given twice) would sit
    in a training and a test fold at once: only its first file is kept, and the rest listed."""
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        files.append(tmp_path / f"a{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 60), dtype=np.uint8)).save(files[-1])
    (tmp_path / "copy.png").write_bytes(files[1].read_bytes())
    files += [tmp_path / "copy.png", files[0]]
    assert realism["distinct_images"](files) == [0, 1, 2]
    out = capsys.readouterr().out
    assert "left out 2 duplicate images" in out and "copy.png (= " in out and str(files[1]) in out
    assert realism["distinct_images"](files[:3]) == [0, 1, 2]
