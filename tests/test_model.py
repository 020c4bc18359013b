import pytest
import torch
from safetensors.torch import save_file

from osteo.models.backbones import PretrainedWeightsError, backbone_blocks, create_timm_model
from osteo.models.module import DprClassifier, count_parameters

VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
               (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
BLOCK_OF_CONV = [0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]


def expected_counts(depth: int) -> dict:
    """Parameters by the layer arithmetic: 3x3 convs, then Dense 43008-512-256-2."""
    conv = [9 * ci * co + co for ci, co in VGG16_CONVS]
    blocks = [sum(c for c, b in zip(conv, BLOCK_OF_CONV) if b == k) for k in range(5)]
    head = (4 * 21 * 512 * 512 + 512) + (512 * 256 + 256) + (256 * 2 + 2)
    frozen = sum(blocks[: 5 - depth])
    total = sum(blocks) + head
    return {"total": total, "trainable": total - frozen, "non_trainable": frozen}


def test_thesis_figure9_counts_at_depth_2():
    m = DprClassifier("vgg16", depth=2, input_hw=(140, 700))
    assert m.feature_chw == (512, 4, 21)
    assert count_parameters(m) == {"total": 36_867_138, "trainable": 35_131_650, "non_trainable": 1_735_488}


@pytest.mark.parametrize("depth", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow),
                                   pytest.param(4, marks=pytest.mark.slow), 5])  # the ends guard; the middle is extra
def test_every_depth_matches_layer_arithmetic(depth):
    m = DprClassifier("vgg16", depth=depth, input_hw=(140, 700))
    assert count_parameters(m) == expected_counts(depth)
    assert len(m.frozen) == 5 - depth and len(m.trainable) == depth


def test_blocks_come_from_feature_info_and_end_at_pools():
    blocks = backbone_blocks(create_timm_model("vgg16_tiny"))
    assert [len(b) for b in blocks] == [5, 5, 7, 7, 7]  # conv/relu pairs + max-pool
    assert all(isinstance(b[-1], torch.nn.MaxPool2d) for b in blocks)


def tiny(depth=2, **kw):
    return DprClassifier("vgg16_tiny", depth=depth, input_hw=(70, 350), **kw)


def test_frozen_blocks_do_not_change_and_get_no_gradient():
    torch.manual_seed(0)
    m = tiny(depth=2)
    m.train()
    assert not any(mod.training for mod in m.frozen.modules())
    assert all(mod.training for mod in m.trainable.modules())
    before = {k: v.clone() for k, v in m.frozen.state_dict().items()}
    opt = m.configure_optimizers()
    x, y = torch.randn(4, 3, 70, 350), torch.tensor([0, 1, 0, 1])
    z = m.forward_frozen(x)
    assert not z.requires_grad  # no graph through the frozen prefix
    loss = torch.nn.functional.cross_entropy(m(x), y)
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in m.frozen.parameters())
    assert all(torch.equal(v, before[k]) for k, v in m.frozen.state_dict().items())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.trainable.parameters())


def test_other_backbones_get_the_head_on_pooled_features():
    m = DprClassifier("resnet50", depth=5, input_hw=(140, 700))
    assert m.pool == "avg" and m.feature_chw == (2048, 5, 22)
    assert m.head[0].in_features == 2048
    assert m(torch.randn(1, 3, 140, 700)).shape == (1, 2)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_load_bit_exact(tmp_path, suffix):
    src = create_timm_model("vgg16_tiny")
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    save_file(sd, path) if suffix == ".safetensors" else torch.save(sd, path)
    m = DprClassifier("vgg16_tiny", depth=2, weights=str(path), input_hw=(70, 350))
    loaded = torch.nn.Sequential(*m.frozen, *m.trainable).state_dict()
    ref = torch.nn.Sequential(*backbone_blocks(src)).state_dict()
    assert loaded.keys() == ref.keys()
    assert all(torch.equal(loaded[k], ref[k]) for k in ref)
    fresh = DprClassifier("vgg16_tiny", depth=2, weights="none", input_hw=(70, 350))
    assert not torch.equal(fresh.frozen[0][0].weight, m.frozen[0][0].weight)


