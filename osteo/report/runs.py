"""Reading finished runs from their files alone (config.yaml, metrics.json, predictions.csv)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf


def is_pretrained(value) -> bool:
    """True when a run's ``model.pretrained`` asked for pretrained weights (true or a path)."""
    return value not in (False, None) and str(value).lower() not in ("false", "none", "")


def config_label(backbone: str, depth: int, pretrained: bool) -> str:
    """Thesis-style name: 'vgg16-TF2' for pretrained fine-tuning, 'resnet50 scratch' otherwise."""
    if pretrained:
        return f"{backbone}-TF{depth}"
    return f"{backbone} scratch" + ("" if depth == 5 else f" (depth {depth})")


def run_label(cfg) -> str:
    """``config_label`` of a run's saved config."""
    return config_label(cfg.backbone, int(cfg.depth), is_pretrained(cfg.model.pretrained))


def load_runs(root: str | Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], list[dict]]:
    """Every run directory under ``root``.

    Returns (runs, predictions by run directory, problems). ``runs`` has one row per finished
    run: dir, config label, backbone, depth, pretrained, fold, n_folds and flattened metrics.
    ``problems`` lists failed, unfinished and missing runs as dicts (run, status, detail).
    """
    root = Path(root)
    rows, preds, problems = [], {}, []
    for cfg_file in sorted(root.rglob("config.yaml")):
        d = cfg_file.parent
        if d.name == ".hydra":
            continue
        cfg = OmegaConf.load(cfg_file)
        rel = str(d.relative_to(root))
        if not (d / "metrics.json").exists() or not (d / "predictions.csv").exists():
            if (d / "error.txt").exists():
                lines = [ln for ln in (d / "error.txt").read_text().strip().splitlines() if ln.strip()]
                problems.append({"run": rel, "status": "failed", "detail": lines[-1] if lines else ""})
            else:
                problems.append({"run": rel, "status": "unfinished", "detail": "no metrics.json yet"})
            continue
        m = json.loads((d / "metrics.json").read_text())
        pre = is_pretrained(cfg.model.pretrained)
        row = {"dir": str(d), "run": rel, "backbone": cfg.backbone, "depth": int(cfg.depth),
               "pretrained": pre, "fold": int(cfg.fold), "n_folds": int(cfg.data.split.n_folds),
               "config": run_label(cfg),
               "trainable": m["params"]["trainable"], "total_params": m["params"]["total"],
               "threshold": m["threshold_val_youden"], "manifest": m.get("manifest"),
               "splits": m.get("splits"), "checkpoint": str(d / "best.ckpt") if (d / "best.ckpt").exists() else None}
        for part in ("val", "test", "test_at_val_threshold"):
            for k in ("auc", "ap", "sensitivity", "specificity", "accuracy"):
                row[f"{part}_{k}"] = m[part][k]
        rows.append(row)
        preds[str(d)] = pd.read_csv(d / "predictions.csv", dtype={"patient_id": str})
    runs = pd.DataFrame(rows)
    if len(runs):
        for label, g in runs.groupby("config"):
            missing = sorted(set(range(int(g["n_folds"].max()))) - set(g["fold"]))
            for f in missing:
                problems.append({"run": f"{label} fold {f}", "status": "missing", "detail": "no run directory"})
    return runs, preds, problems


def ensemble(runs: pd.DataFrame, preds: dict[str, pd.DataFrame], part: str = "test") -> pd.DataFrame:
    """Per image of ``part``: label and the mean probability over the configuration's folds.

    For ``part='val'`` each image has one (out-of-fold) prediction.
    """
    return ensemble_frames([preds[d] for d in runs["dir"]], part)


def ensemble_frames(frames: list[pd.DataFrame], part: str = "test") -> pd.DataFrame:
    """``ensemble`` over runs' predictions.csv tables: image, label, patient_id, mean prob, n_models."""
    allp = pd.concat([f[f["split"] == part] for f in frames], ignore_index=True)
    return (allp.groupby("image").agg(label=("label", "first"), patient_id=("patient_id", "first"),
                                      prob=("prob", "mean"), n_models=("prob", "size"))
            .reset_index())
