import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from osteo.train import run, train
from tests.conftest import tiny_overrides

LEARN = {"depth": 5, "model.optimizer.lr": 3e-4, "trainer.max_epochs": 12, "seed": 0}


def cfg_for(compose_cfg, tmp_path, phantom_dir, **extra):
    return compose_cfg(tiny_overrides(tmp_path / "out", phantom_dir / "manifest.csv", **extra))


def test_run_learns_and_writes_its_files(compose_cfg, tmp_path, phantom_dir):
    cfg = cfg_for(compose_cfg, tmp_path, phantom_dir, **LEARN)
    m = train(cfg, tmp_path / "run")
    print(f"tiny VGG16-layout model, 12 epochs: val AUC {m['val']['auc']:.3f}, test AUC {m['test']['auc']:.3f}")
    assert m["val"]["auc"] > 0.8
    for f in ("config.yaml", "metrics.json", "predictions.csv", "best.ckpt", "logs/metrics.csv"):
        assert (tmp_path / "run" / f).exists(), f
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert set(pred["split"]) == {"val", "test"}
    assert (pred["split"] == "test").sum() == 60
    assert {"image", "patient_id", "label", "prob"} <= set(pred.columns)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("val", "test", "test_at_val_threshold", "threshold_val_youden", "params", "seconds",
                "train_images_per_s"):
        assert key in saved
    # the best checkpoint is the one by validation AUC, and the test AUC is recomputable from the file
    from sklearn.metrics import roc_auc_score

    t = pred[pred["split"] == "test"]
    assert saved["test"]["auc"] == pytest.approx(roc_auc_score(t["label"], t["prob"]), abs=1e-6)
    v = pred[pred["split"] == "val"]
    assert saved["best_val_auc"] == pytest.approx(roc_auc_score(v["label"], v["prob"]), abs=1e-4)


def test_deterministic_runs_give_identical_metrics(compose_cfg, tmp_path, phantom_dir):
    cfg = cfg_for(compose_cfg, tmp_path, phantom_dir, **{"trainer.deterministic": "true", "depth": 3})
    a = train(cfg, tmp_path / "a")
    b = train(cfg, tmp_path / "b")
    assert a["val"] == b["val"] and a["test"] == b["test"]
    pa, pb = (pd.read_csv(tmp_path / d / "predictions.csv") for d in "ab")
    assert np.array_equal(pa["prob"].to_numpy(), pb["prob"].to_numpy())


def test_activation_cache_equals_the_uncached_path(compose_cfg, tmp_path, phantom_dir):
    probs = {}
    for cache in ("true", "false"):
        cfg = cfg_for(compose_cfg, tmp_path, phantom_dir, activation_cache=cache, depth=1,
                      **{"trainer.deterministic": "true"})
        m = train(cfg, tmp_path / cache)
        assert m["activation_cache"] is (cache == "true")
        probs[cache] = pd.read_csv(tmp_path / cache / "predictions.csv")["prob"].to_numpy()
    assert np.allclose(probs["true"], probs["false"], atol=1e-4)


def test_rerun_skips_and_failure_is_recorded(compose_cfg, tmp_path, phantom_dir, capsys):
    cfg = cfg_for(compose_cfg, tmp_path, phantom_dir)
    first = train(cfg, tmp_path / "r")
    stamp = (tmp_path / "r" / "metrics.json").stat().st_mtime_ns
    assert train(cfg, tmp_path / "r") == first
    assert "skipping" in capsys.readouterr().out
    assert (tmp_path / "r" / "metrics.json").stat().st_mtime_ns == stamp
    bad = cfg_for(compose_cfg, tmp_path, phantom_dir, fold=7)
    assert run(bad, tmp_path / "bad", in_sweep=True) is None
    assert "fold 7 does not exist" in (tmp_path / "bad" / "error.txt").read_text()
    assert not (tmp_path / "bad" / "metrics.json").exists()
    with pytest.raises(Exception, match="fold 7"):
        run(bad, tmp_path / "bad2", in_sweep=False)


def jobs_of(compose_cfg, sweep):
    from hydra_plugins.osteo_sweeper.grids_sweeper import GridsSweeper

    cfg = compose_cfg([f"+sweep={sweep}"], return_hydra_config=True)
    return [sorted(j) for j in GridsSweeper(grids=cfg.hydra.sweeper.grids).job_overrides([])], cfg


def test_sweeps_compose_to_the_thesis_jobs(compose_cfg):
    ft, cfg = jobs_of(compose_cfg, "finetune_depth")
    assert cfg.backbone == "vgg16"
    assert ft == [sorted([f"depth={d}", f"fold={f}", "sweep_name=finetune_depth"])
                  for d in range(6) for f in range(5)]
    assert cfg.model.pretrained is True and cfg.hydra.mode.name == "MULTIRUN"
    from hydra_plugins.osteo_sweeper.grids_sweeper import GridsSweeper

    narrowed = GridsSweeper(grids=cfg.hydra.sweeper.grids).job_overrides(["depth=0,1", "trainer.max_epochs=3"])
    assert len(narrowed) == 10 and all("trainer.max_epochs=3" in j for j in narrowed)
    bb, cfg = jobs_of(compose_cfg, "backbone")
    assert bb == [sorted([f"backbone={b}", "depth=5", f"fold={f}", "sweep_name=backbone"])
                  for b in ("vgg16", "resnet50", "legacy_xception") for f in range(5)]
    assert cfg.model.pretrained is False
    th, cfg = jobs_of(compose_cfg, "thesis")
    assert len(th) == 45
    assert [j for j in th if "sweep_name=backbone" in j] == [sorted(j + ["model.pretrained=False"]) for j in bb]
    assert [j for j in th if "sweep_name=finetune_depth" in j] == ft
    # every job composes, and its directory is named by its overrides
    scratch = compose_cfg(["+sweep=thesis", "weights=/w.pth"] + [j for j in th if "sweep_name=backbone" in j][0])
    tuned = compose_cfg(["+sweep=thesis", "weights=/w.pth"] + th[-1])
    assert scratch.model.pretrained is False and tuned.model.pretrained == "/w.pth"


def test_cli_multirun_goes_on_after_a_failed_run(tmp_path, phantom_dir):
    out = tmp_path / "outputs"
    env = {**os.environ, "OSTEO_OUTPUTS": str(out)}
    args = [sys.executable, "-m", "osteo.train", "-m", "fold=0,9", "sweep_name=cli"] + \
        [o for o in tiny_overrides(out, phantom_dir / "manifest.csv") if not o.startswith("paths.")] + \
        ["trainer.max_epochs=1"]
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = out / "sweeps" / "cli"
    ok = runs / "backbone=vgg16_tiny,data.batch_size=16,data.roi.scale=0.5,data.split.test_per_class=30,fold=0,trainer.log_every_n_steps=1"
    assert (ok / "metrics.json").exists(), sorted(p.name for p in runs.iterdir())
    failed = Path(str(ok).replace("fold=0", "fold=9"))
    assert "fold 9 does not exist" in (failed / "error.txt").read_text()
