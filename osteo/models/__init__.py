"""Models: timm backbones split into blocks, the thesis head, and the LightningModule.

The small VGGs (vgg16_tiny, vgg16_slim) are registered with timm by ``osteo.models.small_vgg``,
which ``osteo.models.backbones`` imports: importing this package alone loads neither torch nor
timm (``osteo.models.weights`` names run directories and is read before a run checks its
settings).
"""
