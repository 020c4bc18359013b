"""timm backbones as five sequential blocks, with their weights from timm, a local file or
random init.

``backbone_blocks`` splits a timm model into the five stages its ``feature_info`` names, so
that a fine-tune depth N trains the last N of them. For VGG each block is exactly one of
VGG16's conv blocks with its max-pool (the thesis's blocks); for other models a block is the
run of top-level children up to the one holding that stage's feature module.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import timm
import torch
from torch import nn

import osteo.models.small_vgg  # noqa: F401  (registers the small VGGs with timm)
from osteo.models.weights import PretrainedWeightsError, check_weights_file, parse_weights


class ModelConfigError(ValueError):
    """A backbone or fine-tune depth that cannot be built: a setting the user can fix."""


def check_depth(depth: object) -> int:
    """``depth`` as an int, or ``ModelConfigError`` unless it is a whole number 0..5."""
    from osteo.settings import DEPTH_HINT, is_depth

    if not is_depth(depth):
        raise ModelConfigError(f"depth={depth}: {DEPTH_HINT}")
    return int(depth)


def check_backbone(name: str) -> None:
    """Raise ``ModelConfigError`` unless ``name`` is a timm model that splits into five blocks
    (``backbone_blocks``). Builds the model on the meta device: no weights are allocated."""
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(str(name), timm.list_models(), n=3)
        raise ModelConfigError(f"backbone={name}: not a timm model; " + (
            f"did you mean {' or '.join(close)}?" if close else "give a name from timm.list_models(), e.g. vgg16"))
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    try:
        backbone_blocks(model)
    except ValueError as e:
        raise ModelConfigError(f"backbone={name}: {e}; give a CNN whose features come in 5 stages "
                               "(vgg16, resnet50, legacy_xception, ...)") from None


def check_weights(name: str, weights: object, weights_dir: str | Path | None = None) -> None:
    """Raise ``PretrainedWeightsError`` when the weights that ``weights`` names cannot be had for
    timm model ``name``: timm has none for it, the named source cannot be fetched (a named
    source is fetched and converted here, once), or a local file does not exist, cannot be read
    or does not fit the model (loaded into the model built on the meta device: the file is read,
    no weights are allocated). Named sources are kept in ``weights_dir`` (default: the config's
    ``paths.weights``)."""
    spec = parse_weights(weights)
    if spec.kind == "timm":
        cfg = timm.get_pretrained_cfg(name)
        if cfg is None or not (cfg.url or cfg.hf_hub_id or cfg.file):
            raise PretrainedWeightsError(f"timm has no pretrained weights for {name!r}; pass "
                                         "weights=/path/to/weights.safetensors or weights=none")
    elif spec.kind == "named":
        from osteo.models.hed import HedWeightsError
        from osteo.models.weights import named_weights_file

        try:
            named_weights_file(spec.name, weights_dir)
        except HedWeightsError as e:
            raise PretrainedWeightsError(str(e)) from e
    elif spec.kind == "file":
        check_weights_file(weights)
        with warnings.catch_warnings(), torch.device("meta"):   # reads the file, allocates no weights
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
            _from_file(name, spec.path)


def create_timm_model(name: str, weights: object = None, weights_dir: str | Path | None = None) -> nn.Module:
    """Create a timm model with the weights that ``weights`` names (see ``parse_weights``):
    random init, timm's download, or a local .pth/.safetensors file loaded through timm's
    ``pretrained_cfg_overlay``. Raises ``ModelConfigError`` for a name timm does not know and
    ``PretrainedWeightsError`` for weights that cannot be had (``check_weights``)."""
    if not timm.is_model(name):
        check_backbone(name)
    spec = parse_weights(weights)
    if spec.kind == "file":   # check_weights would read the file once more
        check_weights_file(weights)
        return _from_file(name, spec.path)
    check_weights(name, weights, weights_dir)
    if spec.kind == "none":
        return timm.create_model(name, pretrained=False)
    if spec.kind == "timm":
        try:
            return timm.create_model(name, pretrained=True)
        except Exception as e:  # noqa: BLE001 - any download failure
            raise PretrainedWeightsError(
                f"could not download pretrained weights for {name!r} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}). This machine may be offline: pass a local "
                "file with weights=/path/to/weights.safetensors (or .pth), or train "
                "from scratch with weights=none.") from e
    if spec.kind == "named":
        from osteo.models.weights import named_weights_file

        path = named_weights_file(spec.name, weights_dir)   # fetched by check_weights
        return _with_state(timm.create_model(name, pretrained=False), path, spec.describe())
    raise AssertionError(f"weights kind {spec.kind!r}")


def _from_file(name: str, path: Path) -> nn.Module:
    """timm model ``name`` with the state dict of the local .pth/.safetensors file ``path``,
    loaded by timm (which maps a torchvision state dict onto its layout); raises
    ``PretrainedWeightsError`` naming the file when it cannot be read or does not fit."""
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    except Exception as e:  # noqa: BLE001 - whatever reading or loading the user's file raised
        raise PretrainedWeightsError(weights_file_problem(path, name, e)) from e


def weights_file_problem(path: Path, name: str, e: Exception) -> str:
    """One line for a weights file that timm could not load into model ``name`` (the error
    ``e``): which keys do not fit, or why the file could not be read."""
    import re

    text = str(e)
    todo = f"pass a .safetensors or .pth state dict of {name}, weights=timm or weights=none"
    if text.startswith("Error(s) in loading state_dict"):
        parts = []
        for label, what in (("Missing key(s)", "of the model's tensors not in the file"),
                            ("Unexpected key(s)", "of the file's tensors not in the model")):
            m = re.search(re.escape(label) + r" in state_dict: (.*)", text)
            if m:
                keys = re.findall(r'"([^"]+)"', m.group(1))
                parts.append(f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        sizes = re.findall(r"size mismatch for ([^:]+):", text)
        if sizes:
            parts.append(f"{len(sizes)} of another shape ({', '.join(sizes[:3])}{', ...' if len(sizes) > 3 else ''})")
        return f"weights file {path} does not fit backbone {name}: {'; '.join(parts) or text.splitlines()[0]}; {todo}"
    first = re.split(r"(?<=[^.]{20})\. ", (text.strip().splitlines() or [""])[0])[0][:200]   # its first sentence
    return f"weights file {path} could not be read as a state dict ({type(e).__name__}: {first}); {todo}"


def _with_state(model: nn.Module, path, what: str) -> nn.Module:
    """Load a (partial) state dict from ``path`` into ``model``: every tensor of the file must
    fit a parameter of the model (a partial file leaves the rest, e.g. a VGG's classifier, as
    initialised); raises PretrainedWeightsError otherwise."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    own = model.state_dict()
    bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise PretrainedWeightsError(f"{path} ({what}) does not fit this model: {', '.join(bad[:4])}")
    model.load_state_dict(state, strict=False)
    return model


