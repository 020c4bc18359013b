"""Rebuilding a finished run's model and data from its directory alone, loading weights
safely: safetensors, or ``torch.load(weights_only=True)``, never a pickle that can run code."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from osteo.runs import WEIGHTS_FILE, absolute_storage, launch_folder, recorded_path


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds pickled Python objects beyond plain tensors and containers."""


def run_config(run_dir: str | Path) -> DictConfig:
    """The run's saved, resolved config with its storage paths absolute
    (``osteo.runs.absolute_storage``); its manifest the one metrics.json records."""
    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    base = launch_folder(run_dir, cfg)
    cfg = absolute_storage(cfg, base)
    m = run_dir / "metrics.json"
    if m.exists():
        manifest = json.loads(m.read_text()).get("manifest")
        if manifest:
            cfg.data.manifest = recorded_path(manifest, base)
    return cfg


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A model state dict from ``.safetensors``, or from a ``.ckpt``/``.pth`` file loaded with
    ``weights_only=True`` (Lightning checkpoints: their ``state_dict`` entry).

    Raises ``UnsafeCheckpointError`` for a file that would need arbitrary unpickling.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path}: refused: the checkpoint holds pickled Python objects that could run code when "
            f"loaded ({str(e).splitlines()[0][:160]}). osteo loads only plain tensors: use the run's "
            f"{WEIGHTS_FILE}, or re-save the state dict with safetensors.") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UnsafeCheckpointError(f"{path}: not a state dict of tensors")
    return obj


def save_state_dict(module: torch.nn.Module, path: str | Path) -> Path:
    """Write ``module``'s state dict as safetensors, atomically."""
    from osteo.io import atomic_save_tensors

    return atomic_save_tensors(path, module.state_dict())


def load_model(run_dir: str | Path | None = None, checkpoint: str | Path | None = None,
               device: str | torch.device = "cpu"):
    """The run's classifier with its best weights, in eval mode. Pass a run directory, or a
    weights file inside one (its config.yaml sits beside it)."""
    from hydra.utils import instantiate

    from osteo.data.roi import roi_output_hw

    ckpt = Path(checkpoint) if checkpoint else Path(run_dir) / WEIGHTS_FILE
    run_dir = Path(run_dir) if run_dir else ckpt.parent
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: no model weights (did the run finish?)")
    cfg = run_config(run_dir)
    hw = roi_output_hw(cfg.data.roi.box_xywh, cfg.data.roi.scale)
    model_cfg = cfg.model.copy()
    with open_dict(model_cfg):
        model_cfg.pop("pretrained", None)  # runs made before the one `weights` setting
        model_cfg.pop("weights", None)
    model = instantiate(model_cfg, input_hw=list(hw), weights="none", channels_last=False)
    model.load_state_dict(load_state_dict(ckpt))
    return model.eval().to(device), cfg


def load_datamodule(run_dir: str | Path, progress: bool = False):
    """The run's datamodule (same manifest, ROI settings, splits and fold), set up."""
    from hydra.utils import instantiate

    cfg = run_config(run_dir)
    dm = instantiate(cfg.data)
    dm.progress = progress
    dm.setup()
    return dm
