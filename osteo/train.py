"""Train one model on one fold and test it once on the held-out set.

    python -m osteo.train                                  # one run, built-in phantoms
    python -m osteo.train backbone=resnet50 depth=5 fold=3 model.pretrained=false
    python -m osteo.train +sweep=finetune_depth            # the thesis's 30-run study
    python -m osteo.train +sweep=finetune_depth experiment=demo

Each run writes config.yaml, metrics.json, predictions.csv, best.ckpt and CSV logs into its
directory (named by its overrides). A rerun with the same config skips finished runs; a run
that fails writes error.txt, and inside a sweep the next run goes on.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from osteo.io import atomic_write_csv, atomic_write_json, atomic_write_text
from osteo.metrics import binary_metrics, youden_threshold

# keys that do not change a run's result: ignored when deciding whether a finished run can be reused
VOLATILE_KEYS = ("trainer.enable_progress_bar", "data.num_workers", "data.progress")


def _comparable(cfg: DictConfig) -> dict:
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in VOLATILE_KEYS:
        node, *rest = key.split(".")
        if rest and isinstance(c.get(node), dict):
            c[node].pop(rest[0], None)
    return c


def finished(out_dir: Path, cfg: DictConfig) -> dict | None:
    """metrics.json of a finished run with the same config in ``out_dir``, else None."""
    m, c = out_dir / "metrics.json", out_dir / "config.yaml"
    if not (m.exists() and c.exists()):
        return None
    if _comparable(OmegaConf.load(c)) != _comparable(cfg):
        return None
    return json.loads(m.read_text())


def resolve_device(cfg: DictConfig) -> tuple[str, str, bool]:
    """(accelerator, precision, channels_last) for this machine and config."""
    cuda = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    accel = "gpu" if cuda else "cpu"
    precision = cfg.trainer.precision
    if precision == "auto":
        precision = "bf16-mixed" if cuda else "32-true"
    cl = cfg.model.channels_last
    if cl == "auto":
        cl = cuda or cfg.backbone.startswith("vgg")
    return accel, str(precision), bool(cl)


def make_trainer(cfg: DictConfig, out_dir: Path, accel: str, precision: str):
    """The Lightning Trainer with best-by-val-AUC checkpointing, early stopping and CSV logs."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    t.pop("_target_", None)
    patience = t.pop("early_stopping_patience", None)
    tb = t.pop("tensorboard", False)
    t.update(accelerator=accel, precision=precision)
    callbacks = [ModelCheckpoint(dirpath=out_dir, filename="best", monitor="val_auc", mode="max",
                                 save_top_k=1, save_weights_only=True, enable_version_counter=False)]
    if patience:
        callbacks.append(EarlyStopping(monitor="val_auc", mode="max", patience=int(patience)))
    loggers = [CSVLogger(save_dir=str(out_dir), name="logs", version="")]
    if tb:
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(out_dir), name="tb", version=""))
    return pl.Trainer(callbacks=callbacks, logger=loggers, default_root_dir=str(out_dir), **t)


