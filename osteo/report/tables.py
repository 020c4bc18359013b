"""The report's tables: Table 1, Table 2 with ensembles and CIs, paired tests, the
clinical-covariate baseline, operating points and calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd

from osteo.metrics import binary_metrics
from osteo.runs import ensemble, model_probabilities, oof_thresholds, vote
from osteo.stats import delong_ci, delong_paired, expected_calibration_error, holm


def operating_points(y_test, model_probs, y_oof, p_oof, sens_target: float = 0.9) -> dict:
    """Ensemble test AUC (mean probability of the fold models) with DeLong's CI, and test
    sensitivity/specificity at thresholds chosen on out-of-fold validation predictions (Youden,
    and ``sens_target`` sensitivity), applied by the rule of osteo/runs.py: each fold model
    against its own probability, referral when at least half of them refer.

    ``model_probs``: test probabilities [n_models, n_images]; ``y_oof``/``p_oof``: pooled
    out-of-fold labels and single-model probabilities. ``*_meanprob`` keys give the same
    thresholds applied to the mean probability (the earlier rule), to show its drift.
    """
    model_probs = np.atleast_2d(np.asarray(model_probs, dtype=float))
    p_test = model_probs.mean(axis=0)
    auc, lo, hi = delong_ci(y_test, p_test)
    chosen = oof_thresholds(y_oof, p_oof, sens_target)
    thr, t90 = chosen["youden"], chosen["sensitivity"]
    op = binary_metrics(y_test, vote(model_probs, thr)[0].astype(float), 0.5)
    op90 = binary_metrics(y_test, vote(model_probs, t90)[0].astype(float), 0.5)
    mean90 = binary_metrics(y_test, p_test, t90)
    single90 = [binary_metrics(y_test, p, t90)["sensitivity"] for p in model_probs]
    return {"ens_auc": auc, "ens_lo": lo, "ens_hi": hi,
            "ens_threshold": thr, "ens_sens_at_thr": op["sensitivity"], "ens_spec_at_thr": op["specificity"],
            "thr_sens90": t90, "sens_at_sens90": op90["sensitivity"], "spec_at_sens90": op90["specificity"],
            "sens_at_sens90_meanprob": mean90["sensitivity"], "spec_at_sens90_meanprob": mean90["specificity"],
            "sens_at_sens90_single_models": float(np.mean(single90))}


def config_summary(runs: pd.DataFrame, preds: dict, sens_target: float = 0.9, n_bins: int = 10) -> dict:
    """Everything Table 2 needs for one configuration's runs (its folds)."""
    frames = [preds[d] for d in runs["dir"]]
    meta, model_probs = model_probabilities(frames, "test")
    test = ensemble(runs, preds, "test")
    oof = ensemble(runs, preds, "val")  # out-of-fold validation predictions
    out = {"folds": int(len(runs)), "trainable": int(runs["trainable"].iloc[0]),
           "val_auc_mean": runs["val_auc"].mean(),
           **operating_points(meta["label"].to_numpy(), model_probs, oof["label"], oof["prob"], sens_target),
           "ece": expected_calibration_error(test["label"], test["prob"], n_bins)}
    for k in ("auc", "sensitivity", "specificity", "accuracy"):
        out[f"{k}_mean"] = runs[f"test_{k}"].mean()
        out[f"{k}_sd"] = runs[f"test_{k}"].std(ddof=1) if len(runs) > 1 else float("nan")
    for k in ("sensitivity", "specificity"):
        out[f"valthr_{k}_mean"] = runs[f"test_at_val_threshold_{k}"].mean()
    return out


def clinical_baseline(manifest_df: pd.DataFrame, splits: pd.DataFrame, n_folds: int,
                      sens_target: float = 0.9) -> tuple[dict | None, pd.DataFrame | None, str]:
    """Logistic regression on age and sex alone; see ``logistic_baseline``."""
    age = pd.to_numeric(manifest_df["age"], errors="coerce")
    if age.isna().all() or manifest_df["sex"].isna().all():
        return None, None, "the manifest has no age or no sex column: no clinical baseline"
    female = (manifest_df["sex"] == "F").astype(float)
    return logistic_baseline(manifest_df, splits, n_folds, {"age": age, "female": female}, "age and sex",
                             sens_target)


def mcw_baseline(manifest_df: pd.DataFrame, splits: pd.DataFrame, n_folds: int,
                 sens_target: float = 0.9) -> tuple[dict | None, pd.DataFrame | None, str]:
    """Logistic regression on the automatic mandibular cortical width (column ``mcw_mm``)."""
    mcw = pd.to_numeric(manifest_df.get("mcw_mm"), errors="coerce") if "mcw_mm" in manifest_df else None
    if mcw is None or mcw.isna().all():
        return None, None, "no cortical width was measured (data.roi.placement=fixed): no MCW baseline"
    return logistic_baseline(manifest_df, splits, n_folds, {"mcw_mm": mcw}, "the automatic cortical width (MCW)",
                             sens_target)


