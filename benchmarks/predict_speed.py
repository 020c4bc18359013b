"""Batched CPU inference of full-resolution VGG16 (issue 6): images/s, with and without
channels_last.

    python benchmarks/predict_speed.py [--batch 8] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    from osteo.data.normalise import normalise
    from osteo.models.module import DprClassifier

    print(f"VGG16 thesis model, 140x700 (W 700 x H 140), batch {a.batch}, fp32, "
          f"{torch.get_num_threads()} threads, inference mode")
    raw = torch.randint(0, 256, (a.batch, 1, 140, 700), dtype=torch.uint8)
    for cl in (False, True):
        m = DprClassifier("vgg16", depth=2, input_hw=(140, 700), channels_last=cl).eval()
        with torch.inference_mode():
            m(normalise(raw, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
            t = time.perf_counter()
            for _ in range(a.steps):
                m(normalise(raw, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))).softmax(1)
        rate = a.batch * a.steps / (time.perf_counter() - t)
        print(f"  channels_last={cl!s:5}: {rate:6.2f} img/s")


if __name__ == "__main__":
    main()
