"""The synthetic setting's ground truth: its validation, the checks of what `represent` returns, and
the adapter of the synthetic faces."""

import numpy as np
import pandas as pd
import pytest

from celeb.evaluation.disentanglement.ground_truth import (GroundTruth, factor_codes, grid_ground_truth,
                                                          synth_ground_truth)
from celeb.evaluation.disentanglement.mig import mig_synthetic


def test_ground_truth_validation():
    with pytest.raises(ValueError, match="at least 2 factors"):
        GroundTruth(("a",), (3,), lambda n, r: None, lambda f, r: None)
    with pytest.raises(ValueError, match=r"factor\(s\) \['b'\] have fewer than 2 values"):
        GroundTruth(("a", "b"), (3, 1), lambda n, r: None, lambda f, r: None)
    bad = GroundTruth(("a", "b"), (2, 2), lambda n, r: r.random((n, 2)), lambda f, r: f)
    with pytest.raises(ValueError, match="integer codes"):
        mig_synthetic(lambda x: x, bad, 0, num_train=10, progress=False)


def test_represent_with_wrong_shape_is_named():
    gt = grid_ground_truth((2, 2))
    with pytest.raises(ValueError, match=r"represent\(\) must return \(n, num_latents\)"):
        mig_synthetic(lambda x: x[:-1], gt, 0, num_train=10, progress=False)


def test_synth_faces_adapter():
    names = ("background_hue", "background_value", "male")
    gt = synth_ground_truth(names, num_bins=4, num_reference=2000)
    assert gt.factor_sizes == (4, 4, 2)
    rng = np.random.default_rng(0)
    codes = gt.sample_factors(6, rng)
    codes[:, 0] = 2  # hold background_hue fixed
    observed = gt.observe(codes, rng)
    assert observed["images"].shape == (6, 218, 178, 3) and observed["images"].dtype == np.uint8
    assert observed["factors"]["background_hue"].nunique() == 1
    assert list(observed["factors"]["male"]) == list(codes[:, 2].astype(bool))
    # the top-left pixel shows the plain background, hsv(background_hue, 0.3, background_value)
    from matplotlib.colors import rgb_to_hsv

    def corner_hue_and_value(obs):
        hsv = rgb_to_hsv(obs["images"][:, 2, 2, :] / 255.0)
        return hsv[:, [0, 2]]

    backgrounds = synth_ground_truth(("background_hue", "background_value"), 4, 0, 2000)
    assert mig_synthetic(corner_hue_and_value, backgrounds, 0, num_train=200, progress=False)["mig"] > 0.6
    swapped = mig_synthetic(
        lambda obs: corner_hue_and_value(obs)[:, ::-1], backgrounds, 0, num_train=200, progress=False
    )
    assert swapped["mig"] > 0.6  # MIG does not care which dim carries which factor


def test_factor_codes_keep_classes_and_bin_continuous_factors_by_quantile():
    table = pd.DataFrame({"male": [True, False, True, False, True, False, True, False],
                          "hair_color": [3, 1, 3, 0, 1, 1, 0, 3],
                          "tilt": [0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]})
    codes = factor_codes(table, ["hair_color", "male", "tilt"], num_bins=2)
    assert codes[:, 0].tolist() == [2, 1, 2, 0, 1, 1, 0, 2]  # class indices in sorted order
    assert codes[:, 1].tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    assert codes[:, 2].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]  # below and above the median
