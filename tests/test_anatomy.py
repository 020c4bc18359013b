"""The mandible finder (osteo/anatomy): border, box, quality flag and cortical width, on
generated phantoms with known geometry and on pictures that are not DPRs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from osteo.anatomy.mandible import analyse, border_array, main as mandible_main
from osteo.anatomy.placement import place_box
from osteo.data.phantom import PhantomParams, border_y, render, sample_subjects

PARAMS = PhantomParams(n=8, seed=5, framing_spread=1.0)


@pytest.fixture(scope="module")
def settings(compose_cfg=None):
    from osteo.config import compose

    cfg = compose([])
    return (OmegaConf.to_container(cfg.data.roi, resolve=True),
            OmegaConf.to_container(cfg.data.anatomy, resolve=True))


@pytest.fixture(scope="module")
def subjects():
    return sample_subjects(PARAMS).to_dict("records")


def true_rows(row: dict, mirrored: bool = False, W: int = 1200, H: int = 630) -> np.ndarray:
    """The phantom's border per resized column, in the finder's row convention (pixel edges)."""
    x = np.arange(W)
    if mirrored:
        x = W - 1 - x
    return border_y(x * row["width"] / W, row) * H / row["height"] + 0.5


def shifted(row, dx=0.0, dy=0.0):
    sx, sy = row["width"] / 1200, row["height"] / 630
    return {**row, "border_xc": row["border_xc"] + dx * sx, "border_yc": row["border_yc"] + dy * sy}


VARIANTS = {
    "as drawn": lambda r: r,
    "shifted down and right": lambda r: shifted(r, dx=35, dy=18),
    "shifted up and left": lambda r: shifted(r, dx=-35, dy=-30),
    "scaled up": lambda r: {**r, "border_halfwidth": r["border_halfwidth"] * 1.12, "border_a": r["border_a"] * 1.1},
    "tilted": lambda r: {**r, "border_tilt": 14 * r["height"] / 630},
    "low contrast": lambda r: {**r, "low_contrast": 1},
    "hyoid near the border": lambda r: {**r, "hyoid": 1},
    "teeth missing": lambda r: {**r, "age": 130.0},
}


def holds(rows: np.ndarray, x0: int, y0: int, margin: float = 3.0) -> bool:
    seg = rows[x0:x0 + 700]
    return bool(seg.min() >= y0 + margin and seg.max() <= y0 + 140 - margin)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_border_and_box_follow_the_phantoms_framing(variant, settings, subjects):
    roi, anatomy = settings
    for row in subjects[:2]:
        row = VARIANTS[variant](dict(row))
        gray = render(row, PARAMS)
        res = analyse(gray, roi, anatomy, row["pixel_mm"])
        truth, found = true_rows(row), border_array(res, 1200)
        x0, y0 = res["roi_x0"], res["roi_y0"]
        err = np.abs(found[x0:x0 + 700] - truth[x0:x0 + 700])
        assert res["status"] == "ok", (variant, res["status"])
        assert np.median(err) <= 2.0, (variant, float(np.median(err)))
        # inside the box's rows; 2 px to spare (the traced ends of a soft-edged cortex wander by a few px)
        assert holds(truth, x0, y0, margin=2.0), (variant, x0, y0, truth[x0:x0 + 700].min(), truth[x0:x0 + 700].max())
        # one image's MCW: within 1.5 mm, which a trace on the wrong edge misses by far (a lacuna or
        # the soft endosteal margin at a measuring site moves it; benchmarks/roi_real.py's mean error
        # over 300 phantoms is the accuracy figure). There the per-image error's 90th / 99th
        # percentile are 1.11 / 2.19 mm: 10.3% of images exceed the earlier limit of 1.1 mm, which
        # these 16 cases had passed by the luck of their random draws (one exceeds it, by 0.07 mm,
        # since the generator draws the hyoid's and the other structures' numbers)
        assert abs(res["mcw_mm"] - row["cortical_width_mm"]) <= 1.5, (variant, res["mcw_mm"], row["cortical_width_mm"])


def test_a_mirrored_phantom_is_found_as_well(settings, subjects):
    roi, anatomy = settings
    row = subjects[2]
    gray = np.ascontiguousarray(render(row, PARAMS)[:, ::-1])
    res = analyse(gray, roi, anatomy, row["pixel_mm"])
    truth = true_rows(row, mirrored=True)
    x0 = res["roi_x0"]
    assert res["status"] == "ok"
    assert np.median(np.abs(border_array(res, 1200)[x0:x0 + 700] - truth[x0:x0 + 700])) <= 2.0
    assert holds(truth, x0, res["roi_y0"])
    # the mirror's left side is the original's right side
    plain = analyse(render(row, PARAMS), roi, anatomy, row["pixel_mm"])
    assert res["mcw_left_mm"] == pytest.approx(plain["mcw_right_mm"], abs=0.35)


def test_the_fixed_box_misses_framing_the_placed_box_holds(settings, subjects):
    """The reason for the finder: shifted framing leaves the thesis's fixed box; the placed one holds."""
    roi, anatomy = settings
    row = shifted(dict(subjects[3]), dy=-40)
    res = analyse(render(row, PARAMS), roi, anatomy, row["pixel_mm"])
    truth = true_rows(row)
    bx, by = roi["box_xywh"][:2]
    assert res["status"] == "ok"
    assert not holds(truth, bx, by)
    assert holds(truth, res["roi_x0"], res["roi_y0"])


