"""The benchmarks behind `make bench` still run (they are scripts, so nothing else imports them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_data_pipeline_benchmark_runs_and_leaves_nothing(tmp_path):
    """About 30 s: 20 full-size phantoms, both box placements, one VGG16-TF2 step."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}   # the script sets its own offline switches
    r = subprocess.run([sys.executable, str(BENCHMARKS / "data_pipeline.py"), "--n", "20", "--batch", "4",
                        "--train-steps", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for line in ("placement=fixed (1 proc)", "placement=auto (2 proc)", "datamodule iteration", "VGG16-TF2"):
        assert line in r.stdout
    assert not list(tmp_path.glob("osteo-bench-*"))   # its phantoms and caches are gone