def normalisation(backbone: str, weights: object = None) -> tuple[tuple, tuple]:
    """Per-channel input mean and std (0..1 scale) for ``backbone`` with ``weights``: the
    Caffe convention for ``vgg16_hed`` (0..255, ImageNet mean subtracted), else the
    backbone's timm pretrained config's, or 0.5/0.5 for a model timm has no config for."""
    spec = parse_weights(weights)
    if spec.kind == "named" and spec.name == "vgg16_hed":
        from osteo.models.hed import RGB_MEAN_01, STD_01

        return RGB_MEAN_01, STD_01
    cfg = timm.get_pretrained_cfg(backbone)
    if cfg is None:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return tuple(cfg.mean), tuple(cfg.std)


def _vgg_blocks(model: nn.Module) -> list[nn.Sequential]:
    feats = model.features
    ends = []
    for info in model.feature_info:
        idx = int(info["module"].split(".")[1])
        while not isinstance(feats[idx], nn.MaxPool2d):  # the block ends at its max-pool
            idx += 1
        if idx not in ends:
            ends.append(idx)
    blocks, start = [], 0
    for end in ends:
        blocks.append(nn.Sequential(*[feats[i] for i in range(start, end + 1)]))
        start = end + 1
    return blocks


def backbone_blocks(model: nn.Module) -> list[nn.Sequential]:
    """The model's five stages as sequential blocks; the head/pooling is left out.

    Running them in order equals the model's ``forward_features`` (for VGG: ``features``).
    """
    if hasattr(model, "features") and isinstance(model.features, nn.Sequential):
        blocks = _vgg_blocks(model)
    else:
        tops = [m["module"].split(".")[0] for m in model.feature_info]
        children = list(model.named_children())
        blocks, cur, k = [], [], 0
        for name, mod in children:
            if k >= len(tops):
                break
            cur.append(mod)
            if name == tops[k]:
                blocks.append(nn.Sequential(*cur))
                cur, k = [], k + 1
    if len(blocks) != 5:
        raise ModelConfigError(f"expected 5 blocks from feature_info, found {len(blocks)}")
    return blocks


def is_vgg(model: nn.Module) -> bool:
    """True for timm VGG models (thesis head: flatten the conv features)."""
    return hasattr(model, "features") and isinstance(model.features, nn.Sequential)


@torch.no_grad()
def feature_shape(blocks: nn.Module, input_hw: tuple[int, int]) -> tuple[int, int, int]:
    """(C, H, W) of the blocks' output for a 3-channel input of ``input_hw`` pixels."""
    was = blocks.training
    blocks.eval()
    out = blocks(torch.zeros(1, 3, *input_hw))
    blocks.train(was)
    return tuple(out.shape[1:])