def test_a_chin_near_the_bottom_edge_is_found_and_its_box_runs_past_the_edge(settings):
    """Framed as the dev DPRs are (``chin_gap_rows``: the image ends 2-39 rows of 1200 x 630 below
    the chin), the drawn chin lies there, the finder traces the border as drawn, and the placed box
    holds it, running past the image's bottom edge (black rows in the ROI) where the chin is near it."""
    roi, anatomy = settings
    p = PhantomParams(n=6, seed=5, framing_spread=1.0, chin_gap_rows=(2.0, 39.0))
    past_edge = 0
    for row in sample_subjects(p).to_dict("records"):
        truth = true_rows(row)
        assert 630 - 39 - 1 <= truth.max() <= 630 - 2 + 2, truth.max()
        res = analyse(render(row, p), roi, anatomy, row["pixel_mm"])
        assert res["status"] == "ok", res["status"]
        x0, y0 = res["roi_x0"], res["roi_y0"]
        err = np.abs(border_array(res, 1200)[x0:x0 + 700] - truth[x0:x0 + 700])
        assert np.median(err) <= 2.0, float(np.median(err))
        assert holds(truth, x0, y0, margin=2.0)
        past_edge += y0 + 140 > 630
    assert past_edge >= 2


def test_black_padding_under_a_low_chin_is_not_taken_for_the_border(settings):
    """Exports and devices pad DPRs with constant strips. Under a chin near the image's bottom the
    step into black padding is as strong as the cortex's own; the finder fills such strips with the
    nearest content row before tracing (``padding_max_sd``), so it traces the chin as drawn. With
    the fill off, the trace runs along the padding's edge under the chin."""
    roi, anatomy = settings
    off = {**anatomy, "border": {**anatomy["border"], "padding_max_sd": -1.0}}
    p = PhantomParams(n=3, seed=5, framing_spread=1.0, chin_gap_rows=(2.0, 12.0), bottom_strip_prob=0.0)
    for row in sample_subjects(p).to_dict("records"):
        gray = render(row, p)
        h, pad = gray.shape[0], round(0.12 * gray.shape[0])
        padded = np.pad(gray, ((0, pad), (0, 0)))
        truth = border_y(np.arange(1200) * row["width"] / 1200, row) * 630 / (h + pad) + 0.5
        worst = []
        for s in (anatomy, off):
            res = analyse(padded, roi, s, row["pixel_mm"])
            x0 = res["roi_x0"]
            assert res["status"] == "ok", res["status"]
            worst.append(float(np.max(np.abs(border_array(res, 1200)[x0:x0 + 700] - truth[x0:x0 + 700]))))
        assert worst[0] <= 6.0 < 8.0 <= worst[1], worst


