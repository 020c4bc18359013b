"""Shared fixtures: a small phantom set made once per session, and the real configs composed
with tiny overrides.

Under pytest-xdist (``make test`` runs ``-n auto``) the session fixtures that build files (the
phantom sets, the ROI cache, the tiny sweep) are built once for all workers: the first worker to
need one builds it in the run's shared temporary folder under a file lock, the others wait and
read it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _pin_worker_to_its_cpus() -> None:
    """Under pytest-xdist, give each worker its own share of the CPUs (its CPU affinity, which
    the processes it starts inherit): torch and osteo's ``cpus: auto`` then use that share, and
    the workers do not each run as many threads as the machine has CPUs."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    share = max(len(cpus) // int(count), 1)
    start = int(worker.removeprefix("gw")) * share % len(cpus)
    os.sched_setaffinity(0, cpus[start:start + share])


_pin_worker_to_its_cpus()

import pytest  # noqa: E402

N_PHANTOMS = 240


def _once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that ``build`` fills, made once per test session: in a new temporary folder, or
    under pytest-xdist in the folder the workers share (the first builds it under a lock, the
    others wait for it; a build that failed is tried again by the next worker)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        out = tmp_path_factory.mktemp(name)
        build(out)
        return out
    import shutil

    from filelock import FileLock

    out = tmp_path_factory.getbasetemp().parent / name
    with FileLock(f"{out}.lock"):
        if not (out / ".built").exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(out)
            (out / ".built").touch()
    return out


def _phantoms(tmp_path_factory, name: str, **params):
    """N_PHANTOMS full-size phantoms of seed 0 (other ``PhantomParams`` from ``params``) with
    manifest.csv, in a folder made once per session (``_once``)."""
    from osteo.data.phantom import PhantomParams, generate

    return _once(tmp_path_factory, name,
                 lambda out: generate(out, PhantomParams(n=N_PHANTOMS, seed=0, **params), progress=False))


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """240 full-size phantoms (default parameters, seed 0) with manifest.csv."""
    return _phantoms(tmp_path_factory, "phantom")


@pytest.fixture(scope="session")
def clear_phantom_dir(tmp_path_factory):
    """240 full-size phantoms at difficulty 0.5 (half the default's individual noise, blur and
    quantum noise; seed 0): a bone signal clear enough that a tiny model's learning is a check of
    the training loop, not a draw of luck (see tests/test_train.py)."""
    return _phantoms(tmp_path_factory, "phantom-clear", difficulty=0.5)


@pytest.fixture(scope="session")
def roi_cache(tmp_path_factory):
    """A ROI and anatomy cache (``data.cache_dir``) shared by the tests that build data modules
    on the session's phantoms and do not test the cache itself: the first of them builds the
    ROIs (about 25 s for 240 phantoms), the others read them. Activations, splits and runs stay
    in each test's own outputs."""
    return _once(tmp_path_factory, "roi-cache", lambda out: None)


def tiny_overrides(outputs, manifest=None, **extra) -> list[str]:
    """Overrides that make the real config fast: tiny VGG16-layout model, ROI at 0.5 scale."""
    o = [f"paths.outputs={outputs}", "backbone=vgg16_tiny", "data.roi.scale=0.5",
         "data.split.test_per_class=30", "data.batch_size=16", "trainer.max_epochs=2",
         "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]
    if manifest is not None:
        o.append(f"data.manifest={manifest}")
    o += [f"{k}={v}" for k, v in extra.items()]
    return o


@pytest.fixture
def compose_cfg():
    from osteo.config import compose

    return compose


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, phantom_dir, roi_cache):
    """Real runs of two configurations x 2 folds (tiny model, few epochs) under one sweep dir."""
    from osteo.config import compose
    from osteo.train import train

    def build(root: Path) -> None:
        runs = root / "sweeps" / "finetune_depth"
        for depth in (1, 5):
            for fold in (0, 1):
                cfg = compose(tiny_overrides(root, phantom_dir / "manifest.csv", depth=depth, fold=fold,
                                             **{"data.split.n_folds": 2, "trainer.max_epochs": 6,
                                                "model.optimizer.lr": 3e-4, "weights": "none",
                                                "data.cache_dir": roi_cache}))
                train(cfg, runs / f"backbone=vgg16_tiny,depth={depth},fold={fold}")

    return _once(tmp_path_factory, "sweep", build)
