"""Grad-CAM on the last conv block (pytorch-grad-cam), safe with frozen blocks and timm's
in-place ReLUs, and the share of CAM mass near a known inferior border.

CAM arrays are float32 [B, H, W] in [0, 1] at the ROI's size (H x W pixels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def cam_target_layer(model) -> nn.Module:
    """The last conv layer's activation: for VGG the ReLU after block 5's last conv (Keras's
    ``block5_conv3`` with its activation); for other backbones the last block's output."""
    last = (list(model.frozen) + list(model.trainable))[-1]
    if model.pool == "flatten":
        relus = [m for m in last.modules() if isinstance(m, nn.ReLU)]
        if relus:
            return relus[-1]
    return last


def grad_cams(model, x: torch.Tensor, targets: Sequence[int] | None = None) -> np.ndarray:
    """Grad-CAM maps [B, H, W] for inputs ``x`` float [B, 3, H, W]; ``targets``: class per
    image (default: the predicted class). Runs outside inference mode with the input
    requiring grad, so frozen blocks still pass gradients to the hooked layer."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    was_training = model.training
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().float().requires_grad_(True)
        if targets is None:
            with torch.no_grad():
                model.eval()
                targets = model(x).argmax(1).tolist()
        cam = GradCAM(model=model, target_layers=[cam_target_layer(model)])
        try:
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
        finally:
            cam.activations_and_grads.release()
    model.train(was_training)
    if maps is None or maps.shape[0] != x.shape[0]:
        raise RuntimeError("Grad-CAM recorded no activations: the target layer got no gradient")
    return np.asarray(maps, dtype=np.float32)


def border_band_ratio(cam: np.ndarray, border_rows: np.ndarray, band_px: float) -> float:
    """(CAM mass within ``band_px`` of the border) / (band's share of the ROI area).

    1 means no preference; a model looking at the cortex scores well above 1.
    """
    hgt = cam.shape[0]
    rows = np.arange(hgt)[:, None]
    band = np.abs(rows - border_rows[None, :]) <= band_px
    total = cam.sum()
    if total <= 0 or band.mean() == 0:
        return float("nan")
    return float((cam[band].sum() / total) / band.mean())