def test_fill_padding_replaces_only_constant_edge_strips():
    from osteo.anatomy.border import fill_padding

    rng = np.random.default_rng(0)
    content = rng.integers(20, 200, (60, 80)).astype(np.uint8)
    g = np.pad(content, ((5, 9), (7, 4)), constant_values=3)  # strips at all four edges
    filled = fill_padding(g, 1.0)
    assert filled.shape == g.shape
    # each strip and the row / column next to it take the nearest content row / column beyond
    assert (filled[:6, 8:-5] == g[6, 8:-5]).all() and (filled[-10:, 8:-5] == g[-11, 8:-5]).all()
    assert (filled[6:-10, :8] == g[6:-10, [8]]).all() and (filled[6:-10, -5:] == g[6:-10, [-6]]).all()
    assert (filled[6:-10, 8:-5] == g[6:-10, 8:-5]).all()     # content untouched
    assert (fill_padding(content, 1.0) == content).all()    # nothing to fill
    assert (fill_padding(g, -1.0) == g).all()                # off
    flat = np.full((30, 40), 7, np.uint8)
    assert (fill_padding(flat, 1.0) == flat).all()           # an all-flat picture is left to the flags


def non_dpr_pictures() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    H, W = 1100, 2200
    yy, xx = np.indices((H, W))
    clouds = {}
    for seed in range(4):  # blurred noise has edges of every shape: none may pass as a border
        for sigma in (4, 8, 16):
            c = cv2.GaussianBlur(np.random.default_rng(seed).standard_normal((H, W)).astype(np.float32), (0, 0), sigma)
            clouds[f"cloudy noise {seed}/{sigma}"] = cv2.normalize(c, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:  # a photograph shipped with matplotlib
        photo = np.asarray(Image.open(f).convert("L").resize((W, H), Image.BILINEAR))
    return {**clouds, "photograph": photo,
        "blank": np.full((H, W), 128, np.uint8),
        "pure noise": rng.integers(0, 256, (H, W)).astype(np.uint8),
        "horizon": np.where(yy < 700, 200, 40).astype(np.uint8),
        "checkerboard": ((yy // 100 + xx // 100) % 2 * 200).astype(np.uint8),
        "disc": ((((xx - W / 2) ** 2 + (yy - H / 2) ** 2) < 450 ** 2) * 200).astype(np.uint8),
    }


@pytest.mark.parametrize("name", sorted(non_dpr_pictures()))
def test_pictures_that_are_not_dprs_are_flagged_with_a_reason(name, settings):
    roi, anatomy = settings
    res = analyse(non_dpr_pictures()[name], roi, anatomy, 0.1)
    assert res["status"].startswith("flagged: ") and len(res["status"]) > 20, res["status"]
    assert (res["roi_x0"], res["roi_y0"]) == tuple(roi["box_xywh"][:2])  # the fixed box, never a guess
    assert np.isnan(res["mcw_mm"])


def test_a_border_too_tall_for_the_box_is_flagged():
    rows = np.full(1200, np.nan)
    x = np.arange(150, 1050)
    rows[150:1050] = 600 - 170 * ((x - 600) / 450.0) ** 2  # spans about 130 rows over 700 columns
    cfg = {"bottom_margin_px": 20, "min_margin_px": 3, "max_slide_px": 50, "max_overhang_px": 20}
    x0, y0, why = place_box(rows, 600.0, (700, 140), (1200, 630), cfg)
    assert why == "" and holds(rows, x0, y0)
    rows[150:1050] = 600 - 260 * ((x - 600) / 450.0) ** 2  # about 160 rows: no 140-row box holds it
    x0, y0, why = place_box(rows, 600.0, (700, 140), (1200, 630), cfg)
    assert "more than the 140-row box holds" in why


def test_a_low_chin_gets_a_box_past_the_image_edge(settings):
    from osteo.data.roi import extract_roi

    rows = np.full(1200, np.nan)
    x = np.arange(150, 1050)
    rows[150:1050] = 622 - 80 * ((x - 600) / 450.0) ** 2
    cfg = {"bottom_margin_px": 20, "min_margin_px": 3, "max_slide_px": 50, "max_overhang_px": 20}
    x0, y0, why = place_box(rows, 600.0, (700, 140), (1200, 630), cfg)
    assert why == "" and y0 + 140 > 630 and holds(rows, x0, y0)
    crop = extract_roi(np.full((630, 1200), 90, np.uint8), (1200, 630), (x0, y0, 700, 140), 1.0, overhang_px=20)
    assert crop.shape == (140, 700)
    assert (crop[630 - y0:] == 0).all() and (crop[:630 - y0] == 90).all()
    with pytest.raises(ValueError, match="does not fit"):
        extract_roi(np.zeros((630, 1200), np.uint8), (1200, 630), (x0, y0, 700, 140))


def test_cli_writes_a_row_per_image_and_says_which_failed(tmp_path, subjects, capsys):
    from osteo.cli import run_cli

    row = subjects[4]
    Image.fromarray(render(row, PARAMS)).save(tmp_path / "dpr.png")
    Image.fromarray(np.full((700, 1400), 128, np.uint8)).save(tmp_path / "blank.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    pd.DataFrame({"image": ["dpr.png"], "pixel_mm": [row["pixel_mm"]]}).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "boxes.csv"
    rc = run_cli(mandible_main, [str(tmp_path / "dpr.png"), str(tmp_path / "blank.png"), str(tmp_path / "broken.png"),
                                 str(tmp_path / "m.csv"), "--out", str(out), "--border"])
    assert rc == 1  # one file failed; the others were still measured
    df = pd.read_csv(out)
    assert list(df.columns[:3]) == ["image", "pixel_mm", "pixel_mm_source"]
    for col in ("roi_x0", "roi_y0", "status", "confidence", "mcw_left_mm", "mcw_right_mm", "mcw_mm", "border_rows"):
        assert col in df.columns
    by = {(r.image.split("/")[-1], r.pixel_mm_source): r for r in df.itertuples()}
    assert by[("dpr.png", "default")].status == "ok"
    assert by[("dpr.png", "manifest")].mcw_mm == pytest.approx(row["cortical_width_mm"], abs=0.5)
    assert by[("blank.png", "default")].status.startswith("flagged: ")
    assert by[("broken.png", "default")].status.startswith("error: ")
    rows = np.array(by[("dpr.png", "manifest")].border_rows.split(), dtype=float)
    assert len(rows) == 900 and np.isfinite(rows).all()
    # nothing is overwritten without --force, and a usage mistake is one line with exit 2
    assert run_cli(mandible_main, [str(tmp_path / "dpr.png"), "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    # a folder with no image osteo reads says what it holds instead
    (tmp_path / "other").mkdir()
    for name in ("a.gif", "b.gif", "c.heic", "notes"):
        (tmp_path / "other" / name).write_bytes(b"x")
    assert run_cli(mandible_main, [str(tmp_path / "other"), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "no images found" in err and "it holds 2 .gif, 1 (no suffix), 1 .heic files" in err, err
    # config overrides after the inputs are overrides, not missing files (argparse gave them to the
    # inputs: 'data.anatomy.box.bottom_margin_px=40: error: file not found', exit 1); one spelt
    # wrong is one line naming the right one, before any image is read
    moved = tmp_path / "moved.csv"
    assert run_cli(mandible_main, [str(tmp_path / "dpr.png"), "data.anatomy.box.bottom_margin_px=40",
                                   "--out", str(moved)]) == 0
    # the border 40 px above the box's bottom instead of 20: the box 20 px lower
    assert pd.read_csv(moved)["roi_y0"].iloc[0] == by[("dpr.png", "default")].roi_y0 + 20
    capsys.readouterr()
    assert run_cli(mandible_main, [str(tmp_path / "dpr.png"), "data.anatomy.box.bottom_margin=40",
                                   "--out", str(tmp_path / "typo.csv")]) == 2
    err = capsys.readouterr().err
    assert "did you mean data.anatomy.box.bottom_margin_px" in err and not (tmp_path / "typo.csv").exists(), err


def test_dicom_pixel_spacing_sets_the_mm_scale(tmp_path):
    from test_images import write_dicom

    from osteo.anatomy.mandible import pixel_size

    write_dicom(tmp_path / "a.dcm", np.zeros((64, 128), np.uint16))
    assert pixel_size(tmp_path / "a.dcm", 0.2, 0.1) == (0.2, "manifest")  # no spacing tag in the file
    import pydicom

    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.ImagerPixelSpacing = [0.12, 0.14]
    ds.save_as(tmp_path / "b.dcm")
    assert pixel_size(tmp_path / "b.dcm", 0.2, 0.1) == (pytest.approx(0.13), "dicom")
    assert pixel_size(tmp_path / "c.png", None, 0.1) == (0.1, "default")
    # ImagerPixelSpacing is at the detector: the patient's pixel is smaller by the magnification
    # the file gives (a panoramic's ~1.25); PixelSpacing, already at the patient, wins over both
    ds.EstimatedRadiographicMagnificationFactor = 1.25
    ds.save_as(tmp_path / "m.dcm")
    assert pixel_size(tmp_path / "m.dcm", 0.2, 0.1) == (pytest.approx(0.104), "dicom")
    ds.PixelSpacing = [0.09, 0.09]
    ds.save_as(tmp_path / "p.dcm")
    assert pixel_size(tmp_path / "p.dcm", 0.2, 0.1) == (pytest.approx(0.09), "dicom")


def test_manifest_box_wins_and_the_cache_redoes_only_what_a_setting_touches(tmp_path, settings, subjects):
    from osteo.data.cache import build_roi_cache

    roi, anatomy = settings
    recs = []
    for i, row in enumerate(subjects[:3]):
        Image.fromarray(render(row, PARAMS)).save(tmp_path / f"d{i}.png")
        recs.append({"image": str(tmp_path / f"d{i}.png"), "line": i + 2, "pixel_mm": row["pixel_mm"],
                     "roi_x0": 200 if i == 0 else None, "roi_y0": 400 if i == 0 else None})
    df = pd.DataFrame(recs)
    cache = tmp_path / "cache"
    places: list[dict] = []
    arr, bad = build_roi_cache(df, roi, cache, num_workers=1, progress=False, anatomy=anatomy, placements_out=places)
    assert not bad and arr.shape == (3, 140, 700)
    assert (places[0]["roi_x0"], places[0]["roi_y0"], places[0]["box_source"]) == (200, 400, "manifest")
    assert [p["box_source"] for p in places[1:]] == ["auto", "auto"]
    for p, row in zip(places[1:], subjects[1:3]):
        assert holds(true_rows(row), p["roi_x0"], p["roi_y0"])
    found = sorted((cache / "anatomy").rglob("*.json"))
    assert len(found) == 3
    stamps = {f: f.stat().st_mtime_ns for f in found}
    # a new scale re-crops but keeps the border results
    half, _ = build_roi_cache(df, {**roi, "scale": 0.5}, cache, num_workers=1, progress=False, anatomy=anatomy)
    assert half.shape == (3, 70, 350)
    assert {f: f.stat().st_mtime_ns for f in found} == stamps
    # a changed finder setting finds the borders again (a new key), and moves the placed boxes
    moved: list[dict] = []
    a2 = {**anatomy, "box": {**anatomy["box"], "bottom_margin_px": 10}}
    build_roi_cache(df, roi, cache, num_workers=1, progress=False, anatomy=a2, placements_out=moved)
    assert len(sorted((cache / "anatomy").rglob("*.json"))) == 6
    assert moved[0]["roi_y0"] == 400 and moved[1]["roi_y0"] != places[1]["roi_y0"]
    info = json.loads(found[0].read_text())
    assert {"roi_x0", "roi_y0", "status", "border_rows", "mcw_mm"} <= set(info)


def test_a_border_rising_out_of_the_box_at_its_ends_is_flagged_not_missed(settings):
    """Where the mandible fills less of the frame's width (a wider field of view; here black
    padding at the sides, 15% of the width each), the border rises toward the angles inside the
    box more steeply than the stiff first trace follows: that trace cuts across the rise and the
    border's ends leave the box with no flag (the check off, ``check_max_slope`` 0). The freer
    check trace follows the rise out of the box and flags the image, with the reason; it moves
    no box."""
    roi, anatomy = settings
    off = {**anatomy, "border": {**anatomy["border"], "check_max_slope": 0}}
    p = PhantomParams(n=4, seed=5, bottom_strip_prob=0.0)
    silent = 0
    for row in sample_subjects(p).to_dict("records"):
        gray = render(row, p)
        h, w = gray.shape
        pad = round(0.15 * w)
        padded = np.pad(gray, ((0, 0), (pad, pad)))
        truth = border_y(np.arange(1200) * (w + 2 * pad) / 1200 - pad, row) * 630 / h + 0.5
        plain, checked = (analyse(padded, roi, s, row["pixel_mm"]) for s in (off, anatomy))
        assert (plain["roi_x0"], plain["roi_y0"]) == (checked["roi_x0"], checked["roi_y0"])
        if plain["status"] == "ok" and not holds(truth, plain["roi_x0"], plain["roi_y0"], margin=0.0):
            silent += 1
            assert checked["status"].startswith("flagged: a freer trace of the border leaves the box"), checked["status"]
    assert silent >= 2
