"""Frozen-prefix activation cache: the frozen blocks' output per image, computed once.

Valid when nothing random touches the input (no augmentation) and the frozen blocks run in
eval mode: then their output never changes during training. Keyed by the ROI pixels, the
normalisation, the backbone, the frozen blocks' weights and memory format.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from osteo.data.normalise import normalise
from osteo.io import file_lock


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


FLOAT16_MAX = float(np.finfo(np.float16).max)


class _Overflow(Exception):
    pass


def frozen_forward_with_statistics(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(frozen-prefix output, [B, 2 x channels] spatial mean and std of each frozen block's
    output, block by block: the frozen blocks' part of ``osteo.ood``'s block statistics)."""
    if model.use_channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    stats = []
    for block in model.frozen:
        x = block(x)
        stats += [x.mean(dim=(2, 3)), x.std(dim=(2, 3))]
    return x, torch.cat(stats, 1).float()


def _write(model, rois: np.ndarray, mean, std, tmp: Path, dtype: np.dtype, batch_size: int,
           device, progress: bool) -> np.ndarray:
    """Write the prefix outputs to ``tmp``; returns the frozen blocks' statistics [N, D]."""
    out, stats = None, []
    for s in tqdm(range(0, len(rois), batch_size), desc="frozen-block cache", unit="batch",
                  disable=not progress):
        x = torch.from_numpy(np.ascontiguousarray(rois[s:s + batch_size]))[:, None].to(device)
        z, st = frozen_forward_with_statistics(model, normalise(x, mean, std))
        z = z.float().cpu().contiguous().numpy()
        stats.append(st.cpu().numpy())
        if dtype == np.float16 and np.abs(z).max() > FLOAT16_MAX:
            raise _Overflow
        if out is None:  # a memory-mapped .npy: RAM holds one batch, not the whole cache
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(rois), *z.shape[1:]))
        out[s:s + len(z)] = z
    out.flush()
    del out
    return np.concatenate(stats)


def prefix_statistics(model, rois: np.ndarray, mean, std, cache_dir: str | Path) -> np.ndarray | None:
    """The frozen blocks' statistics [N, D] saved with the activation cache of these ROIs and
    this prefix (``prefix_activations`` writes them), or None when there are none."""
    path = Path(cache_dir) / "activations" / f"{cache_key(rois, mean, std, model)}-stats.npy"
    return np.load(path) if path.exists() else None


@torch.inference_mode()
def prefix_activations(model, rois: np.ndarray, mean, std, cache_dir: str | Path,
                       batch_size: int = 32, device: str | torch.device = "cpu",
                       progress: bool = True, dtype: str = "float16") -> np.ndarray:
    """Frozen-prefix outputs [N, C, h, w] of every ROI (uint8 [N, H, W]), cached on disk and
    returned memory-mapped (read-only), so RAM stays bounded whatever the data set's size.

    ``dtype`` 'float16' halves the file against 'float32' (relative rounding 2^-11, measured
    effect on probabilities in tests/test_train.py); values beyond float16's range fall back
    to float32. Parallel jobs wait on a lock and reuse one file.
    """
    key = cache_key(rois, mean, std, model)
    folder = Path(cache_dir) / "activations"
    candidates = [folder / f"{key}-{dtype}.npy"] + ([folder / f"{key}-float32.npy"] if dtype != "float32" else [])
    for path in candidates:
        if path.exists():
            return np.load(path, mmap_mode="r")
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / f"{key}.lock"):
        for path in candidates:
            if path.exists():
                return np.load(path, mmap_mode="r")
        was = model.training
        model.eval()
        model.to(device)
        try:
            for path in candidates:
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                try:
                    stats = _write(model, rois, mean, std, tmp, np.dtype(path.stem.rsplit("-", 1)[1]),
                                   batch_size, device, progress)
                except _Overflow:
                    tmp.unlink(missing_ok=True)
                    continue
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
                from osteo.io import atomic_save_npy

                atomic_save_npy(folder / f"{key}-stats.npy", stats.astype(np.float32))
                os.replace(tmp, path)  # complete files only: a killed job leaves no cache entry
                return np.load(path, mmap_mode="r")
        finally:
            model.train(was)
    raise RuntimeError("frozen-block activations could not be cached")
