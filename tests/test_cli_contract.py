"""The CLI contract, case by case: a user's mistake is reported in lines that name the file,
row, column or setting, with a non-zero exit and no traceback; bad rows and files are listed
while the good ones go on; a command that did nothing useful never exits 0; nothing
half-written is left behind. Every command is covered: describe, preview, phantom, predict,
train and report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from osteo.cli import run_cli
from osteo.data import describe, phantom, preview

W, H = 640, 330  # just above the minimum source size (600 x 315)


def png(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (H, W), dtype=np.uint8)).save(path)
    return path


def dataset(root: Path, rows: list[dict] | None = None, n: int = 8) -> Path:
    """A folder with n good images and a manifest; ``rows`` replaces the manifest's rows."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        png(root / f"i{i}.png", i)
    rows = rows if rows is not None else [
        {"image": f"i{i}.png", "patient_id": f"p{i}", "t_score": -3.0 if i % 2 else -1.0, "sex": "F",
         "age": 60 + i} for i in range(n)]
    cols = list(dict.fromkeys(k for r in rows for k in r)) or ["image", "patient_id", "t_score"]
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def good_rows(n: int = 8) -> list[dict]:
    return [{"image": f"i{i}.png", "patient_id": f"p{i}", "t_score": -3.0 if i % 2 else -1.0, "sex": "F",
             "age": 60 + i} for i in range(n)]


def with_row(change: dict, index: int = 2) -> list[dict]:
    rows = good_rows()
    rows[index] = {**rows[index], **change}
    return rows


# ------------------------------------------------------------------ manifest and image cases
# (name, setup(root) -> manifest path, expected exit code of describe, text that must appear)

def _missing(root):
    return root / "nowhere.csv"


def _folder(root):
    dataset(root)
    return root


def _empty(root):
    dataset(root)
    (root / "manifest.csv").write_bytes(b"")
    return root / "manifest.csv"


def _header_only(root):
    return dataset(root, rows=[])


def _workbook(root):
    import zipfile

    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "manifest.xlsx", "w") as z:  # what Excel writes: a zip of XML parts
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    return root / "manifest.xlsx"


def _semicolon(root):
    m = dataset(root)
    m.write_text(m.read_text().replace(",", ";"))
    return m


def _tab(root):
    m = dataset(root)
    m.write_text(m.read_text().replace(",", "\t"))
    return m


def _latin1(root):
    m = dataset(root)
    m.write_bytes(m.read_bytes().replace(b"p2,", "Jos\u00e9,".encode("latin-1")))
    return m


def _no_t_score(root):
    return dataset(root, rows=[{k: v for k, v in r.items() if k != "t_score"} for r in good_rows()])


def _bad_t(root):
    return dataset(root, rows=with_row({"t_score": "low"}))


def _no_file(root):
    return dataset(root, rows=with_row({"image": "gone.png"}))


def _image_folder(root):
    (root / "sub").mkdir(parents=True)
    return dataset(root, rows=with_row({"image": "sub"}))


def _zero_byte(root):
    m = dataset(root)
    (root / "i2.png").write_bytes(b"")
    return m


