import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from osteo.cli import UserError, run_cli
from osteo.predict import NO_REFER, REFER, main, predict
from tests.test_images import write_dicom


def run_dir(tiny_sweep, depth=5, fold=0):
    return tiny_sweep / "sweeps" / "finetune_depth" / f"backbone=vgg16_tiny,depth={depth},fold={fold}"


def test_prediction_matches_the_runs_own_predictions(tiny_sweep, phantom_dir, tmp_path):
    rd = run_dir(tiny_sweep)
    own = pd.read_csv(rd / "predictions.csv")
    test = own[own["split"] == "test"].head(10)
    df = predict([str(phantom_dir / i) for i in test["image"]], str(rd), str(tmp_path / "p"), single=True,
                 progress=False, batch_size=4, allow_phantom_model=True)
    assert np.allclose(df["probability"].to_numpy(), test["prob"].to_numpy(), atol=1e-5)
    ok = df["status"] == "ok"
    assert ok.sum() >= 8  # images like the training ones are rarely flagged
    thr = df["threshold"].iloc[0]
    assert ((df["probability"] >= thr)[ok] == (df["decision"] == REFER)[ok]).all()
    assert set(df.loc[ok, "decision"]) <= {REFER, NO_REFER}
    assert all(p and Path(p).exists() for p in df["cam_png"])
    w, h = Image.open(df["cam_png"].iloc[0]).size
    assert w == 1200 and h > 630  # the resized DPR below a caption band


def test_fold_ensemble_is_the_mean_of_its_runs(tiny_sweep, phantom_dir, tmp_path):
    imgs = [str(phantom_dir / "images" / f"dpr_{i:04d}.png") for i in range(3)]
    a = predict(imgs, str(run_dir(tiny_sweep, 1, 0)), str(tmp_path / "a"), single=True, cams=False, progress=False)
    b = predict(imgs, str(run_dir(tiny_sweep, 1, 1)), str(tmp_path / "b"), single=True, cams=False, progress=False)
    e = predict(imgs, str(run_dir(tiny_sweep, 1, 0)), str(tmp_path / "e"), cams=False, progress=False,
                allow_phantom_model=True)
    assert (e["models"] == 2).all()
    assert np.allclose(e["probability"], (a["probability"] + b["probability"]) / 2, atol=1e-6)
    # decisions: each model's own probability against the out-of-fold threshold, refer when at
    # least half of the models (here 1 of 2) refer
    thr = e["threshold"].iloc[0]
    votes = (a["probability"] >= thr).astype(int) + (b["probability"] >= thr).astype(int)
    assert (e["models_referring"] == votes).all()
    ok = e["status"] == "ok"
    assert ((votes >= 1) == (e["decision"] == REFER))[ok].all()
    assert e["provenance"].str.startswith("osteo 0.2").all() and "torch" in e["provenance"].iloc[0]
    c = predict(imgs, str(tiny_sweep / "sweeps"), str(tmp_path / "c"), config="vgg16_tiny TF1, random init",
                cams=False, progress=False)
    assert np.allclose(c["probability"], e["probability"])
    with pytest.raises(UserError, match="several configurations") as err:
        predict(imgs, str(tiny_sweep / "sweeps"), str(tmp_path / "d"), progress=False)
    # labels hold commas: each is quoted, as --config takes it
    assert "--config: 'vgg16_tiny TF1, random init'; 'vgg16_tiny TF5, random init'" in str(err.value)


def test_a_folder_of_runs_ensembles_one_data_set_and_each_fold_once(tiny_sweep, phantom_dir, tmp_path, caplog):
    """--model FOLDER --config LABEL picks runs as the report groups them. Before, it took every
    run with that label below the folder: a fold trained again elsewhere (a single run beside its
    sweep) was one more model (4 models for a 3-fold configuration, measured), and runs of the
    same configuration on another data set joined the ensemble."""
    import json

    caplog.set_level(logging.INFO, logger="osteo")
    imgs = [str(phantom_dir / "images" / f"dpr_{i:04d}.png") for i in range(2)]
    label = "vgg16_tiny TF1, random init"
    models = tmp_path / "models"
    shutil.copytree(tiny_sweep / "sweeps", models / "sweeps")
    again = models / "runs" / "again" / run_dir(tiny_sweep, 1, 0).name
    shutil.copytree(run_dir(tiny_sweep, 1, 0), again)            # fold 0 once more, newer
    (again / "metrics.json").touch()
    ref = predict(imgs, str(tiny_sweep / "sweeps"), str(tmp_path / "r"), config=label, cams=False, progress=False)
    df = predict(imgs, str(models), str(tmp_path / "o"), config=label, cams=False, progress=False)
    assert (df["models"] == 2).all() and np.allclose(df["probability"], ref["probability"])
    assert f"{label} fold 0 again: the newer run runs/again/{again.name} counts" in caplog.text
    other = models / "other-data" / run_dir(tiny_sweep, 1, 1).name   # the same configuration, other data
    shutil.copytree(run_dir(tiny_sweep, 1, 1), other)
    m = json.loads((other / "metrics.json").read_text())
    m["splits"] = str(Path(m["splits"]).with_name("splits-0123456789ab.csv"))
    (other / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match=f"'{label}' under {models} was trained on 2 data sets; pass --model the "
                                        "folder of one of them: ") as err:
        predict(imgs, str(models), str(tmp_path / "o2"), config=label, cams=False, progress=False)
    assert str(models / "other-data") in str(err.value)
    one = predict(imgs, str(models / "sweeps"), str(tmp_path / "o3"), config=label, cams=False, progress=False)
    assert (one["models"] == 2).all() and one["model_dir"].iloc[0] == str(models / "sweeps" / "finetune_depth")


