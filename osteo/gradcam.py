"""Grad-CAM on the last conv block (pytorch-grad-cam), safe with frozen blocks and timm's
in-place ReLUs, and the share of CAM mass near a known inferior border.

CAM arrays are float32 [B, H, W] in [0, 1] at the ROI's size (H x W pixels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def cam_target_layer(model, block: int = 5) -> nn.Module:
    """The activation of block ``block``'s last conv (1..5; default the last block): for VGG the
    ReLU after that block's last conv (for block 5 Keras's ``block5_conv3`` with its
    activation); for other backbones the block's output."""
    last = (list(model.frozen) + list(model.trainable))[int(block) - 1]
    if model.pool == "flatten":
        relus = [m for m in last.modules() if isinstance(m, nn.ReLU)]
        if relus:
            return relus[-1]
    return last


class _WithCovariates(nn.Module):
    """A fusion model with its covariates bound, so that Grad-CAM can call it with images only."""

    def __init__(self, model: nn.Module, c: torch.Tensor):
        super().__init__()
        self.model, self.c = model, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.c)


def grad_cams(model, x: torch.Tensor, targets: Sequence[int] | None = None, block: int = 5,
              c: torch.Tensor | None = None) -> np.ndarray:
    """Grad-CAM maps [B, H, W] for inputs ``x`` float [B, 3, H, W] (and a fusion model's
    standardised covariates ``c`` [B, k]) on block ``block``'s last conv activation;
    ``targets``: class per image (default: the predicted class). Runs outside inference mode
    with the input requiring grad, so frozen blocks still pass gradients to the hooked layer."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    was_training = model.training
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().float().requires_grad_(True)
        net = _WithCovariates(model, c) if getattr(model, "covariates", None) else model
        if targets is None:
            with torch.no_grad():
                model.eval()
                targets = net(x).argmax(1).tolist()
        cam = GradCAM(model=net, target_layers=[cam_target_layer(model, block)])
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


def cortex_soft_masses(cam: np.ndarray, border_rows: np.ndarray, cortex_px: np.ndarray | float) -> tuple[float, float]:
    """(CAM mass on the cortex: from the border up ``cortex_px`` rows, per column; mass on the soft
    tissue just below it: the same number of rows down from the border). ``cam`` [H, W];
    ``border_rows`` [W] ROI rows; ``cortex_px`` rows, one number or [W]."""
    rows = np.arange(cam.shape[0])[:, None]
    d = border_rows[None, :] - rows  # rows above the border (> 0)
    w = np.broadcast_to(np.asarray(cortex_px, dtype=float), border_rows.shape)[None, :]
    above, below = (d > 0) & (d <= w), (d <= 0) & (d > -w)
    return float(cam[above].sum()), float(cam[below].sum())


def cortex_soft_ratio(cam: np.ndarray, border_rows: np.ndarray, cortex_px: np.ndarray | float) -> float:
    """``cortex_soft_masses``' cortex mass over its soft-tissue mass (NaN when that is 0). Above 1:
    the model looks at bone more than at what lies under it."""
    cortex, soft = cortex_soft_masses(cam, border_rows, cortex_px)
    return cortex / soft if soft > 0 else float("nan")


def _last_block_split(model) -> tuple[list[nn.Module], nn.Module, nn.Module]:
    """(the first four blocks, the last block up to and including the CAM target layer, the
    rest of the last block)."""
    blocks = list(model.frozen) + list(model.trainable)
    last = blocks[-1]
    target = cam_target_layer(model)
    if target is last:
        return blocks[:-1], last, nn.Identity()
    layers = list(last)
    i = next(k for k, m in enumerate(layers) if m is target)
    return blocks[:-1], nn.Sequential(*layers[:i + 1]), nn.Sequential(*layers[i + 1:])


def probs_cams_features(model, x: torch.Tensor, cams: bool = True, c: torch.Tensor | None = None
                        ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One pass for screening: (probabilities of class 1 [B], Grad-CAM maps [B, H, W] in [0, 1]
    or None, block statistics [B, 2 x the 5 blocks' channels]: each block output's spatial mean
    and standard deviation per channel, what osteo.ood scores) for inputs ``x`` float [B, 3, H, W]
    (and, for a fusion model, standardised covariates ``c`` float [B, k]).

    The backbone runs once, without gradients, up to the CAM target layer; only the last few
    layers and the head run with gradients, for the predicted class. The maps equal
    ``grad_cams`` (pytorch-grad-cam) to 1e-5 (tests/test_gradcam.py) at a fraction of its cost,
    which backpropagates through the whole network.
    """
    from pytorch_grad_cam.utils.image import scale_cam_image

    model.eval()
    first, head_of_last, rest_of_last = _last_block_split(model)
    stats = []
    with torch.inference_mode(False), torch.no_grad():
        h = x.float()
        for block in first:
            h = block(h)
            stats += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
        act = head_of_last(h)
    with torch.inference_mode(False), torch.enable_grad():
        act = act.detach().clone().requires_grad_(cams)
        f = rest_of_last(act)
        stats += [f.detach().mean(dim=(2, 3)), f.detach().std(dim=(2, 3))]
        f = torch.flatten(f, 1) if model.pool == "flatten" else f.mean(dim=(2, 3))
        logits = model.head_logits(f, c)
        probs = logits.float().softmax(1)[:, 1]
        maps = None
        if cams:
            pred = logits.argmax(1)
            logits.gather(1, pred[:, None]).sum().backward()
            w = act.grad.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((w * act).sum(1)).detach().cpu().numpy().astype(np.float32)
            maps = scale_cam_image(scale_cam_image(cam, (x.shape[-1], x.shape[-2])))  # as pytorch-grad-cam does
    return probs.detach().cpu().numpy(), maps, torch.cat(stats, 1).float().cpu().numpy()
