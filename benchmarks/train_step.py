"""Training-step throughput (issue 7): Lightning against a plain PyTorch loop on the same model,
batch and data, per fine-tune depth; achieved GFLOP/s as a share of this machine's float32
matmul rate; and the speed-up of the frozen-prefix activation cache.

    python benchmarks/train_step.py            # demo scale: vgg16_slim at 70x350, batch 32
    python benchmarks/train_step.py --full     # also full scale: vgg16 at 140x700, batch 8 (slow on CPU)
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def matmul_gflops(sizes=(2048, 3072, 4096), trials: int = 3) -> float:
    """Float32 matrix-multiply rate of this machine (GFLOP/s): the best of several sizes/trials."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(trials):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (convs and linears), for one input batch."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            total[0] += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            total[0] += out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        module(x)
    for h in hs:
        h.remove()
    return total[0]


def train_flops_per_image(model, x) -> float:
    """Forward everywhere, plus backward (~2x forward) through the trainable part only."""
    n = x.shape[0]
    fwd = macs(model, x) / n
    with torch.no_grad():
        z = model.forward_frozen(x)
    trainable = macs(torch.nn.Sequential(model.trainable, torch.nn.Flatten(), model.head) if model.pool == "flatten"
                     else model.trainable, z) / n
    return 2 * (fwd + 2 * trainable)


def plain_loop(model, x, y, steps: int, use_z: bool = False) -> float:
    """Images/s of a hand-written training loop (forward, loss, backward, Adam step)."""
    opt = model.configure_optimizers()
    model.train()
    inp = model.forward_frozen(x).detach() if use_z else x
    fwd = model.forward_trainable if use_z else model
    for i in range(steps + 1):
        if i == 1:
            t = time.perf_counter()
        loss = F.cross_entropy(fwd(inp), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return x.shape[0] * steps / (time.perf_counter() - t)


def lightning_loop(model, x, y, steps: int) -> float:
    """Images/s of Lightning's training loop on the same batch (the first step is warm-up)."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, Dataset

    class Same(Dataset):
        def __len__(self):
            return steps + 1

        def __getitem__(self, i):
            return i

    times = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, *a):
            times.append(time.perf_counter())

        def on_train_end(self, *a):
            times.append(time.perf_counter())

    loader = DataLoader(Same(), batch_size=None, collate_fn=lambda i: {"x": x, "y": y})
    model.validation_step = None
    tr = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, callbacks=[Clock()],
                    num_sanity_val_steps=0, limit_val_batches=0)
    tr.fit(model, train_dataloaders=loader)
    return x.shape[0] * steps / (times[-1] - times[1])


def bench(backbone: str, hw: tuple[int, int], batch: int, steps: int, peak: float) -> None:
    from osteo.models.module import DprClassifier

    print(f"\n{backbone} at {hw[1]}x{hw[0]} (W x H), batch {batch}, fp32, channels_last, "
          f"{torch.get_num_threads()} threads")
    print("depth | plain img/s | Lightning img/s | Lightning/plain | GFLOP/s | % of matmul | cached img/s | cache speed-up")
    for depth in range(6):
        torch.manual_seed(0)
        x, y = torch.randn(batch, 3, *hw), torch.randint(0, 2, (batch,))
        m = DprClassifier(backbone, depth=depth, input_hw=hw, channels_last=True)
        flops = train_flops_per_image(m, x[:1])
        plain = plain_loop(m, x, y, steps)
        light = lightning_loop(DprClassifier(backbone, depth=depth, input_hw=hw, channels_last=True), x, y, steps)
        cached = plain_loop(m, x, y, steps, use_z=True) if depth < 5 else plain
        gf = plain * flops / 1e9
        print(f"  {depth}   | {plain:11.2f} | {light:15.2f} | {light / plain:15.3f} | {gf:7.1f} | "
              f"{100 * gf / peak:10.1f}% | {cached:12.2f} | {cached / plain:13.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="also full-scale VGG16 at 140x700")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--full-steps", type=int, default=2)
    a = ap.parse_args()
    import logging

    for name in ("pytorch_lightning", "pytorch_lightning.utilities.rank_zero", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    peak = matmul_gflops()
    print(f"float32 matmul (best of 2048..4096 squared): {peak:.1f} GFLOP/s on this machine")
    bench("vgg16_slim", (70, 350), 32, a.steps, peak)
    if a.full:
        bench("vgg16", (140, 700), 8, a.full_steps, peak)


if __name__ == "__main__":
    main()
