"""Image + clinical covariates (late fusion): the transform sees training rows only, missing
values are named or imputed with a count, a label-carrying covariate drives fusion to AUC 1,
a noise covariate does not hurt, and predict/report handle fusion runs."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_overrides
from osteo.data.covariates import CovariateError, apply_transform, covariate_matrix, fit_transform, parse_covariate

N = 120  # phantoms of the session set used here: 12 test images per class, 2 folds


@pytest.fixture(scope="module")
def small_manifest(phantom_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    m = pd.read_csv(phantom_dir / "manifest.csv").head(N)
    m["image"] = [str(phantom_dir / p) for p in m["image"]]
    path = root / "manifest.csv"
    m.to_csv(path, index=False)
    return root, m


def _cfg(root, manifest, **extra):
    from osteo.config import compose

    return compose(tiny_overrides(root, manifest, **{"data.split.n_folds": 2, "data.split.test_per_class": 12,
                                                     "weights": "none", "depth": 1, **extra}))


def _datamodule(cfg):
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, progress=False)
    dm.setup()
    return dm


def test_parsing_codes_sex_and_names_bad_values():
    assert parse_covariate("sex", ["F", "m", "female", "", None]).tolist()[:3] == [1.0, 0.0, 1.0]
    assert np.isnan(parse_covariate("age", ["", "nan"])).all()
    with pytest.raises(CovariateError, match="not F or M"):
        parse_covariate("sex", ["X"])
    df = pd.DataFrame({"age": ["61", "old", "70"], "line": [2, 3, 4]})
    with pytest.raises(CovariateError, match=r"age is not a number on line\(s\) 3"):
        covariate_matrix(df, ["age"])
    with pytest.raises(CovariateError, match=r"no column 'bmi'.*\(its columns: age\)"):
        covariate_matrix(df, ["bmi"])


def test_transform_uses_training_rows_only():
    raw = np.array([[50.0], [60.0], [np.nan], [1000.0]])
    t = fit_transform(raw[:3], ["age"])  # rows 0-2 train; row 3 (test) must not count
    assert t["fill"] == [55.0] and t["mean"] == [55.0]
    z = apply_transform(raw, t)
    assert z[2, 0] == 0.0 and z[3, 0] > 100  # the fill, and a test value far outside the training range


def test_datamodule_fits_the_transform_on_the_folds_training_rows(small_manifest):
    """A covariate whose test and validation rows hold extreme values: were they seen by the
    transform, its mean and fill would move far from the training rows' own."""
    root, m = small_manifest
    dm0 = _datamodule(_cfg(root, root / "manifest.csv"))
    rows = dm0.df
    bmi = np.full(len(m), np.nan)
    pos = {img: i for i, img in enumerate(m["image"])}
    bmi_rows = np.random.default_rng(0).normal(25, 3, len(rows))
    for part, value in (("val", 1000.0), ("test", -1000.0)):
        bmi_rows[dm0.idx[part]] = value
    for img, v in zip(rows["image"], bmi_rows):
        bmi[pos[img]] = v
    path = root / "with_bmi.csv"
    m.assign(bmi=bmi).to_csv(path, index=False)
    dm = _datamodule(_cfg(root, path, covariates="[age,sex,bmi]"))
    t = dm.covariate_transform
    train = dm.idx["train"]
    k = t["names"].index("bmi")
    assert t["mean"][k] == pytest.approx(bmi_rows[train].mean())
    assert t["fill"][k] == pytest.approx(np.median(bmi_rows[train]))
    assert abs(t["mean"][k] - 25) < 3
    assert t["mean"][t["names"].index("age")] == pytest.approx(dm.df["age"].to_numpy()[train].mean())
    item = dm.dataset("test")[0]
    assert item["c"].shape == (3,) and item["c"][k] < -100  # test rows are transformed, never fitted


