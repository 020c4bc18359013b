"""Rebuilding a finished run's model and data from its directory alone."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf


def run_config(run_dir: str | Path) -> DictConfig:
    """The run's saved, resolved config; its manifest made absolute from metrics.json."""
    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    m = run_dir / "metrics.json"
    if m.exists():
        manifest = json.loads(m.read_text()).get("manifest")
        if manifest:
            cfg.data.manifest = manifest
    return cfg


def load_model(run_dir: str | Path | None = None, checkpoint: str | Path | None = None,
               device: str | torch.device = "cpu"):
    """The run's classifier with its best weights, in eval mode. Pass a run directory, or a
    checkpoint file inside one (its config.yaml sits beside it)."""
    from hydra.utils import instantiate

    from osteo.data.roi import roi_output_hw

    ckpt = Path(checkpoint) if checkpoint else Path(run_dir) / "best.ckpt"
    run_dir = Path(run_dir) if run_dir else ckpt.parent
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: no checkpoint (did the run finish?)")
    cfg = run_config(run_dir)
    hw = roi_output_hw(cfg.data.roi.box_xywh, cfg.data.roi.scale)
    model = instantiate(cfg.model, input_hw=list(hw), pretrained=False, channels_last=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict(state)
    return model.eval().to(device), cfg


def load_datamodule(run_dir: str | Path, progress: bool = False):
    """The run's datamodule (same manifest, ROI settings, splits and fold), set up."""
    from hydra.utils import instantiate

    cfg = run_config(run_dir)
    dm = instantiate(cfg.data)
    dm.progress = progress
    dm.setup()
    return dm