def test_a_weights_file_that_is_not_the_backbones_is_one_line_before_the_model_is_built(tmp_path):
    """A local weights file that cannot be read, or holds another model's tensors, is a
    ``PretrainedWeightsError`` naming the file and what does not fit, from ``check_weights``
    (which train calls before the data, on the meta device) as from building the model; the
    backbone's own file passes. Before, timm's SafetensorError or load_state_dict's many-line
    RuntimeError came out of the run after the data were read."""
    from osteo.cli import user_error
    from osteo.models.backbones import check_weights

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a weights file")
    other = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in create_timm_model("resnet18").state_dict().items()}, other)
    own = tmp_path / "own.pth"
    torch.save(create_timm_model("vgg16_tiny").state_dict(), own)
    check_weights("vgg16_tiny", str(own))
    cases = [(garbage, f"weights file {garbage} could not be read as a state dict (SafetensorError: "),
             (other, f"weights file {other} does not fit backbone vgg16_tiny: 32 of the model's tensors not in "
                     "the file (features.0.weight, features.0.bias, features.2.weight, ...); 122 of the file's")]
    for path, text in cases:
        for load in (lambda: check_weights("vgg16_tiny", str(path)),
                     lambda: DprClassifier("vgg16_tiny", depth=2, weights=str(path), input_hw=(70, 350))):
            with pytest.raises(PretrainedWeightsError) as e:
                load()
            assert str(e.value).startswith(text) and "\n" not in str(e.value), str(e.value)
            assert str(e.value).endswith("pass a .safetensors or .pth state dict of vgg16_tiny, weights=timm or "
                                         "weights=none")
            assert user_error(e.value) is e.value


def test_timm_weights_offline_stop_with_advice(monkeypatch, tmp_path):
    # an empty hub cache, so the outcome does not depend on what this machine downloaded before
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.hub.set_dir(str(tmp_path / "torch-hub"))
    with pytest.raises(PretrainedWeightsError, match="weights=/path/to/weights.safetensors"):
        DprClassifier("vgg16", depth=2, weights="timm", input_hw=(140, 700))
    with pytest.raises(PretrainedWeightsError, match="not found"):
        DprClassifier("vgg16_tiny", depth=2, weights="/nonexistent/w.pth", input_hw=(70, 350))


def test_weights_setting_is_parsed_in_one_place():
    from osteo.models.weights import parse_weights

    for v in (None, False, "false", "None", "none", "null", "", "scratch"):
        assert parse_weights(v).kind == "none", v
    for v in (True, "true", "timm", "ImageNet"):
        assert parse_weights(v).kind == "timm", v
    f = parse_weights("/data/w/vgg16.safetensors")
    assert f.kind == "file" and f.pretrained and f.tag().startswith("vgg16-") and "/" not in f.tag()
    assert parse_weights("/other/vgg16.safetensors").tag() != f.tag()  # same name, other file


def test_frozen_batchnorm_statistics_do_not_move():
    """ResNet50 (BatchNorm) at a tiny input: two training steps at depth 2 leave every frozen
    parameter and running statistic unchanged, while the trained blocks' statistics move."""
    torch.manual_seed(0)
    m = DprClassifier("resnet50", depth=2, input_hw=(64, 64))
    m.train()
    frozen0 = {k: v.clone() for k, v in m.frozen.state_dict().items()}
    trained0 = {k: v.clone() for k, v in m.trainable.state_dict().items() if "running_mean" in k}
    assert any("running_mean" in k for k in frozen0)
    opt = m.configure_optimizers()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    assert all(torch.equal(v, frozen0[k]) for k, v in m.frozen.state_dict().items())
    moved = [k for k, v in m.trainable.state_dict().items() if k in trained0 and not torch.equal(v, trained0[k])]
    assert moved
