import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from osteo.data.cache import build_roi_cache
from osteo.data.manifest import load_manifest
from osteo.data.roi import extract_roi, roi_output_hw

ROI = {"resize_wh": [1200, 630], "box_xywh": [250, 475, 700, 140], "scale": 1.0,
       "window": "minmax", "min_source_wh": [600, 315]}


def test_roi_is_the_box_of_the_resized_image():
    # an image whose resized version has a bright rectangle exactly at the box
    img = np.zeros((1260, 2400), np.uint8)
    img[950:1230, 500:1900] = 200  # 2x the box (250..950, 475..615) in a 2400x1260 image
    roi = extract_roi(img, (1200, 630), (250, 475, 700, 140))
    assert roi.shape == (140, 700)
    assert roi[2:-2, 2:-2].min() == 200
    half = extract_roi(img, (1200, 630), (250, 475, 700, 140), scale=0.5)
    assert half.shape == (70, 350) == roi_output_hw((250, 475, 700, 140), 0.5)


def test_box_outside_the_image_is_an_error():
    with pytest.raises(ValueError, match="does not fit"):
        extract_roi(np.zeros((700, 1300), np.uint8), (1200, 630), (600, 500, 700, 140))


def make_set(folder, n=4, size=(1300, 680)):
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size[::-1], dtype=np.uint8)).save(folder / f"d{i}.png")
        rows.append(dict(image=f"d{i}.png", patient_id=f"p{i}", t_score=-3 + i))
    pd.DataFrame(rows).to_csv(folder / "m.csv", index=False)
    return load_manifest(folder / "m.csv")


def test_cache_is_reused_and_rebuilds_only_what_changed(tmp_path):
    df = make_set(tmp_path)
    cache = tmp_path / "cache"
    a, bad = build_roi_cache(df, ROI, cache, num_workers=1, progress=False)
    assert not bad and a.shape == (4, 140, 700)
    files = sorted((cache / "roi").rglob("*.npy"))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    b, _ = build_roi_cache(df, ROI, cache, num_workers=1, progress=False)
    assert np.array_equal(a, b)
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # nothing rebuilt
    # change one file: exactly one new cache entry, and its ROI changes
    Image.fromarray(np.full((680, 1300), 7, np.uint8)).save(tmp_path / "d2.png")
    os.utime(tmp_path / "d2.png", ns=(1, 1))
    c, _ = build_roi_cache(df, ROI, cache, num_workers=1, progress=False)
    assert len(list((cache / "roi").rglob("*.npy"))) == 5
    assert (c[2] == 7).all() and np.array_equal(c[[0, 1, 3]], a[[0, 1, 3]])
    # a changed setting gets its own entries
    d, _ = build_roi_cache(df, {**ROI, "scale": 0.5}, cache, num_workers=1, progress=False)
    assert d.shape == (4, 70, 350)


def test_per_image_box_overrides_the_default(tmp_path):
    df = make_set(tmp_path, n=2)
    df["roi_x0"] = [250, 100]
    df["roi_y0"] = [475, 400]
    a, _ = build_roi_cache(df, ROI, tmp_path / "cache", num_workers=1, progress=False)
    from osteo.data.images import read_gray

    expect = extract_roi(read_gray(df["image"][1]), (1200, 630), (100, 400, 700, 140))
    assert np.array_equal(a[1], expect)


def test_small_unreadable_and_duplicate_images_are_reported_by_line(tmp_path):
    df = make_set(tmp_path, n=4)
    Image.fromarray(np.zeros((100, 200), np.uint8)).save(tmp_path / "d1.png")   # too small
    (tmp_path / "d2.png").write_bytes(b"garbage")                               # unreadable
    (tmp_path / "d3.png").write_bytes((tmp_path / "d0.png").read_bytes())       # duplicate of d0
    _, bad = build_roi_cache(df, ROI, tmp_path / "cache", num_workers=1, progress=False)
    reasons = {line: why for line, _, why in bad}
    assert set(reasons) == {3, 4, 5}
    assert "200x100" in reasons[3] and "smaller" in reasons[3]
    assert "not a readable image" in reasons[4]
    assert "duplicate" in reasons[5] and "line 2" in reasons[5]
    assert str(tmp_path / "d0.png") in reasons[5]  # the message names the other file, not this one again
