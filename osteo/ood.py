"""An input-shift detector saved with each run: how unlike the training images an image is.

Method: the Mahalanobis distance of an image's block statistics (the spatial mean and standard
deviation of each of the backbone's five block outputs, per channel: 2944 values for VGG16)
from the training images', each statistic first standardised on the training images, with a Ledoit-Wolf shrunk
covariance (stable with a few hundred images). The head's
penultimate features were tried first and failed: blank and noise images landed inside the
training range there (a classifier's last layers discard what it was not trained to see). The threshold is a high
percentile of the validation images' distances (``percentile``, 99 by default): about 1% of
images like the validation set are flagged by construction.

What it can catch: inputs whose features the network has never produced, such as blank or
noise images, photographs, other anatomy, or radiographs whose ROI looks nothing like the
training ROIs. What it cannot: a shift that leaves the penultimate features in range (a
different population with similar-looking ROIs, another device's subtle calibration), or a
wrong label. A model trained on phantoms sees every real radiograph as "unlike" its data,
which is the point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def fit(train_features: np.ndarray, val_features: np.ndarray, percentile: float = 99.0) -> dict[str, np.ndarray]:
    """The detector from statistics [N, D] of the training and validation images: per-statistic
    centre and scale, the shrunk precision [D, D], and two thresholds (the ``percentile`` of the
    validation images' Mahalanobis distances and of their largest |z|)."""
    from sklearn.covariance import LedoitWolf

    f = np.asarray(train_features, dtype=np.float64)
    center, sd = f.mean(axis=0), f.std(axis=0)
    # every statistic on one scale; near-constant ones (dead channels) floored at a tenth of the
    # median spread, so that one of them cannot dominate the distance
    scale = np.sqrt(sd ** 2 + (0.1 * np.median(sd)) ** 2 + 1e-12)
    lw = LedoitWolf().fit((f - center) / scale)
    det = {"center": center, "scale": scale, "mean": lw.location_.astype(np.float64),
           "precision": lw.precision_.astype(np.float64), "percentile": np.array(percentile, dtype=np.float64)}
    maha, zmax = _views(det, val_features)
    det["threshold"] = np.array(np.percentile(maha, percentile), dtype=np.float64)
    det["threshold_zmax"] = np.array(np.percentile(zmax, percentile), dtype=np.float64)
    return det


def _views(det: dict[str, np.ndarray], features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = (np.asarray(features, dtype=np.float64) - det["center"]) / det["scale"]
    d = z - det["mean"]
    maha = np.sqrt(np.maximum(np.einsum("nd,de,ne->n", d, det["precision"], d), 0.0))
    return maha, np.abs(z).max(axis=1)


def score(det: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """How unlike the training images each image is [N]: the larger of (Mahalanobis distance /
    its threshold) and (largest |z| of one statistic / its threshold); above 1 is flagged. The
    first catches combinations of statistics never seen together (noise, photographs), the
    second one statistic far out of range (a blank image's missing texture)."""
    maha, zmax = _views(det, features)
    return np.maximum(maha / float(det["threshold"]), zmax / float(det["threshold_zmax"]))


@torch.no_grad()
def block_statistics(model, loader, device: str | torch.device = "cpu") -> np.ndarray:
    """Block statistics [N, D] of every image of a loader (batches with 'x'), in loader order."""
    from osteo.gradcam import probs_cams_features

    model.eval().to(device)
    return np.concatenate([probs_cams_features(model, b["x"].to(device), cams=False)[2] for b in loader])


def save(det: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write the detector as safetensors (atomically)."""
    from safetensors.torch import save

    from osteo.io import _atomic

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).reshape(np.shape(v))
               for k, v in det.items()}
    return _atomic(path, lambda f: f.write(save(tensors)))


def load(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors.torch import load_file

    return {k: v.numpy() for k, v in load_file(str(path)).items()}