def _truncated(root):
    m = dataset(root)
    data = (root / "i2.png").read_bytes()
    (root / "i2.png").write_bytes(data[: len(data) // 3])
    return m


def _not_an_image(root):
    m = dataset(root)
    (root / "i2.png").write_text("this is a text file, not a radiograph\n")
    return m


def _too_small(root):
    m = dataset(root)
    Image.fromarray(np.zeros((100, 200), np.uint8)).save(root / "i2.png")
    return m


def _turned(root):
    m = dataset(root)
    Image.fromarray(np.full((900, 700), 128, np.uint8)).save(root / "i2.png")
    return m


def _same_bytes(root):
    m = dataset(root)
    (root / "i3.png").write_bytes((root / "i2.png").read_bytes())
    return m


def _same_path(root):
    return dataset(root, rows=with_row({"image": "i1.png", "patient_id": "p1"}))


def _sex_code(root):
    return dataset(root, rows=with_row({"sex": "X"}))


def _age(root):
    return dataset(root, rows=with_row({"age": 212}))


def _label_conflict(root):
    return dataset(root, rows=with_row({"label": 0, "t_score": -3.0}))


def _sex_conflict(root):
    rows = good_rows()
    rows[3] = {**rows[3], "patient_id": "p2", "sex": "M"}
    return dataset(root, rows=rows)


def _one_patient_class(root):
    rows = good_rows()
    for r in rows:
        r["t_score"] = -1.0
    rows[0]["t_score"] = -3.0
    return dataset(root, rows=rows)


DESCRIBE_CASES = [
    ("manifest missing", _missing, 2, "manifest not found"),
    ("manifest is a folder", _folder, 2, "is a folder"),
    ("empty manifest file", _empty, 2, "is empty"),
    ("header but no rows", _header_only, 2, "no valid rows"),
    ("spreadsheet workbook", _workbook, 2, "manifest.xlsx: is a spreadsheet workbook, not a CSV file; save it as CSV UTF-8"),
    ("semicolon-separated", _semicolon, 2, "semicolon-separated"),
    ("tab-separated", _tab, 2, "tab-separated"),
    ("not UTF-8", _latin1, 2, "not UTF-8"),
    ("no t_score column", _no_t_score, 2, "missing column(s) t_score (or label)"),
    ("non-numeric t_score", _bad_t, 1, "line 4 (i2.png): column 't_score': 'low' is not a number"),
    ("image file missing", _no_file, 1, "gone.png not found"),
    ("image is a folder", _image_folder, 1, "is a folder, not an image file"),
    ("zero-byte image", _zero_byte, 1, "i2.png): the file is empty (0 bytes)"),
    ("truncated image", _truncated, 1, "i2.png): cannot be read as an image (OSError: image file is truncated)"),
    ("text file named .png", _not_an_image, 1, "i2.png): not a readable image"),
    ("image too small", _too_small, 1, "i2.png): image is 200x100 (W x H), smaller than the 600x315"),
    ("image turned by 90 degrees", _turned, 1, "i2.png): image is 700x900 (W x H), taller than wide"),
    ("same bytes, two names", _same_bytes, 1, "i3.png): same image content as line 4 ("),
    ("same path twice", _same_path, 1, "duplicate of line"),
    ("unknown sex code", _sex_code, 1, "column 'sex': unknown code 'X'"),
    ("impossible age", _age, 1, "outside 0..130"),
    ("label contradicts t_score", _label_conflict, 1, "column 'label' is 0 but t_score -3.0 gives 1"),
    ("patient rows disagree on sex", _sex_conflict, 0, "patient 'p2': rows disagree on sex"),
    ("class with one patient", _one_patient_class, 0, "class 1 has 1 patient(s)"),
]


@pytest.mark.parametrize("name,setup,code,text", DESCRIBE_CASES, ids=[c[0] for c in DESCRIBE_CASES])
def test_describe(name, setup, code, text, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setenv("OSTEO_OUTPUTS", str(tmp_path / "outputs"))
    manifest = setup(tmp_path / "data")
    rc = run_cli(describe.main, [str(manifest), f"paths.outputs={tmp_path / 'outputs'}"])
    out = capsys.readouterr()
    said = out.out + out.err + caplog.text
    assert rc == code, said
    assert text in said, said
    assert "Traceback" not in said
    if code == 2:
        assert out.err.startswith("osteo: error: ") and str(manifest.name) in out.err
    if code == 1:  # bad rows listed with their line; Table 1 still printed for the good ones
        assert "Table 1" in out.out and "line " in out.err
    if name == "class with one patient":
        assert "(+- n/a)" in out.out


# ------------------------------------------------------------------ preview and phantom

def test_preview_lists_unreadable_images_and_never_draws_them(tmp_path, caplog):
    m = _truncated(tmp_path / "data")
    out = tmp_path / "sheet.png"
    rc = run_cli(preview.main, [str(m), "--out", str(out), "--n", "8", f"paths.outputs={tmp_path / 'o'}"])
    assert rc == 1 and out.exists() and (tmp_path / "sheet_boxes.png").exists()  # crops, and whole images with box
    assert "line 4" in caplog.text and "i2.png" in caplog.text and "7 ROIs" in caplog.text
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("args,text", [
    (["--n", "0"], "--n 0"),
    (["--out", "sheet.txt"], "give a .png or .jpg"),
])
def test_preview_bad_options(args, text, tmp_path, capsys):
    m = dataset(tmp_path / "data")
    rc = run_cli(preview.main, [str(m)] + args + [f"paths.outputs={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert rc == 2 and text in err and "Traceback" not in err


def test_preview_with_nothing_readable_fails(tmp_path, capsys):
    m = dataset(tmp_path / "data")
    for f in (tmp_path / "data").glob("*.png"):
        f.write_bytes(b"broken")
    out = tmp_path / "sheet.png"
    rc = run_cli(preview.main, [str(m), "--out", str(out), f"paths.outputs={tmp_path / 'o'}"])
    assert rc == 2 and "none of the" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("args,text", [
    (["--n", "0"], "--n 0"),
    (["--n", "2", "--workers", "0"], "--workers 0"),
    (["--n", "2", "--difficulty", "-1"], "--difficulty"),
    (["--n", "2", "--seed", "-1"], "--seed -1: give 0 or more"),
])
def test_phantom_bad_options(args, text, tmp_path, capsys):
    rc = run_cli(phantom.main, args + ["--out", str(tmp_path / "ph")])
    err = capsys.readouterr().err
    assert rc == 2 and text in err and not (tmp_path / "ph").exists()


def test_phantom_takes_params_and_look_files(tmp_path, capsys):
    """--params sets PhantomParams fields from JSON (the flags win over it), --look Look fields;
    a field that is not one is a one-line user error, and nothing is written."""
    (tmp_path / "p.json").write_text('{"n": 9, "seed": 4, "chin_row": [560, 0, 560, 560]}')
    (tmp_path / "l.json").write_text('{"noise": 0.0}')
    rc = run_cli(phantom.main, ["--n", "2", "--params", str(tmp_path / "p.json"), "--look", str(tmp_path / "l.json"),
                                "--out", str(tmp_path / "ph"), "--workers", "1"])
    assert rc == 0
    info = json.loads((tmp_path / "ph" / "phantom.json").read_text())
    assert info["params"]["n"] == 2 and info["params"]["seed"] == 4 and info["look"]["noise"] == 0.0
    m = pd.read_csv(tmp_path / "ph" / "manifest.csv")
    assert len(m) == 2 and np.allclose(m["border_yc"] / (m["height"] / 630), 560.0)
    (tmp_path / "bad.json").write_text('{"chin_rows": [560, 0, 560, 560]}')
    rc = run_cli(phantom.main, ["--n", "2", "--params", str(tmp_path / "bad.json"), "--out", str(tmp_path / "ph2")])
    err = capsys.readouterr().err
    assert rc == 2 and "not fields of PhantomParams: chin_rows" in err and "Traceback" not in err
    assert not (tmp_path / "ph2").exists()
    (tmp_path / "zero.json").write_text('{"n": 0}')   # a bad value from the file names the file, not a flag
    rc = run_cli(phantom.main, ["--params", str(tmp_path / "zero.json"), "--out", str(tmp_path / "ph3")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{tmp_path / 'zero.json'}: n = 0: give the number of phantoms" in err
    assert not (tmp_path / "ph3").exists()


def test_phantom_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert run_cli(phantom.main, ["--n", "2", "--out", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("case,text", [
    ("no images", "images: no images"),
    ("unknown look field", "not fields of Look: canalz"),
    ("look value not a number", 'canals = "x": give a number'),
    ("params not whole", "n = 4.5: give a whole number"),
    ("nothing placed", "placed no ROI on any of the 1 images"),
    ("no such folder", "no such folder or file"),
    ("too few phantoms", "--n 3: the two-sample tests are 5-fold cross-validations"),
    ("too few real ROIs", "placed 2 ROIs on the 2 images"),
    ("negative bootstrap", "--bootstrap -1: give a number of resamples, or 0 for none"),
])
def test_realism_benchmark_bad_inputs(case, text, tmp_path):
    """benchmarks/phantom_realism.py keeps the contract too: one line, exit 2, no traceback."""
    real = tmp_path / "real"
    (real / "images").mkdir(parents=True)
    if case != "no images":
        Image.fromarray(np.full((630, 1200), 128, np.uint8)).save(real / "images" / "flat.png")
    if case == "no such folder":
        real = tmp_path / "nowhere"
    if case == "too few real ROIs":   # two DPRs the finder places: fewer than the 5-fold tests need
        (real / "images" / "flat.png").unlink()
        phantom.generate(tmp_path / "ph", phantom.PhantomParams(n=2, seed=3), progress=False)
        for f in (tmp_path / "ph" / "images").glob("*.png"):
            shutil.copy(f, real / "images" / f.name)
    files = {"unknown look field": ("--look", '{"canalz": 1}'), "look value not a number": ("--look", '{"canals": "x"}'),
             "params not whole": ("--params", '{"n": 4.5}')}
    args = [sys.executable, str(BENCHMARKS / "phantom_realism.py"), "--real", str(real),
            "--n", "3" if case == "too few phantoms" else "5", "--no-cnn", "--out", str(tmp_path / "out")]
    if case == "negative bootstrap":
        args += ["--bootstrap", "-1"]
    if case in files:
        flag, body = files[case]
        (tmp_path / "f.json").write_text(body)
        args += [flag, str(tmp_path / "f.json")]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert text in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "realism.json").exists()


def test_realism_benchmark_takes_a_plain_folder_of_dprs(tmp_path):
    """--real may be any folder of DPRs (searched recursively; files that are not images are left
    alone), not only one laid out as shared/real-dpr/abdi-dev with images/: real computation on 5
    phantoms standing in for real DPRs against 5 others, every output written."""
    phantom.generate(tmp_path / "ph", phantom.PhantomParams(n=5, seed=3), progress=False)
    real = tmp_path / "clinic"
    (real / "2026").mkdir(parents=True)
    for f in sorted((tmp_path / "ph" / "images").glob("*.png")):
        shutil.copy(f, real / "2026" / f.name)
    (real / "notes.txt").write_text("not an image")
    r = subprocess.run([sys.executable, str(BENCHMARKS / "phantom_realism.py"), "--real", str(real), "--n", "5",
                        "--no-cnn", "--reference", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "out" / "realism.json").read_text())
    assert res["n_real"] == 5 and res["n_phantom"] == 5
    assert 0.0 <= res["texture_auc"]["mean"] <= 1.0
    groups = res["texture_groups"]   # where the separation lies, by kind of statistic
    assert {"power spectrum", "row profile", "column profile", "all"} <= set(groups)
    assert all(0.0 <= v <= 1.0 for g in groups.values() for v in g.values())
    assert "means moved to the real images" in r.stdout
    assert "no bootstrap interval: it needs 20 or more ROIs in each set" in r.stdout   # 5 and 5
    # --reference: the real set against itself after each acquisition-chain change, 5 pairs each; a
    # change after which the finder flags one of the 5 (its check trace does so after the 0.7 px
    # blur here) is listed as left out, since fewer than 5 pairs cannot fill the 5 folds
    import re
    import runpy

    for name in runpy.run_path(str(BENCHMARKS / "phantom_realism.py"))["CHAIN_CHANGES"]:
        left_out = re.search(rf"{re.escape(name)}: \d pairs placed, fewer than 5 \(left out\)", r.stdout)
        assert name in res["reference"] or left_out, name
    assert len(res["reference"]) >= 5
    assert all(v["pairs"] == 5 and 0.0 <= v["min"] <= v["mean"] <= v["max"] <= 1.0 for v in res["reference"].values())
    assert "reference: the same texture test" in r.stdout
    assert (tmp_path / "out" / "sheet.png").stat().st_size > 0 and (tmp_path / "out" / "curves.png").exists()


# ------------------------------------------------------------------ predict

def run_dir(tiny_sweep):
    return tiny_sweep / "sweeps" / "finetune_depth" / "backbone=vgg16_tiny,depth=5,fold=0"


def test_predict_on_an_empty_folder_leaves_nothing(tiny_sweep, tmp_path, capsys):
    from osteo.predict import main

    (tmp_path / "empty").mkdir()
    rc = run_cli(main, [str(tmp_path / "empty"), "--model", str(run_dir(tiny_sweep)), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "no images found" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["missing model", "manifest without image column", "batch size 0", "missing input"])
def test_predict_bad_arguments(case, tiny_sweep, tmp_path, capsys):
    """... and an input path that does not exist (a typo) is one line, exit 2, where it was a
    table with one 'error: file not found' row, exit 1, after the models were loaded."""
    from osteo.predict import main

    png(tmp_path / "x.png")
    model = str(run_dir(tiny_sweep))
    if case == "missing input":
        args, text = [str(tmp_path / "x.png"), str(tmp_path / "y.png"), "--model", model], \
            f"osteo: error: {tmp_path / 'y.png'}: no such file or folder; pass image files"
    elif case == "missing model":
        args, text = [str(tmp_path / "x.png"), "--model", str(tmp_path / "nope")], "not found"
    elif case == "manifest without image column":
        (tmp_path / "m.csv").write_text("file,patient_id\nx.png,p1\n")
        args, text = [str(tmp_path / "m.csv"), "--model", model], "needs an 'image' column"
    else:
        args, text = [str(tmp_path / "x.png"), "--model", model, "--batch-size", "0"], "--batch-size 0"
    rc = run_cli(main, args + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and text in err and "Traceback" not in err
    assert not (tmp_path / "o" / "predictions.csv").exists()


# ------------------------------------------------------------------ train and report (Hydra)

def hydra_cli(module, args, tmp_path, timeout=240):
    env = {**os.environ, "OSTEO_OUTPUTS": str(tmp_path / "outputs")}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=tmp_path)


TINY = ["backbone=vgg16_tiny", "data.roi.scale=0.5", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


def test_train_with_a_bad_manifest_is_one_line(tmp_path):
    m = dataset(tmp_path / "data", rows=with_row({"t_score": "low"}))
    r = hydra_cli("osteo.train", [f"data.manifest={m}"] + TINY, tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "osteo: error: " in r.stderr and "column 't_score': 'low' is not a number" in r.stderr
    assert "Traceback" not in r.stderr and "HYDRA_FULL_ERROR" not in r.stderr


def test_train_with_an_impossible_split_is_one_line(tmp_path):
    m = dataset(tmp_path / "data")
    r = hydra_cli("osteo.train", [f"data.manifest={m}"] + TINY, tmp_path)  # 8 images, 68 test per class asked
    assert r.returncode == 2, r.stderr[-2000:]
    assert "osteo: error: " in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("setting,text", [
    ("depth=7", "depth=7: give a whole number 0..5"),
    ("depth=2.5", "depth=2.5: give a whole number 0..5"),
    ("backbone=vgg17", "backbone=vgg17: not a timm model; did you mean vgg19 or vgg16"),
    ("backbone=vit_base_patch16_224", "backbone=vit_base_patch16_224: expected 5 blocks"),
    ("weights=nope.safetensors", "nope.safetensors not found: pass an existing"),
    ("data.batch_size=0", "data.batch_size=0: give a whole number of 1 or more"),
    ("model.optimizer.lr=abc", "model.optimizer.lr=abc: give a number above 0"),
])
def test_train_with_a_bad_model_setting_is_one_line_before_the_data(setting, text, tmp_path):
    """A backbone timm does not know (or without 5 stages), a depth outside 0..5, a missing
    weights file or a number no run can use (osteo.settings): one line, exit 2, found before the
    data are read (no splits, no ROI cache)."""
    m = dataset(tmp_path / "data")
    r = hydra_cli("osteo.train", [f"data.manifest={m}", "data.split.test_per_class=1", "data.split.n_folds=2",
                                  *TINY, setting], tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "osteo: error: " in r.stderr and text in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "HYDRA_FULL_ERROR" not in r.stderr
    out = tmp_path / "outputs"
    assert not (out / "splits").exists() and not (out / "cache").exists(), sorted(out.rglob("*"))


def test_a_sweep_over_backbones_checks_every_name_before_its_first_job(tmp_path):
    """A backbone timm does not know among a sweep's backbones is one line, exit 2, before the
    first job (which trained, the bad name failing only in its own job, until this release)."""
    r = hydra_cli("osteo.train", ["-m", "backbone=vgg16_tiny,vgg17", "fold=0", "data.roi.scale=0.5"], tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip() == "osteo: error: backbone=vgg17: not a timm model; did you mean vgg19 or vgg16 or vgg13?"
    assert not (tmp_path / "outputs").exists(), sorted((tmp_path / "outputs").rglob("*"))


@pytest.mark.parametrize("module,args,line", [
    ("osteo.train", ["data.roi.scal=0.5"], "data.roi.scal=0.5: the train config has no setting data.roi.scal; "
                                           "did you mean data.roi.scale?"),
    ("osteo.train", ["-m", "fold=0,1", "backbon=vgg16"], "backbon=vgg16: the train config has no setting backbon; "
                                                        "did you mean backbone?"),
    ("osteo.train", ["+sweep=finetun_depth"], "+sweep=finetun_depth: no sweep config named 'finetun_depth'; "
                                              "did you mean finetune_depth?"),
    ("osteo.train", ["outputs/x.png"], "outputs/x.png: not an override Hydra can read"),
    ("osteo.report", ["report.sensitivity_targt=0.9"], "report.sensitivity_targt=0.9: the report config has no "
                                                       "setting report.sensitivity_targt; did you mean "
                                                       "report.sensitivity_target?"),
    ("osteo.data.preview", ["{manifest}", "data.roi.scale=[1", "--out", "sheet.png"],
     "data.roi.scale=[1: not an override Hydra can read (no viable alternative at input '[1')"),
])
def test_a_misspelt_override_is_one_line(module, args, line, tmp_path):
    """The commonest mistake on a Hydra command line, a setting or option spelt wrong (or a path
    where an override goes), is one line naming it and the nearest right one, exit 2. Hydra
    itself printed four to fifteen lines ending in 'Set the environment variable
    HYDRA_FULL_ERROR=1', exit 1; the commands that compose from code gave a traceback."""
    m = dataset(tmp_path / "data")
    r = hydra_cli(module, [a.format(manifest=m) for a in args], tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"osteo: error: {line}"), r.stderr[-2000:]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "sheet.png").exists()


def test_errors_of_a_module_run_as_main_are_one_line(tmp_path):
    """``python -m osteo.data.phantom`` and ``python -m osteo.train`` raise their own error
    classes from ``__main__``, other classes than those of the imported modules: a bad params
    file and a finished run of another config were tracebacks (exit 1) before."""
    (tmp_path / "p.json").write_text('{"seed": -3}')
    r = subprocess.run([sys.executable, "-m", "osteo.data.phantom", "--out", str(tmp_path / "ph"), "--params",
                        str(tmp_path / "p.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"osteo: error: {tmp_path / 'p.json'}: seed = -3: give 0 or more", r.stderr
    m = dataset(tmp_path / "data")
    args = [f"data.manifest={m}", "data.roi.placement=fixed", "data.split.test_per_class=1", "data.split.n_folds=2", *TINY]
    assert hydra_cli("osteo.train", args, tmp_path).returncode == 0
    r = hydra_cli("osteo.train", args + ["trainer.max_epochs=2"], tmp_path)
    assert r.returncode == 2 and "osteo: error: " in r.stderr and "trainer.max_epochs: 1 -> 2" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "HYDRA_FULL_ERROR" not in r.stderr
    # The report reads sweeps/; a single run lands in runs/. Its error said "train first" to a user
    # who had trained: it now names the single run and the override that reports it, which works.
    singles = tmp_path / "outputs" / "runs"
    r = hydra_cli("osteo.report", [], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().endswith(
        f"1 finished single run(s) (python -m osteo.train without +sweep or -m) are under {singles}: "
        f"report them with report.runs_dir={singles}"), r.stderr[-2000:]
    r = hydra_cli("osteo.report", [f"report.runs_dir={singles}", "report.gradcam.enabled=false"], tmp_path)
    assert r.returncode == 0 and (tmp_path / "outputs" / "report" / "index.html").is_file(), r.stderr[-2000:]


def test_a_sweep_whose_runs_fail_ends_with_a_summary_and_fails(tmp_path, phantom_dir):
    r = hydra_cli("osteo.train", ["-m", "fold=0,1", "weights=timm", f"data.manifest={phantom_dir / 'manifest.csv'}",
                                  "data.split.test_per_class=30"] + TINY, tmp_path)
    said = r.stdout + r.stderr
    assert r.returncode == 1, said[-3000:]
    assert "sweep: 0 finished, 0 skipped, 2 failed (of 2 runs)" in said
    assert "2 run(s) failed: PretrainedWeightsError: timm has no pretrained weights for 'vgg16_tiny'" in said


def test_report_with_no_runs_does_not_exit_0(tmp_path):
    r = hydra_cli("osteo.report", [], tmp_path)
    assert r.returncode == 2 and "osteo: error: no finished runs under" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "outputs" / "report" / "index.html").exists()


# ------------------------------------------------------------------ the error check itself

def test_every_user_error_class_is_found_where_the_list_says():
    """A renamed or moved class in USER_ERROR_CLASSES would silently turn its one-line errors
    into tracebacks: each entry must name an exception class of its module."""
    import importlib

    from osteo.cli import USER_ERROR_CLASSES, user_error

    for module, name in USER_ERROR_CLASSES:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, Exception), (module, name)
        e = cls("bad value")
        assert user_error(RuntimeError("a bug")) is None
        try:
            raise RuntimeError("while loading") from e
        except RuntimeError as wrapped:
            assert user_error(wrapped) is e, (module, name)


def test_a_one_line_error_does_not_load_torch():
    """Telling a user-mistake from a bug imports nothing: the realism benchmark's bad folder is
    reported before torch (seconds to import) is loaded."""
    code = ("import sys\n"
            "from osteo.cli import run_cli\n"
            "sys.argv = ['phantom_realism.py']\n"
            "import runpy\n"
            f"m = runpy.run_path({str(BENCHMARKS / 'phantom_realism.py')!r}, run_name='bench')\n"
            "rc = run_cli(m['main'], ['--real', '/no/such/folder'])\n"
            "print(rc, 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["2", "False"], r.stdout + r.stderr
    assert "no such folder or file" in r.stderr


@pytest.mark.parametrize("settings,text", [
    (["depth=7"], "depth=7: give a whole number 0..5"),
    (["data.batch_size=0"], "data.batch_size=0: give a whole number of 1 or"),
    (["fold=7"], "fold=7: give a whole number 0..4 (the validation part of data.split.n_folds=5)"),
    (["data.split.n_folds=3", "fold=3"], "fold=3: give a whole number 0..2"),
    (["weights=nope.safetensors"], "weights file {tmp}/nope.safetensors not found: pass an existing"),
    (["data.manifest={bad}"], "{tmp}/bad/manifest.csv: 1 bad row(s):\n  manifest.csv line 4 (i2.png): column "
                              "'t_score': 'low' is not a number"),
    (["data.manifest={good}"], "class 0 has 4 patient(s) (4 images): too few to hold out 68 for testing"),
    (["-m", "fold=0,9"], "fold=9: give a whole number 0..4"),
    (["+sweep=demo", "depth=0,1,8"], "depth=8: give a whole number 0..5"),
    (["-m", "data.split.n_folds=3,5", "fold=0,4"], "fold=4: give a whole number 0..2"),
    (["-m", "weights=none,nope.safetensors"], "weights file {tmp}/nope.safetensors not found: pass an existing"),
])
def test_a_bad_setting_or_manifest_for_train_is_said_before_torch_is_loaded(settings, text, tmp_path):
    """``python -m osteo.train`` checks its plain numbers (osteo.settings, the depth and the fold
    among them), a missing weights file, the manifest's rows and whether the split can be drawn
    from them before it loads torch, timm or Lightning, and before the ROI cache: a typo is
    answered in seconds, not after the imports (about 12 s on a 2-core machine) or the cache
    (minutes on a real data set; the fold and the split were said only after it). A sweep's
    every job is checked so before its first job runs (a bad value was said only in its own job,
    after the jobs before it had trained), and nothing is written."""
    files = {"bad": dataset(tmp_path / "bad", rows=with_row({"t_score": "low"})), "good": dataset(tmp_path / "good")}
    args = [a.format(**files) for a in settings]
    code = ("import runpy, sys\n"
            f"sys.argv = ['osteo.train', *{args!r}]\n"
            "try:\n"
            "    runpy.run_module('osteo.train', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n"
            "    print(e.code, 'torch' in sys.modules, 'timm' in sys.modules)\n")
    env = {**os.environ, "OSTEO_OUTPUTS": str(tmp_path / "outputs")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                       cwd=tmp_path)
    assert r.stdout.splitlines()[-1].split() == ["2", "False", "False"], r.stdout + r.stderr[-2000:]
    assert f"osteo: error: {text.format(tmp=tmp_path)}" in r.stderr and "Traceback" not in r.stderr
    out = tmp_path / "outputs"
    written = sorted(out.rglob("*"))
    assert not (out / "cache").exists() and not (out / "data").exists() and not (out / "sweeps").exists(), written
    if "data.manifest" not in settings[0]:   # the manifest is read in the run (its folder is made by then)
        assert not written, written
