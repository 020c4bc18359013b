"""Finished runs, read from their files alone: labels, loading, ensembling and decision
thresholds. Both the report and ``predict`` build on this module (and nothing here imports
either of them).

A run directory holds ``config.yaml`` (resolved), ``metrics.json``, ``predictions.csv`` (split,
image, patient_id, label, prob, fold) and ``best.safetensors``.

Decision rule (one rule for the report and for ``predict``): a threshold is chosen on the
pooled out-of-fold validation predictions, each of which is one fold model's probability for
an image it never trained on. It is applied to the same kind of score: each fold model's own
probability. A fold ensemble refers when at least half of its models refer ("votes"). Applying
the threshold to the ensemble's mean probability instead would mix kinds: averaging shrinks
probabilities towards the middle, so a "90% sensitivity" threshold drifts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from osteo.metrics import youden_threshold
from osteo.models.weights import parse_weights
from osteo.stats import threshold_for_sensitivity

WEIGHTS_FILE = "best.safetensors"

# config keys that say where files are kept, not what a run computes (its ROI cache, split files
# and phantoms are found by content there): not part of a run's identity (osteo.train), and
# resolved against the folder the run was launched from when recorded as relative paths
STORAGE_KEYS = ("paths.outputs", "paths.cache", "paths.splits", "paths.weights", "data.cache_dir", "data.split.dir",
                "data.phantom.out_dir", "model.weights_dir")


def launch_folder(run_dir: str | Path, cfg) -> Path | None:
    """The folder a run was launched from, when its config records ``paths.outputs`` as a
    relative path (the default ``outputs``): the recorded ``run_dir`` (absolute, or the found
    directory when it ends with the recorded relative one) is ``<folder>/<paths.outputs>/...``.
    None when outputs/ was absolute or the folder cannot be told."""
    outputs = Path(str(OmegaConf.select(cfg, "paths.outputs", default="") or ""))
    if not outputs.parts or outputs.is_absolute() or ".." in outputs.parts:
        return None
    recorded = Path(str(cfg.get("run_dir") or ""))
    if not recorded.is_absolute():
        found = Path(run_dir).resolve()
        if not recorded.parts or found.parts[-len(recorded.parts):] != recorded.parts:
            return None
        recorded = found
    n = len(outputs.parts)
    for a in recorded.parents:
        if len(a.parts) > n and a.parts[-n:] == outputs.parts:
            return Path(*a.parts[:-n])
    return None


def recorded_path(path: str | None, base: Path | None) -> str | None:
    """A path a run recorded (config or metrics.json), absolute: a relative one is taken from the
    run's launch folder ``base`` where it exists there (or nothing exists relative to the current
    folder), else from the current folder."""
    if not path or Path(path).is_absolute() or base is None:
        return path
    there = base / path
    return str(there if there.exists() or not Path(path).exists() else Path(path).resolve())


def absolute_storage(cfg, base: Path | None):
    """A run's saved config (``cfg``, changed in place and returned) with the storage paths it
    recorded relative to its launch folder ``base`` (``STORAGE_KEYS`` and ``data.manifest``)
    made absolute (``recorded_path``), so a report or a screening run from another folder finds
    the run's caches, splits and data."""
    if base is not None:
        for key in STORAGE_KEYS + ("data.manifest",):
            value = OmegaConf.select(cfg, key, default=None)
            if isinstance(value, str):
                OmegaConf.update(cfg, key, recorded_path(value, base), merge=False)
    return cfg


def config_label(backbone: str, depth: int, weights: object, covariates=()) -> str:
    """A configuration's full name: backbone, fine-tune depth (TF N: the last N of 5 blocks
    trained), initialisation and fused covariates, e.g. 'vgg16 TF2, timm',
    'vgg16_slim TF5, random init' or 'vgg16 TF1, vgg16_hed + age, sex'."""
    spec = parse_weights(weights)
    init = {"none": "random init", "timm": "timm"}.get(spec.kind) or spec.name or spec.path.stem
    cov = f" + {', '.join(str(c) for c in covariates)}" if covariates else ""
    return f"{backbone} TF{int(depth)}, {init}{cov}"


# the settings a configuration's label already names (or that tell its runs apart: the fold)
LABELLED_SETTINGS = ("backbone", "depth", "fold")


def name_settings(run_name: str) -> list[str]:
    """The 'key=value' items of a run directory's name (Hydra's override dirname: items joined
    by ',', commas inside brackets or quotes kept), e.g. 'backbone=vgg16,data.roi.scale=0.5,
    depth=1,fold=0' -> ['backbone=vgg16', 'data.roi.scale=0.5', 'depth=1', 'fold=0']; [] for a
    name that is not such a list."""
    items, cur, depth, quote = [], "", 0, ""
    for ch in run_name:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        cur += ch
    items.append(cur)
    return items if all("=" in i and not i.startswith("=") for i in items) else []


