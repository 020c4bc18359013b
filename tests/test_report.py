import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image
from sklearn.metrics import roc_auc_score

from osteo.config import compose
from osteo.io import atomic_write_json
from osteo.metrics import binary_metrics, youden_threshold
from osteo.report.build import build_report
from osteo.report.runs import load_runs


def fabricate(root: Path, rng) -> dict:
    """A runs directory with known predictions: 2 configurations x 3 folds, one run missing."""
    data = root / "data"
    data.mkdir(parents=True)
    n = 90
    labels = np.array([0, 1] * (n // 2))
    rows = []
    for i in range(n):
        Image.fromarray(np.full((700, 1300), i, np.uint8)).save(data / f"i{i}.png")
        rows.append(dict(image=f"i{i}.png", patient_id=f"p{i}", t_score=-3.0 if labels[i] else -1.0,
                         sex="F" if i % 3 else "M", age=70 if labels[i] else 55))
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    from osteo.data.manifest import load_manifest
    from osteo.data.splits import split_file

    mdf = load_manifest(data / "manifest.csv")
    split = split_file(mdf, root / "splits", 0, 10, None, 3)
    sp = pd.read_csv(split, dtype={"part": str})
    known = {}
    for depth, strength in ((2, 1.0), (0, 0.4)):
        for fold in range(3):
            if depth == 0 and fold == 2:
                continue  # deliberately missing
            d = root / "sweeps" / "finetune_depth" / f"backbone=vgg16,depth={depth},fold={fold}"
            d.mkdir(parents=True)
            cfg = compose([f"depth={depth}", f"fold={fold}", "data.split.n_folds=3", "weights=/w.pth",
                           "model.pretrained=${weights}", f"data.manifest={data / 'manifest.csv'}"])
            (d / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            preds = []
            for part, role in (("val", "val"), ("test", "test")):
                sub = sp[sp[f"role_fold{fold}"] == role]
                y = sub["label"].to_numpy()
                p = 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 2.5, len(y)))))
                preds.append(pd.DataFrame({"split": part, "image": sub["image"], "patient_id": sub["patient_id"],
                                           "label": y, "prob": p, "fold": fold}))
            pr = pd.concat(preds, ignore_index=True)
            pr.to_csv(d / "predictions.csv", index=False)
            v, t = pr[pr.split == "val"], pr[pr.split == "test"]
            thr = youden_threshold(v.label, v.prob)
            m = {"val": binary_metrics(v.label, v.prob), "test": binary_metrics(t.label, t.prob),
                 "test_at_val_threshold": binary_metrics(t.label, t.prob, thr), "threshold_val_youden": thr,
                 "params": {"total": 100, "trainable": 50 + depth, "non_trainable": 50 - depth},
                 "manifest": str(data / "manifest.csv"), "splits": str(split)}
            atomic_write_json(d / "metrics.json", m)
            known[(depth, fold)] = (m, t)
    return known


def test_report_from_fabricated_runs_reproduces_known_figures(tmp_path):
    known = fabricate(tmp_path, np.random.default_rng(0))
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.enabled = False
    s = build_report(tmp_path / "sweeps", tmp_path / "report", rcfg, "python -m osteo.report")
    tf2 = s["configs"]["vgg16-TF2"]
    tf0 = s["configs"]["vgg16-TF0"]
    for label, depth, folds in (("vgg16-TF2", 2, [0, 1, 2]), ("vgg16-TF0", 0, [0, 1])):
        c = s["configs"][label]
        for k in ("auc", "sensitivity", "specificity", "accuracy"):
            assert c[f"{k}_mean"] == pytest.approx(np.mean([known[(depth, f)][0]["test"][k] for f in folds]), abs=1e-12)
        ens = pd.concat([known[(depth, f)][1] for f in folds]).groupby("image").agg(y=("label", "first"), p=("prob", "mean"))
        assert c["ens_auc"] == pytest.approx(roc_auc_score(ens["y"], ens["p"]), abs=1e-12)
        assert c["ens_lo"] < c["ens_auc"] < c["ens_hi"]
    assert tf2["trainable"] == 52 and tf0["folds"] == 2
    assert s["best"] == "vgg16-TF2"  # higher validation AUC by construction
    assert any(p["status"] == "missing" and "TF0 fold 2" in p["run"] for p in s["missing"])
    assert "age + sex (logistic regression)" in s["configs"]
    assert s["configs"]["age + sex (logistic regression)"]["ens_auc"] == pytest.approx(1.0)  # age separates perfectly here
    page = (tmp_path / "report" / "index.html").read_text()
    for ref in re.findall(r'src="([^"]+)"', page):
        assert (tmp_path / "report" / ref).exists(), ref
    for f in ("table1.csv", "table2.csv", "paired_tests.csv", "missing_runs.csv"):
        assert (tmp_path / "report" / f).exists()
    paired = pd.read_csv(tmp_path / "report" / "paired_tests.csv")
    assert set(paired["configuration"]) == {"vgg16-TF0", "age + sex (logistic regression)"}
    assert (paired["p (Holm)"] >= paired["p"]).all()
    assert "TF0 fold 2" in page and "python -m osteo.report" in page


def test_report_on_real_runs_with_gradcam(tiny_sweep):
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.max_images = 12
    out = tiny_sweep / "report"
    s = build_report(tiny_sweep / "sweeps", out, rcfg, "python -m osteo.report")
    assert set(s["configs"]) >= {"vgg16_tiny scratch", "vgg16_tiny scratch (depth 1)"}
    assert len(s["gradcam"]) == 4 and all((out / f).exists() for f in s["gradcam"])
    band = pd.read_csv(out / "gradcam_border_band.csv")
    assert len(band) == 2 and np.isfinite(band.filter(like="mean").to_numpy()).all()
    page = (out / "index.html").read_text()
    for ref in re.findall(r'src="([^"]+)"', page):
        assert (out / ref).exists(), ref
    runs, _, problems = load_runs(tiny_sweep / "sweeps")
    assert len(runs) == 4 and not problems
