"""The scale-out path for real: sweeps through submitit's local executor, read by the report."""

import os
import subprocess
import sys

import pandas as pd

from osteo.config import compose
from osteo.report.build import build_report
from tests.conftest import tiny_overrides


def test_parallel_jobs_from_an_empty_outputs_folder_share_one_phantom_set(tmp_path):
    """Two jobs start together on a fresh outputs/ with no manifest: one generates the phantoms,
    splits and ROI cache under locks, the other waits and reuses them; both finish, and the
    report reads them. Each job runs with the 1 CPU its launcher gives it."""
    out = tmp_path / "outputs"
    env = {**os.environ, "OSTEO_OUTPUTS": str(out)}
    args = [sys.executable, "-m", "osteo.train", "+sweep=finetune_depth", "depth=0,5", "fold=0",
            "hydra/launcher=local_parallel", "hydra.launcher.timeout_min=20", "weights=none",
            "data.phantom.n=96", "data.split.test_per_class=12", "data.split.n_folds=2",
            "trainer.max_epochs=2"] + \
        [o for o in tiny_overrides(out) if not o.startswith(("paths.", "trainer.max", "data.split"))]
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=420)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    sweep = out / "sweeps" / "finetune_depth"
    done = sorted(p.parent for p in sweep.rglob("metrics.json"))
    assert len(done) == 2 and all(d.name.startswith("backbone=vgg16_tiny,") for d in done), done
    assert all(d.parent.name == "data=phantom-n96-seed0-d1.0-f0.0,weights=scratch" for d in done)
    assert (sweep / ".submitit").exists() or any(sweep.rglob(".submitit"))
    phantoms = out / "data" / "phantom-n96-seed0-d1.0-f0.0"
    assert len(list((phantoms / "images").glob("*.png"))) == 96
    assert not list(phantoms.rglob(".*.tmp"))  # nothing half-written
    assert len(list((out / "splits").glob("splits-*.csv"))) == 1
    import json

    assert all(json.loads((d / "metrics.json").read_text())["cpus"] == 1 for d in done)
    assert pd.read_csv(phantoms / "manifest.csv").shape[0] == 96
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.enabled = False
    s = build_report(out / "sweeps", out / "report", rcfg)
    assert set(s["configs"]) >= {"vgg16_tiny TF5, random init", "vgg16_tiny TF0, random init"}
