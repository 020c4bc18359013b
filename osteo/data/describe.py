"""The thesis's Table 1 for any dataset: per class the count, female/male, mean age +- SD.

    python -m osteo.data.describe MANIFEST [data.label.threshold=-2.5 ...]
"""

from __future__ import annotations

import sys

import pandas as pd

CLASS_NAMES = {0: "No osteoporosis", 1: "Osteoporosis"}


def table1(df: pd.DataFrame) -> pd.DataFrame:
    """Rows: images, patients, female/male, age mean (SD); columns: each class and Total."""
    cols = {}
    for name, g in [(CLASS_NAMES[0], df[df["label"] == 0]), (CLASS_NAMES[1], df[df["label"] == 1]),
                    ("Total", df)]:
        age = pd.to_numeric(g["age"], errors="coerce")
        sex = g["sex"]
        cols[name] = {
            "Number of images": str(len(g)),
            "Number of patients": str(g["patient_id"].nunique()),
            "Female / male": (f"{int((sex == 'F').sum())}/{int((sex == 'M').sum())}"
                              + (f" ({int(sex.isna().sum())} unknown)" if sex.isna().any() else "")),
            "Mean age (+- SD)": (f"{age.mean():.1f} (+- {age.std():.1f})" if age.notna().any() else "n/a")
                                + (f" ({int(age.isna().sum())} unknown)" if age.isna().any() and age.notna().any() else ""),
        }
    return pd.DataFrame(cols)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    from osteo.cli import setup_logging
    from osteo.config import compose
    from osteo.data.manifest import load_manifest

    setup_logging()

    cfg = compose(argv[1:])
    lab = cfg.data.label
    df = load_manifest(argv[0], lab.threshold, lab.inclusive)
    rule = f"T-score {'<=' if lab.inclusive else '<'} {lab.threshold}"
    print(f"Table 1: {argv[0]} (osteoporosis: {rule})")
    print(table1(df).to_string())


if __name__ == "__main__":
    main()
