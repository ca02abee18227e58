"""The discrete information measures behind MIG and the per-dim labels, against sklearn and
disentanglement_lib's discretisation."""

import numpy as np
from sklearn.metrics import mutual_info_score

from celeb.evaluation.disentanglement.information import discrete_entropy, discrete_mutual_info, histogram_discretize


def test_discrete_mutual_info_matches_sklearn():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 20, (2000, 3))
    factors = np.stack([codes[:, 0] % 4, rng.integers(0, 3, 2000)], axis=1)
    ours = discrete_mutual_info(codes, factors)
    reference = [[mutual_info_score(factors[:, k], codes[:, d]) for k in range(2)] for d in range(3)]
    assert np.allclose(ours, reference, atol=1e-12)
    assert np.allclose(discrete_entropy(factors), [mutual_info_score(f, f) for f in factors.T])


def test_histogram_discretize_is_disentanglement_libs():
    x = np.random.default_rng(0).standard_normal((500, 3)) * [1, 10, 0.1]
    expected = np.stack([np.digitize(c, np.histogram(c, 20)[1][:-1]) - 1 for c in x.T], axis=1)
    codes = histogram_discretize(x, 20)
    assert np.array_equal(codes, expected) and codes.min() == 0 and codes.max() == 19
