"""How much of the phantoms' bone signal an image model can see: a quick probe of a look.

    python benchmarks/phantom_signal.py [--look look.json] [--params params.json] [--n 400] [--seed 3]

Renders ``--n`` phantoms with the look (``osteo.data.phantom.Look``, fields overridden by the
JSON file; ``PhantomParams`` fields from ``--params``), places the ROI with the mandible finder
as training does, shrinks it to the demo's quarter scale (175 x 35) and prints, with 5-fold
cross-validation over 3 shuffles:

- ``frozen VGG16-hed``: logistic regression on the flattened block-5 output of VGG16 with the
  ``vgg16_hed`` weights, all conv blocks frozen; a stand-in for the demo's TF0 model;
- ``MCW``: the finder's mental cortical width (mm) alone;
- ``latent oracle``: the generator's own latents (cortical width, Klemetti class, trabecular
  fraction), the ceiling.

The demo's image models can only learn what the first line shows; use it beside
``phantom_realism.py`` when changing the generator's look (realism must not cost the signal).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from osteo.config import compose
from osteo.data import phantom as ph
from phantom_realism import cut_roi, cv_auc, logistic

_SETTINGS: dict = {}   # roi, anatomy, look and scale, set in each worker by Pool's initializer


def _one(row: dict) -> tuple[np.ndarray | None, float]:
    g = ph.render(row, _SETTINGS["p"], _SETTINGS["look"])
    out, _, res = cut_roi(g, _SETTINGS["roi"], _SETTINGS["anatomy"], row["pixel_mm"], _SETTINGS["scale"])
    return out, float(res["mcw_mm"]) if out is not None and res["mcw_mm"] is not None else float("nan")


def vgg_features(rois: np.ndarray) -> np.ndarray:
    """Flattened block-5 output [n, C*h*w] of VGG16 with the vgg16_hed weights for uint8 ROIs [n, h, w]."""
    import torch

    from osteo.models.backbones import backbone_blocks, create_timm_model, normalisation

    model = create_timm_model("vgg16", "vgg16_hed").eval()
    blocks = torch.nn.Sequential(*backbone_blocks(model))
    mean, std = normalisation("vgg16", "vgg16_hed")
    x = torch.from_numpy(rois).float().div(255).unsqueeze(1).repeat(1, 3, 1, 1)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return torch.cat([blocks(x[i:i + 64]).flatten(1) for i in range(0, len(x), 64)]).numpy()


def cv_auc_sd(X: np.ndarray, y: np.ndarray, C: float, repeats: int = 3) -> tuple[float, float]:
    """Mean and SD over shuffles of the 5-fold CV AUC of standardised L2 logistic regression."""
    aucs = cv_auc(X, y, partial(logistic, C=C), repeats)
    return float(np.mean(aucs)), float(np.std(aucs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--look", type=Path, default=None, help="JSON of Look fields (default: the shipped Look)")
    ap.add_argument("--params", type=Path, default=None, help="JSON of PhantomParams fields (n and seed from the flags)")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--scale", type=float, default=0.25, help="ROI scale (the demo's: 0.25)")
    a = ap.parse_args(argv)

    look = ph.read_look(a.look)
    cfg = compose([])
    p = ph.read_params(a.params, n=a.n, seed=a.seed)
    settings = dict(roi=OmegaConf.to_container(cfg.data.roi, resolve=True),
                    anatomy=OmegaConf.to_container(cfg.data.anatomy, resolve=True),
                    p=p, look=look, scale=a.scale)
    subjects = ph.sample_subjects(p)
    t0 = time.perf_counter()
    with Pool(initializer=_SETTINGS.update, initargs=(settings,)) as pool:
        res = pool.map(_one, subjects.to_dict("records"), chunksize=4)
    ok = np.array([r is not None for r, _ in res])
    rois = np.stack([r for r, _ in res if r is not None])
    y = subjects["label"].to_numpy()[ok]
    mcw = np.array([m for _, m in res])[ok]
    print(f"{ok.sum()} of {len(ok)} phantoms placed; rendering and finding {time.perf_counter() - t0:.0f} s")
    feats = vgg_features(rois)
    lines = {"frozen VGG16-hed (block 5)": cv_auc_sd(feats, y, C=0.01),
             "MCW": cv_auc_sd(np.nan_to_num(mcw, nan=np.nanmedian(mcw))[:, None], y, C=1.0),
             "latent oracle": cv_auc_sd(ph.latent_features(subjects)[ok], y, C=1.0)}
    for k, (m, s) in lines.items():
        print(f"{k:28s} AUC {m:.3f} (SD {s:.3f})")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    from osteo.cli import run_cli

    raise SystemExit(run_cli(main))