def test_missing_covariate_stops_with_column_and_lines_or_is_imputed_with_a_count(small_manifest, caplog):
    root, m = small_manifest
    holes = m.copy()
    holes.loc[[3, 7], "age"] = np.nan
    path = root / "holes.csv"
    holes.to_csv(path, index=False)
    with pytest.raises(CovariateError, match=r"age: 2 missing \(line\(s\) 5, 9\).*covariates_missing=impute"):
        _datamodule(_cfg(root, path, covariates="[age,sex]"))
    with caplog.at_level(logging.WARNING, logger="osteo"):
        dm = _datamodule(_cfg(root, path, covariates="[age,sex]", **{"data.covariates_missing": "impute"}))
    assert sum(dm.covariate_transform["imputed"]["age"].values()) == 2
    assert "imputed with the training rows' median" in caplog.text and "age: 2 missing" in caplog.text
    z = dm.covariates[:, 0]
    assert np.isfinite(z).all()


def test_without_covariates_the_model_is_the_thesis_model():
    from osteo.models.module import DprClassifier

    a = DprClassifier("vgg16_tiny", depth=1, input_hw=(70, 350))
    b = DprClassifier("vgg16_tiny", depth=1, input_hw=(70, 350), covariates=["age", "sex"])
    assert list(a.state_dict()) == list(b.state_dict())
    assert a.head[-1].in_features + 2 == b.head[-1].in_features
    x = torch.zeros(2, 3, 70, 350)
    with pytest.raises(ValueError, match="fuses the covariates age, sex"):
        b(x)
    assert b(x, torch.zeros(2, 2)).shape == (2, 2)


@pytest.fixture(scope="module")
def fusion_runs(small_manifest):
    """Tiny runs on fold 0: the image alone, fused with a covariate that is the label, and fused
    with pure noise; and fold 1 of the image alone and of age + sex fusion, for the report."""
    from osteo.train import train

    root, m = small_manifest
    rng = np.random.default_rng(1)
    path = root / "fabricated.csv"
    m.assign(oracle=m["label"] + rng.normal(0, 0.01, len(m)), noise=rng.normal(0, 1, len(m))).to_csv(path, index=False)
    out = {}
    for name, cov, folds in (("image", "[]", (0, 1)), ("oracle", "[oracle]", (0,)), ("noise", "[noise]", (0,)),
                             ("agesex", "[age,sex]", (0, 1))):
        for fold in folds:
            d = root / "sweeps" / "fusion" / name / f"backbone=vgg16_tiny,depth=1,fold={fold}"
            out[(name, fold)] = (train(_cfg(root, path, covariates=cov, fold=fold,
                                            **{"trainer.max_epochs": 4, "model.optimizer.lr": 3e-4}), d), d)
    return root, path, out


def test_a_covariate_carrying_the_label_drives_fusion_to_auc_one(fusion_runs):
    _, _, runs = fusion_runs
    metrics, d = runs[("oracle", 0)]
    assert metrics["test"]["auc"] == pytest.approx(1.0)
    assert metrics["covariates"] == ["oracle"]
    saved = json.loads((d / "covariates.json").read_text())
    assert saved["names"] == ["oracle"] and saved == metrics["covariate_transform"]


def test_a_noise_covariate_does_not_lower_the_image_auc_beyond_noise(fusion_runs):
    """24 test images: the AUC's standard error is about 0.08, so a drop of more than 0.15 would
    be more than noise."""
    _, _, runs = fusion_runs
    image, noise = runs[("image", 0)][0]["test"]["auc"], runs[("noise", 0)][0]["test"]["auc"]
    print(f"test AUC image alone {image:.3f}, with a noise covariate {noise:.3f}")
    assert noise >= image - 0.15


