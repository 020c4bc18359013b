import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from osteo.data.splits import SplitError, fold_indices, make_splits, split_file


def manifest(n_patients=300, frac1=0.45, seed=0, multi=False):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        y = int(rng.random() < frac1)
        for k in range(1 + (multi and p % 3 == 0)):  # every third patient has two images
            rows.append(dict(image_rel=f"p{p}_{k}.png", patient_id=f"p{p}", label=y))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("multi", [False, True])
def test_splits_are_patient_disjoint_and_test_is_fixed(multi):
    df = manifest(multi=multi)
    sp = make_splits(df, seed=3, test_per_class=40, n_folds=5)
    test = set(sp.loc[sp["part"] == "test", "patient_id"])
    for k in range(5):
        roles = sp[f"role_fold{k}"]
        tr, va = set(sp.loc[roles == "train", "patient_id"]), set(sp.loc[roles == "val", "patient_id"])
        assert not (tr & va) and not (tr & test) and not (va & test)
        assert set(sp.loc[roles == "test", "image"]) == set(sp.loc[sp["part"] == "test", "image"])
    # every non-test image validates exactly once: in its own part's fold, and in no other fold
    rest = sp[sp["part"] != "test"]
    val_roles = rest[[f"role_fold{k}" for k in range(5)]].eq("val")
    assert (val_roles.sum(axis=1) == 1).all()
    assert all(val_roles.loc[i, f"role_fold{int(p)}"] for i, p in rest["part"].items())
    assert set(rest["part"]) == {str(k) for k in range(5)}
    counts = sp[sp["part"] == "test"]["label"].value_counts()
    if not multi:
        assert counts[0] == 40 and counts[1] == 40
    else:
        assert 40 <= counts[0] <= 41 and 40 <= counts[1] <= 41


def test_folds_are_stratified():
    sp = make_splits(manifest(600), seed=0, test_per_class=68, n_folds=5)
    cv = sp[sp["part"] != "test"]
    rates = cv.groupby("part")["label"].mean()
    assert rates.max() - rates.min() < 0.05


def test_fraction_split():
    sp = make_splits(manifest(200), seed=0, test_per_class=None, test_fraction=0.2)
    n = manifest(200)["label"].value_counts()
    got = sp[sp["part"] == "test"]["label"].value_counts()
    assert abs(got[0] - 0.2 * n[0]) <= 1 and abs(got[1] - 0.2 * n[1]) <= 1


def test_too_small_class_is_an_error():
    df = manifest(60, frac1=0.1)
    with pytest.raises(SplitError, match="class 1 has .* too few"):
        make_splits(df, seed=0, test_per_class=20)


def test_same_seed_same_file_in_separate_processes(tmp_path):
    df = manifest(200)
    df.to_csv(tmp_path / "m.csv", index=False)
    code = ("import pandas as pd,sys; from osteo.data.splits import split_file;"
            "df=pd.read_csv(sys.argv[1],dtype={'patient_id':str});"
            "print(split_file(df, sys.argv[2], 7, 30, None, 5))")
    outs = []
    for k in range(2):
        d = tmp_path / f"o{k}"
        p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.csv"), str(d)],
                           capture_output=True, text=True, check=True).stdout.strip()
        outs.append(open(p, "rb").read())
    assert outs[0] == outs[1]
    other = make_splits(df, seed=8, test_per_class=30)
    assert not other.equals(pd.read_csv(p, dtype={"patient_id": str, "part": str}))


def test_fold_indices_and_unknown_fold(tmp_path):
    df = manifest(200)
    path = split_file(df, tmp_path, 0, 30, None, 5)
    sp = pd.read_csv(path, dtype={"patient_id": str, "part": str})
    idx = fold_indices(sp, df, 2)
    assert len(idx["test"]) == 60
    assert len(idx["train"]) + len(idx["val"]) + len(idx["test"]) == len(df)
    with pytest.raises(SplitError, match="fold 5 does not exist"):
        fold_indices(sp, df, 5)
