"""predict's speed with and without Grad-CAM overlays (issue 13's target: overlays on at least
half the no-overlay rate), on a trained run and freshly made phantoms.

    python benchmarks/predict_overlays.py --model outputs/demo/sweeps/finetune_depth/<tag>/<run> [--n 48]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a run directory (its fold siblings are ensembled)")
    ap.add_argument("--n", type=int, default=48, help="phantom images to screen")
    ap.add_argument("--single", action="store_true", help="one model instead of the fold ensemble")
    a = ap.parse_args()
    from osteo.data.phantom import PhantomParams, generate
    from osteo.predict import predict

    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "ph", PhantomParams(n=a.n, seed=7), progress=False)
        images = [str(Path(tmp) / "ph" / "images")]
        predict(images[:1], a.model, str(Path(tmp) / "warm"), single=a.single, cams=True, progress=False,
                batch_size=8)  # warm-up: imports, model loading
        rates = {}
        for name, cams, fmt in (("no overlays", False, "png"), ("overlays, PNG", True, "png"),
                                ("overlays, JPEG", True, "jpg")):
            t = time.perf_counter()
            df = predict(images, a.model, str(Path(tmp) / name.replace(" ", "_")), single=a.single, cams=cams,
                         progress=False, cam_format=fmt)
            rates[name] = len(df) / (time.perf_counter() - t)
            print(f"{name:16s}: {rates[name]:6.2f} images/s ({len(df)} images, {df['models'].iloc[0]} model(s))")
    for name in ("overlays, PNG", "overlays, JPEG"):
        print(f"{name} / no overlays: {rates[name] / rates['no overlays']:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
