"""osteo.settings: the train command's numbers, checked on the real configs before a run reads anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from osteo.config import CONF_DIR, compose
from osteo.settings import REPORT_RULES, RULES, SettingError, check_settings


SHIPPED = ([[]] + [[f"experiment={p.stem}"] for p in sorted((Path(CONF_DIR) / "experiment").glob("*.yaml"))]
           + [[f"+sweep={p.stem}"] for p in sorted((Path(CONF_DIR) / "sweep").glob("*.yaml"))])


@pytest.mark.parametrize("overrides", SHIPPED, ids=lambda o: " ".join(o) or "default")
def test_every_shipped_config_passes(overrides):
    cfg = compose(overrides)
    check_settings(cfg)
    missing = [k for k in RULES if k not in ("data.split.test_fraction",) and _select(cfg, k) is KeyError]
    assert not missing, f"rules for settings the config does not have: {missing}"


def _select(cfg, key):
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=KeyError)


@pytest.mark.parametrize("override,line", [
    ("data.batch_size=0", "data.batch_size=0: give a whole number of 1 or more"),
    ("data.batch_size=2.5", "data.batch_size=2.5: give a whole number"),
    ("data.roi.scale=-0.5", "data.roi.scale=-0.5: give a number above 0"),
    ("data.split.n_folds=1", "data.split.n_folds=1: give a whole number of 2 or more"),
    ("data.split.test_fraction=1.5", "data.split.test_fraction=1.5: give a fraction between 0 and 1"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0: give a whole number of 1 or more"),
    ("trainer.accelerator=tpu", "trainer.accelerator=tpu: give auto, cpu, gpu or cuda"),
    ("model.optimizer.lr=abc", "model.optimizer.lr=abc: give a number above 0"),
    ("model.head.dropout=1", "model.head.dropout=1: give a probability"),
    ("seed=true", "seed=True: give a whole number"),
    ("cpus=0", "cpus=0: give auto or a whole number of 1 or more"),
    ("ignore_warnings=['a(']", "ignore_warnings=['a(']: give a list of regular expressions"),
    ("ignore_warnings=5", "ignore_warnings=5: give a list of regular expressions"),
    ("fold=5", "fold=5: give a whole number 0..4 (the validation part of data.split.n_folds=5)"),
    ("fold=-1", "fold=-1: give a whole number 0..4"),
    ("fold=1.5", "fold=1.5: give a whole number 0..4"),
    ("data.fold=7", "data.fold=7: give a whole number 0..4"),
])
def test_a_value_no_run_can_use_is_named_with_what_to_give(override, line):
    with pytest.raises(SettingError) as e:
        check_settings(compose([override]))
    assert str(e.value).startswith(line), str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_every_bad_setting_gets_its_own_line():
    with pytest.raises(SettingError) as e:
        check_settings(compose(["data.batch_size=0", "model.optimizer.lr=-1", "trainer.max_epochs=-1"]))
    assert str(e.value).splitlines() == ["data.batch_size=0: give a whole number of 1 or more",
                                         "model.optimizer.lr=-1: give a number above 0"]   # max_epochs -1 is allowed


def test_the_report_config_passes_and_its_numbers_are_checked():
    check_settings(compose([], config_name="report"), REPORT_RULES)
    for override, line in [("report.sensitivity_target=90", "report.sensitivity_target=90: give a sensitivity between 0 and 1"),
                           ("report.gradcam.target_blocks=[6]", "report.gradcam.target_blocks=[6]: give a list of blocks 1..5"),
                           ("report.gradcam.target_blocks=[]", "report.gradcam.target_blocks=[]: give a list"),
                           ("report.calibration_bins=1", "report.calibration_bins=1: give a whole number of 2 or more")]:
        with pytest.raises(SettingError, match=line.replace("[", r"\[").replace("]", r"\]")):
            check_settings(compose([override], config_name="report"), REPORT_RULES)
