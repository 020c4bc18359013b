import re
import shutil
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
from osteo.runs import load_runs
from tests.conftest import tiny_overrides


def fabricate(root: Path, rng, cache: Path, sweeps: Path | None = None) -> dict:
    """A runs directory with known predictions: 2 configurations x 3 folds, one run missing.
    ``cache`` is the runs' ``data.cache_dir`` (the session's shared ``roi_cache``: the 90 images
    are the same in every call, so the report finds their mandibles once per session)."""
    sweeps = sweeps or root / "sweeps"
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
            d = sweeps / "finetune_depth" / root.name / f"backbone=vgg16,depth={depth},fold={fold}"
            d.mkdir(parents=True)
            cfg = compose([f"depth={depth}", f"fold={fold}", "data.split.n_folds=3", "weights=/w.pth",
                           f"data.manifest={data / 'manifest.csv'}", f"run_dir='{d}'",
                           f"paths.outputs={root / 'outputs'}", f"data.cache_dir={cache}"])
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


def test_report_from_fabricated_runs_reproduces_known_figures(tmp_path, roi_cache):
    known = fabricate(tmp_path, np.random.default_rng(0), roi_cache)
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.enabled = False
    s = build_report(tmp_path / "sweeps", tmp_path / "report", rcfg, "python -m osteo.report")
    tf2 = s["configs"]["vgg16 TF2, w"]
    tf0 = s["configs"]["vgg16 TF0, w"]
    for label, depth, folds in (("vgg16 TF2, w", 2, [0, 1, 2]), ("vgg16 TF0, w", 0, [0, 1])):
        c = s["configs"][label]
        for k in ("auc", "sensitivity", "specificity", "accuracy"):
            assert c[f"{k}_mean"] == pytest.approx(np.mean([known[(depth, f)][0]["test"][k] for f in folds]), abs=1e-12)
        ens = pd.concat([known[(depth, f)][1] for f in folds]).groupby("image").agg(y=("label", "first"), p=("prob", "mean"))
        assert c["ens_auc"] == pytest.approx(roc_auc_score(ens["y"], ens["p"]), abs=1e-12)
        assert c["ens_lo"] < c["ens_auc"] < c["ens_hi"]
    assert tf2["trainable"] == 52 and tf0["folds"] == 2
    assert s["best"] == "vgg16 TF2, w"  # higher validation AUC by construction
    assert any(p["status"] == "missing" and "TF0, w fold 2" in p["run"] for p in s["missing"])
    assert "age + sex (logistic regression)" in s["configs"]
    assert s["configs"]["age + sex (logistic regression)"]["ens_auc"] == pytest.approx(1.0)  # age separates perfectly here
    page = (tmp_path / "report" / "index.html").read_text()
    for ref in re.findall(r'src="([^"]+)"', page):
        assert (tmp_path / "report" / ref).exists(), ref
    for f in ("table1.csv", "table2.csv", "paired_tests.csv", "missing_runs.csv"):
        assert (tmp_path / "report" / f).exists()
    t2 = pd.read_csv(tmp_path / "report" / "table2.csv", keep_default_na=False)
    assert t2.loc[t2["configuration"] == "age + sex (logistic regression)", "val AUC (selection)"].item() == "n/a"
    paired = pd.read_csv(tmp_path / "report" / "paired_tests.csv")
    assert set(paired["configuration"]) == {"vgg16 TF0, w", "age + sex (logistic regression)"}
    assert (paired["p (Holm)"] >= paired["p"]).all()
    assert "TF0, w fold 2" in page and "python -m osteo.report" in page


