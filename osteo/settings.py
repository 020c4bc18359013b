"""The numbers (and warning filters) a user sets on the train command line, checked before a run
reads anything.

One rule per setting (``RULES``): a setting whose value the rule does not accept is a user's
mistake, reported as one line per setting (``SettingError``) instead of the traceback that
torch, scikit-learn or Lightning would give minutes later; rules between settings
(``RELATIONS``: the fold among the split's parts) add their lines. The model's other settings
(backbone, pretrained weights) are checked by ``osteo.models.backbones``, which loads timm (a
weights file that does not exist by ``osteo.models.weights``, which does not). This module loads
neither torch nor timm: a mistake here is said in seconds.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf


class SettingError(ValueError):
    """One or more settings with values no run can use; the message has a line for each."""


def is_whole_number(v: object) -> bool:
    """True for an integer value (not a bool, not a float such as 2.5 or 2.0)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


DEPTH_HINT = "give a whole number 0..5 (how many of the backbone's 5 blocks train; 0 trains the head only)"


def is_depth(v: object) -> bool:
    """True for a fine-tune depth: a whole number 0..5 (the backbone's blocks that train)."""
    return is_whole_number(v) and 0 <= v <= 5


def _is_list(v: object) -> bool:
    from omegaconf import ListConfig

    return isinstance(v, (list, tuple, ListConfig))


def _number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def whole_at_least(low: int) -> tuple[Callable[[object], bool], str]:
    return (lambda v: is_whole_number(v) and v >= low), f"give a whole number of {low} or more"


def number_above(low: float) -> tuple[Callable[[object], bool], str]:
    return (lambda v: _number(v) and v > low), f"give a number above {low}"


def _patterns(v: object) -> bool:
    import re

    if not _is_list(v) or not all(isinstance(p, str) for p in v):
        return False
    try:
        for p in v:
            re.compile(p)
    except re.error:
        return False
    return True


# setting -> (accepts(value), what to give instead)
RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "seed": whole_at_least(0),
    "depth": (is_depth, DEPTH_HINT),
    "data.batch_size": whole_at_least(1),
    "data.num_workers": whole_at_least(0),
    "data.roi.scale": number_above(0),
    "data.split.seed": whole_at_least(0),
    "data.split.n_folds": whole_at_least(2),
    "data.split.test_per_class": ((lambda v: v is None or (is_whole_number(v) and v >= 1)),
                                  "give a whole number of 1 or more, or null with data.split.test_fraction"),
    "data.split.test_fraction": ((lambda v: v is None or (_number(v) and 0 < v < 1)),
                                 "give a fraction between 0 and 1, or null"),
    "trainer.accelerator": ((lambda v: v in ("auto", "cpu", "gpu", "cuda")), "give auto, cpu, gpu or cuda"),
    "trainer.max_epochs": ((lambda v: is_whole_number(v) and (v >= 1 or v == -1)),
                           "give a whole number of 1 or more (-1: until early stopping)"),
    "model.optimizer.lr": number_above(0),
    "model.optimizer.weight_decay": ((lambda v: _number(v) and v >= 0), "give a number of 0 or more"),
    "model.head.dropout": ((lambda v: _number(v) and 0 <= v < 1), "give a probability from 0 up to (not) 1"),
    "cpus": ((lambda v: v == "auto" or (is_whole_number(v) and v >= 1)), "give auto or a whole number of 1 or more"),
    "ood_percentile": ((lambda v: _number(v) and 0 < v <= 100), "give a percentile above 0, up to 100"),
    "ignore_warnings": (_patterns, "give a list of regular expressions (quoted strings), or [] to see every warning"),
}


def _blocks(v: object) -> bool:
    return _is_list(v) and len(v) > 0 and all(is_whole_number(b) and 1 <= b <= 5 for b in v)


# the report's settings (python -m osteo.report)
REPORT_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "report.sensitivity_target": ((lambda v: _number(v) and 0 < v < 1), "give a sensitivity between 0 and 1"),
    "report.calibration_bins": whole_at_least(2),
    "report.figure_width": whole_at_least(100),
    "report.box_sheet_images": whole_at_least(0),
    "report.gradcam.per_kind": whole_at_least(0),
    "report.gradcam.max_images": whole_at_least(1),
    "report.gradcam.band_mm": number_above(0),
    "report.gradcam.target_blocks": (_blocks, "give a list of blocks 1..5, e.g. [5, 4] (galleries use the first)"),
}


def fold_in_folds(cfg: DictConfig) -> str | None:
    """The line for a validation fold that is not one of the split's parts 0..n_folds-1, or None
    (also when the config has no fold, or n_folds is itself wrong: its own rule says that). The
    split would say it too, but only after the phantoms and the ROI cache are built (minutes)."""
    fold = OmegaConf.select(cfg, "data.fold", default=None)
    n = OmegaConf.select(cfg, "data.split.n_folds", default=None)
    if fold is None or not (is_whole_number(n) and n >= 2) or (is_whole_number(fold) and 0 <= fold < n):
        return None
    key = "fold" if OmegaConf.select(cfg, "fold", default=None) == fold else "data.fold"
    return f"{key}={fold}: give a whole number 0..{n - 1} (the validation part of data.split.n_folds={n})"


# rules between settings: cfg -> the line for what is wrong, or None
RELATIONS: tuple[Callable[[DictConfig], str | None], ...] = (fold_in_folds,)


def check_settings(cfg: DictConfig, rules: dict = RULES,
                   relations: tuple[Callable[[DictConfig], str | None], ...] = RELATIONS) -> None:
    """Raise ``SettingError`` naming every setting of ``cfg`` that its rule rejects, with its
    value and what to give instead, and every relation between settings that fails;
    settings the config does not have are not checked."""
    bad = []
    for key, (accepts, hint) in rules.items():
        value = OmegaConf.select(cfg, key, default=KeyError)
        if value is KeyError:
            continue
        if not accepts(value):
            bad.append(f"{key}={value}: {hint}")
    bad += [line for line in (relation(cfg) for relation in relations) if line]
    if bad:
        raise SettingError("\n".join(bad))
