"""Small models with VGG16's exact block layout (2-2-3-3-3 convs, 5 max-pools), for tests and
the CPU demo. Registered with timm so they go through the same creation and weight-loading
path as ``vgg16``."""

from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vgg import VGG, _filter_fn

M = "M"
WIDTHS = {
    # conv widths per block: vgg16 is 64, 128, 256, 512, 512
    "vgg16_tiny": (8, 16, 32, 32, 32),
    "vgg16_slim": (16, 32, 64, 128, 128),
}


def vgg16_layout(widths: tuple[int, int, int, int, int]) -> list:
    """timm VGG cfg list with VGG16's convs per block (2, 2, 3, 3, 3) at the given widths."""
    out: list = []
    for w, n in zip(widths, (2, 2, 3, 3, 3)):
        out += [w] * n + [M]
    return out


def _create(variant: str, pretrained: bool, **kwargs) -> VGG:
    return build_model_with_cfg(
        VGG, variant, pretrained, model_cfg=vgg16_layout(WIDTHS[variant]),
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3, 4, 5)),
        pretrained_filter_fn=_filter_fn, **kwargs)


def _cfg(**kwargs) -> dict:
    return {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
            "crop_pct": 0.875, "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225), "first_conv": "features.0", "classifier": "head.fc", **kwargs}


default_cfgs = generate_default_cfgs({"vgg16_tiny.untrained": _cfg(), "vgg16_slim.untrained": _cfg()})


@register_model
def vgg16_tiny(pretrained: bool = False, **kwargs) -> VGG:
    """VGG16 layout at widths 8-16-32-32-32 (tests)."""
    return _create("vgg16_tiny", pretrained, mlp_ratio=1 / 64, **kwargs)


@register_model
def vgg16_slim(pretrained: bool = False, **kwargs) -> VGG:
    """VGG16 layout at widths 16-32-64-128-128, 1/16 of VGG16's conv FLOPs (CPU demo)."""
    return _create("vgg16_slim", pretrained, mlp_ratio=1 / 64, **kwargs)
