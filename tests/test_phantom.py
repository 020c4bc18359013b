"""The phantom is reproducible, framed so the default ROI holds the border, carries its
signal in the cortex (not the background), and matches the configured statistics."""

import hashlib
import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from osteo.config import compose
from osteo.data.images import read_gray
from osteo.data.phantom import WORK_WH, PhantomParams, border_y, generate, oracle_auc, sample_subjects


def digest_dir(d):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*.png"))
            if p.parent.name == "images"} | {"manifest": hashlib.sha1((d / "manifest.csv").read_bytes()).hexdigest()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    p = PhantomParams(n=4, seed=5)
    generate(tmp_path / "a", p, workers=1, progress=False)
    generate(tmp_path / "b", p, workers=2, progress=False)
    generate(tmp_path / "c", PhantomParams(n=4, seed=6), workers=1, progress=False)
    a, b, c = digest_dir(tmp_path / "a"), digest_dir(tmp_path / "b"), digest_dir(tmp_path / "c")
    assert a == b
    assert all(a[k] != c[k] for k in a)
    assert (tmp_path / "a" / "contact_sheet.png").exists()


def test_sizes_and_spacing_like_real_dprs(phantom_dir):
    m = pd.read_csv(phantom_dir / "manifest.csv")
    assert m["width"].between(1348, 3150).all() and m["height"].between(685, 1348).all()
    assert ((m["width"] / m["height"]).between(1.85, 2.8)).all()   # the thesis's 1.9-2.0, the dev DPRs' to 2.7
    assert m["pixel_mm"].between(0.075, 0.2).all()
    img = read_gray(phantom_dir / m["image"][0])
    assert img.shape == (m["height"][0], m["width"][0])


def test_default_roi_box_holds_the_inferior_border():
    cfg = compose()
    x0, y0, w, h = cfg.data.roi.box_xywh
    W, H = cfg.data.roi.resize_wh
    s = sample_subjects(PhantomParams(n=2000, seed=11))
    inside = []
    for r in s.to_dict("records"):
        u = np.arange(x0, x0 + w, dtype=float)
        y = border_y(u * r["width"] / W, r) * H / r["height"]  # the border after the thesis's resize
        inside.append(y.min() >= y0 and y.max() <= y0 + h)
    assert np.mean(inside) >= 0.99
    wide = sample_subjects(PhantomParams(n=2000, seed=11, framing_spread=1.0))
    inside_wide = [((border_y(np.arange(x0, x0 + w) * r["width"] / W, r) * H / r["height"]).min() >= y0)
                   for r in wide.to_dict("records")]
    assert np.mean(inside_wide) < 0.9  # the multi-device framing really is wider


def test_drawn_border_is_where_the_manifest_says(phantom_dir):
    """Below the true border the image is dark soft tissue; just above it, bright cortex."""
    m = pd.read_csv(phantom_dir / "manifest.csv").head(20)
    diffs = []
    for r in m.to_dict("records"):
        img = read_gray(phantom_dir / r["image"]).astype(float)
        xs = np.linspace(r["border_xc"] - 0.4 * r["border_halfwidth"], r["border_xc"] + 0.4 * r["border_halfwidth"], 30)
        ys = border_y(xs, r)
        px = r["cortical_width_mm"] / r["pixel_mm"]
        above = [img[int(y - 0.5 * px), int(x)] for x, y in zip(xs, ys)]
        below = [img[int(y + 0.8 * px + 6), int(x)] for x, y in zip(xs, ys)]
        diffs.append(np.mean(above) - np.mean(below))
    assert np.mean(np.array(diffs) > 0) >= 0.9


def _profile_auc(X, y, shuffles: int = 5):
    """Cross-validated AUC of a logistic regression, the mean over ``shuffles`` 5-fold splits (one
    split's figure moved by up to 0.07 with the split alone on 240 phantoms)."""
    aucs = []
    for seed in range(shuffles):
        cv = StratifiedKFold(5, shuffle=True, random_state=seed)
        p = cross_val_predict(LogisticRegression(C=1.0, max_iter=2000), X, y, cv=cv, method="predict_proba")[:, 1]
        aucs.append(roc_auc_score(y, p))
    return float(np.mean(aucs))


def test_signal_lives_in_the_roi_not_the_background(phantom_dir):
    """Grey profiles across the true inferior border (rows -40..+10 around it, averaged over the
    box's columns, each image's mean removed: brightness varies between images as on real DPRs)
    carry the label; the same profiles far from bone do not."""
    from osteo.data.roi import resize_bilinear

    cfg = compose()
    W, H = cfg.data.roi.resize_wh
    x0, _, w, _ = cfg.data.roi.box_xywh
    m = pd.read_csv(phantom_dir / "manifest.csv")
    offsets = np.arange(-40, 11)
    cols = np.arange(x0, x0 + w, 4)
    roi_prof, bg_prof = [], []
    for r in m.to_dict("records"):
        g = resize_bilinear(read_gray(phantom_dir / r["image"]), (W, H)).astype(float)
        b = border_y(cols * r["width"] / W, r) * H / r["height"]
        rows = np.clip(np.rint(b[None, :] + offsets[:, None]).astype(int), 0, H - 1)
        prof = g[rows, cols[None, :]].mean(axis=1)
        bg = g[np.clip(rows - int(b.min()) + 10, 0, H - 1), cols[None, :]].mean(axis=1)  # the top rows: no bone
        roi_prof.append(prof - prof.mean())
        bg_prof.append(bg - bg.mean())
    y = m["label"].to_numpy()
    norm = lambda a: (np.array(a) - np.mean(a, axis=0)) / (np.std(a, axis=0) + 1e-9)  # noqa: E731
    auc_roi, auc_bg = _profile_auc(norm(roi_prof), y), _profile_auc(norm(bg_prof), y)
    print(f"profile baseline AUC: across the border {auc_roi:.3f}, background {auc_bg:.3f}")
    assert auc_roi > 0.65
    assert abs(auc_bg - 0.5) < 0.12


def test_class_statistics_match_the_configuration():
    p = PhantomParams(n=6800, seed=2)
    s = sample_subjects(p)
    assert s["label"].mean() == pytest.approx(300 / 680, abs=0.001)
    for y in (0, 1):
        g = s[s["label"] == y]
        n = len(g)
        se_f = np.sqrt(p.female_frac[y] * (1 - p.female_frac[y]) / n)
        assert abs((g["sex"] == "F").mean() - p.female_frac[y]) < 4 * se_f
        # age is clipped to 27..90 years, which moves the mean by well under 1 year
        assert abs(g["age"].mean() - p.age_mean[y]) < 4 * p.age_sd[y] / np.sqrt(n) + 0.6
        assert abs(g["age"].std() - p.age_sd[y]) < 0.1 * p.age_sd[y]
        assert (g["t_score"] <= -2.5).all() if y else (g["t_score"] > -2.5).all()
    cw0, cw1 = (s.loc[s["label"] == y, "cortical_width_mm"].mean() for y in (0, 1))
    assert cw0 > 3.0 > cw1  # OSTEODENT: cortex below about 3 mm suggests osteoporosis
    assert set(s["klemetti"]) == {"C1", "C2", "C3"}
    c3 = s.groupby("label")["klemetti"].apply(lambda k: (k == "C3").mean())
    assert c3[1] > 3 * c3[0]


def test_oracle_auc_at_default_difficulty_is_neither_trivial_nor_hopeless():
    aucs = [oracle_auc(sample_subjects(PhantomParams(seed=s)))["test"] for s in range(3)]
    assert all(0.85 <= a <= 0.95 for a in aucs), aucs
    harder = oracle_auc(sample_subjects(PhantomParams(seed=0, difficulty=2.0)))["test"]
    assert harder < min(aucs)


def _ensure(out, q):
    import logging

    from osteo.data.phantom import ensure_phantom

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logging.getLogger("osteo").addHandler(Keep())
    logging.getLogger("osteo").setLevel(logging.INFO)
    ensure_phantom(out, workers=1, n=6, seed=3)
    q.put(sum(m.startswith("generating") for m in records))


def test_parallel_jobs_generate_the_phantom_set_once(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ensure, args=(tmp_path / "ph", q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(q.get() for _ in procs) == [0, 1]  # one generated, the other reused its files
    assert len(list((tmp_path / "ph" / "images").glob("*.png"))) == 6
    assert not list((tmp_path / "ph").rglob(".*.tmp"))


def test_optional_structure_adds_what_it_says():
    """Switched on alone (from a look with both off), the spine ghost's vertical bands add
    variation across the midline's column profile (30-150 px scales), and the canal network adds
    fine contrast to the trabecular bone (both are on in the default look). The spine ghost's
    width and the bands' reach are the previous release's here (197 px, log-SD 0.144; 0.69 of its
    half-width): this look's narrower, more varied ghost puts its own sides into the midline's
    profile and keeps its bands near its centre, which would hide what the bands add."""
    import dataclasses

    import cv2

    from osteo.data.phantom import LOOK, render
    from osteo.data.roi import resize_bilinear

    p = PhantomParams(n=4, seed=3)
    spine, fine = [], []
    for row in sample_subjects(p).to_dict("records"):
        b = border_y(np.array([row["border_xc"]]), row)[0] * 630 / row["height"]
        xc = row["border_xc"] * 1200 / row["width"]
        r0, r1 = int(b - 160), int(b - 40)

        def img(**kw):
            g = render(row, p, dataclasses.replace(LOOK, spine_width_px=197.0, spine_width_sd=0.144,
                                                   streak_spread=0.69, **kw))
            return resize_bilinear(g, (1200, 630)).astype(np.float32) / 255

        def across_midline(a):
            prof = a[r0:r1, int(xc - 150):int(xc + 150)].mean(0)
            return float(np.std(prof - cv2.GaussianBlur(prof[None], (0, 0), 25)[0]))

        def fine_contrast(a):
            patch = a[r0:r1, int(xc - 330):int(xc - 170)]
            return float(np.std(patch - cv2.GaussianBlur(patch, (0, 0), 3)))

        base = img(spine_streaks=0.0, canals=0.0)
        spine.append((across_midline(base), across_midline(img(spine_streaks=0.5, canals=0.0))))
        fine.append((fine_contrast(base), fine_contrast(img(canals=0.8, spine_streaks=0.0))))
    spine, fine = np.array(spine), np.array(fine)
    print("midline variation off/on", spine.mean(0), "fine contrast off/on", fine.mean(0))
    assert spine[:, 1].mean() > 1.2 * spine[:, 0].mean()   # measured 1.21 (1.22 on the previous look)
    assert fine[:, 1].mean() > 1.15 * fine[:, 0].mean()   # measured 1.23 (1.21 on the previous look)


def test_read_look_replaces_named_fields_and_names_unknown_ones(tmp_path):
    from osteo.data.phantom import LOOK, read_look

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"canals": 0.5, "streak_px": 30}')
    bad.write_text('{"canals": 0.5, "canalz": 1}')
    look = read_look(good)
    assert (look.canals, look.streak_px, look.spine) == (0.5, 30, LOOK.spine)
    assert read_look(None) == LOOK
    with pytest.raises(ValueError, match="canalz"):
        read_look(bad)
    for body, text in (('{"canals": "0.5"}', 'canals = "0.5": give a number'), ('{"canals": true}', "give a number"),
                       ('["canals"]', "not an object"), ('{"canals": ', "not valid JSON")):
        bad.write_text(body)
        with pytest.raises(ValueError, match=re.escape(text)):
            read_look(bad)
    with pytest.raises(ValueError, match="no such file"):
        read_look(tmp_path / "missing.json")


def test_look_ranges_are_read_as_pairs_and_drawn_from(tmp_path):
    """The per-image spreads around the look's centres are Look fields too: read from JSON as
    pairs (hashable, so generator_id takes them), and render draws from them."""
    from osteo.data.phantom import generator_id, read_look

    f = tmp_path / "look.json"
    f.write_text('{"blur_range": [1.0, 1.0], "gamma_range": [1.0, 1.0]}')
    look = read_look(f)
    assert look.blur_range == (1.0, 1.0) and look.gamma_range == (1.0, 1.0)
    assert generator_id(look) != generator_id()
    f.write_text('{"blur_range": [1.0]}')
    with pytest.raises(ValueError, match=re.escape("blur_range = [1.0]: give a list of two numbers")):
        read_look(f)


def test_anatomy_fields_are_look_fields_and_roots_end_above_the_border(tmp_path):
    """The anatomy's own sizes are Look fields (read from JSON as the others are): a denser root
    changes the image, and only above the inferior border (the roots end in the bone above it); so
    does another bone-fraction reference for the trabecular texture (the texture is in the bone)."""
    from osteo.data.phantom import border_y, read_look, render

    f = tmp_path / "look.json"
    f.write_text('{"tooth_root": 0.1, "root_mm_range": [12, 17]}')
    look = read_look(f)
    assert look.root_mm_range == (12, 17) and look.tooth_root == 0.1
    p = PhantomParams(n=3, seed=3)
    f.write_text('{"bvf_reference": 0.45}')   # the bone fraction at which the texture has its base cell and contrast
    texture = read_look(f)
    for row in sample_subjects(p).to_dict("records"):
        changed_y, changed_x = np.nonzero(render(row, p) != render(row, p, look))
        assert len(changed_y) > 1000
        assert (changed_y < border_y(changed_x, row)).all()
        changed_y, changed_x = np.nonzero(render(row, p) != render(row, p, texture))
        assert len(changed_y) > 1000 and (changed_y < border_y(changed_x, row)).all()


def test_drawing_shapes_are_look_fields(tmp_path):
    """The drawing's own shapes (random-field bands, teeth, lacunae, the spine ghost's lines) are
    Look fields too: each does what its name says, and a look JSON reads them, whole numbers where
    the default's are."""
    from osteo.data.phantom import border_y, read_look, render

    f = tmp_path / "look.json"
    p = PhantomParams(n=2, seed=3)
    row = sample_subjects(p).to_dict("records")[0]
    base = render({**row, "klemetti": "C1"}, p)
    f.write_text('{"teeth_spacing": 0.6, "root_taper": 0.3}')   # teeth elsewhere, wider roots: above the border only
    changed_y, changed_x = np.nonzero(render({**row, "klemetti": "C1"}, p, read_look(f)) != base)
    assert len(changed_y) > 1000 and (changed_y < border_y(changed_x, row)).all()
    f.write_text('{"lacuna_core": 0.9}')    # lacunae only: nothing changes without them (C1)
    core = read_look(f)
    assert (render({**row, "klemetti": "C1"}, p, core) == base).all()
    c3 = {**row, "klemetti": "C3"}
    assert (render(c3, p, core) != render(c3, p)).sum() > 100
    f.write_text('{"spine_line_count": [4, 4], "blotch_field": [300, 80, 2]}')
    look = read_look(f)
    assert look.spine_line_count == (4, 4) and look.blotch_field == (300, 80, 2)
    assert (render({**row, "klemetti": "C1"}, p, look) != base).sum() > 1000
    for body, text in (('{"spine_line_count": [1.5, 4]}', "spine_line_count = [1.5, 4]: give a list of two whole numbers"),
                       ('{"blotch_field": [300, 80]}', "blotch_field = [300, 80]: give a list of three numbers")):
        f.write_text(body)
        with pytest.raises(ValueError, match=re.escape(text)):
            read_look(f)


def test_read_params_replaces_named_fields_and_names_unknown_ones(tmp_path):
    from osteo.data.phantom import read_params

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"bottom_strip_gap": [6, 30], "n": 99, "hyoid_prob": 0.5}')
    bad.write_text('{"bottom_strip_gapp": [6, 30]}')
    p = read_params(good, n=4)
    assert (p.bottom_strip_gap, p.n, p.hyoid_prob, p.seed) == ((6, 30), 4, 0.5, 0)   # given wins over the file
    assert read_params(None, seed=3) == PhantomParams(seed=3)
    with pytest.raises(ValueError, match="bottom_strip_gapp"):
        read_params(bad)
    for body, text in (('{"seed": 1.5}', "seed = 1.5: give a whole number"),
                       ('{"bottom_strip_gap": [6]}', "give a list of two numbers"),
                       ('{"chin_gap_rows": null}', None), ('{"age_mean": null}', "give a list of two numbers")):
        bad.write_text(body)
        if text is None:
            assert read_params(bad).chin_gap_rows is None
            continue
        with pytest.raises(ValueError, match=re.escape(text)):
            read_params(bad)


def test_subject_draws_are_params_fields(tmp_path, caplog):
    """The subjects' numbers (T-score draws, limits, Klemetti cuts, the border's framing) are
    ``PhantomParams`` fields: a params JSON sets them (quadruples as lists of four), they change
    the draws as they say, and a set recorded before they were fields is reused, not drawn again."""
    import logging

    from osteo.data.phantom import ensure_phantom, read_params

    f = tmp_path / "p.json"
    f.write_text('{"chin_row": [560, 0, 560, 560], "border_square_share": [1, 1], "klemetti_cuts": [9, 9]}')
    p = read_params(f, n=40, seed=2)
    assert p.chin_row == (560, 0, 560, 560)
    df = sample_subjects(p)
    sy = df["height"] / WORK_WH[1]
    assert np.allclose(df["border_yc"] / sy, 560.0) and (df["border_c"] == 0).all() and (df["klemetti"] == "C1").all()
    # one unit of framing spread adds the *_spread fields: a chin row of 560 + 10, exactly
    wide = sample_subjects(replace(p, framing_spread=1.0, chin_row_spread=(10.0, 0.0, 10.0, 10.0)))
    assert np.allclose(wide["border_yc"] / (wide["height"] / WORK_WH[1]), 570.0)
    assert not np.allclose(sample_subjects(PhantomParams(n=40, seed=2))["border_yc"] / sy, 560.0)
    f.write_text('{"chin_row": [560, 0]}')
    with pytest.raises(ValueError, match=re.escape("chin_row = [560, 0]: give a list of four numbers")):
        read_params(f)

    out = tmp_path / "ph"
    ensure_phantom(out, workers=1, n=3, seed=3)
    info = json.loads((out / "phantom.json").read_text())
    old = {k: v for k, v in info["params"].items() if k not in ("chin_row", "border_rise", "klemetti_cuts", "t_osteoporosis_sd")}
    (out / "phantom.json").write_text(json.dumps({**info, "params": old}))
    (out / "images" / "dpr_0000.png").write_bytes(b"stale")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="osteo"):
        ensure_phantom(out, workers=1, n=3, seed=3)   # drawn with those fields' defaults: reused
    assert (out / "images" / "dpr_0000.png").read_bytes() == b"stale" and not caplog.records
    ensure_phantom(out, workers=1, n=3, seed=3, chin_row=(575.0, 5.0, 568.0, 592.0))   # another value: drawn again
    assert (out / "images" / "dpr_0000.png").read_bytes() != b"stale"


