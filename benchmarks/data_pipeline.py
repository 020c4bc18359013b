"""Data pipeline throughput (issue 2): ROI cache build vs plain decode, iteration from the cache,
and the ratio to a CPU VGG16 training step at the same batch size.

    python benchmarks/data_pipeline.py [--n 64] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64, help="phantom DPRs to build (full size)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="osteo-bench-") as d:  # phantoms and caches go with it
        run(a, Path(d))


def run(a: argparse.Namespace, tmp: Path) -> None:
    """Print the pipeline's figures for ``a.n`` phantoms drawn under ``tmp``."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from osteo.config import compose
    from osteo.data.cache import available_cpus, build_roi_cache
    from osteo.data.images import read_gray
    from osteo.data.manifest import load_manifest
    from osteo.data.phantom import PhantomParams, generate
    from osteo.models.module import DprClassifier

    generate(tmp / "ph", PhantomParams(n=a.n, seed=0), progress=False)
    cfg = compose([f"paths.outputs={tmp / 'out'}", f"data.manifest={tmp / 'ph' / 'manifest.csv'}",
                   f"data.batch_size={a.batch}", "data.split.test_per_class=5", "data.split.n_folds=3"])
    df = load_manifest(tmp / "ph" / "manifest.csv")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {a.n} full-size phantom DPRs "
          f"(mean {df['width'].mean():.0f}x{df['height'].mean():.0f} px)")

    t = time.perf_counter()
    for p in df["image"]:
        read_gray(p)
    decode = a.n / (time.perf_counter() - t)
    print(f"plain decode (PNG -> uint8, 1 process):          {decode:8.1f} img/s")
    roi = OmegaConf.to_container(cfg.data.roi, resolve=True)
    anatomy = OmegaConf.to_container(cfg.data.anatomy, resolve=True)
    # the fixed box (decode + resize + crop) and the configured placement (default: the mandible
    # finder places each box, which adds finding the border and measuring the cortical width)
    for placement in dict.fromkeys(("fixed", roi["placement"])):  # once each
        for workers in (1, None):
            cache = tmp / f"cache-{placement}-{workers}"
            t = time.perf_counter()
            build_roi_cache(df, {**roi, "placement": placement}, cache, num_workers=workers, progress=False,
                            anatomy=anatomy)
            cold = a.n / (time.perf_counter() - t)
            print(f"ROI cache build, placement={placement} ({workers or available_cpus()} proc): {cold:8.1f} img/s")
    from osteo.data import cache as cache_mod

    cache_mod._LOADED.clear()
    t = time.perf_counter()
    build_roi_cache(df, roi, cache, progress=False, anatomy=anatomy)
    print(f"ROI cache warm load from disk (.npy read):       {a.n / (time.perf_counter() - t):8.1f} img/s")
    t = time.perf_counter()
    build_roi_cache(df, roi, cache, progress=False, anatomy=anatomy)
    print(f"ROI cache, later run in the same process:        {a.n / (time.perf_counter() - t):8.1f} img/s")

    dm = instantiate(cfg.data)
    dm.progress = False
    dm.setup()
    n, t = 0, time.perf_counter()
    for _ in range(5):
        for b in dm.train_dataloader():  # batches arrive normalised (collate_normalised)
            n += len(b["y"])
    it = n / (time.perf_counter() - t)
    print(f"datamodule iteration from cache (+normalise):    {it:8.1f} img/s  (batch {a.batch}, 140x700x3)")

    model = DprClassifier("vgg16", depth=2, input_hw=(140, 700), channels_last=True)
    opt = model.configure_optimizers()
    x, y = torch.randn(a.batch, 3, 140, 700), torch.randint(0, 2, (a.batch,))
    model.train()
    for i in range(a.train_steps + 1):
        if i == 1:
            t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    train = a.batch * a.train_steps / (time.perf_counter() - t)
    print(f"VGG16-TF2 training step (CPU, fp32):              {train:8.2f} img/s")
    print(f"iteration from cache is {it / train:.0f}x faster than the training step it feeds (target >= 20x)")


if __name__ == "__main__":
    main()
