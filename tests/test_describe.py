import pandas as pd

from osteo.data.describe import main, table1


def test_table1_counts_sex_and_age(capsys, phantom_dir):
    df = pd.DataFrame({"label": [0, 0, 1, 1, 1], "patient_id": list("abcde"), "sex": ["F", "M", "F", "F", None],
                       "age": [50, 60, 70, None, 80]})
    t = table1(df)
    assert t.loc["Number of images", "No osteoporosis"] == "2"
    assert t.loc["Female / male", "Osteoporosis"] == "2/0 (1 unknown)"
    assert t.loc["Mean age (+- SD)", "No osteoporosis"] == "55.0 (+- 7.1)"
    main([str(phantom_dir / "manifest.csv")])
    out = capsys.readouterr().out
    assert "Table 1" in out and "Female / male" in out and "T-score <= -2.5" in out
