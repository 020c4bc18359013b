"""Binary classification metrics from probabilities (torchmetrics), on plain arrays.

``y``: labels 0/1, shape (n,); ``p``: probability of class 1 (osteoporosis), shape (n,).
torch and torchmetrics (seconds to import) are loaded at the first metric, not with the module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def _t(a) -> torch.Tensor:
    """A float64 tensor of its own (a copy: torch warns on, and must not write through, a read-only
    array such as a pandas column's)."""
    import torch

    return torch.tensor(np.asarray(a, dtype=np.float64))


def youden_threshold(y, p) -> float:
    """The probability threshold maximising sensitivity + specificity - 1 (Youden's J)."""
    from torchmetrics.functional.classification import binary_roc

    fpr, tpr, thr = binary_roc(_t(p), _t(y).long())
    j = (tpr - fpr).numpy()
    k = int(np.argmax(j))
    return float(min(max(thr[k].item(), 0.0), 1.0))


def binary_metrics(y, p, threshold: float = 0.5) -> dict[str, float]:
    """AUC, average precision, and sensitivity, specificity, accuracy at ``threshold``
    (positive when p >= threshold). AUC/AP are NaN when only one class is present."""
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision, binary_stat_scores

    y_t, p_t = _t(y).long(), _t(p)
    tp, fp, tn, fn, _ = binary_stat_scores((p_t >= threshold).long(), y_t, threshold=0.5).tolist()
    both = len(np.unique(np.asarray(y))) == 2
    return {
        "auc": float(binary_auroc(p_t, y_t)) if both else float("nan"),
        "ap": float(binary_average_precision(p_t, y_t)) if both else float("nan"),
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "accuracy": (tp + tn) / max(tp + tn + fp + fn, 1),
        "threshold": float(threshold),
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
    }