def test_predict_reads_covariates_from_the_manifest_or_the_command_line(fusion_runs, tmp_path):
    from osteo.cli import run_cli
    from osteo.predict import main

    root, path, runs = fusion_runs
    d = runs[("agesex", 0)][1]
    m = pd.read_csv(path).head(3)
    m.to_csv(tmp_path / "three.csv", index=False)
    m.drop(columns=["age"]).to_csv(tmp_path / "noage.csv", index=False)
    assert run_cli(main, [str(tmp_path / "three.csv"), "--model", str(d), "--single", "--out",
                          str(tmp_path / "a"), "--no-cam"]) == 0
    a = pd.read_csv(tmp_path / "a" / "predictions.csv")
    assert (a["status"] == "ok").all() and a["probability"].notna().all()
    assert a["covariates"][0] == f"age={m['age'][0]:g}, sex={m['sex'][0]}"
    # no age anywhere: named in the status, no score, exit 1 (nothing is imputed)
    assert run_cli(main, [str(tmp_path / "noage.csv"), "--model", str(d), "--single", "--out",
                          str(tmp_path / "b"), "--no-cam"]) == 1
    b = pd.read_csv(tmp_path / "b" / "predictions.csv")
    assert b["status"].str.startswith("missing covariate(s): age;").all() and b["probability"].isna().all()
    one = str(m["image"][0])
    assert run_cli(main, [one, "--age", "70", "--sex", "F", "--model", str(d), "--single", "--out",
                          str(tmp_path / "c"), "--no-cam"]) == 0
    assert pd.read_csv(tmp_path / "c" / "predictions.csv")["covariates"][0] == "age=70, sex=F"
    assert run_cli(main, [one, "--age", "old", "--model", str(d), "--out", str(tmp_path / "d")]) == 2
    assert run_cli(main, [one, one, "--age", "70", "--sex", "F", "--model", str(d), "--out",
                          str(tmp_path / "e")]) == 2


def test_report_answers_both_questions(fusion_runs, tmp_path):
    from osteo.config import compose
    from osteo.report.build import build_report

    root, _, _ = fusion_runs
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.max_images = 8  # Grad-CAM of a fusion model needs its covariates: exercised here
    build_report(root / "sweeps", tmp_path, rcfg)
    tab = pd.read_csv(tmp_path / "fusion_tests.csv")
    fused = tab[tab["fusion"] == "vgg16_tiny TF1, random init + age, sex"]
    assert set(fused["question"]) == {"image adds to age + sex", "age + sex add to the image"}
    assert set(fused["alone"]) == {"age + sex (logistic regression)", "vgg16_tiny TF1, random init"}
    page = (tmp_path / "index.html").read_text()
    assert "Does the image add to age + sex?" in page and "Do age + sex add to the image?" in page
    t2 = pd.read_csv(tmp_path / "table2.csv")
    assert {"vgg16_tiny TF1, random init + age, sex", "age + sex (logistic regression)",
            "vgg16_tiny TF1, random init"} <= set(t2["configuration"])


def test_a_run_made_before_covariates_existed_is_still_reused(small_manifest, tmp_path):
    """Its config lacks the covariate keys; with covariates=[] it is the same model, so it is
    reused, not reported as a conflict. With covariates=[age,sex] it is a conflict."""
    from omegaconf import OmegaConf, open_dict

    from osteo.train import RunConflictError, finished

    root, _ = small_manifest
    cfg, fused = _cfg(root, root / "manifest.csv"), _cfg(root, root / "manifest.csv", covariates="[age,sex]")
    for c in (cfg, fused):
        with open_dict(c):
            c.run_dir = str(tmp_path)  # as train() sets it
    old = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(old):
        for node, key in ((old, "covariates"), (old.model, "covariates"), (old.model, "covariate_init"),
                          (old.data, "covariates"), (old.data, "covariates_missing")):
            node.pop(key)
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(old))
    (tmp_path / "metrics.json").write_text(json.dumps({"val": {"auc": 0.5}}))
    assert finished(tmp_path, cfg) == {"val": {"auc": 0.5}}
    with pytest.raises(RunConflictError, match="covariates"):
        finished(tmp_path, fused)
