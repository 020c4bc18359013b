"""The thesis's Table 1 for any dataset: per class the count, female/male, mean age +- SD.

    python -m osteo.data.describe MANIFEST [data.label.threshold=-2.5 ...]
"""

from __future__ import annotations

import logging
import sys

import pandas as pd

log = logging.getLogger(__name__)

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
            "Mean age (+- SD)": (f"{age.mean():.1f} (+- {_sd(age)})" if age.notna().any() else "n/a")
                                + (f" ({int(age.isna().sum())} unknown)" if age.isna().any() and age.notna().any() else ""),
        }
    return pd.DataFrame(cols)


def _sd(x: pd.Series) -> str:
    """The SD to one decimal, or 'n/a' when fewer than two values exist."""
    return f"{x.std():.1f}" if x.notna().sum() >= 2 else "n/a"


def main(argv: list[str] | None = None) -> int:
    """Print Table 1 of the manifest's valid rows; every image is opened (the ROI cache is
    built), and bad rows and files are listed. Exit 0 when every row is fine, 1 otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    from osteo.cli import setup_logging
    from osteo.config import compose
    from osteo.data.cache import build_roi_cache
    from osteo.data.manifest import consistency_warnings, load_manifest

    setup_logging()
    cfg = compose(argv[1:])
    lab = cfg.data.label
    bad_rows: list[tuple[int, str, str]] = []
    df = load_manifest(argv[0], lab.threshold, lab.inclusive, skip_bad_rows=True, skipped_file=None,
                       bad_out=bad_rows)
    from omegaconf import OmegaConf

    places: list[dict] = []
    _, bad_files = build_roi_cache(df, OmegaConf.to_container(cfg.data.roi, resolve=True), cfg.data.cache_dir,
                                   progress=True, anatomy=OmegaConf.to_container(cfg.data.anatomy, resolve=True),
                                   placements_out=places)
    flagged = [(r.line, r.image_rel, p["status"]) for r, p in zip(df.itertuples(), places)
               if p["status"].startswith("flagged")]
    bad = sorted(bad_rows + bad_files)
    if bad_files:
        df = df[~df["line"].isin([b[0] for b in bad_files])]
    for warning in consistency_warnings(df):
        log.warning("%s", warning)
    rule = f"T-score {'<=' if lab.inclusive else '<'} {lab.threshold}"
    print(f"Table 1: {argv[0]} (osteoporosis: {rule}; {len(df)} valid images)")
    print(table1(df).to_string())
    if flagged:
        how = "left out of training" if cfg.data.roi.flagged == "skip" else "trained on with the fixed box"
        print(f"{len(flagged)} image(s) where the mandible's border was not found with confidence "
              f"(in Table 1; {how}, data.roi.flagged={cfg.data.roi.flagged}):", file=sys.stderr)
        for line, img, why in flagged:
            print(f"  line {line} ({img}): {why}", file=sys.stderr)
    if bad:
        print(f"{len(bad)} bad row(s) or image(s), left out of Table 1:", file=sys.stderr)
        for line, img, why in bad:
            print(f"  line {line} ({img or '-'}): {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from osteo.cli import run_cli

    raise SystemExit(run_cli(main))