def test_the_bottom_strip_keeps_its_gap_below_the_chin():
    """The unexposed rows at the bottom (black but for the detector's noise: under 1 grey level on
    average) start no closer to the chin than the gap (at least 25 rows of 1200 x 630 by default)
    and run to the bottom edge; the rows at the chin stay exposed. With the strip up to the full
    height (share 1) and a gap of 8 rows it mostly starts at the gap (unless its drawn height is
    the shorter)."""
    from osteo.data.phantom import render

    for gap, p in ((8.0, PhantomParams(n=6, seed=2, bottom_strip_prob=1.0, bottom_strip_share=1.0,
                                       bottom_strip_gap=(8.0, 8.0))),
                   (25.0, PhantomParams(n=6, seed=2, bottom_strip_prob=1.0))):
        at_gap = 0
        for row in sample_subjects(p).to_dict("records"):
            g = render(row, p)
            chin = border_y(np.arange(row["width"], dtype=float), row).max()     # original rows
            top = np.ceil(chin + gap * row["height"] / 630)
            black = np.flatnonzero(g.mean(1) < 1.0)
            assert g[int(chin) - 10:int(chin) + 1].mean() > 10
            if black.size:
                assert black[0] >= top - 1 and np.array_equal(black, np.arange(black[0], row["height"]))
                at_gap += int(black[0] <= top + 1)
        if gap == 8.0:
            assert at_gap >= 4


