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
    f = np.asarray(train_features, dtype=np.float64)
    center, sd = f.mean(axis=0), f.std(axis=0)
    # every statistic on one scale; near-constant ones (dead channels) floored at a tenth of the
    # median spread, so that one of them cannot dominate the distance
    scale = np.sqrt(sd ** 2 + (0.1 * np.median(sd)) ** 2 + 1e-12)
    z = (f - center) / scale
    location, precision = ledoit_wolf_precision(z)
    det = {"center": center, "scale": scale, "mean": location,
           "precision": precision, "percentile": np.array(percentile, dtype=np.float64)}
    maha, zmax = _views(det, val_features)
    det["threshold"] = np.array(np.percentile(maha, percentile), dtype=np.float64)
    det["threshold_zmax"] = np.array(np.percentile(zmax, percentile), dtype=np.float64)
    return det


def ledoit_wolf_precision(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], precision [D, D]) of sklearn's ``LedoitWolf`` fitted on ``x`` [N, D], computed
    through the Woodbury identity: the shrunk covariance is a*I + b*Xc'Xc/N with N < D here, so
    its inverse needs an N x N solve instead of a D x D eigendecomposition (seconds per run on a
    CPU for VGG16's 2944 statistics)."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    mean = x.mean(axis=0)
    xc = x - mean
    shrinkage = float(ledoit_wolf_shrinkage(xc, assume_centered=True))
    mu = float((xc ** 2).sum() / (n * d))  # trace of the empirical covariance / D
    a, b = shrinkage * mu, 1.0 - shrinkage
    if a <= 0:  # no shrinkage possible (constant data): the plain pseudo-inverse
        return mean, np.linalg.pinv(xc.T @ xc / n)
    if b <= 0:
        return mean, np.eye(d) / a
    inner = np.linalg.solve(a * n / b * np.eye(n) + xc @ xc.T, xc)  # N x D
    precision = (np.eye(d) - xc.T @ inner) / a
    return mean, (precision + precision.T) / 2


def _views(det: dict[str, np.ndarray], features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = (np.asarray(features, dtype=np.float64) - det["center"]) / det["scale"]
    d = z - det["mean"]
    maha = np.sqrt(np.maximum(((d @ det["precision"]) * d).sum(axis=1), 0.0))
    return maha, np.abs(z).max(axis=1)


def score(det: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """How unlike the training images each image is [N]: the larger of (Mahalanobis distance /
    its threshold) and (largest |z| of one statistic / its threshold); above 1 is flagged. The
    first catches combinations of statistics never seen together (noise, photographs), the
    second one statistic far out of range (a blank image's missing texture)."""
    maha, zmax = _views(det, features)
    return np.maximum(maha / float(det["threshold"]), zmax / float(det["threshold_zmax"]))


@torch.no_grad()
@torch.no_grad()
def block_statistics(model, loader, device: str | torch.device = "cpu",
                     frozen_stats: np.ndarray | None = None) -> np.ndarray:
    """Block statistics [N, D] of every image of a loader, in loader order. Batches with 'x'
    run the whole network; batches with 'z' (cached frozen-prefix outputs, with 'idx') take the
    frozen blocks' statistics from ``frozen_stats`` [manifest rows, D_frozen] and run only the
    trainable blocks."""
    from osteo.gradcam import probs_cams_features

    model.eval().to(device)
    out = []
    for b in loader:
        if "x" in b:
            out.append(probs_cams_features(model, b["x"].to(device), cams=False)[2])
            continue
        if frozen_stats is None:
            raise ValueError("cached activations need the frozen blocks' statistics (frozen_stats)")
        h, stats = b["z"].to(device).float(), []
        for block in model.trainable:
            h = block(h)
            stats += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
        own = torch.cat(stats, 1).float().cpu().numpy() if stats else np.zeros((len(h), 0), np.float32)
        out.append(np.concatenate([frozen_stats[b["idx"].numpy()], own], 1))
    return np.concatenate(out)


def save(det: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write the detector as safetensors (atomically)."""
    from osteo.io import atomic_save_tensors

    return atomic_save_tensors(path, {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).reshape(np.shape(v))
                                      for k, v in det.items()})


def load(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors.torch import load_file

    return {k: v.numpy() for k, v in load_file(str(path)).items()}
