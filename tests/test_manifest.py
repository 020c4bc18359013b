import numpy as np
import pandas as pd
import pytest
from PIL import Image

from osteo.data.manifest import ManifestError, label_from_t_score, load_manifest


@pytest.fixture
def folder(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((10, 20), i * 10, np.uint8)).save(tmp_path / f"i{i}.png")
    return tmp_path


def write(folder, rows, name="m.csv"):
    pd.DataFrame(rows).to_csv(folder / name, index=False)
    return folder / name


def test_who_rule_and_threshold_options():
    assert label_from_t_score(-2.5) == 1 and label_from_t_score(-2.4) == 0
    assert label_from_t_score(-2.5, inclusive=False) == 0
    assert label_from_t_score(-2.0, threshold=-1.0) == 1


def test_valid_manifest(folder):
    m = write(folder, [dict(image="i0.png", patient_id="a", t_score=-3.0, sex="female", age=70, width=1300, site="x"),
                       dict(image="i1.png", patient_id="b", t_score=-1.0, sex="M", age="", width=1400, site="y")])
    df = load_manifest(m)
    assert df["width"].tolist() == [1300, 1400] and df["site"].tolist() == ["x", "y"]  # extra columns kept
    assert df["label"].tolist() == [1, 0]
    assert df["sex"].tolist() == ["F", "M"]
    assert df["line"].tolist() == [2, 3]
    assert df["image"].iloc[0] == str((folder / "i0.png").resolve())


def test_label_column_without_t_score(folder):
    m = write(folder, [dict(image="i0.png", patient_id="a", label=1), dict(image="i1.png", patient_id="b", label=0)])
    assert load_manifest(m)["label"].tolist() == [1, 0]


def test_each_bad_row_is_named_with_line_and_column(folder):
    m = write(folder, [
        dict(image="i0.png", patient_id="a", t_score="-3.0", sex="F"),
        dict(image="missing.png", patient_id="b", t_score="-1", sex="F"),   # line 3
        dict(image="i1.png", patient_id="c", t_score="abc", sex="F"),       # line 4
        dict(image="i0.png", patient_id="d", t_score="-1", sex="F"),        # line 5: duplicate
        dict(image="i2.png", patient_id="e", t_score="-1", sex="X"),        # line 6: sex
        dict(image="i3.png", patient_id="f", t_score="", sex="F"),          # line 7: no T
    ])
    with pytest.raises(ManifestError) as e:
        load_manifest(m)
    msg = str(e.value)
    assert "5 bad row(s)" in msg
    assert "line 3 (missing.png): column 'image': file" in msg and "not found" in msg
    assert "line 4 (i1.png): column 't_score': 'abc' is not a number" in msg
    assert "line 5 (i0.png): column 'image': duplicate of line 2" in msg
    assert "line 6 (i2.png): column 'sex': unknown code 'X'" in msg
    assert "line 7 (i3.png): column 't_score' is missing" in msg


def test_skip_bad_rows_lists_them(folder, caplog):
    m = write(folder, [dict(image="i0.png", patient_id="a", t_score=-3),
                       dict(image="i1.png", patient_id="b", t_score="x")])
    skipped = folder / "skipped.csv"
    df = load_manifest(m, skip_bad_rows=True, skipped_file=skipped)
    assert len(df) == 1
    assert "line 3" in caplog.text
    assert pd.read_csv(skipped)["line"].tolist() == [3]


def test_missing_columns(folder):
    m = write(folder, [dict(image="i0.png", t_score=-3)])
    with pytest.raises(ManifestError, match="missing column.*patient_id"):
        load_manifest(m)


def test_numbers_written_another_way(folder):
    """A T-score pasted from a lab report carries the Unicode minus sign (U+2212): it is read as
    '-'. A dash or a decimal comma is not guessed at, but the error says which it is."""
    m = write(folder, [dict(image="i0.png", patient_id="a", t_score="\u22122.7", bmi="\u22121.5"),
                       dict(image="i1.png", patient_id="b", t_score="\u22121.0", bmi="2")])
    df = load_manifest(m)
    assert df["t_score"].tolist() == [-2.7, -1.0] and df["label"].tolist() == [1, 0]
    from osteo.data.covariates import covariate_matrix

    assert covariate_matrix(df, ["bmi"])[:, 0].tolist() == [-1.5, 2.0]
    m = write(folder, [dict(image="i0.png", patient_id="a", t_score="\u20132.7"),
                       dict(image="i1.png", patient_id="b", t_score="-1,5"),
                       dict(image="i2.png", patient_id="c", t_score="low")], name="bad.csv")
    with pytest.raises(ManifestError) as e:
        load_manifest(m)
    msg = str(e.value)
    assert "line 2" in msg and "(a dash where the minus sign '-' belongs)" in msg
    assert "line 3" in msg and "'-1,5' is not a number (a decimal comma" in msg
    assert "'low' is not a number" in msg and "'low' is not a number (" not in msg


def test_a_manifest_written_on_windows_finds_its_images(folder):
    """Image paths with backslashes (a manifest made on Windows) are read with '/' when the file
    is found so; a path found with neither is still named as written."""
    import shutil

    (folder / "sub").mkdir()
    shutil.copy(folder / "i0.png", folder / "sub" / "i0.png")
    shutil.copy(folder / "i1.png", folder / "sub" / "i1.png")
    m = write(folder, [dict(image="sub\\i0.png", patient_id="a", t_score=-3.0),
                       dict(image="sub\\i1.png", patient_id="b", t_score=-1.0)])
    df = load_manifest(m)
    assert df["image"].tolist() == [str((folder / "sub" / f"i{i}.png").resolve()) for i in (0, 1)]
    from osteo.data.inputs import find_inputs

    assert [i.path for i in find_inputs([str(m)])] == [(folder / "sub" / f"i{i}.png").resolve() for i in (0, 1)]
    m = write(folder, [dict(image="sub\\i0.png", patient_id="a", t_score=-3.0),
                       dict(image="sub\\nope.png", patient_id="b", t_score=-1.0)], name="bad.csv")
    with pytest.raises(ManifestError, match=r"line 3 .*nope\.png not found"):
        load_manifest(m)
