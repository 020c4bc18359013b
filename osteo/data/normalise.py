"""Turning cached uint8 grey ROIs into a backbone's float input."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 grey [B, 1, h, w] -> float32 [B, C, h, w] (C = len(mean)): grey replicated to
    every channel, then (x / 255 - mean) / std per channel."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float().div_(255.0).expand(-1, len(mean), -1, -1) - m) / s
