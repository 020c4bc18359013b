"""Models: timm backbones split into blocks, the thesis head, and the LightningModule."""

from osteo.models import small_vgg  # noqa: F401  (registers vgg16_tiny / vgg16_slim with timm)