def predict_probs(trainer, model, dm, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(manifest row indices, probabilities of class 1) of one part of the datamodule."""
    dm.predict_part = part
    outs = trainer.predict(model, datamodule=dm, return_predictions=True)
    idx = torch.cat([o["idx"] for o in outs]).numpy()
    prob = torch.cat([o["prob"] for o in outs]).numpy()
    return idx, prob


def train(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Train, pick the best checkpoint by validation AUC, score validation and test once,
    and write the run's files into ``out_dir``. Returns the metrics dict."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from osteo.data.roi import roi_output_hw

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = finished(out_dir, cfg)
    if done is not None:
        print(f"[osteo] {out_dir}: finished run with the same config found, skipping")
        return done
    for stale in ("metrics.json", "predictions.csv", "error.txt", "best.ckpt"):
        (out_dir / stale).unlink(missing_ok=True)
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    accel, precision, channels_last = resolve_device(cfg)

    dm = instantiate(cfg.data)
    dm.setup()
    input_hw = roi_output_hw(cfg.data.roi.box_xywh, cfg.data.roi.scale)
    if cfg.model.pretrained in (False, None) or str(cfg.model.pretrained).lower() == "false":
        print(f"[osteo] {cfg.backbone}: no pretrained weights, training from random initialisation")
    model = instantiate(cfg.model, input_hw=list(input_hw), channels_last=channels_last)
    from osteo.models.module import count_parameters

    params = count_parameters(model)
    t0 = time.perf_counter()
    use_cache = bool(cfg.activation_cache) and not cfg.data.augment and len(model.frozen) > 0
    if use_cache:
        from osteo.activations import prefix_activations

        dev = "cuda" if accel == "gpu" else "cpu"
        dm.use_features(prefix_activations(model, dm.rois, dm.mean, dm.std, cfg.paths.cache,
                                           batch_size=max(int(cfg.data.batch_size), 32), device=dev,
                                           progress=bool(cfg.trainer.enable_progress_bar)))
    t_cache = time.perf_counter() - t0

    trainer = make_trainer(cfg, out_dir, accel, precision)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    t_fit = time.perf_counter() - t0
    epochs = int(trainer.current_epoch)
    ckpt = out_dir / "best.ckpt"
    if ckpt.exists():
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])

    t0 = time.perf_counter()
    parts = {}
    for part in ("val", "test"):
        parts[part] = predict_probs(trainer, model, dm, part)
    t_pred = time.perf_counter() - t0
    n_pred = sum(len(v[0]) for v in parts.values())

    y = dm.labels
    vi, vp = parts["val"]
    ti, tp = parts["test"]
    thr = youden_threshold(y[vi], vp)
    metrics = {
        "run": out_dir.name, "backbone": cfg.backbone, "depth": int(cfg.depth), "fold": int(cfg.fold),
        "pretrained": str(cfg.model.pretrained), "seed": int(cfg.seed),
        "val": binary_metrics(y[vi], vp, 0.5),
        "test": binary_metrics(y[ti], tp, 0.5),
        "val_youden": binary_metrics(y[vi], vp, thr),
        "test_at_val_threshold": binary_metrics(y[ti], tp, thr),
        "threshold_val_youden": thr,
        "params": params, "feature_chw": list(model.feature_chw), "input_hw": list(input_hw),
        "epochs_run": epochs, "best_val_auc": float(trainer.checkpoint_callback.best_model_score or float("nan")),
        "n_train": int(len(dm.idx["train"])), "n_val": int(len(vi)), "n_test": int(len(ti)),
        "device": accel, "precision": precision, "channels_last": channels_last,
        "activation_cache": use_cache,
        "seconds": {"activation_cache": round(t_cache, 2), "fit": round(t_fit, 2), "predict": round(t_pred, 2)},
        "train_images_per_s": round(len(dm.idx["train"]) * max(epochs, 1) / t_fit, 2) if t_fit else None,
        "predict_images_per_s": round(n_pred / t_pred, 2) if t_pred else None,
        "manifest": str(dm.manifest_file), "splits": str(dm.split_path),
    }
    rows = []
    for part, (idx, prob) in parts.items():
        sub = dm.df.iloc[idx]
        rows.append(pd.DataFrame({"split": part, "image": sub["image_rel"].to_numpy(),
                                  "patient_id": sub["patient_id"].to_numpy(), "label": y[idx],
                                  "prob": prob, "fold": int(cfg.fold)}))
    atomic_write_csv(out_dir / "predictions.csv", pd.concat(rows, ignore_index=True))
    atomic_write_json(out_dir / "metrics.json", metrics)
    print(f"[osteo] {out_dir.name}: val AUC {metrics['val']['auc']:.3f}  test AUC "
          f"{metrics['test']['auc']:.3f}  ({epochs} epochs, {t_fit:.0f} s)")
    return metrics


def run(cfg: DictConfig, out_dir: str | Path, in_sweep: bool = False) -> dict | None:
    """``train`` that records a failure in ``out_dir/error.txt``; inside a sweep the failure
    is returned as None so the next run goes on, otherwise it is raised."""
    try:
        return train(cfg, out_dir)
    except Exception:
        atomic_write_text(Path(out_dir) / "error.txt", traceback.format_exc())
        print(f"[osteo] run failed; traceback in {Path(out_dir) / 'error.txt'}")
        if in_sweep:
            return None
        raise


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    metrics = run(cfg, hc.runtime.output_dir, in_sweep=hc.mode == RunMode.MULTIRUN)
    return None if metrics is None else metrics["val"]["auc"]


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    main()
