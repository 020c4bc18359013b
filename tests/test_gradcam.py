import numpy as np
import pytest
import torch

from osteo.gradcam import border_band_ratio, cortex_soft_masses, cortex_soft_ratio, grad_cams
from osteo.models.module import DprClassifier


class OneRegion(torch.nn.Module):
    """A classifier that only sees columns c0:c1 of its input (everything else zeroed)."""

    def __init__(self, model, c0, c1):
        super().__init__()
        self.model, self.c0, self.c1 = model, c0, c1
        self.frozen, self.trainable, self.pool = model.frozen, model.trainable, model.pool

    def forward(self, x):
        mask = torch.zeros_like(x)
        mask[..., self.c0:self.c1] = 1
        return self.model(x * mask)


def test_cam_has_roi_size_and_works_with_all_blocks_frozen():
    torch.manual_seed(0)
    for depth in (0, 2):
        m = DprClassifier("vgg16_tiny", depth=depth, input_hw=(70, 350))
        m.train()
        cams = grad_cams(m, torch.randn(3, 3, 70, 350))
        assert cams.shape == (3, 70, 350)
        assert np.isfinite(cams).all() and cams.max() > 0
        assert m.training  # training mode restored


def test_planted_region_is_localised():
    torch.manual_seed(0)
    m = DprClassifier("vgg16_tiny", depth=2, input_hw=(70, 350))
    wrapped = OneRegion(m, 200, 300)
    x = torch.rand(4, 3, 70, 350) * 2
    cams = grad_cams(wrapped, x, targets=[1, 1, 0, 0])
    col = cams.sum(axis=1)  # [B, W]: CAM mass per ROI column
    share = lambda a, b: col[:, a:b].sum(1) / col.sum(1)  # noqa: E731
    assert (200 <= col.argmax(1)).all() and (col.argmax(1) < 300).all()  # peak inside the region
    assert (share(200, 300) > 0.5).all()  # the region is 2/7 of the width
    assert (share(0, 120) < 0.02).all()  # nothing beyond the last block's receptive field


def test_border_band_ratio():
    cam = np.zeros((70, 350), np.float32)
    rows = np.full(350, 40.0)
    cam[38:43] = 1.0  # all mass on the border
    r = border_band_ratio(cam, rows, band_px=5)
    assert r == pytest.approx(70 / 11)  # band is 11 of 70 rows
    assert border_band_ratio(np.ones((70, 350)), rows, 5) == 1.0


def test_cortex_soft_masses_split_the_map_at_the_border():
    cam = np.zeros((70, 350), np.float32)
    rows = np.full(350, 40.0)
    cam[34:40] = 2.0   # the 6 rows above the border (the cortex, 6 px wide)
    cam[40:46] = 0.5   # the 6 rows below it
    cam[0:10] = 9.0    # far above: neither
    cortex, soft = cortex_soft_masses(cam, rows, 6.0)
    assert (cortex, soft) == pytest.approx((2.0 * 6 * 350, 0.5 * 6 * 350))
    assert cortex_soft_ratio(cam, rows, 6.0) == pytest.approx(4.0)
    # a per-column width: where it is 0, that column counts for neither side
    widths = np.full(350, 6.0)
    widths[:175] = 0.0
    assert cortex_soft_masses(cam, rows, widths) == pytest.approx((2.0 * 6 * 175, 0.5 * 6 * 175))
    cam[40:46] = 0.0
    assert np.isnan(cortex_soft_ratio(cam, rows, 6.0))  # nothing below: no ratio


@pytest.mark.parametrize("depth", [0, 2])
def test_one_pass_cams_equal_pytorch_grad_cam(depth):
    """predict's one-pass Grad-CAM (forward shared with the prediction, backward through the
    head only) gives pytorch-grad-cam's maps and the model's own probabilities."""
    from osteo.gradcam import probs_cams_features

    torch.manual_seed(0)
    m = DprClassifier("vgg16_tiny", depth=depth, input_hw=(70, 350)).eval()
    x = torch.randn(3, 3, 70, 350)
    probs, maps, feats = probs_cams_features(m, x)
    ref = grad_cams(m, x)
    assert maps.shape == ref.shape == (3, 70, 350)
    assert np.abs(maps - ref).max() < 1e-5
    with torch.no_grad():
        assert np.allclose(probs, m(x).softmax(1)[:, 1].numpy(), atol=1e-6)
    assert feats.shape == (3, 2 * (8 + 16 + 32 + 32 + 32))  # each block output's channel means and SDs
