import pandas as pd

from osteo.data.describe import main, table1


def test_table1_counts_sex_and_age(capsys, phantom_dir, roi_cache, tmp_path):
    df = pd.DataFrame({"label": [0, 0, 1, 1, 1], "patient_id": list("abcde"), "sex": ["F", "M", "F", "F", None],
                       "age": [50, 60, 70, None, 80]})
    t = table1(df)
    assert t.loc["Number of images", "No osteoporosis"] == "2"
    assert t.loc["Female / male", "Osteoporosis"] == "2/0 (1 unknown)"
    assert t.loc["Mean age (+- SD)", "No osteoporosis"] == "55.0 (+- 7.1)"
    main([str(phantom_dir / "manifest.csv"), f"paths.outputs={tmp_path / 'outputs'}", f"data.cache_dir={roi_cache}",
          "data.roi.scale=0.5"])  # the ROIs the data-module tests build: nothing written into the checkout's outputs/
    out = capsys.readouterr().out
    assert "Table 1" in out and "Female / male" in out and "T-score <= -2.5" in out


def test_describe_and_preview_use_the_data_cache_the_runs_use(tmp_path, phantom_dir, roi_cache):
    """``data.cache_dir`` (default ``paths.cache``) is where the runs keep ROIs and the finder's
    results; describe, preview and the report read and fill that one, not ``paths.cache``."""
    from osteo.data.preview import main as preview

    m = pd.read_csv(phantom_dir / "manifest.csv").head(12)
    m["image"] = [str(phantom_dir / p) for p in m["image"]]
    m.to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "outputs"
    over = [f"paths.outputs={out}", f"data.cache_dir={roi_cache}"]
    assert main([str(tmp_path / "m.csv")] + over) == 0
    assert preview([str(tmp_path / "m.csv"), "--out", str(tmp_path / "sheet.png"), "--n", "4"] + over) == 0
    assert (tmp_path / "sheet.png").exists() and list((roi_cache / "anatomy").rglob("*.json"))
    assert not (out / "cache").exists(), sorted(p.relative_to(out) for p in out.rglob("*"))
