"""How often the input-shift detector (osteo/ood.py) flags images like the training ones, and
images that are not radiographs at all (issue 13's targets: phantoms of another seed <= 5%;
noise, blank and natural images always).

    python benchmarks/ood_check.py --model outputs/demo/sweeps/finetune_depth/<tag>/<run> [--n 100]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def odd_images(folder: Path, k: int = 8) -> dict[str, list[str]]:
    """k noise, k blank (grey levels 0..255) and k natural images (matplotlib's sample photos,
    resized and flipped) at DPR size."""
    import matplotlib.cbook as cbook

    rng = np.random.default_rng(0)
    out: dict[str, list[str]] = {"noise": [], "blank": [], "natural": []}
    photos = [Image.open(cbook.get_sample_data(n, asfileobj=False)).convert("L")
              for n in ("grace_hopper.jpg",)]
    for i in range(k):
        size = (int(rng.integers(1300, 2800)), 0)
        size = (size[0], size[0] // 2)
        Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8)).save(folder / f"noise{i}.png")
        Image.fromarray(np.full(size[::-1], int(255 * i / max(k - 1, 1)), np.uint8)).save(folder / f"blank{i}.png")
        p = photos[i % len(photos)].resize(size)
        (p.transpose(Image.FLIP_LEFT_RIGHT) if i % 2 else p).rotate(5 * i).save(folder / f"natural{i}.png")
        for name in out:
            out[name].append(str(folder / f"{name}{i}.png"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a run directory (its fold siblings are ensembled)")
    ap.add_argument("--n", type=int, default=100, help="phantoms of another seed")
    a = ap.parse_args()
    from osteo.data.phantom import PhantomParams, generate
    from osteo.predict import predict

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "ph", PhantomParams(n=a.n, seed=1), progress=False)
        groups = {"phantoms, seed 1": [str(tmp / "ph" / "images")], **odd_images(tmp)}
        for name, inputs in groups.items():
            df = predict(inputs, a.model, str(tmp / "o" / name.replace(" ", "_")), cams=False, progress=False,
                         allow_phantom_model=True)
            s = df["ood_score"]
            print(f"{name:18s}: flagged {(s > 1).mean():6.1%} of {len(s):3d}  ood_score median {s.median():6.2f} "
                  f"(min {s.min():.2f}, max {s.max():.2f})")


if __name__ == "__main__":
    main()