def test_dicom_monochrome1_16bit_equals_the_png(tiny_sweep, phantom_dir, tmp_path):
    g = np.asarray(Image.open(phantom_dir / "images" / "dpr_0001.png")).copy()
    g[0, 0], g[0, 1] = 0, 255  # full 8-bit range, so the DICOM's min-max window maps back exactly
    Image.fromarray(g).save(tmp_path / "x.png")
    write_dicom(tmp_path / "x.dcm", 65535 - g.astype(np.uint16) * 257, mono1=True)
    df = predict([str(tmp_path / "x.png"), str(tmp_path / "x.dcm")], str(run_dir(tiny_sweep)),
                 str(tmp_path / "o"), single=True, cams=False, progress=False)
    # the same image either way: same status (the detector may flag it, as it does a few training
    # phantoms), same probability and the same out-of-distribution score
    assert not df["status"].str.startswith("error").any() and df["status"].nunique() == 1
    assert df["probability"].iloc[0] == pytest.approx(df["probability"].iloc[1], abs=1e-6)
    assert df["ood_score"].iloc[0] == pytest.approx(df["ood_score"].iloc[1], abs=1e-6)


def test_a_pacs_export_is_found_by_its_dicom_marker(tiny_sweep, phantom_dir, tmp_path):
    """PACS exports name DICOM files without a suffix (IM000001, or by UID) beside a DICOMDIR
    index: a folder of them is screened, the index and other files left alone. Before, such a
    folder gave "no images found"."""
    g = np.asarray(Image.open(phantom_dir / "images" / "dpr_0001.png")).copy()
    g[0, 0], g[0, 1] = 0, 255   # the full 8-bit range, so the min-max window maps it back exactly (corner: no ROI)
    series = tmp_path / "export" / "study1" / "series1"
    series.mkdir(parents=True)
    write_dicom(series / "IM000001", g.astype(np.uint16) * 257)
    write_dicom(series / "1.2.840.113619.2.55", g.astype(np.uint16) * 257)
    (tmp_path / "export" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (tmp_path / "export" / "notes.txt").write_text("exported")
    df = predict([str(tmp_path / "export")], str(run_dir(tiny_sweep)), str(tmp_path / "o"), single=True,
                 cams=False, progress=False)
    assert sorted(Path(p).name for p in df["image"]) == ["1.2.840.113619.2.55", "IM000001"]
    png = predict([str(phantom_dir / "images" / "dpr_0001.png")], str(run_dir(tiny_sweep)), str(tmp_path / "p"),
                  single=True, cams=False, progress=False)
    assert df["probability"].to_numpy() == pytest.approx([png["probability"].iloc[0]] * 2, abs=1e-6)


def test_bad_files_are_reported_and_the_rest_scored(tiny_sweep, phantom_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="osteo")
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        shutil.copy(phantom_dir / "images" / f"dpr_{i:04d}.png", folder / "sub" / f"ok{i}.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG broken")
    Image.fromarray(np.zeros((100, 200), np.uint8)).save(folder / "small.png")
    out = tmp_path / "out"
    code = main([str(folder), "--model", str(run_dir(tiny_sweep)), "--out", str(out), "--json", "--no-cam"])
    assert code == 1
    df = pd.read_csv(out / "predictions.csv")
    assert len(df) == 5 and (df["status"] == "ok").sum() == 3
    st = dict(zip(df["image"].map(lambda p: p.split("/")[-1]), df["status"]))
    assert st["corrupt.png"].startswith("error: cannot be read")
    assert "smaller" in st["small.png"]
    assert (out / "predictions.json").exists()
    assert "corrupt.png" in caplog.text and "screening aid" in caplog.text  # messages go through logging
    assert run_cli(main, [str(folder), "--model", str(run_dir(tiny_sweep)), "--out", str(out), "--no-cam"]) == 2
    assert main([str(folder / "sub"), "--model", str(run_dir(tiny_sweep)), "--out", str(out), "--no-cam", "--force"]) == 0
    assert not (out / "predictions.json").exists()   # the first screening's table, 5 rows: never beside this one


def test_a_data_set_folder_is_screened_without_its_masks(tiny_sweep, phantom_dir, tmp_path, caplog):
    """A folder laid out as data sets are (images/ beside masks-1/, masks-2/, as in
    shared/real-dpr): predict screens the radiographs only and says what it left out. Before, it
    screened every mask as a DPR (120 rows for the 40 dev DPRs)."""
    caplog.set_level(logging.INFO, logger="osteo")
    folder = tmp_path / "dataset"
    for sub in ("images", "masks-1", "masks-2"):
        (folder / sub).mkdir(parents=True)
        for i in range(2):
            shutil.copy(phantom_dir / "images" / f"dpr_{i:04d}.png", folder / sub / f"dpr_{i:04d}.png")
    df = predict([str(folder)], str(run_dir(tiny_sweep)), str(tmp_path / "p"), single=True, cams=False,
                 progress=False)
    assert sorted(Path(p).relative_to(folder).as_posix() for p in df["image"]) == ["images/dpr_0000.png",
                                                                                   "images/dpr_0001.png"]
    assert "left out 4 images in masks-1/, masks-2/ (masks or segmentations" in caplog.text
    masks = predict([str(folder / "masks-1")], str(run_dir(tiny_sweep)), str(tmp_path / "m"), single=True,
                    cams=False, progress=False)
    assert len(masks) == 2   # a folder named directly is read, whatever its name


def test_screening_a_folder_twice_never_screens_its_own_overlays(tiny_sweep, phantom_dir, tmp_path, caplog,
                                                                 monkeypatch):
    """A clinic runs predict in its folder of DPRs (outputs/ lands inside it), then again with
    --force: the first run's Grad-CAM overlays (PNGs under outputs/predict/cams) are osteo's own
    outputs, left out and said so, as is another --out folder inside it. Before, the second run
    screened each overlay as a radiograph (8 rows for 4 DPRs)."""
    caplog.set_level(logging.INFO, logger="osteo")
    clinic = tmp_path / "clinic"
    clinic.mkdir()
    for i in range(2):
        shutil.copy(phantom_dir / "images" / f"dpr_{i:04d}.png", clinic / f"dpr_{i:04d}.png")
    monkeypatch.chdir(clinic)
    monkeypatch.delenv("OSTEO_OUTPUTS", raising=False)
    first = predict(["."], str(run_dir(tiny_sweep)), "outputs/predict", single=True, progress=False)
    assert len(list((clinic / "outputs" / "predict" / "cams").glob("*.png"))) == 2
    again = predict(["."], str(run_dir(tiny_sweep)), "outputs/predict", single=True, cams=False, progress=False)
    assert list(again["image"]) == list(first["image"]) and len(again) == 2
    assert "left out 2 images in outputs/ (osteo's own outputs" in caplog.text
    elsewhere = predict(["."], str(run_dir(tiny_sweep)), "mine", single=True, progress=False)
    assert len(elsewhere) == 2 and (clinic / "mine" / "cams").is_dir()
    assert len(predict(["."], str(run_dir(tiny_sweep)), "mine", single=True, cams=False, progress=False)) == 2
    named = predict(["outputs/predict/cams"], str(run_dir(tiny_sweep)), "o2", single=True, cams=False, progress=False)
    assert len(named) == 2   # a folder named directly is read, whatever it holds


def _files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_a_screening_that_stops_halfway_leaves_the_last_one_as_it_was(tiny_sweep, phantom_dir, tmp_path,
                                                                      monkeypatch, capsys):
    """Ctrl-C after two overlays were drawn: --out keeps the last screening's table and
    overlays byte for byte, and no staging folder is left (before, the new overlays were written
    over the old ones, beside a predictions.csv that did not list them). A later --force screening
    of fewer images replaces cams/ whole: no overlay of an image it did not screen is left."""
    import osteo.predict as predict_module

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        shutil.copy(phantom_dir / "images" / f"dpr_{i:04d}.png", folder / f"p{i}.png")
    out = tmp_path / "out"
    args = [str(folder), "--model", str(run_dir(tiny_sweep)), "--out", str(out), "--single", "--batch-size", "1"]
    assert main(args) == 0
    before = _files(out)
    assert sorted(before) == ["cams/00000_p0.png", "cams/00001_p1.png", "cams/00002_p2.png", "predictions.csv"]

    real, calls = predict_module.extract_roi, []

    def ctrl_c_at_the_third_image(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(predict_module, "extract_roi", ctrl_c_at_the_third_image)
    assert run_cli(main, args + ["--force", "--cam-format", "jpg"]) == 130
    assert len(calls) == 3                                   # two overlays were drawn before it stopped
    assert "interrupted" in capsys.readouterr().err
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]   # no staging folder left
    monkeypatch.setattr(predict_module, "extract_roi", real)

    assert main([str(folder / "p2.png")] + args[1:] + ["--force"]) == 0
    after = _files(out)
    assert sorted(after) == ["cams/00000_p2.png", "predictions.csv"]
    assert pd.read_csv(out / "predictions.csv")["cam_png"].tolist() == [str(out / "cams" / "00000_p2.png")]


def test_manifest_input_uses_its_per_image_boxes(tiny_sweep, phantom_dir, tmp_path):
    m = pd.DataFrame({"image": ["images/dpr_0000.png", "images/dpr_0000.png"], "roi_x0": [250, 100], "roi_y0": [475, 400]})
    m.assign(image=[str(phantom_dir / i) for i in m["image"]]).to_csv(tmp_path / "boxes.csv", index=False)
    df = predict([str(tmp_path / "boxes.csv"), str(phantom_dir / "images" / "dpr_0000.png")], str(run_dir(tiny_sweep)),
                 str(tmp_path / "o"), single=True, cams=False, progress=False)
    p = df["probability"].to_numpy()
    assert abs(p[0] - p[1]) > 1e-4                # another box, another ROI
    assert list(df["placement"][:2]) == ["manifest", "manifest"] and df["placement"][2] == "ok"
    # the plain file's box was placed at its mandible; the same box from a manifest gives the same ROI
    placed = (int(df["roi_x0"][2]), int(df["roi_y0"][2]))
    pd.DataFrame({"image": [str(phantom_dir / "images" / "dpr_0000.png")], "roi_x0": [placed[0]],
                  "roi_y0": [placed[1]]}).to_csv(tmp_path / "placed.csv", index=False)
    again = predict([str(tmp_path / "placed.csv")], str(run_dir(tiny_sweep)), str(tmp_path / "o2"), single=True,
                    cams=False, progress=False)
    assert again["probability"][0] == pytest.approx(p[2], abs=1e-6)
    # MCW is measured and lands near the truth (one image: within 1.5 mm, as in test_anatomy.py, whose
    # comment gives the per-image spread; measured 1.29 mm here, 4.74 mm drawn)
    assert df["mcw_mm"][2] == pytest.approx(pd.read_csv(phantom_dir / "manifest.csv")["cortical_width_mm"][0], abs=1.5)


def test_a_phantom_trained_model_gives_no_decision_unless_asked(tiny_sweep, phantom_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="osteo")
    imgs = [str(phantom_dir / "images" / f"dpr_{i:04d}.png") for i in range(4)]
    df = predict(imgs, str(run_dir(tiny_sweep)), str(tmp_path / "a"), single=True, cams=False, progress=False)
    assert df["decision"].str.startswith("no decision").all()
    assert df["trained_on"].str.startswith("phantoms (synthetic images)").all()
    assert "TRAINED ON SYNTHETIC PHANTOMS" in caplog.text
    allowed = predict(imgs, str(run_dir(tiny_sweep)), str(tmp_path / "b"), single=True, cams=False, progress=False,
                      allow_phantom_model=True)
    assert set(allowed.loc[allowed["status"] == "ok", "decision"]) <= {REFER, NO_REFER}


def test_inputs_unlike_the_training_images_are_flagged(tiny_sweep, phantom_dir, tmp_path):
    """Noise, blank and natural images are flagged and get no decision; phantoms like the
    training ones mostly are not."""
    import matplotlib.cbook as cbook

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (700, 1400), dtype=np.uint8)).save(tmp_path / "noise.png")
    Image.fromarray(np.full((700, 1400), 128, np.uint8)).save(tmp_path / "blank.png")
    hopper = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("L")
    hopper.resize((1400, 700)).save(tmp_path / "natural.png")
    odd = [str(tmp_path / f"{n}.png") for n in ("noise", "blank", "natural")]
    own = pd.read_csv(run_dir(tiny_sweep) / "predictions.csv")
    like = [str(phantom_dir / i) for i in own.loc[own["split"] == "test", "image"]]
    df = predict(odd + like, str(run_dir(tiny_sweep)), str(tmp_path / "o"), single=True, cams=False,
                 progress=False, allow_phantom_model=True)
    head, rest = df.iloc[:3], df.iloc[3:]
    print("ood_score noise/blank/natural:", head["ood_score"].round(1).tolist(),
          f"; phantom test images flagged: {(rest['ood_score'] > 1).mean():.1%} of {len(rest)}")
    assert (head["ood_score"] > 1).all() and head["status"].str.startswith("flagged").all()
    assert head["decision"].str.startswith("no decision: unlike").all()
    assert (rest["ood_score"] > 1).mean() <= 0.10
