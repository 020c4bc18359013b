"""Data: reading DPRs, manifests, ROI extraction, caching, splits and the LightningDataModule."""
