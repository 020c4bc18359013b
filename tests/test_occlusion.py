import numpy as np
import pytest

from osteo.gradcam import cortex_soft_masses
from osteo.occlusion import band_masks, hide_band


def _ramp(n: int = 2, h: int = 20, w: int = 4) -> np.ndarray:
    """ROIs whose every pixel holds its row number."""
    return np.tile(np.arange(h, dtype=np.float32)[None, :, None], (n, 1, w))


def test_hidden_bands_take_the_texture_beyond_them():
    rois, border = _ramp(), np.full((2, 4), 10.0)
    widths = np.array([3.0, 2.0])
    cortex = hide_band(rois, border, widths, "cortex")
    soft = hide_band(rois, border, widths, "soft")
    # image 0: cortex rows 7-9 read rows 4-6; soft rows 10-12 read rows 13-15
    assert cortex[0, :, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 4, 5, 6] + list(range(10, 20))
    assert soft[0, :, 0].tolist() == list(range(10)) + [13, 14, 15] + list(range(13, 20))
    # image 1 (2 rows): rows 8-9 and 10-11
    assert cortex[1, 7:11, 0].tolist() == [7, 6, 7, 10] and soft[1, 9:13, 0].tolist() == [9, 12, 13, 12]
    # rows past the ROI's edge read its last row; the input is untouched
    low = hide_band(rois, np.full((2, 4), 18.0), 3.0, "soft")
    assert low[0, 17:, 0].tolist() == [17, 19, 19] and rois[0, 18, 0] == 18


def test_masks_are_the_bands_grad_cam_statistics_count():
    rng = np.random.default_rng(0)
    border = 12 + 3 * rng.random((3, 30))
    widths = rng.uniform(2, 5, (3, 30))
    cortex, soft = band_masks((25, 30), border, widths)
    cams = rng.random((3, 25, 30))
    for k in range(3):
        assert cortex_soft_masses(cams[k], border[k], widths[k]) == pytest.approx(
            (cams[k][cortex[k]].sum(), cams[k][soft[k]].sum()))
    hidden = hide_band(cams, border, widths, "cortex")
    assert np.array_equal(hidden[~cortex], cams[~cortex]) and not np.array_equal(hidden[cortex], cams[cortex])


def test_blur_and_mean_fills_change_the_band_only():
    rng = np.random.default_rng(1)
    rois = rng.normal(100, 20, (2, 30, 40)).astype(np.float32)
    border, widths = np.full((2, 40), 20.0), np.array([3.0, 4.0])
    cortex, soft = band_masks((30, 40), border, widths)
    for side, mask in (("cortex", cortex), ("soft", soft)):
        flat = hide_band(rois, border, widths, side, "mean")
        for k in range(2):
            assert np.allclose(flat[k][mask[k]], rois[k].mean(), atol=1e-3)
        blurred = hide_band(rois, border, widths, side, "blur")
        # the band keeps its mean grey but loses its texture (noise of SD 20 falls several-fold)
        assert blurred[mask].std() < rois[mask].std() / 3 and abs(blurred[mask].mean() - rois[mask].mean()) < 2
        for hidden in (flat, blurred):
            assert np.array_equal(hidden[~mask], rois[~mask])


def test_unknown_side_or_fill_is_refused():
    with pytest.raises(ValueError, match="side='bone'"):
        hide_band(_ramp(), np.full((2, 4), 10.0), 3.0, "bone")
    with pytest.raises(ValueError, match="fill='zeros': use one of beyond, blur, mean"):
        hide_band(_ramp(), np.full((2, 4), 10.0), 3.0, "cortex", "zeros")
