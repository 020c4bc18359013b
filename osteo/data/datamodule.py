"""The LightningDataModule: manifest -> cached ROIs -> patient-level splits -> dataloaders."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from osteo.cli import warn_once
from osteo.data.cache import build_roi_cache
from osteo.data.manifest import handle_bad_rows, load_manifest
from osteo.data.normalise import normalise
from osteo.data.splits import check_split_sizes, fold_indices, split_file

log = logging.getLogger(__name__)


class RoiDataset(Dataset):
    """Cached uint8 ROIs as dicts ``x`` (uint8 [1, h, w]), ``y`` (0/1), ``idx`` (manifest row);
    with ``features``, ``z`` (float32 frozen-prefix activations) instead of ``x``; with
    ``covariates`` (float32 [N, k], standardised), ``c`` as well."""

    def __init__(self, rois: np.ndarray, labels: np.ndarray, indices: np.ndarray, transform=None,
                 features: np.ndarray | None = None, covariates: np.ndarray | None = None):
        self.rois, self.labels, self.indices, self.transform = rois, labels, indices, transform
        self.features = features  # frozen-prefix activations [N, C, h, w]: yields "z" instead of "x"
        self.covariates = covariates

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(self.indices[i])
        item: dict[str, Any] = {"y": int(self.labels[j]), "idx": j}
        if self.covariates is not None:
            item["c"] = torch.from_numpy(self.covariates[j])
        if self.features is not None:  # stored in half precision on disk, served as float32
            item["z"] = torch.from_numpy(np.asarray(self.features[j], dtype=np.float32))
            return item
        img = self.rois[j]
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        item["x"] = torch.from_numpy(np.ascontiguousarray(img))[None]
        return item


class DprDataModule(pl.LightningDataModule):
    """ROIs of one dataset and one CV fold.

    ``manifest=None`` uses the built-in phantom set (generated on first use under
    ``phantom.out_dir``). ``fold`` picks the validation part; the test set is the same for
    every fold. Batches are dicts ``x`` (float [B, 3, h, w], normalised with ``mean``/``std``,
    0..1 scale), ``y``, ``idx``, and with ``covariates`` (manifest columns) ``c`` (float
    [B, k], standardised with this fold's training rows; ``covariate_transform`` holds the
    transform; ``covariates_missing``: ``error`` names the rows, ``impute`` fills with the
    training rows' median and logs the count).

    ``prepare_data`` does the one-time disk work (phantoms, ROI cache, split file; each under
    a lock, so parallel jobs do it once); ``setup`` reads it into memory.
    """

    def __init__(self, manifest: str | None, phantom: Mapping, label: Mapping, roi: Mapping,
                 split: Mapping, fold: int = 0, batch_size: int = 16, num_workers: int = 0,
                 augment: Sequence | None = None, skip_bad_rows: bool = False,
                 cache_dir: str = "outputs/cache", mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5), progress: bool = True,
                 workers: int | None = None, anatomy: Mapping | None = None,
                 covariates: Sequence[str] = (), covariates_missing: str = "error"):
        super().__init__()
        self.manifest_path = manifest
        self.phantom = dict(phantom or {})
        self.label_cfg = dict(label)
        self.roi = {k: (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v)
                    for k, v in dict(roi).items()}
        self.split_cfg = dict(split)
        self.fold = int(fold)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.augment = list(augment) if augment else None
        self.skip_bad_rows = skip_bad_rows
        self.cache_dir = Path(cache_dir)
        self.mean, self.std = tuple(mean), tuple(std)
        self.progress = progress
        self.workers = workers  # processes for phantoms and the ROI cache; None: this job's CPUs
        self.anatomy = (OmegaConf.to_container(anatomy, resolve=True) if OmegaConf.is_config(anatomy)
                        else anatomy)  # the mandible finder's settings (placement=auto)
        self.covariate_names = [str(c) for c in (covariates or [])]
        if covariates_missing not in ("error", "impute"):
            raise ValueError(f"data.covariates_missing={covariates_missing!r}: use error or impute")
        self.covariates_missing = covariates_missing
        self.df: pd.DataFrame | None = None
        self._prepared: tuple | None = None   # _data()'s result: built, checked and reported once
        self.features: np.ndarray | None = None
        self.covariates: np.ndarray | None = None
        self.covariate_transform: dict | None = None

    def use_features(self, features: np.ndarray | None) -> None:
        """Serve cached frozen-prefix activations (one per manifest row) instead of ROIs."""
        if features is not None and self.augment:
            raise ValueError("the activation cache is only valid without augmentation")
        self.features = features

    # ------------------------------------------------------------------ preparation
    def resolve_manifest(self) -> Path:
        """The manifest to use, generating the phantom set when none is given."""
        if self.manifest_path:
            return Path(self.manifest_path)
        from osteo.data.phantom import ensure_phantom

        return ensure_phantom(workers=self.workers, **self.phantom)

    def _data(self) -> tuple[Path, pd.DataFrame, np.ndarray, Path]:
        """(manifest, valid rows, their ROIs, split file), building what is missing on disk.

        Done once per data module: Lightning calls ``prepare_data`` again at every ``fit``,
        ``test`` and ``predict``, and each call read the manifest again and logged its warnings
        (images without a pixel size, flagged or skipped images) again, five times per run."""
        if self._prepared is not None:
            return self._prepared
        self._prepared = self._build()
        return self._prepared

    def _build(self) -> tuple[Path, pd.DataFrame, np.ndarray, Path]:
        path = self.resolve_manifest()
        skipped = self.cache_dir / "skipped" / f"{path.stem}-skipped.csv"
        df = load_manifest(path, self.label_cfg["threshold"], self.label_cfg["inclusive"],
                           self.skip_bad_rows, skipped)
        s = self.split_cfg   # a split these rows cannot give is said before the ROI cache (minutes)
        check_split_sizes(df, s.get("test_per_class"), s.get("test_fraction"), int(s["n_folds"]))
        places: list[dict] = []
        rois, bad = build_roi_cache(df, self.roi, self.cache_dir, num_workers=self.workers,
                                    progress=self.progress, anatomy=self.anatomy, placements_out=places)
        # the box each image was cropped with, and the finder's verdict and cortical width
        place = pd.DataFrame(places, index=df.index)
        df = df.assign(roi_x0=place["roi_x0"], roi_y0=place["roi_y0"], roi_status=place["status"],
                       mcw_mm=place["mcw_mm"], mcw_left_mm=place["mcw_left_mm"],
                       mcw_right_mm=place["mcw_right_mm"])
        if bad:
            handle_bad_rows(path, bad, self.skip_bad_rows, skipped, "image(s) failed", append=True)
            keep = ~df["line"].isin([b[0] for b in bad]).to_numpy()
            df, rois = df[keep].reset_index(drop=True), rois[keep]
        flagged = df["roi_status"].str.startswith("flagged").to_numpy()
        if flagged.any():
            listing = "\n".join(f"  {path.name} line {r.line} ({r.image_rel}): {r.roi_status}"
                                 for r in df[flagged].itertuples())
            skip = self.roi.get("flagged", "skip") == "skip"
            what = (f"{int(flagged.sum())} image(s) where the mandible's border was not found with confidence "
                    f"({'left out' if skip else 'used with the fixed box'}, "
                    f"data.roi.flagged={'skip' if skip else 'include'})")
            warn_once(log, f"{what}:\n{listing}", f"{what}: listed at this process's first run")
            if skip:
                df, rois = df[~flagged].reset_index(drop=True), rois[~flagged]
        split_path = split_file(df, s.get("dir") or self.cache_dir.parent / "splits", int(s["seed"]),
                                s.get("test_per_class"), s.get("test_fraction"), int(s["n_folds"]))
        return path, df.reset_index(drop=True), rois, split_path

    def prepare_data(self) -> None:
        """One-time disk work: phantoms, ROI cache, split file (no state is kept)."""
        self._data()

    def setup(self, stage: str | None = None) -> None:
        """Load the manifest, ROIs and this fold's indices (once)."""
        if self.df is not None:
            return
        self.manifest_file, self.df, self.rois, self.split_path = self._data()
        self.labels = self.df["label"].to_numpy().astype(np.int64)
        self.splits = pd.read_csv(self.split_path, dtype={"patient_id": str, "part": str})
        self.idx = fold_indices(self.splits, self.df, self.fold)
        if self.covariate_names:
            self._setup_covariates()

    def _setup_covariates(self) -> None:
        """Read the covariates, check or impute missing values, and standardise them with
        statistics of this fold's training rows only."""
        from osteo.data.covariates import CovariateError, apply_transform, covariate_matrix, fit_transform, missing_report

        names = self.covariate_names
        raw = covariate_matrix(self.df, names, str(self.manifest_file))
        used = np.concatenate([self.idx[p] for p in ("train", "val", "test")])
        report = missing_report(raw[used], names, self.df["line"].to_numpy()[used])
        if report and self.covariates_missing == "error":
            raise CovariateError(f"{self.manifest_file}: missing covariate values ({report}); fill them in, "
                                 "or set data.covariates_missing=impute (the training rows' median, counted in the log)")
        t = fit_transform(raw[self.idx["train"]], names)
        t["imputed"] = {n: {p: int(np.isnan(raw[self.idx[p], k]).sum()) for p in ("train", "val", "test")}
                        for k, n in enumerate(names)}
        if report:
            log.warning("covariates: imputed with the training rows' median (data.covariates_missing=impute): %s",
                        report)
        self.covariate_transform = t
        self.covariates = apply_transform(raw, t)

    # ------------------------------------------------------------------ loaders
    def _transform(self):
        if not self.augment:
            return None
        import albumentations as A

        return A.Compose(self.augment)

    def dataset(self, part: str, train: bool = False) -> RoiDataset:
        """The dataset of 'train', 'val', 'test' or 'all' (every image)."""
        idx = np.arange(len(self.df)) if part == "all" else self.idx[part]
        return RoiDataset(self.rois, self.labels, idx, self._transform() if train else None, self.features,
                          self.covariates)

    def loader(self, part: str, train: bool = False) -> DataLoader:
        """A DataLoader over 'train', 'val', 'test' or 'all'; ``train`` shuffles and augments.
        Evaluation passes these explicitly: ``trainer.predict(model, dataloaders=dm.loader('test'))``."""
        return DataLoader(self.dataset(part, train), batch_size=self.batch_size, shuffle=train,
                          num_workers=self.num_workers, drop_last=False,
                          persistent_workers=self.num_workers > 0,
                          collate_fn=partial(collate_normalised, mean=self.mean, std=self.std))

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 1, h, w] -> float [B, 3, h, w] with the backbone's mean/std."""
        return normalise(x, self.mean, self.std)


def collate_normalised(items: list[dict], mean: Sequence[float], std: Sequence[float]) -> dict:
    """Batch ``RoiDataset`` items; ROIs ``x`` become float [B, 3, h, w], normalised."""
    batch = default_collate(items)
    if "x" in batch:
        batch["x"] = normalise(batch["x"], mean, std)
    return batch