def extra_settings(run_name: str) -> list[str]:
    """The settings in a run directory's name that its configuration label does not name
    (``LABELLED_SETTINGS``), e.g. ['data.roi.scale=0.5'] for 'backbone=vgg16,data.roi.scale=0.5,
    depth=1,fold=0'."""
    return [i for i in name_settings(run_name) if i.split("=", 1)[0] not in LABELLED_SETTINGS]


def distinguishing_settings(run_names: Sequence[str]) -> list[str]:
    """Per run directory name, ' [key=value, ...]': its ``extra_settings`` whose key does not have
    one value in every run (a run without the key counts as one more value), or ''. Runs that
    differ in such a setting are different configurations, never folds of one; a setting every
    run shares (a sweep's common override) names nothing apart."""
    items = [dict(i.split("=", 1) for i in extra_settings(n)) for n in run_names]
    keys = sorted(set().union(*items)) if items else []
    varying = [k for k in keys if len({it.get(k) for it in items}) > 1]
    labels = [[f"{k}={it[k]}" for k in varying if k in it] for it in items]
    return [f" [{', '.join(sel)}]" if sel else "" for sel in labels]


def run_weights(cfg) -> object:
    """The ``weights`` value of a run's saved config (older runs: ``model.pretrained``)."""
    if "weights" in cfg:
        return cfg.weights
    return cfg.model.get("pretrained", None)


def run_label(cfg) -> str:
    """``config_label`` of a run's saved config."""
    return config_label(cfg.backbone, int(cfg.depth), run_weights(cfg), run_covariates(cfg))


def run_covariates(cfg) -> list[str]:
    """The covariates a run's saved config fused with the image ([] for older runs)."""
    return [str(c) for c in (cfg.model.get("covariates", None) or [])]


def data_identity(metrics: dict, content: str | None = None) -> str:
    """Which data a run used, from its metrics.json: 'manifest | split file name', and where the
    run recorded them (``trained_on``), the manifest's content and the phantom generator that drew
    its images: 'manifest | split file name | manifest sha1 ..., generator ...'. The split file's
    name, not its folder: the name carries a key of the manifest's rows and the split settings
    (``osteo.data.splits.split_file``), and runs that kept it elsewhere (outputs/ written as an
    absolute path, another ``data.split.dir``) split the same way. Runs whose data
    differ in any of these are never pooled (the report gives each data set its own page).
    ``content``: ``data_content(metrics)`` when the caller has it already."""
    splits = metrics.get("splits")
    out = f"{metrics.get('manifest')} | {Path(splits).name if splits else splits}"
    content = data_content(metrics) if content is None else content
    return f"{out} | {content}" if content else out


# what identifies a run's data in its metrics.json's trained_on (the config names the data set, not
# its content): the manifest's content and, for phantoms, the generator that drew the images; with
# the label and the number of characters the report shows of each. train's reuse check compares
# these keys, and the report keeps runs that differ in any of them apart.
DATA_KEYS = {"sha1": ("manifest sha1", 12), "generator": ("generator", 16)}


def data_content(metrics: dict) -> str:
    """The content of a run's data as its metrics.json's ``trained_on`` records it (``DATA_KEYS``):
    'manifest sha1 <12 hex digits>' and, for phantoms, ', generator <id>' ('generator <not
    recorded>' for runs made before the generator was recorded); '' when nothing is recorded."""
    t = metrics.get("trained_on") or {}
    parts = []
    for key, (label, digits) in DATA_KEYS.items():
        if t.get(key):
            parts.append(f"{label} {t[key][:digits]}")
        elif key == "generator" and t.get("kind") == "phantom":
            parts.append(f"{label} <not recorded>")
    return ", ".join(parts)


