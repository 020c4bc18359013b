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


def test_roi_real_benchmark_measures_the_finder_after_acquisition_changes(tmp_path):
    """`roi_real.py --perturb` on three phantoms laid out as a real set (images/, masks-1/, masks-2/;
    the mask is everything above the drawn border): every change is measured, the unchanged images'
    borders are found within 2 px, and black padding below the image does not pull the border."""
    import re

    import numpy as np
    from PIL import Image

    from osteo.data.phantom import PhantomParams, border_y, render, sample_subjects

    p = PhantomParams(n=3, seed=5, framing_spread=1.0, bottom_strip_prob=0.0)
    for sub in ("images", "masks-1", "masks-2"):
        (tmp_path / sub).mkdir()
    for i, row in enumerate(sample_subjects(p).to_dict("records")):
        gray = render(row, p)
        h, w = gray.shape
        mask = np.arange(h)[:, None] < border_y(np.arange(w), row)[None]
        Image.fromarray(gray).save(tmp_path / "images" / f"dpr_{i}.png")
        for sub in ("masks-1", "masks-2"):
            Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / sub / f"dpr_{i}.png")
    r = subprocess.run([sys.executable, str(BENCHMARKS / "roi_real.py"), "--data", str(tmp_path), "--perturb"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    found = dict(re.findall(r"^  (\S.*?)\s+error median\s+([\d.]+) px", r.stdout, re.M))
    assert set(found) == {"none", "half size", "0.3 size", "gamma 0.6 (brighter)", "gamma 1.6 (darker)",
                          "noise SD 8 grey levels", "blur SD 2 px", "black padding below, 10% of the height",
                          "black padding at the sides, 10% of the width each", "top 15% cut off (taller framing)",
                          "8% cut off each side (narrower framing)"}, r.stdout
    assert float(found["none"]) <= 2.0 and float(found["black padding below, 10% of the height"]) <= 2.0, r.stdout
    r = subprocess.run([sys.executable, str(BENCHMARKS / "roi_real.py"), "--perturb", "--phantoms", "3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--perturb changes real images: give --data DIR too" in r.stderr


def test_roi_real_benchmark_reads_one_set_per_device(tmp_path):
    """`roi_real.py --data` on a held-out set laid out per device, as a set from elsewhere may be:
    A/images with masks-1/ (and a labels/ folder of CSV files, no reader), B/images with a
    reader's folder `Segmentations/` whose files are named `<image>_mask.png`, one image of B
    without a mask and one unreadable. Real computation on
    phantoms (the mask is everything above the drawn border): each set is measured against its
    own readers, then all together; the borders are found within 2 px; the image without a
    mask and the unreadable one are listed and left out. No images/ folder anywhere: exit 2."""
    import re

    import numpy as np
    from PIL import Image

    from osteo.data.phantom import PhantomParams, border_y, render, sample_subjects

    p = PhantomParams(n=5, seed=6, bottom_strip_prob=0.0)
    root = tmp_path / "held-out"
    layout = [("A", "masks-1", "{}.png"), ("A", "masks-1", "{}.png"), ("B", "Segmentations", "{}_mask.png"),
              ("B", "Segmentations", "{}_mask.png"), ("B", None, None)]
    for i, (row, (dev, reader, name)) in enumerate(zip(sample_subjects(p).to_dict("records"), layout)):
        gray = render(row, p)
        h, w = gray.shape
        (root / dev / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(gray).save(root / dev / "images" / f"dpr_{i}.png")
        if reader:
            (root / dev / reader).mkdir(exist_ok=True)
            mask = np.arange(h)[:, None] < border_y(np.arange(w), row)[None]
            Image.fromarray((mask * 255).astype(np.uint8)).save(root / dev / reader / name.format(f"dpr_{i}"))
    (root / "B" / "images" / "dpr_9.png").write_text("not an image")
    (root / "B" / "Segmentations" / "dpr_9_mask.png").write_text("not an image either")
    (root / "A" / "labels").mkdir()
    (root / "A" / "labels" / "t_scores.csv").write_text("image,t_score\ndpr_0.png,-1.2\n")
    r = subprocess.run([sys.executable, str(BENCHMARKS / "roi_real.py"), "--data", str(root)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "dpr_4: no mask in Segmentations/ (left out)" in r.stdout and "dpr_9: cannot be read as an image" in r.stdout
    sets = dict(re.findall(r"^real DPRs \((.*?)\): (\d+) images", r.stdout, re.M))
    assert sets == {"A": "2", "B": "2", f"all 2 sets under {root}": "4"}, r.stdout
    errors = [float(e) for e in re.findall(r"border error vs (?:masks-1|Segmentations|reader 1): median ([\d.]+) px", r.stdout)]
    assert len(errors) == 3 and max(errors) <= 2.0, r.stdout
    assert "border held (3 px margin, Segmentations): auto 2/2" in r.stdout

    (tmp_path / "none").mkdir()
    r = subprocess.run([sys.executable, str(BENCHMARKS / "roi_real.py"), "--data", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no images/ folder with images under it" in r.stderr and "Traceback" not in r.stderr