def test_report_on_real_runs_with_gradcam(tiny_sweep):
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.max_images = 12
    out = tiny_sweep / "report"
    s = build_report(tiny_sweep / "sweeps", out, rcfg, "python -m osteo.report")
    assert set(s["configs"]) >= {"vgg16_tiny TF5, random init", "vgg16_tiny TF1, random init"}
    assert len(s["gradcam"]) == 4 and all((out / f).exists() for f in s["gradcam"])
    band = pd.read_csv(out / "gradcam_border_band.csv")
    # two configurations x two target blocks (block 5 and block 4)
    assert len(band) == 4 and set(band["target"]) == {"block 5", "block 4"}
    assert np.isfinite(band.filter(like="mean").to_numpy()).all()
    pooled = band.filter(like="cortex/soft pooled").to_numpy()
    assert pooled.shape == (4, 2) and np.isfinite(pooled).all() and (pooled > 0).all()
    # occlusion: each configuration's best fold on every test image, unhidden and with each band hidden
    occl = pd.read_csv(out / "occlusion.csv")
    preds = pd.read_csv(next((tiny_sweep / "sweeps").rglob("predictions.csv")))
    assert len(occl) == 6 and (occl["test images"] == (preds["split"] == "test").sum()).all()
    assert sorted(occl["hidden by"]) == sorted(["beyond", "blur", "mean"] * 2)  # two configurations x 3 fills
    aucs = occl.filter(like="AUC").to_numpy()
    assert aucs.shape == (6, 3) and ((aucs >= 0) & (aucs <= 1)).all()
    changes = occl.filter(like="change of p").to_numpy()
    assert changes.shape == (6, 2) and (changes > 0).all()  # hiding a band changes the scores
    assert ((occl.filter(like="p (DeLong)") >= 0) & (occl.filter(like="p (DeLong)") <= 1)).all().all()
    page = (out / "index.html").read_text()
    assert "Occlusion beside the true inferior border" in page
    for ref in re.findall(r'src="([^"]+)"', page):
        assert (out / ref).exists(), ref
    runs, _, problems = load_runs(tiny_sweep / "sweeps")
    assert len(runs) == 4 and not problems
    # the finder's boxes came from the runs' data.cache_dir (conftest.roi_cache), not found again under paths.cache
    assert not (tiny_sweep / "cache" / "anatomy").exists()


def test_thresholds_apply_to_the_kind_of_score_they_were_chosen_on():
    """Averaging fold models shrinks probabilities: a threshold chosen on single-model
    out-of-fold scores is applied to each model's own score (vote), never to the mean."""
    from osteo.report.tables import operating_points

    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    # three fold models; the positives' mean probability sits below the threshold 0.6,
    # although two of three models put every positive above it
    probs = np.array([[0.65, 0.65, 0.65, 0.65, 0.1, 0.1, 0.1, 0.1],
                      [0.62, 0.62, 0.62, 0.62, 0.1, 0.1, 0.1, 0.1],
                      [0.20, 0.20, 0.20, 0.20, 0.1, 0.1, 0.1, 0.1]])
    y_oof = np.array([1, 1, 0, 0])
    p_oof = np.array([0.6, 0.9, 0.1, 0.2])  # Youden threshold and 90%-sensitivity threshold: 0.6
    op = operating_points(y, probs, y_oof, p_oof, 0.9)
    assert op["thr_sens90"] == pytest.approx(0.6)
    assert op["sens_at_sens90"] == 1.0            # the vote: 2 of 3 models refer every positive
    assert op["sens_at_sens90_meanprob"] == 0.0   # the old rule: mean 0.49 < 0.6 refers none
    assert op["ens_auc"] == pytest.approx(roc_auc_score(y, probs.mean(0)))


