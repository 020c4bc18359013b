import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from osteo.stats import (delong_ci, delong_cov, delong_paired, expected_calibration_error, holm,
                         mean_roc, threshold_for_sensitivity)


def data(n=300, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.45).astype(int)
    a = y * 1.0 + rng.normal(0, 1.0, n)
    b = 0.6 * a + y * 0.3 + rng.normal(0, 0.8, n)  # correlated with a
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b


@pytest.mark.parametrize("ties", [False, True])
def test_delong_auc_equals_sklearn(ties):
    y, a, b = data(ties=ties)
    aucs, _ = delong_cov(y, np.vstack([a, b]))
    assert aucs[0] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert aucs[1] == pytest.approx(roc_auc_score(y, b), abs=1e-12)


def test_delong_variance_and_paired_test_agree_with_bootstrap():
    y, a, b = data(n=300, seed=1)
    aucs, cov = delong_cov(y, np.vstack([a, b]))
    rng = np.random.default_rng(5)
    boot = []
    for _ in range(3000):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() == y[i].max():
            continue
        boot.append((roc_auc_score(y[i], a[i]), roc_auc_score(y[i], b[i])))
    boot = np.array(boot)
    assert cov[0, 0] == pytest.approx(boot[:, 0].var(), rel=0.15)
    assert cov[1, 1] == pytest.approx(boot[:, 1].var(), rel=0.15)
    d = boot[:, 0] - boot[:, 1]
    assert cov[0, 0] + cov[1, 1] - 2 * cov[0, 1] == pytest.approx(d.var(), rel=0.15)
    res = delong_paired(y, a, b)
    from scipy import stats

    p_boot = 2 * stats.norm.sf(abs(res["diff"]) / d.std())
    assert res["p"] == pytest.approx(p_boot, abs=0.03)
    auc, lo, hi = delong_ci(y, a)
    q = np.quantile(boot[:, 0], [0.025, 0.975])
    assert lo == pytest.approx(q[0], abs=0.015) and hi == pytest.approx(q[1], abs=0.015)


def test_paired_test_of_identical_scores():
    y, a, _ = data()
    assert delong_paired(y, a, a)["p"] == 1.0


def test_holm():
    assert np.allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    assert np.allclose(holm([0.5, 0.9]), [1.0, 1.0])  # monotone: never below an earlier step
    assert np.allclose(holm([0.2, 0.01]), [0.2, 0.02])


def test_ece_of_perfectly_calibrated_and_overconfident():
    rng = np.random.default_rng(0)
    p = rng.random(200000)
    y = (rng.random(200000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.clip(p * 2 - 0.5, 0, 1)) > 0.1


def test_threshold_for_sensitivity():
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.5, 0.1])
    t = threshold_for_sensitivity(y, p, 0.75)
    assert t == 0.7 and (p[y == 1] >= t).mean() == 0.75


def test_mean_roc_endpoints():
    g, m, sd = mean_roc([(np.array([0, 0.5, 1]), np.array([0, 0.8, 1])), (np.array([0, 1]), np.array([0, 1]))])
    assert m[0] == 0 and m[-1] == 1 and m[50] == pytest.approx(0.65)