def test_the_hyoid_flag_draws_its_horns_under_the_border_and_nothing_else():
    """A subject's ``hyoid`` flag (the manifest's ground truth) changes only the hyoid's horns:
    brighter pixels centred under the drawn border, one horn each side of the border's centre,
    and not a pixel of the bone 25 rows (of 1200 x 630) or more above the border."""
    from osteo.data.phantom import render

    p = PhantomParams(n=3, seed=4)
    for row in sample_subjects(p).to_dict("records"):
        off = render({**row, "hyoid": 0}, p).astype(np.float32)
        diff = render({**row, "hyoid": 1}, p).astype(np.float32) - off
        H, W = diff.shape
        border = border_y(np.arange(W, dtype=float), row)            # original rows
        above = np.arange(H)[:, None] < border[None] - 25 * H / 630
        assert np.all(diff[above] == 0)
        rows, cols = np.nonzero(np.abs(diff) > 2)
        assert (diff[rows, cols] > 0).mean() > 0.95    # brighter
        xc = row["border_xc"]
        for side in (cols < xc, cols > xc):
            assert side.sum() > 50
            w = diff[rows[side], cols[side]]
            r, c = np.average(rows[side], weights=w), np.average(cols[side], weights=w)
            assert r > border[int(c)]                  # centred under the border