def logistic_baseline(manifest_df: pd.DataFrame, splits: pd.DataFrame, n_folds: int, features: dict,
                      what: str, sens_target: float = 0.9) -> tuple[dict | None, pd.DataFrame | None, str]:
    """Logistic regression on ``features`` (name -> Series aligned with ``manifest_df``),
    fitted on each fold's training part and averaged over folds on the test set. Missing
    values are filled with that fold's training part's mean (never with test or validation
    rows). Returns (summary, test predictions, note)."""
    from sklearn.linear_model import LogisticRegression

    feats = pd.DataFrame({k: pd.to_numeric(v, errors="coerce") for k, v in features.items()}, index=manifest_df.index)
    df = manifest_df.join(feats.add_prefix("_f_")).merge(splits, left_on="image_rel", right_on="image",
                                                          suffixes=("", "_s"))
    cols = [f"_f_{k}" for k in features]
    y = df["label"].to_numpy()
    test = (df["part"] == "test").to_numpy()
    probs, oof = [], np.full(len(df), np.nan)
    for k in range(n_folds):
        tr = (df[f"role_fold{k}"] == "train").to_numpy()
        va = (df[f"role_fold{k}"] == "val").to_numpy()
        X = np.column_stack([df[c].fillna(df[c][tr].mean()).to_numpy() for c in cols])  # training part only
        lr = LogisticRegression(max_iter=1000).fit(X[tr], y[tr])
        probs.append(lr.predict_proba(X[test])[:, 1])
        oof[va] = lr.predict_proba(X[va])[:, 1]
    p = np.mean(probs, axis=0)
    pred = pd.DataFrame({"image": df["image_rel"][test].to_numpy(), "label": y[test], "prob": p})
    ok = ~np.isnan(oof)
    per_fold = [binary_metrics(y[test], q, 0.5) for q in probs]
    s = {"folds": n_folds, "trainable": len(cols) + 1, "val_auc_mean": float("nan"),
         **operating_points(y[test], np.array(probs), y[ok], oof[ok], sens_target), "ece": float("nan")}
    for k in ("auc", "sensitivity", "specificity", "accuracy"):
        vals = [m[k] for m in per_fold]
        s[f"{k}_mean"], s[f"{k}_sd"] = float(np.mean(vals)), float(np.std(vals, ddof=1))
    missing = {c[3:]: int(df[c].isna().sum()) for c in cols if df[c].isna().any()}
    fill = "; ".join(f"{n} missing {c}(s) filled with the training part's mean {c}" for c, n in missing.items())
    return s, pred, f"logistic regression on {what}, fitted on each fold's training part" + (f"; {fill}" if fill else "")


def table2(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per configuration, formatted as the page shows it."""
    rows = []
    for label, s in summaries.items():
        f = lambda k: f"{s[k + '_mean']:.3f} ± {s[k + '_sd']:.3f}"  # noqa: E731
        rows.append({"configuration": label, "folds": s["folds"], "AUC": f("auc"), "sensitivity": f("sensitivity"),
                     "specificity": f("specificity"), "accuracy": f("accuracy"),
                     "trainable params": f"{s['trainable']:,}",
                     "val AUC (selection)": f"{s['val_auc_mean']:.3f}" if s["val_auc_mean"] == s["val_auc_mean"] else "n/a",
                     "ensemble test AUC [95% CI]": f"{s['ens_auc']:.3f} [{s['ens_lo']:.3f}, {s['ens_hi']:.3f}]",
                     "sens / spec at val-chosen threshold": f"{s['ens_sens_at_thr']:.3f} / {s['ens_spec_at_thr']:.3f}",
                     "sens / spec at val-chosen 90% sensitivity": f"{s['sens_at_sens90']:.3f} / {s['spec_at_sens90']:.3f}",
                     "ECE": f"{s['ece']:.3f}" if s["ece"] == s["ece"] else "n/a"})
    return pd.DataFrame(rows)


def paired_comparisons(ens_preds: dict[str, pd.DataFrame], best: str,
                       pairs: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """DeLong paired test of every configuration against ``best`` on their shared test images
    (or of each (first, second) of ``pairs``: column 'AUC best' is then the first's), with
    Holm-corrected p-values over the tests of the table."""
    pairs = pairs if pairs is not None else [(best, label) for label in ens_preds if label != best]
    rows = []
    for first, label in pairs:
        ref, p = ens_preds[first].set_index("image"), ens_preds[label]
        j = ref.join(p.set_index("image")[["prob"]].rename(columns={"prob": "prob_other"}), how="inner")
        r = delong_paired(j["label"], j["prob"], j["prob_other"])
        rows.append({"configuration": label, "vs": first, "n_images": len(j), "AUC best": r["auc1"],
                     "AUC other": r["auc2"], "difference": r["diff"], "z": r["z"], "p": r["p"]})
    out = pd.DataFrame(rows)
    if len(out):
        out["p (Holm)"] = holm(out["p"].to_numpy())
        out["significant at 0.05"] = out["p (Holm)"] < 0.05
    return out
