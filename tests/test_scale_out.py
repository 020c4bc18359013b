"""The scale-out path for real: a two-job sweep through submitit's local executor, read by the report."""

import os
import subprocess
import sys

from osteo.config import compose
from osteo.report.build import build_report
from tests.conftest import tiny_overrides


def test_submitit_local_sweep_and_report(tmp_path, phantom_dir):
    out = tmp_path / "outputs"
    env = {**os.environ, "OSTEO_OUTPUTS": str(out)}
    args = [sys.executable, "-m", "osteo.train", "+sweep=finetune_depth", "depth=0,5", "fold=0",
            "hydra/launcher=local_parallel", "hydra.launcher.timeout_min=20", "weights=false",
            "data.split.n_folds=2", "trainer.max_epochs=2"] + \
        [o for o in tiny_overrides(out, phantom_dir / "manifest.csv") if not o.startswith(("paths.", "trainer.max"))]
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    sweep = out / "sweeps" / "finetune_depth"
    done = sorted(p.parent.name for p in sweep.rglob("metrics.json"))
    assert len(done) == 2 and all(d.startswith("backbone=vgg16_tiny,") for d in done), done
    assert (sweep / ".submitit").exists()
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.enabled = False
    s = build_report(out / "sweeps", out / "report", rcfg)
    assert set(s["configs"]) >= {"vgg16_tiny scratch", "vgg16_tiny scratch (depth 0)"}
