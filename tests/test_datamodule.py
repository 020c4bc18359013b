import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import tiny_overrides


def make_dm(compose_cfg, tmp_path, phantom_dir, roi_cache, **extra):
    extra["data.cache_dir"] = roi_cache  # shared: the session's first data module builds the ROIs
    cfg = compose_cfg(tiny_overrides(tmp_path / "out", phantom_dir / "manifest.csv", **extra))
    dm = instantiate(cfg.data)
    dm.progress = False
    dm.setup()
    return cfg, dm


def test_folds_batches_and_normalisation(compose_cfg, tmp_path, phantom_dir, roi_cache):
    cfg, dm = make_dm(compose_cfg, tmp_path, phantom_dir, roi_cache, fold=3)
    assert dm.fold == 3
    assert len(dm.idx["test"]) == 60
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].dtype == torch.float32 and batch["x"].shape[1:] == (3, 70, 350)
    # grey replicated; ImageNet mean/std of the backbone's pretrained config (from the config)
    assert tuple(cfg.data.mean) == (0.485, 0.456, 0.406) and tuple(cfg.data.std) == (0.229, 0.224, 0.225)
    val = next(iter(dm.val_dataloader()))
    x = val["x"]
    raw = torch.from_numpy(dm.rois[val["idx"].numpy()])
    expect0 = (raw.float() / 255 - 0.485) / 0.229
    assert torch.allclose(x[:, 0], expect0, atol=1e-5)
    assert torch.allclose((x[:, 1] * 0.224 + 0.456), (x[:, 2] * 0.225 + 0.406), atol=1e-5)


def test_test_set_identical_across_folds_and_disjoint(compose_cfg, tmp_path, phantom_dir, roi_cache):
    tests, seen_val = [], []
    for k in range(5):
        _, dm = make_dm(compose_cfg, tmp_path, phantom_dir, roi_cache, fold=k)
        tests.append(set(dm.idx["test"]))
        pats = {p: set(dm.df["patient_id"].iloc[dm.idx[p]]) for p in ("train", "val", "test")}
        assert not (pats["train"] & pats["val"]) and not (pats["test"] & (pats["train"] | pats["val"]))
        seen_val.append(set(dm.idx["val"]))
    assert all(t == tests[0] for t in tests)
    assert set().union(*seen_val) | tests[0] == set(range(len(dm.df)))


def test_split_file_is_shared_and_auditable(compose_cfg, tmp_path, phantom_dir, roi_cache):
    _, a = make_dm(compose_cfg, tmp_path, phantom_dir, roi_cache, fold=0)
    _, b = make_dm(compose_cfg, tmp_path, phantom_dir, roi_cache, fold=1)
    assert a.split_path == b.split_path
    sp = pd.read_csv(a.split_path)
    assert {"image", "patient_id", "label", "part", "role_fold0", "role_fold4"} <= set(sp.columns)


def test_augmentation_changes_training_images_only(compose_cfg, tmp_path, phantom_dir, roi_cache):
    cfg, dm = make_dm(compose_cfg, tmp_path, phantom_dir, roi_cache, **{"+data/augment": "light"})
    assert dm.augment and len(dm.augment) == 3
    ds_train, ds_val = dm.dataset("train", train=True), dm.dataset("train")
    torch.manual_seed(0)
    np.random.seed(0)
    diffs = [not torch.equal(ds_train[i]["x"], ds_val[i]["x"]) for i in range(20)]
    assert any(diffs)
    assert torch.equal(dm.dataset("val")[0]["x"], dm.dataset("val")[0]["x"])


def test_bad_image_in_manifest_stops_with_its_line(compose_cfg, tmp_path, phantom_dir, roi_cache):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(phantom_dir, d)
    (d / "images" / "dpr_0003.png").write_bytes(b"broken")
    from osteo.data.manifest import ManifestError

    with pytest.raises(ManifestError, match=r"line 5 .*dpr_0003.png.*not a readable image"):
        make_dm(compose_cfg, tmp_path, d, roi_cache)
    cfg, dm = make_dm(compose_cfg, tmp_path, d, roi_cache, **{"data.skip_bad_rows": "true"})
    assert len(dm.df) == 239


def test_a_split_the_rows_cannot_give_is_said_before_the_roi_cache(compose_cfg, tmp_path, phantom_dir):
    """The split's sizes are checked on the manifest's rows before any image is read: the ROI
    cache of a real data set takes minutes, and the split used to fail only after it."""
    from osteo.data.splits import SplitError

    cfg = compose_cfg(tiny_overrides(tmp_path / "out", phantom_dir / "manifest.csv",
                                     **{"data.split.test_per_class": 200, "data.cache_dir": tmp_path / "cache"}))
    dm = instantiate(cfg.data)
    with pytest.raises(SplitError, match="too few to hold out 200 for testing"):
        dm.setup()
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_data_warnings_are_logged_once_per_run(compose_cfg, tmp_path, phantom_dir, roi_cache, caplog, monkeypatch):
    """Lightning calls prepare_data at fit, test and predict: the manifest is read, and its
    warnings (here: images without a pixel size) logged, once per data module; the next run of
    a sweep in the same process says it in one line (a 15-run sweep of 40 DPRs repeated each
    warning, with its list of images, 15 times)."""
    import logging

    import osteo.cli

    monkeypatch.setattr(osteo.cli, "_SAID", {}, raising=False)   # what earlier tests in this process said

    df = pd.read_csv(phantom_dir / "manifest.csv").drop(columns=["pixel_mm"])
    df["image"] = [str(phantom_dir / p) for p in df["image"]]
    manifest = tmp_path / "no_pixel_size.csv"
    df.to_csv(manifest, index=False)
    cfg = compose_cfg(tiny_overrides(tmp_path / "out", manifest, **{"data.cache_dir": roi_cache}))
    root, opened = logging.getLogger(), []

    def job_log(name):
        """A per-job log file on the root logger in place of the last one, as Hydra opens one for
        each run of a sweep."""
        for h in opened:
            root.removeHandler(h)
        opened.append(logging.FileHandler(tmp_path / name))
        root.addHandler(opened[-1])
        return opened[-1]

    dm = instantiate(cfg.data)
    dm.progress = False
    first = job_log("run0.log")
    try:
        with caplog.at_level(logging.WARNING):
            dm.prepare_data()
            dm.setup()
            dm.prepare_data()
            dm.prepare_data()
        said = [r for r in caplog.records if "have no pixel size" in r.getMessage()]
        assert len(said) == 1 and said[0].getMessage().startswith(f"{len(df)} image(s)")
        assert "no manifest pixel_mm column" in said[0].getMessage()
        caplog.clear()
        again = instantiate(cfg.data)        # the next run of a sweep, in the same job log
        again.progress = False
        with caplog.at_level(logging.WARNING):
            again.prepare_data()
        said = [r.getMessage() for r in caplog.records if "have no pixel size" in r.getMessage()]
        assert said == [f"{len(df)} image(s) have no pixel size: cortical width at 0.1 mm (in full above)"]
        caplog.clear()
        # the run after that has its own job log, where nothing is "above": the line names the first's
        job_log("run1.log")
        third = instantiate(cfg.data)
        third.progress = False
        with caplog.at_level(logging.WARNING):
            third.prepare_data()
        said = [r.getMessage() for r in caplog.records if "have no pixel size" in r.getMessage()]
        assert said == [f"{len(df)} image(s) have no pixel size: cortical width at 0.1 mm "
                        f"(in full in {first.baseFilename})"]
    finally:
        for h in opened:
            root.removeHandler(h)
            h.close()
    assert len(dm.df) == len(df)
