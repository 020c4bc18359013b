"""Frozen-prefix activation cache: the frozen blocks' output per image, computed once.

Valid when nothing random touches the input (no augmentation) and the frozen blocks run in
eval mode: then their output never changes during training. Keyed by the ROI pixels, the
normalisation, the backbone, the frozen blocks' weights and memory format.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from osteo.io import atomic_save_npy


def _digest_module(module: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(rois: np.ndarray, mean, std, model) -> str:
    """Digest of everything the frozen prefix's output depends on."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(rois).tobytes())
    h.update(repr((tuple(mean), tuple(std), model.hparams.backbone, len(model.frozen),
                   model.use_channels_last)).encode())
    h.update(_digest_module(model.frozen).encode())
    return h.hexdigest()[:20]


@torch.inference_mode()
def prefix_activations(model, rois: np.ndarray, mean, std, cache_dir: str | Path,
                       batch_size: int = 32, device: str | torch.device = "cpu",
                       progress: bool = True) -> np.ndarray:
    """Frozen-prefix outputs float32 [N, C, h, w] of every ROI (uint8 [N, H, W]), cached."""
    from osteo.data.datamodule import normalise

    path = Path(cache_dir) / "activations" / f"{cache_key(rois, mean, std, model)}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    was = model.training
    model.eval()
    model.to(device)
    out = None
    for s in tqdm(range(0, len(rois), batch_size), desc="frozen-block cache", unit="batch",
                  disable=not progress):
        x = torch.from_numpy(np.ascontiguousarray(rois[s:s + batch_size]))[:, None].to(device)
        z = model.forward_frozen(normalise(x, mean, std)).float().cpu().contiguous().numpy()
        if out is None:
            out = np.empty((len(rois), *z.shape[1:]), dtype=np.float32)
        out[s:s + len(z)] = z
    model.train(was)
    atomic_save_npy(path, out)
    return out