def load_runs(root: str | Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], list[dict]]:
    """Every run directory under ``root``.

    Returns (runs, predictions by run directory, problems). ``runs`` has one row per finished
    run: dir, config label (``config_label`` and, in brackets, the settings in the run directory's
    name that tell it apart from other runs of its data set: 'vgg16 TF1, vgg16_hed
    [data.roi.scale=0.5]'), settings (that bracket or ''), backbone, depth, pretrained, fold,
    n_folds, data (manifest and split file) and flattened metrics. ``problems`` lists failed,
    unfinished, missing and duplicate runs as dicts (run, status, detail).
    """
    root = Path(root)
    rows, preds, problems = [], {}, []
    for cfg_file in sorted(root.rglob("config.yaml")):
        d = cfg_file.parent
        if d.name == ".hydra":
            continue
        cfg = OmegaConf.load(cfg_file)
        base = launch_folder(d, cfg)
        rel = str(d.relative_to(root))
        if not (d / "metrics.json").exists() or not (d / "predictions.csv").exists():
            if (d / "error.txt").exists():
                problems.append({"run": rel, "status": "failed", "detail": error_cause(d / "error.txt")})
            else:
                problems.append({"run": rel, "status": "unfinished", "detail": "no metrics.json yet"})
            continue
        m = json.loads((d / "metrics.json").read_text())
        m.update({k: recorded_path(m.get(k), base) for k in ("manifest", "splits")})
        content = data_content(m)
        row = {"dir": str(d), "run": rel, "backbone": cfg.backbone, "depth": int(cfg.depth),
               "pretrained": parse_weights(run_weights(cfg)).pretrained, "fold": int(cfg.fold),
               "n_folds": int(cfg.data.split.n_folds), "config": run_label(cfg),
               "finished": (d / "metrics.json").stat().st_mtime,
               "covariates": ",".join(run_covariates(cfg)),
               "trainable": m["params"]["trainable"], "total_params": m["params"]["total"],
               "threshold": m["threshold_val_youden"], "manifest": m.get("manifest"),
               "splits": m.get("splits"), "data": data_identity(m, content), "content": content,
               "provenance": json.dumps(m.get("provenance", {}), sort_keys=True),
               "checkpoint": str(d / WEIGHTS_FILE) if (d / WEIGHTS_FILE).exists() else None}
        for part in ("val", "test", "test_at_val_threshold"):
            for k in ("auc", "ap", "sensitivity", "specificity", "accuracy"):
                row[f"{part}_{k}"] = m[part][k]
        rows.append(row)
        preds[str(d)] = pd.read_csv(d / "predictions.csv", dtype={"patient_id": str})
    runs = pd.DataFrame(rows)
    if len(runs):
        # within a data set, settings that tell runs apart join their label (distinguishing_settings)
        runs["settings"] = ""
        for _, g in runs.groupby("data"):
            runs.loc[g.index, "settings"] = distinguishing_settings([Path(d).name for d in g["dir"]])
        runs["config"] = runs["config"] + runs["settings"]
        # the same configuration's fold run twice (a copied or moved run directory): the newer
        # run counts, the other is listed, never pooled as one more fold
        key = ["data", "config", "fold"]
        older = runs.sort_values("finished").duplicated(key, keep="last").sort_index()
        for _, r in runs[older].iterrows():
            newer = runs[~older & (runs[key] == r[key]).all(axis=1)]["run"].iloc[0]
            problems.append({"run": r["run"], "status": "duplicate", "data": r["data"],
                             "detail": f"{r['config']} fold {r['fold']} again: the newer run {newer} counts"})
            del preds[r["dir"]]
        runs = runs[~older].reset_index(drop=True)
        for (data, label), g in runs.groupby(["data", "config"]):
            missing = sorted(set(range(int(g["n_folds"].max()))) - set(g["fold"]))
            for f in missing:
                problems.append({"run": f"{label} fold {f}", "status": "missing", "detail": "no run directory",
                                 "data": data})
    return runs, preds, problems


def error_cause(error_file: Path) -> str:
    """The cause a failed run recorded: the first line of its error.txt ('Type: message' of the
    root cause, e.g. 'PretrainedWeightsError: could not download ...')."""
    lines = [ln.strip() for ln in Path(error_file).read_text().strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def ensemble(runs: pd.DataFrame, preds: dict[str, pd.DataFrame], part: str = "test") -> pd.DataFrame:
    """``ensemble_frames`` of the runs in ``runs``."""
    return ensemble_frames([preds[d] for d in runs["dir"]], part)


def ensemble_frames(frames: Sequence[pd.DataFrame], part: str = "test") -> pd.DataFrame:
    """Per image of ``part``: image, label, patient_id, prob (mean over the runs) and n_models.

    For ``part='val'`` each image has one prediction: the out-of-fold one.
    """
    allp = pd.concat([f[f["split"] == part] for f in frames], ignore_index=True)
    return (allp.groupby("image").agg(label=("label", "first"), patient_id=("patient_id", "first"),
                                      prob=("prob", "mean"), n_models=("prob", "size"))
            .reset_index())


def model_probabilities(frames: Sequence[pd.DataFrame], part: str = "test") -> tuple[pd.DataFrame, np.ndarray]:
    """(images with their labels, probabilities [n_models, n_images]) of ``part``: every fold
    model's own probability per image, images in sorted order."""
    per = [f[f["split"] == part].set_index("image")["prob"] for f in frames]
    table = pd.concat(per, axis=1, join="inner").sort_index()
    first = frames[0][frames[0]["split"] == part].set_index("image")
    meta = first.loc[table.index, ["label", "patient_id"]].reset_index()
    return meta, table.to_numpy().T


def oof_thresholds(y_oof, p_oof, sens_target: float | None = None) -> dict[str, float]:
    """Thresholds chosen on pooled out-of-fold validation labels and single-model probabilities
    [n]: {'youden': ..., 'sensitivity': ...} (the latter for ``sens_target``). The one place
    where report and predict choose their operating points."""
    out = {"youden": youden_threshold(y_oof, p_oof)}
    if sens_target is not None:
        out["sensitivity"] = threshold_for_sensitivity(y_oof, p_oof, sens_target)
    return out


def vote(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(refer, votes) for probabilities [n_models, n_images]: each model refers when its own
    probability >= ``threshold``; the ensemble refers when at least half of them do."""
    probs = np.atleast_2d(np.asarray(probs, dtype=float))
    votes = (probs >= threshold).sum(axis=0)
    return 2 * votes >= probs.shape[0], votes