def test_a_raised_black_level_clips_the_darkest_tissue_only():
    """With the display's black level raised (up to 0.3 of full scale) in every image, pixels reach
    0 (as the dark tissue under the border does on 12 of the 40 dev DPRs); only pixels that were
    darker than the level go black, and the order of the others is kept."""
    import dataclasses

    from osteo.data.phantom import LOOK, render

    p = PhantomParams(n=6, seed=4)
    gained = 0
    for row in sample_subjects(p).to_dict("records"):
        plain = render(row, p, dataclasses.replace(LOOK, black_prob=0.0)).astype(int)
        black = render(row, p, dataclasses.replace(LOOK, black_prob=1.0, black_level=0.3)).astype(int)
        new = (black == 0) & (plain > 0)
        gained += new.mean() > 0.005
        assert not new.any() or plain[new].max() <= 0.3 * 255 + 1
        kept = black > 0
        assert np.all(black[kept] <= plain[kept] + 1) and np.corrcoef(plain[kept], black[kept])[0, 1] > 0.99
    assert gained >= 3


def test_a_set_drawn_by_another_generator_is_drawn_again(tmp_path, caplog):
    """phantom.json records the generator (a digest of a reference phantom's pixels); a set whose
    record differs, as after an upgrade that changed how phantoms look, is drawn again, not reused."""
    import logging

    from osteo.data.phantom import Look, ensure_phantom, generator_id

    out = tmp_path / "ph"
    ensure_phantom(out, workers=1, n=3, seed=3)
    info = json.loads((out / "phantom.json").read_text())
    assert info["generator"] == generator_id()
    assert generator_id(Look(noise=0.02)) != generator_id()  # the look is part of it
    first = (out / "images" / "dpr_0000.png").read_bytes()
    (out / "images" / "dpr_0000.png").write_bytes(b"stale")
    caplog.clear()   # the first call's records, where an earlier test left the logger at INFO
    with caplog.at_level(logging.INFO, logger="osteo"):
        ensure_phantom(out, workers=1, n=3, seed=3)   # same generator: reused as it is
    assert (out / "images" / "dpr_0000.png").read_bytes() == b"stale" and not caplog.records
    (out / "phantom.json").write_text(json.dumps({**info, "generator": "0" * 16}))
    with caplog.at_level(logging.INFO, logger="osteo"):
        ensure_phantom(out, workers=1, n=3, seed=3)
    assert any("another version of the phantom generator" in r.getMessage() for r in caplog.records)
    assert (out / "images" / "dpr_0000.png").read_bytes() == first
    assert json.loads((out / "phantom.json").read_text())["generator"] == generator_id()
