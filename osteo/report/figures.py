"""The report's figures (matplotlib, PNG files)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from osteo.stats import calibration_bins, mean_pr, mean_roc  # noqa: E402

FIGSIZE = (6.4, 4.8)   # every plot the same size (inches), so the page lays them out evenly
DPI = 110


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def curves_figure(folds: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], out: Path,
                  kind: str = "roc", aucs: Mapping[str, tuple[float, float]] | None = None) -> Path:
    """Mean ROC (or PR) curve per configuration over its folds with a +-1 SD band.

    ``folds``: configuration -> per fold (labels, probabilities) of the test set.
    """
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for label, fl in folds.items():
        if kind == "roc":
            g, m, sd = mean_roc([roc_curve(y, p)[:2] for y, p in fl])
        else:
            g, m, sd = mean_pr([precision_recall_curve(y, p)[1::-1] for y, p in fl])
        name = label if not aucs else f"{label} (AUC {aucs[label][0]:.3f} ± {aucs[label][1]:.3f})"
        line, = ax.plot(g, m, lw=1.6, label=name)
        ax.fill_between(g, np.clip(m - sd, 0, 1), np.clip(m + sd, 0, 1), color=line.get_color(), alpha=0.12)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title="Mean ROC over folds (test set)")
    else:
        ax.set(xlabel="recall (sensitivity)", ylabel="precision", title="Mean precision-recall over folds (test set)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
    return _save(fig, out)


def auc_vs_params(summaries: Mapping[str, Mapping], out: Path) -> Path:
    """Mean test AUC (+-SD over folds) against trainable parameters (thesis Figure 7)."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for label, s in summaries.items():
        ax.errorbar(s["trainable"], s["auc_mean"], yerr=s["auc_sd"], fmt="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters", ylabel="test AUC (mean ± SD over folds)")
    ax.legend(fontsize=7)
    return _save(fig, out)


def auc_by_depth(depths: Sequence[int], summaries: Sequence[Mapping], out: Path) -> Path:
    """Ensemble test AUC with its DeLong 95% CI, and the fold mean, per fine-tune depth."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    e = np.array([s["ens_auc"] for s in summaries])
    lo = e - np.array([s["ens_lo"] for s in summaries])
    hi = np.array([s["ens_hi"] for s in summaries]) - e
    ax.errorbar(depths, e, yerr=[lo, hi], fmt="o-", capsize=4, label="fold ensemble (95% CI, DeLong)")
    ax.errorbar(np.array(depths) + 0.1, [s["auc_mean"] for s in summaries], yerr=[s["auc_sd"] for s in summaries],
                fmt="s", capsize=3, alpha=0.7, label="single fold models (mean ± SD)")
    ax.set(xlabel="fine-tuned blocks N (TF N)", ylabel="test AUC", xticks=list(depths))
    ax.legend(fontsize=8)
    return _save(fig, out)


def reliability(y, p, out: Path, n_bins: int = 10, title: str = "") -> Path:
    """Reliability diagram: observed rate against mean predicted probability per bin."""
    b = calibration_bins(y, p, n_bins)
    ok = b["count"] > 0
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.plot(b["confidence"][ok], b["observed"][ok], "o-")
    for c, o, n in zip(b["confidence"][ok], b["observed"][ok], b["count"][ok]):
        ax.annotate(str(int(n)), (c, o), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed osteoporosis rate",
           title=title)
    return _save(fig, out)


def cam_gallery(rois: np.ndarray, cams: np.ndarray, captions: Sequence[str], out: Path, title: str) -> Path:
    """Each ROI beside its Grad-CAM overlay, one case per row."""
    n = max(len(rois), 1)
    fig, axes = plt.subplots(n, 2, figsize=(10, 1.45 * n + 0.5), squeeze=False)
    for i in range(len(rois)):
        axes[i, 0].imshow(rois[i], cmap="gray", vmin=0, vmax=255)
        axes[i, 1].imshow(rois[i], cmap="gray", vmin=0, vmax=255)
        axes[i, 1].imshow(cams[i], cmap="jet", alpha=0.4, vmin=0, vmax=1)
        axes[i, 0].set_title(captions[i], fontsize=7, loc="left")
    for a in axes.ravel():
        a.axis("off")
    if not len(rois):
        axes[0, 0].text(0.1, 0.5, "no such case", fontsize=10)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)

