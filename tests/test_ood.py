"""The input-shift detector's shrunk precision: the Woodbury route equals sklearn's LedoitWolf."""

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from osteo.ood import fit, ledoit_wolf_precision, score


@pytest.mark.parametrize("n,d", [(40, 120), (150, 60)])  # fewer images than statistics, and more
def test_precision_equals_sklearns_ledoit_wolf(n, d):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal(d)
    mean, precision = ledoit_wolf_precision(x)
    lw = LedoitWolf().fit(x)
    assert np.allclose(mean, lw.location_)
    assert np.allclose(precision, lw.precision_, rtol=1e-6, atol=1e-8 * np.abs(lw.precision_).max())


def test_the_detector_flags_what_lies_outside_the_training_statistics():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((300, 80)) @ rng.standard_normal((80, 80)) * 0.2
    det = fit(base[:200], base[200:260], 99.0)
    inside = score(det, base[260:])
    outside = score(det, rng.standard_normal((20, 80)) * 3)
    assert (inside <= 1).mean() >= 0.9 and (outside > 1).all()
