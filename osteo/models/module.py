"""The LightningModule: a timm backbone cut into 5 blocks, the first 5 - depth frozen, and the
thesis head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import BinaryAUROC

from osteo.models.backbones import backbone_blocks, check_depth, create_timm_model, feature_shape, is_vgg
from osteo.models.head import thesis_head


def count_parameters(module: nn.Module) -> dict[str, int]:
    """Total, trainable (requires_grad) and non-trainable parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"total": total, "trainable": train, "non_trainable": total - train}


class DprClassifier(pl.LightningModule):
    """Backbone blocks ``frozen`` (eval mode, no gradients) + ``trainable`` + ``head``.

    ``depth`` N in 0..5 trains the last N blocks (the thesis's VGG16-TF N). Inputs are
    float [B, 3, H, W] with ``input_hw`` = (H, W) pixels; outputs are two logits.
    ``covariates`` (names, e.g. ``[age, sex]``) are fused late: their standardised values
    float [B, k] join the head's last hidden features (after its second dropout) at the input
    of the output layer. With none the model is exactly the thesis's. Named weights
    (``weights=vgg16_hed``) are fetched into and read from ``weights_dir`` (``paths.weights``).
    """

    def __init__(self, backbone: str = "vgg16", depth: int = 2, weights: object = None,
                 input_hw: Sequence[int] = (140, 700), pool: str = "auto",
                 head: Mapping | None = None, optimizer=None,
                 class_weights: Sequence[float] | None = None, channels_last: bool = False,
                 covariates: Sequence[str] = (), covariate_init: str = "logistic", weights_dir: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer_factory = optimizer
        depth = check_depth(depth)
        model = create_timm_model(backbone, weights, weights_dir)
        blocks = backbone_blocks(model)
        n_frozen = 5 - int(depth)
        self.frozen = nn.Sequential(*blocks[:n_frozen])
        self.trainable = nn.Sequential(*blocks[n_frozen:])
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.pool = ("flatten" if is_vgg(model) else "avg") if pool == "auto" else pool
        c, h, w = feature_shape(nn.Sequential(*blocks), tuple(input_hw))
        self.feature_chw = (c, h, w)
        head = dict(head or {})
        self.covariates = [str(v) for v in (covariates or [])]
        if covariate_init not in ("logistic", "random"):
            raise ValueError(f"model.covariate_init={covariate_init!r}: use logistic or random")
        self.covariate_init = covariate_init
        self.head = thesis_head(c * h * w if self.pool == "flatten" else c, head.get("hidden", (512, 256)),
                                head.get("dropout", 0.5), head.get("num_classes", 2), len(self.covariates))
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.use_channels_last = bool(channels_last)
        if self.use_channels_last:
            self.to(memory_format=torch.channels_last)
        # inputs are softmax probabilities and 0/1 labels by construction, so torchmetrics' argument
        # checks are skipped: they cost about 5% of a small training step (benchmarks/train_step.py)
        self.val_auc = BinaryAUROC(validate_args=False)
        self.train_auc = BinaryAUROC(validate_args=False)

    # ------------------------------------------------------------------ forward
    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen.eval()  # frozen blocks keep inference behaviour (BN statistics, dropout)
        return self

    def forward_frozen(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the frozen prefix (the activation cache stores this)."""
        if self.use_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.frozen(x)

    def head_logits(self, f: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, 2] from pooled or flattened image features ``f`` [B, D] and, for a fusion
        model, standardised covariates ``c`` [B, k]."""
        if not self.covariates:
            return self.head(f)
        if c is None or c.shape[-1] != len(self.covariates):
            raise ValueError(f"this model fuses the covariates {', '.join(self.covariates)}: pass their "
                             f"standardised values [B, {len(self.covariates)}]")
        h = self.head[:-1](f)
        return self.head[-1](torch.cat([h, c.to(h.dtype)], 1))

    def init_covariate_weights(self, coef: Sequence[float], intercept: float = 0.0) -> None:
        """Start the covariates' output weights from a logistic regression on them (coefficients
        per standardised covariate and intercept, fitted on the training rows): the fusion model
        then starts where the covariates alone stand, and training adds the image."""
        k = len(self.covariates)
        w = torch.as_tensor(np.asarray(coef, dtype=np.float32))
        out = self.head[-1]
        with torch.no_grad():
            out.weight[1, -k:] = w / 2
            out.weight[0, -k:] = -w / 2
            out.bias[1] += float(intercept) / 2
            out.bias[0] -= float(intercept) / 2

    def forward_trainable(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, 2] from the frozen prefix's output ``z`` (and covariates ``c``)."""
        if self.use_channels_last and z.dim() == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        f = self.trainable(z)
        f = torch.flatten(f, 1) if self.pool == "flatten" else f.mean(dim=(2, 3))
        return self.head_logits(f, c)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_trainable(self.forward_frozen(x), c)

    def _logits(self, batch: Mapping) -> torch.Tensor:
        c = batch.get("c")
        return self.forward_trainable(batch["z"], c) if "z" in batch else self(batch["x"], c)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch, batch_idx):
        logits = self._logits(batch)
        loss = F.cross_entropy(logits, batch["y"], weight=self.class_weights)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(batch["y"]))
        self.train_auc.update(logits.detach().float().softmax(1)[:, 1], batch["y"])
        return loss

    def on_train_epoch_end(self):
        self.log("train_auc", self.train_auc.compute())
        self.train_auc.reset()

    def validation_step(self, batch, batch_idx):
        logits = self._logits(batch)
        loss = F.cross_entropy(logits, batch["y"], weight=self.class_weights)
        self.val_auc.update(logits.float().softmax(1)[:, 1], batch["y"])
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["y"]))

    def on_validation_epoch_end(self):
        self.log("val_auc", self.val_auc.compute(), prog_bar=True)
        self.val_auc.reset()

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        prob = self._logits(batch).float().softmax(1)[:, 1]
        return {"idx": batch["idx"].cpu(), "prob": prob.cpu()}

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            return torch.optim.Adam(params, lr=1e-4)
        return self.optimizer_factory(params=params)
