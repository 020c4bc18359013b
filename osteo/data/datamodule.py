"""The LightningDataModule: manifest -> cached ROIs -> patient-level splits -> dataloaders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from osteo.data.cache import build_roi_cache
from osteo.data.manifest import handle_bad_rows, load_manifest
from osteo.data.splits import fold_indices, split_file


class RoiDataset(Dataset):
    """Cached uint8 ROIs as dicts ``x`` (uint8 [1, h, w]), ``y`` (0/1), ``idx`` (manifest row)."""

    def __init__(self, rois: np.ndarray, labels: np.ndarray, indices: np.ndarray, transform=None,
                 features: np.ndarray | None = None):
        self.rois, self.labels, self.indices, self.transform = rois, labels, indices, transform
        self.features = features  # frozen-prefix activations [N, C, h, w]: yields "z" instead of "x"

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(self.indices[i])
        if self.features is not None:
            return {"z": torch.from_numpy(np.array(self.features[j])), "y": int(self.labels[j]), "idx": j}
        img = self.rois[j]
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        return {"x": torch.from_numpy(np.ascontiguousarray(img))[None], "y": int(self.labels[j]), "idx": j}


def normalisation(backbone: str, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> tuple[tuple, tuple]:
    """Per-channel mean and std (0..1 scale) for ``backbone``: its timm pretrained config's."""
    if mean is not None and std is not None:
        return tuple(mean), tuple(std)
    import timm

    import osteo.models  # noqa: F401  (registers the small VGG16-layout models)

    cfg = timm.get_pretrained_cfg(backbone)
    if cfg is None:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return tuple(cfg.mean), tuple(cfg.std)


class DprDataModule(pl.LightningDataModule):
    """ROIs of one dataset and one CV fold.

    ``manifest=None`` uses the built-in phantom set (generated on first use under
    ``phantom.out_dir``). ``fold`` picks the validation part; the test set is the same for
    every fold. Batches are dicts ``x`` (float [B, 3, h, w], normalised), ``y``, ``idx``.
    """

    def __init__(self, manifest: str | None, phantom: Mapping, label: Mapping, roi: Mapping,
                 split: Mapping, fold: int = 0, batch_size: int = 16, num_workers: int = 0,
                 augment: Sequence | None = None, skip_bad_rows: bool = False,
                 cache_dir: str = "outputs/cache", backbone: str = "vgg16",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 progress: bool = True):
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
        self.mean, self.std = normalisation(backbone, mean, std)
        self.progress = progress
        self.df: pd.DataFrame | None = None
        self.features: np.ndarray | None = None
        self.predict_part = "all"  # what predict_dataloader serves: 'train', 'val', 'test' or 'all'

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

        return ensure_phantom(**self.phantom)

    def prepare_data(self) -> None:
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.df is not None:
            return
        path = self.resolve_manifest()
        skipped = self.cache_dir / "skipped" / f"{path.stem}-skipped.csv"
        df = load_manifest(path, self.label_cfg["threshold"], self.label_cfg["inclusive"],
                           self.skip_bad_rows, skipped)
        rois, bad = build_roi_cache(df, self.roi, self.cache_dir, progress=self.progress)
        if bad:
            handle_bad_rows(path, bad, self.skip_bad_rows, skipped, "image(s) failed", append=True)
            keep = ~df["line"].isin([b[0] for b in bad]).to_numpy()
            df, rois = df[keep].reset_index(drop=True), rois[keep]
        self.manifest_file = path
        self.df, self.rois = df.reset_index(drop=True), rois
        self.labels = self.df["label"].to_numpy().astype(np.int64)
        s = self.split_cfg
        self.split_path = split_file(self.df, s.get("dir") or self.cache_dir.parent / "splits",
                                     int(s["seed"]), s.get("test_per_class"), s.get("test_fraction"),
                                     int(s["n_folds"]))
        self.splits = pd.read_csv(self.split_path, dtype={"patient_id": str, "part": str})
        self.idx = fold_indices(self.splits, self.df, self.fold)

    # ------------------------------------------------------------------ loaders
    def _transform(self):
        if not self.augment:
            return None
        import albumentations as A

        return A.Compose(self.augment)

    def dataset(self, part: str, train: bool = False) -> RoiDataset:
        """The dataset of 'train', 'val', 'test' or 'all' (every image)."""
        idx = np.arange(len(self.df)) if part == "all" else self.idx[part]
        return RoiDataset(self.rois, self.labels, idx, self._transform() if train else None, self.features)

    def _loader(self, part: str, train: bool = False) -> DataLoader:
        return DataLoader(self.dataset(part, train), batch_size=self.batch_size, shuffle=train,
                          num_workers=self.num_workers, drop_last=False,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_part)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 1, h, w] -> float [B, 3, h, w] with the backbone's mean/std."""
        return normalise(x, self.mean, self.std)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if "x" in batch and batch["x"].dtype == torch.uint8:
            batch["x"] = self.normalise(batch["x"])
        return batch


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 grey [B, 1, h, w] -> float32 [B, 3, h, w]: grey replicated, then (x/255 - mean)/std."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float().div_(255.0).expand(-1, len(mean), -1, -1) - m) / s
