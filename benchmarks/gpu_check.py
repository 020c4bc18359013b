"""CUDA check (issue 7): one short full-resolution VGG16-TF2 fit in bf16 with channels_last.
Prints images/s, achieved TFLOP/s, peak memory and the projected time of the full thesis sweep
(45 runs x 50 epochs of 544 training images).

    python benchmarks/gpu_check.py [--steps 30] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine")
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("ts", Path(__file__).with_name("train_step.py"))
    ts = importlib.util.module_from_spec(spec)
    sys.modules["ts"] = ts
    spec.loader.exec_module(ts)
    from osteo.models.module import DprClassifier

    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(0), "torch", torch.__version__)
    for depth in (0, 2, 5):
        torch.manual_seed(0)
        m = DprClassifier("vgg16", depth=depth, input_hw=(140, 700), channels_last=True)
        flops = ts.train_flops_per_image(m, torch.randn(1, 3, 140, 700))
        m = m.to(dev).train()
        opt = m.configure_optimizers()
        x = torch.randn(a.batch, 3, 140, 700, device=dev).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 2, (a.batch,), device=dev)
        torch.cuda.reset_peak_memory_stats()
        for i in range(a.steps + 3):
            if i == 3:
                torch.cuda.synchronize()
                t = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        rate = a.batch * a.steps / (time.perf_counter() - t)
        sweep_h = 45 * 50 * 544 / rate / 3600
        print(f"VGG16-TF{depth} bf16 channels_last batch {a.batch}: {rate:8.1f} img/s, "
              f"{rate * flops / 1e12:6.1f} TFLOP/s, peak memory {torch.cuda.max_memory_allocated() / 2**30:5.2f} GiB; "
              f"45 runs x 50 epochs at this rate: {sweep_h:5.2f} h")


if __name__ == "__main__":
    main()