def test_baseline_imputes_missing_ages_from_training_rows_only():
    from osteo.report.tables import clinical_baseline

    rng = np.random.default_rng(1)
    n = 60
    label = np.array([0, 1] * (n // 2))
    part = np.array(["test"] * 20 + [str((k // 2) % 2) for k in range(n - 20)], dtype=object)
    age = 55 + 10 * label + rng.normal(0, 3, n)
    age[20:30] = np.nan                       # missing ages among training/validation rows
    age[:20] = 120.0                          # extreme test ages: would move an imputation that saw them
    df = pd.DataFrame({"image_rel": [f"i{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                       "label": label, "sex": np.where(np.arange(n) % 3, "F", "M"), "age": age})
    splits = pd.DataFrame({"image": df["image_rel"], "part": part})
    for k in range(2):
        splits[f"role_fold{k}"] = np.where(part == "test", "test", np.where(part == str(k), "val", "train"))
    s, pred, note = clinical_baseline(df, splits, 2)
    assert "10 missing age(s) filled with the training part's mean age" in note
    from sklearn.linear_model import LogisticRegression

    female = (df["sex"] == "F").astype(float).to_numpy()
    expect = []
    for k in range(2):
        tr = (splits[f"role_fold{k}"] == "train").to_numpy()
        a = pd.Series(age).fillna(pd.Series(age)[tr].mean()).to_numpy()
        X = np.column_stack([a, female])
        expect.append(LogisticRegression(max_iter=1000).fit(X[tr], label[tr]).predict_proba(X[part == "test"])[:, 1])
    assert np.allclose(pred["prob"].to_numpy(), np.mean(expect, axis=0), atol=1e-12)


def test_runs_of_different_data_sets_are_reported_apart(tmp_path, roi_cache):
    sweeps = tmp_path / "sweeps"
    fabricate(tmp_path / "one", np.random.default_rng(0), roi_cache, sweeps)
    fabricate(tmp_path / "two", np.random.default_rng(1), roi_cache, sweeps)
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.enabled = False
    s = build_report(sweeps, tmp_path / "report", rcfg, "python -m osteo.report")
    assert [r["name"] for r in s["reports"]] == ["data-1", "data-2"]
    manifests = {r["manifest"] for r in s["reports"]}
    assert manifests == {str(tmp_path / "one" / "data" / "manifest.csv"), str(tmp_path / "two" / "data" / "manifest.csv")}
    for name in ("data-1", "data-2"):
        sub = s["by_data"][name]
        assert sub["configs"]["vgg16 TF2, w"]["folds"] == 3  # not 6: the data sets are not merged
        assert (tmp_path / "report" / name / "index.html").exists()
    index = (tmp_path / "report" / "index.html").read_text()
    assert 'href="data-1/index.html"' in index and 'href="data-2/index.html"' in index


def test_runs_on_the_same_manifest_path_with_other_content_are_reported_apart(tmp_path, roi_cache):
    """Same manifest and split file paths, but the images were drawn again by another phantom
    generator in between (what metrics.json's trained_on records): never pooled."""
    import json
    sweeps = tmp_path / "sweeps"
    fabricate(tmp_path / "one", np.random.default_rng(0), roi_cache, sweeps)
    first = sweeps / "finetune_depth" / "one"
    again = sweeps / "finetune_depth" / "again"
    shutil.copytree(first, again)
    for root, generator in ((first, "aaaa000000000000"), (again, "bbbb000000000000")):
        for m in root.glob("*/metrics.json"):
            metrics = json.loads(m.read_text())
            metrics["trained_on"] = {"kind": "phantom", "manifest": metrics["manifest"], "sha1": "0123456789abcdef" * 2,
                                     "generator": generator}
            m.write_text(json.dumps(metrics))
    runs, _, _ = load_runs(sweeps)
    assert runs["manifest"].nunique() == 1 and runs["splits"].nunique() == 1 and runs["data"].nunique() == 2
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.enabled = False
    s = build_report(sweeps, tmp_path / "report", rcfg, "python -m osteo.report")
    assert [r["name"] for r in s["reports"]] == ["data-1", "data-2"]
    assert sorted(r["content"] for r in s["reports"]) == [
        "manifest sha1 0123456789ab, generator aaaa000000000000", "manifest sha1 0123456789ab, generator bbbb000000000000"]
    for name in ("data-1", "data-2"):
        assert s["by_data"][name]["configs"]["vgg16 TF2, w"]["folds"] == 3  # not 6: not pooled
    index = (tmp_path / "report" / "index.html").read_text()
    assert "generator aaaa000000000000" in index and "generator bbbb000000000000" in index


def test_runs_that_kept_the_split_file_elsewhere_are_one_data_set(tmp_path, roi_cache, monkeypatch):
    """The split file's name carries a key of the manifest's rows and the split settings: runs
    that recorded it by a relative path, or kept it in another folder, split the data the same
    way and are reported together; another split file (other settings) is another data set."""
    import json
    sweeps = tmp_path / "sweeps"
    fabricate(tmp_path / "one", np.random.default_rng(0), roi_cache, sweeps)
    files = sorted((sweeps / "finetune_depth" / "one").glob("*/metrics.json"))
    split = Path(json.loads(files[0].read_text())["splits"])
    elsewhere = tmp_path / "elsewhere" / split.name
    elsewhere.parent.mkdir()
    shutil.copy(split, elsewhere)
    monkeypatch.chdir(tmp_path)
    for m, where in zip(files, [split.relative_to(tmp_path), elsewhere, split, split, split]):
        metrics = json.loads(m.read_text())
        metrics["splits"] = str(where)
        m.write_text(json.dumps(metrics))
    runs, _, _ = load_runs(sweeps)
    assert runs["splits"].nunique() == 3 and runs["data"].nunique() == 1
    metrics = json.loads(files[-1].read_text())
    metrics["splits"] = str(split.with_name("splits-000000000000.csv"))
    files[-1].write_text(json.dumps(metrics))
    runs, _, _ = load_runs(sweeps)
    assert runs["data"].nunique() == 2


def test_runs_trained_with_relative_outputs_are_reported_from_any_folder(tmp_path, roi_cache, monkeypatch):
    """Runs launched with the default relative outputs/ record their manifest, split file and
    storage paths relative to the folder they were launched from: a report run elsewhere reads
    them there (and writes nothing into its own folder); a split file that is gone is one line
    naming the run and the file, before anything is written."""
    import json
    from osteo.checkpoints import run_config
    from osteo.cli import UserError

    launch, elsewhere = tmp_path / "launch", tmp_path / "elsewhere"
    sweeps = launch / "outputs" / "sweeps"
    fabricate(launch, np.random.default_rng(0), roi_cache, sweeps)
    (launch / "outputs" / "splits").mkdir(parents=True)
    for m in sweeps.rglob("metrics.json"):
        metrics = json.loads(m.read_text())
        split = Path(metrics["splits"])
        if split.exists():
            split.rename(launch / "outputs" / "splits" / split.name)
        metrics.update(manifest="data/manifest.csv", splits=f"outputs/splits/{split.name}")
        m.write_text(json.dumps(metrics))
        cfg = OmegaConf.load(m.parent / "config.yaml")
        cfg.paths.outputs, cfg.data.split.dir = "outputs", "outputs/splits"
        (m.parent / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    runs, _, _ = load_runs(sweeps)
    assert set(runs["splits"]) == {str(launch / "outputs" / "splits" / split.name)}
    assert set(runs["manifest"]) == {str(launch / "data" / "manifest.csv")}
    cfg = run_config(runs["dir"].iloc[0])
    assert (cfg.data.manifest, cfg.data.split.dir) == (str(launch / "data" / "manifest.csv"), str(launch / "outputs" / "splits"))
    assert cfg.data.cache_dir == str(roi_cache)   # absolute paths stay as they are
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.enabled = False
    s = build_report(sweeps, tmp_path / "report", rcfg, "python -m osteo.report")
    assert s["configs"]["vgg16 TF2, w"]["folds"] == 3 and list(elsewhere.iterdir()) == []
    (launch / "outputs" / "splits" / split.name).unlink()
    with pytest.raises(UserError, match=rf"its split file {re.escape(str(launch))}/outputs/splits/splits-\w+.csv is not there"):
        build_report(sweeps, tmp_path / "again", rcfg)
    assert not (tmp_path / "again").exists()


def test_a_report_that_stops_halfway_leaves_the_last_one_as_it_was(tmp_path, roi_cache, monkeypatch):
    """The report is written beside its folder and moved in when whole: Ctrl-C (or any error)
    after some figures were drawn changes nothing in the folder, and leaves no staging folder."""
    from osteo.report import figures

    fabricate(tmp_path, np.random.default_rng(0), roi_cache)
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.enabled = False
    out = tmp_path / "report"
    (out).mkdir()
    (out / "notes.txt").write_text("mine")  # a file of the user's: kept
    build_report(tmp_path / "sweeps", out, rcfg, "python -m osteo.report")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "roc.png" in before and ".partial" not in before["index.html"].decode() + before["summary.json"].decode()

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(figures, "reliability", ctrl_c)  # drawn after the ROC and PR curves
    rcfg.sensitivity_target = 0.8   # a report that would differ
    with pytest.raises(KeyboardInterrupt):
        build_report(tmp_path / "sweeps", out, rcfg, "python -m osteo.report")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "report", "splits", "sweeps"]  # no staging folder


def test_page_has_contents_numbered_captioned_figures_and_provenance(tmp_path, roi_cache):
    fabricate(tmp_path, np.random.default_rng(0), roi_cache)
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.enabled = False
    build_report(tmp_path / "sweeps", tmp_path / "report", rcfg, "python -m osteo.report")
    page = (tmp_path / "report" / "index.html").read_text()
    for anchor in ("methods", "table1", "table2", "paired", "figures", "gradcam", "missing"):
        assert f'href="#{anchor}"' in page and f'id="{anchor}"' in page
    numbers = [int(n) for n in re.findall(r"<b>Figure (\d+)\.", page)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 4
    assert "Decision rule." in page and "not recorded" in page  # fabricated runs carry no provenance
    sizes = {Image.open(tmp_path / "report" / f).size for f in ("roc.png", "pr.png", "auc_vs_params.png",
                                                                  "reliability.png")}
    assert len(sizes) == 1  # every plot drawn at the same size
    # --self-contained: one file, every figure embedded
    rcfg.self_contained = True
    build_report(tmp_path / "sweeps", tmp_path / "single", rcfg, "python -m osteo.report")
    single = (tmp_path / "single" / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', single)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_each_model_sees_the_rois_of_its_own_run(tiny_sweep, phantom_dir, tmp_path):
    """A configuration run at another ROI scale is its own configuration, and the Grad-CAM and
    occlusion statistics give each model the ROIs (scale, normalisation) it was trained on: its
    unhidden test probabilities there are the ones its run recorded."""
    from osteo.train import train

    sweeps = tmp_path / "sweeps"
    shutil.copytree(tiny_sweep / "sweeps", sweeps)
    overrides = [o for o in tiny_overrides(tiny_sweep, phantom_dir / "manifest.csv", depth=1, fold=0, weights="none",
                                           **{"data.split.n_folds": 2, "trainer.max_epochs": 2})
                 if not o.startswith("data.roi.scale=")] + ["data.roi.scale=0.25"]
    train(compose(overrides), sweeps / "finetune_depth" / "backbone=vgg16_tiny,data.roi.scale=0.25,depth=1,fold=0")
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.max_images, rcfg.gradcam.target_blocks = 8, [5]
    build_report(sweeps, tmp_path / "report", rcfg, "python -m osteo.report")
    occl = pd.read_csv(tmp_path / "report" / "occlusion.csv")
    assert "vgg16_tiny TF1, random init [data.roi.scale=0.25]" in set(occl["configuration"]) and len(occl) == 9
    per_image = pd.read_csv(tmp_path / "report" / "occlusion_images.csv")
    runs, preds, _ = load_runs(sweeps)
    for (label, fold), got in per_image.groupby(["configuration", "fold"]):
        run = runs[(runs["config"] == label) & (runs["fold"] == fold)].iloc[0]
        own = preds[run["dir"]].query("split == 'test'").set_index("image")["prob"]
        assert len(got) == len(own) == int(occl.loc[occl["configuration"] == label, "test images"].iloc[0])
        assert np.allclose(got["prob"], own.loc[got["image"]].to_numpy(), atol=1e-4), label
    band = pd.read_csv(tmp_path / "report" / "gradcam_border_band.csv")
    assert len(band) == 3 and np.isfinite(band.filter(like="pooled").to_numpy()).all()


def test_an_unknown_occlusion_fill_stops_the_report_before_it_writes(tmp_path, roi_cache):
    from osteo.cli import UserError

    sweeps = tmp_path / "sweeps"
    fabricate(tmp_path / "one", np.random.default_rng(0), roi_cache, sweeps)
    rcfg = compose(["report.gradcam.occlusion=[beyond,zeros]"], config_name="report").report
    with pytest.raises(UserError, match=r"report.gradcam.occlusion=\['beyond', 'zeros'\]: the fills are beyond, blur, mean"):
        build_report(sweeps, tmp_path / "report", rcfg)
    assert not (tmp_path / "report").exists()
