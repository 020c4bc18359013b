"""Train one model on one fold and test it once on the held-out set.

    python -m osteo.train                                  # one run, built-in phantoms
    python -m osteo.train backbone=resnet50 depth=5 fold=3 weights=none
    python -m osteo.train +sweep=finetune_depth            # the thesis's 30-run study
    python -m osteo.train +sweep=demo                      # the same, scaled for a CPU

Each run writes config.yaml, metrics.json, predictions.csv, best.safetensors and CSV logs into
its directory: ``<sweep>/<data tag>,weights=<tag>/backbone=...,depth=N,fold=K``. A rerun with
the same config and data skips finished runs; a finished run with a different config or data (the
manifest's bytes, or the phantom generator that drew the images) is never replaced
unless ``overwrite=true``; a run that fails writes error.txt, and inside a sweep the next run
goes on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from osteo.config import CONF_DIR
from osteo.io import atomic_write_csv, atomic_write_json, atomic_write_text, available_cpus
from osteo.metrics import binary_metrics, youden_threshold
from osteo.runs import DATA_KEYS, STORAGE_KEYS, launch_folder, recorded_path

log = logging.getLogger(__name__)

# keys that do not change a run's result: ignored when deciding whether a finished run can be
# reused, and when comparing it with a new config (with STORAGE_KEYS: a run found again with
# outputs/ written as an absolute path, or with the cache moved, is the same run)
VOLATILE_KEYS = ("trainer.enable_progress_bar", "data.num_workers", "data.progress", "overwrite",
                 "cpus", "run_dir", "trainer.default_root_dir", "callbacks.model_checkpoint.dirpath",
                 "logger.csv.save_dir", "logger.tensorboard.save_dir", "logger.mlflow.tracking_uri",
                 "ignore_warnings") + STORAGE_KEYS


# keys added after runs already existed, with the value that reproduces those runs: a finished run
# whose config lacks one of them matches a new config that holds this value
ADDED_KEYS = {"covariates": [], "model.covariates": [], "model.covariate_init": "logistic",
              "data.covariates": [], "data.covariates_missing": "error"}


class RunConflictError(RuntimeError):
    """A run directory holds a finished run made with a different config."""


def _comparable(cfg: DictConfig) -> dict:
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in VOLATILE_KEYS:
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return c


def _files_resolved(c: dict, base: Path | None) -> dict:
    """``c`` (a ``_comparable`` config) with the files it names (``data.manifest``, and
    ``weights``/``model.weights`` when they name a file) as absolute paths: relative to the run's
    launch folder ``base`` where known (``osteo.runs.launch_folder``), else to the current
    folder. The same file named relatively or absolutely is the same file."""
    from osteo.models.weights import parse_weights

    for node, key in ((c.get("data"), "manifest"), (c, "weights"), (c.get("model"), "weights")):
        value = node.get(key) if isinstance(node, dict) else None
        if not value or not isinstance(value, str):
            continue
        if key == "weights":
            try:
                if parse_weights(value).kind != "file":
                    continue
            except ValueError:
                continue
        node[key] = str(Path(str(recorded_path(value, base))).expanduser().resolve())
    return c


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def finished(out_dir: Path, cfg: DictConfig, data: dict | None = None) -> dict | None:
    """metrics.json of a finished run with the same config in ``out_dir`` (and, when ``data`` is
    given, trained on the same data: ``trained_on``'s ``osteo.runs.DATA_KEYS``); None when there is no
    finished run (or ``cfg.overwrite`` is set). A finished run with a different config or data
    raises ``RunConflictError`` naming the differences."""
    m, c = out_dir / "metrics.json", out_dir / "config.yaml"
    if not (m.exists() and c.exists()):
        return None
    old_cfg = OmegaConf.load(c)
    old = _files_resolved(_comparable(old_cfg), launch_folder(out_dir, old_cfg))
    new = _files_resolved(_comparable(cfg), None)
    for key, neutral in ADDED_KEYS.items():  # runs made before the key existed
        *parents, leaf = key.split(".")
        o, n = old, new
        for p in parents:
            o, n = (o or {}).get(p), (n or {}).get(p)
        if isinstance(o, dict) and isinstance(n, dict) and leaf not in o and n.get(leaf) == neutral:
            n.pop(leaf)
    metrics = json.loads(m.read_text())
    diff, what = _differences(old, new), "made with a different config"
    if not diff and data is not None:
        was = metrics.get("trained_on") or {}
        diff = [f"data {k}: {repr(was[k]) if k in was else '<not recorded>'} -> {data[k]!r}" for k in DATA_KEYS
                if k in data and was.get(k) != data[k]]
        what = "trained on different data (its images or manifest changed since)"
    if not diff:
        return metrics
    if cfg.get("overwrite"):
        log.warning("%s: replacing a finished run %s (overwrite=true)", out_dir, what)
        return None
    raise RunConflictError(
        f"{out_dir} holds a finished run {what} ({'; '.join(diff[:5])}"
        f"{'; ...' if len(diff) > 5 else ''}). Pass overwrite=true to replace it, or use another "
        "sweep_name or paths.outputs to keep both.")


def resolve_device(cfg: DictConfig) -> tuple[str, str, bool]:
    """(accelerator, precision, channels_last) for this machine and config."""
    import torch

    cuda = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    if cfg.trainer.accelerator in ("gpu", "cuda") and not cuda:
        log.warning("trainer.accelerator=%s, but torch sees no CUDA device: training on the CPU",
                    cfg.trainer.accelerator)
    accel = "gpu" if cuda else "cpu"
    precision = cfg.trainer.precision
    if precision == "auto":
        precision = "bf16-mixed" if cuda else "32-true"
    cl = cfg.model.channels_last
    if cl == "auto":
        cl = cuda or cfg.backbone.startswith("vgg")
    return accel, str(precision), bool(cl)


def _instantiate_group(node) -> list:
    """Instantiate every entry of a callbacks/logger config group (null entries are skipped)."""
    from hydra.utils import instantiate

    return [instantiate(v) for v in (node or {}).values() if v is not None and "_target_" in v]


def make_trainer(cfg: DictConfig, accel: str, precision: str):
    """The Lightning Trainer from ``cfg.trainer`` with the callbacks and loggers of the
    ``callbacks`` and ``logger`` config groups."""
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    callbacks = _instantiate_group(cfg.get("callbacks"))
    if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        raise ValueError("the callbacks config has no ModelCheckpoint: the run needs "
                         "callbacks.model_checkpoint to keep its best weights")
    return instantiate(cfg.trainer, callbacks=callbacks, logger=_instantiate_group(cfg.get("logger")) or False,
                       accelerator=accel, precision=precision)


def predict_probs(trainer, model, loader) -> tuple[np.ndarray, np.ndarray]:
    """(manifest row indices [N], probabilities of class 1 [N]) over one dataloader."""
    import torch

    outs = trainer.predict(model, dataloaders=loader, return_predictions=True)
    idx = torch.cat([o["idx"] for o in outs]).numpy()
    prob = torch.cat([o["prob"] for o in outs]).numpy()
    return idx, prob


def trained_on(cfg: DictConfig, manifest: Path) -> dict:
    """What a run was trained on: {'kind': 'phantom' | 'manifest', 'manifest', 'sha1'}, and for
    phantoms 'generator' (``osteo.data.phantom.generator_id`` as phantom.json records it). A
    manifest that osteo's phantom generator wrote (phantom.json beside it) counts as phantom."""
    import hashlib

    info = Path(manifest).parent / "phantom.json"
    phantom = not cfg.data.manifest or info.exists()
    out = {"kind": "phantom" if phantom else "manifest", "manifest": str(manifest),
           "sha1": hashlib.sha1(Path(manifest).read_bytes()).hexdigest()}
    if phantom:
        out["generator"] = json.loads(info.read_text()).get("generator") if info.exists() else None
    return out


def start_covariates(model, dm, out_dir: Path) -> None:
    """Save the fold's covariate transform with the run and, with ``covariate_init=logistic``,
    start the covariates' output weights from a logistic regression on the training rows."""
    from osteo.data.covariates import save_transform

    save_transform(dm.covariate_transform, out_dir)
    imputed = {n: sum(v.values()) for n, v in dm.covariate_transform["imputed"].items() if sum(v.values())}
    log.info("covariates %s fused with the image%s", ", ".join(model.covariates),
             f"; imputed values: {imputed}" if imputed else "")
    if model.covariate_init == "logistic":
        from sklearn.linear_model import LogisticRegression

        tr = dm.idx["train"]
        lr = LogisticRegression(max_iter=1000).fit(dm.covariates[tr], dm.labels[tr])
        model.init_covariate_weights(lr.coef_[0], float(lr.intercept_[0]))
        log.info("covariate weights start from a logistic regression on the training rows: %s",
                 ", ".join(f"{n} {w:+.2f}" for n, w in zip(model.covariates, lr.coef_[0])))


def _fit(trainer, model, dm) -> None:
    """``trainer.fit``, with Ctrl-C raised as KeyboardInterrupt: Lightning catches it, ignores
    every further Ctrl-C and exits with status 1 after its shutdown, a crash with no word that
    ``run`` could not tell from one and that left the run's checkpoint behind."""
    import signal

    try:
        trainer.fit(model, datamodule=dm)
    except SystemExit:
        if not trainer.interrupted:
            raise
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt from None


def check_run(cfg: DictConfig) -> None:
    """Raise a user error for settings no run can use (``osteo.settings``) or a weights file
    that does not exist, from the config alone (no torch, no data): ``train`` calls it first,
    and ``python -m osteo.train`` for every job of a sweep before the first one runs."""
    from osteo.models.weights import check_weights_file
    from osteo.settings import check_settings

    check_settings(cfg)
    check_weights_file(cfg.model.weights)


def check_data(cfg: DictConfig) -> None:
    """Raise ``ManifestError`` or ``SplitError`` for a manifest (``data.manifest``) with bad rows
    (unless ``data.skip_bad_rows``) or too few patients for the split, reading only the CSV and
    the images' names (pandas, no torch): ``train`` says it in seconds, before the ROI cache. The
    data module checks the rows again, and the split once the images that fail are left out; the
    built-in phantoms are not checked here (they are made when the data module first needs them)."""
    from osteo.data.manifest import handle_bad_rows, load_manifest
    from osteo.data.splits import check_split_sizes

    d = cfg.data
    if not d.manifest:
        return
    bad: list = []
    df = load_manifest(d.manifest, d.label.threshold, d.label.inclusive, bad_out=bad)
    if bad and not d.skip_bad_rows:
        handle_bad_rows(Path(d.manifest), bad, False, None, "bad row(s)")
    check_split_sizes(df, d.split.get("test_per_class"), d.split.get("test_fraction"), int(d.split.n_folds))


def train(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Train, pick the best checkpoint by validation AUC, score validation and test once,
    and write the run's files into ``out_dir``. Returns the metrics dict."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.run_dir = str(out_dir)
    # settings no run can use, one line each, before anything is read or written (the data's ROI
    # cache takes minutes on a new data set; an earlier run's files in out_dir are not cleared),
    # and the plain numbers, a missing weights file, the manifest's rows and the split's sizes
    # before torch, timm and Lightning are loaded (seconds)
    check_run(cfg)
    if not (out_dir / "metrics.json").exists():   # a finished run is compared (and skipped) below, as before
        check_data(cfg)

    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    from osteo.checkpoints import load_state_dict, save_state_dict
    from osteo.data.roi import roi_output_hw
    from osteo.models.backbones import check_backbone, check_depth, check_weights
    from osteo.models.module import count_parameters
    from osteo.models.weights import parse_weights
    from osteo.provenance import provenance
    from osteo.runs import WEIGHTS_FILE

    check_depth(cfg.model.depth)   # a model.depth given directly, which the 'depth' rule does not see
    check_backbone(cfg.model.backbone)
    check_weights(cfg.model.backbone, cfg.model.weights, cfg.paths.weights)
    for pattern in cfg.get("ignore_warnings") or []:
        warnings.filterwarnings("ignore", message=pattern)
    cpus = available_cpus(cfg.get("cpus", "auto"))
    dm = instantiate(cfg.data, workers=cpus)
    manifest = dm.resolve_manifest()
    data = trained_on(cfg, manifest) if manifest.exists() else None   # a missing manifest fails in prepare_data
    done = finished(out_dir, cfg, data)
    if done is not None:
        log.info("%s: finished run with the same config and data found, skipping", out_dir)
        return done
    for stale in ("metrics.json", "predictions.csv", "error.txt", WEIGHTS_FILE, "best.ckpt", "ood.safetensors",
                  "covariates.json"):
        (out_dir / stale).unlink(missing_ok=True)
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    accel, precision, channels_last = resolve_device(cfg)
    torch.set_num_threads(cpus)

    dm.prepare_data()
    dm.setup()
    input_hw = roi_output_hw(cfg.data.roi.box_xywh, cfg.data.roi.scale)
    weights = parse_weights(cfg.weights)
    log.info("%s: %s", cfg.backbone, weights.describe())
    model = instantiate(cfg.model, input_hw=list(input_hw), channels_last=channels_last)
    params = count_parameters(model)
    if model.covariates:
        start_covariates(model, dm, out_dir)
    t0 = time.perf_counter()
    use_cache = bool(cfg.activation_cache) and not cfg.data.augment and len(model.frozen) > 0
    if use_cache:
        from osteo.activations import prefix_activations

        dev = "cuda" if accel == "gpu" else "cpu"
        dm.use_features(prefix_activations(model, dm.rois, dm.mean, dm.std, cfg.paths.cache,
                                           batch_size=max(int(cfg.data.batch_size), 32), device=dev,
                                           progress=bool(cfg.trainer.enable_progress_bar),
                                           dtype=str(cfg.get("activation_cache_dtype", "float16"))))
    t_cache = time.perf_counter() - t0

    trainer = make_trainer(cfg, accel, precision)
    t0 = time.perf_counter()
    _fit(trainer, model, dm)
    t_fit = time.perf_counter() - t0
    epochs = int(trainer.current_epoch)
    best = trainer.checkpoint_callback.best_model_path
    if best and Path(best).exists():
        model.load_state_dict(load_state_dict(best))
        Path(best).unlink()  # the weights live on as safetensors; no pickle is kept
    save_state_dict(model, out_dir / WEIGHTS_FILE)

    t0 = time.perf_counter()
    parts = {part: predict_probs(trainer, model, dm.loader(part)) for part in ("val", "test")}
    t_pred = time.perf_counter() - t0
    n_pred = sum(len(v[0]) for v in parts.values())

    from osteo import ood

    dev = "cuda" if accel == "gpu" else "cpu"
    t0 = time.perf_counter()
    frozen_stats = None
    if use_cache:  # the frozen blocks' statistics were saved with the activation cache
        from osteo.activations import prefix_statistics

        frozen_stats = prefix_statistics(model, dm.rois, dm.mean, dm.std, cfg.paths.cache)
    if frozen_stats is None:
        dm.use_features(None)  # the detector reads every block: a plain forward over the ROIs
    stats = {part: ood.block_statistics(model, dm.loader(part), dev, frozen_stats) for part in ("train", "val", "test")}
    detector = ood.fit(stats["train"], stats["val"], float(cfg.get("ood_percentile", 99.0)))
    ood.save(detector, out_dir / "ood.safetensors")
    t_ood = time.perf_counter() - t0
    y = dm.labels
    vi, vp = parts["val"]
    ti, tp = parts["test"]
    thr = youden_threshold(y[vi], vp)
    metrics = {
        "run": out_dir.name, "backbone": cfg.backbone, "depth": int(cfg.depth), "fold": int(cfg.fold),
        "weights": weights.describe(), "seed": int(cfg.seed),
        "val": binary_metrics(y[vi], vp, 0.5),
        "test": binary_metrics(y[ti], tp, 0.5),
        "val_youden": binary_metrics(y[vi], vp, thr),
        "test_at_val_threshold": binary_metrics(y[ti], tp, thr),
        "threshold_val_youden": thr,
        "params": params, "feature_chw": list(model.feature_chw), "input_hw": list(input_hw),
        "epochs_run": epochs, "best_val_auc": float(trainer.checkpoint_callback.best_model_score or float("nan")),
        "n_train": int(len(dm.idx["train"])), "n_val": int(len(vi)), "n_test": int(len(ti)),
        "device": accel, "precision": precision, "channels_last": channels_last, "cpus": cpus,
        "activation_cache": use_cache,
        "covariates": model.covariates, "covariate_transform": dm.covariate_transform,
        "seconds": {"activation_cache": round(t_cache, 2), "fit": round(t_fit, 2), "predict": round(t_pred, 2),
                    "ood": round(t_ood, 2)},
        "train_images_per_s": round(len(dm.idx["train"]) * max(epochs, 1) / t_fit, 2) if t_fit else None,
        "predict_images_per_s": round(n_pred / t_pred, 2) if t_pred else None,
        "manifest": str(Path(dm.manifest_file).resolve()), "splits": str(Path(dm.split_path).resolve()),
        "provenance": provenance(accel, precision),
        "trained_on": data,
        "ood": {"percentile": float(detector["percentile"]), "threshold": float(detector["threshold"]),
                "test_flagged_fraction": float((ood.score(detector, stats["test"]) > 1).mean())},
    }
    rows = []
    for part, (idx, prob) in parts.items():
        sub = dm.df.iloc[idx]
        rows.append(pd.DataFrame({"split": part, "image": sub["image_rel"].to_numpy(),
                                  "patient_id": sub["patient_id"].to_numpy(), "label": y[idx],
                                  "prob": prob, "fold": int(cfg.fold)}))
    atomic_write_csv(out_dir / "predictions.csv", pd.concat(rows, ignore_index=True))
    atomic_write_json(out_dir / "metrics.json", metrics)
    log.info("%s: val AUC %.3f  test AUC %.3f  (%d epochs, %.0f s)", out_dir.name, metrics["val"]["auc"],
             metrics["test"]["auc"], epochs, t_fit)
    return metrics


def run(cfg: DictConfig, out_dir: str | Path, in_sweep: bool = False) -> dict | None:
    """``train`` that records a failure in ``out_dir/error.txt`` (first line: its cause, then the
    traceback); inside a sweep the failure is returned as None so the next run goes on,
    otherwise it is raised."""
    from osteo.cli import describe_error, root_cause, user_error

    try:
        return train(cfg, out_dir)
    except KeyboardInterrupt:
        out = Path(out_dir)
        if out.is_dir() and not (out / "metrics.json").exists():
            (out / "best.ckpt").unlink(missing_ok=True)  # Lightning's checkpoint of an unfinished run
            atomic_write_text(out / "error.txt", "interrupted (Ctrl-C) before the run finished; the same "
                                                 "command trains it again\n")
            log.error("run interrupted: %s did not finish", out)
        raise
    except Exception as e:
        cause = describe_error(user_error(e) or root_cause(e))
        if not isinstance(e, RunConflictError):  # a conflict leaves the finished run's files alone
            atomic_write_text(Path(out_dir) / "error.txt", f"{cause}\n\n{traceback.format_exc()}")
        log.error("run failed: %s%s", cause.splitlines()[0],
                  "" if isinstance(e, RunConflictError) else f" (details in {Path(out_dir) / 'error.txt'})")
        if in_sweep:
            return None
        raise


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    """One run. Returns {'status': 'finished' | 'skipped' | 'failed', 'run', 'val_auc', 'cause'},
    which the sweeper summarises. A single run's user mistake exits 2 with one line."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from osteo.cli import user_errors_exit
    from osteo.runs import error_cause

    hc = HydraConfig.get()
    launcher_cpus = hc.launcher.get("cpus_per_task") if "launcher" in hc else None
    if launcher_cpus and cfg.get("cpus", "auto") == "auto":
        with open_dict(cfg):
            cfg.cpus = int(launcher_cpus)  # submitit's local executor does not restrict CPUs itself
    out = Path(hc.runtime.output_dir)
    had_metrics = (out / "metrics.json").exists() and not cfg.get("overwrite")
    sweep = hc.mode == RunMode.MULTIRUN
    with user_errors_exit():
        metrics = run(cfg, out, in_sweep=sweep)
    if metrics is None:
        cause = error_cause(out / "error.txt") if (out / "error.txt").exists() else "see the log above"
        return {"status": "failed", "run": str(out), "val_auc": None, "cause": cause}
    return {"status": "skipped" if had_metrics else "finished", "run": str(out),
            "val_auc": metrics["val"]["auc"], "cause": ""}


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from osteo.cli import user_errors_exit
    from osteo.config import check_command_line

    # a misspelt setting or group option (Hydra: several lines, exit 1), or a setting no run can
    # use in any job of a sweep: one line, exit 2, before the first job
    with user_errors_exit():
        jobs = check_command_line(sys.argv[1:], "train", check=check_run)
        backbones = sorted({str(c.model.backbone) for c in jobs})
        if len(backbones) > 1:   # a sweep over backbones: each name timm must know (imports timm, which its jobs reuse)
            from osteo.models.backbones import check_backbone

            for name in backbones:
                check_backbone(name)
    try:
        main()
    except KeyboardInterrupt:
        print("osteo: interrupted: finished runs are kept, the same command trains the rest", file=sys.stderr)
        raise SystemExit(130) from None
