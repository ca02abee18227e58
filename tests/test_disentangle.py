"""Disentanglement metrics: known answers in both settings, the building blocks, seeds and errors.

Known answers: the true factors (plus a little noise) score high on every metric, pure noise scores
near 0 (near chance for the classifier scores), duplicated factors bring MIG and SAP down, and a
permutation with rescaling of the true factors keeps every score high. Point counts are small so
the file runs in seconds; the benchmark measures the defaults.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mutual_info_score

from celeb import disentangle as dl
from celeb.data.schema import ATTR_FILE

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "celeba-annotations"

# DCI fits 100 boosted trees per factor (and per class), so it gets its own, smaller tests.
SMALL = dict(num_train=1000, num_eval=500, metrics=("beta_vae", "factor_vae", "mig", "sap"), progress=False)
SIZES = (2, 2, 3, 2, 4, 2, 2, 3)  # 8 factors: chance for the β-VAE/FactorVAE classifiers is 1/8
DCI_SMALL = dict(num_train=400, num_test=200, progress=False)


def _represent(kind: str, seed: int = 0):
    """A representation of the toy observations (factor codes scaled to [0, 1])."""
    rng = np.random.default_rng(seed)

    def represent(x):
        d = x.shape[1]
        noise = 0.02 * rng.standard_normal(x.shape)
        if kind == "true":
            return x + noise
        if kind == "noise":
            return rng.standard_normal(x.shape)
        if kind == "duplicate":
            return np.concatenate([x + noise, x + 0.02 * rng.standard_normal(x.shape)], axis=1)
        if kind == "permuted":
            return (x + noise)[:, ::-1] * np.delete(np.linspace(-3, 3, d + 1), d // 2)
        raise ValueError(kind)

    return represent


@pytest.fixture(scope="module")
def synthetic_scores():
    gt = dl.grid_ground_truth(SIZES)
    kinds = ("true", "noise", "duplicate", "permuted")
    return {kind: dl.evaluate_synthetic(_represent(kind), gt, seed=0, **SMALL) for kind in kinds}


HIGH_SYNTHETIC = ("beta_vae", "factor_vae", "mig")
DCI_KEYS = ("dci_disentanglement", "dci_completeness", "dci_informativeness")


@pytest.mark.parametrize("kind", ["true", "permuted"])
def test_synthetic_true_factors_score_high(synthetic_scores, kind):
    scores = synthetic_scores[kind]
    for key in HIGH_SYNTHETIC:
        assert 0.9 <= scores[key] <= 1.0 + 1e-9, (key, scores[key])
    # Discrete SAP's ceiling is 1 - (accuracy of an uninformative latent): ~0.5 for a balanced binary
    # factor and lower for factors with more values, whose classes a 1-D linear classifier only
    # partly separates; 0.9-1.0 is out of reach by the metric's definition, so require most of it.
    assert scores["sap"] >= 0.3


def test_synthetic_noise_scores_low(synthetic_scores):
    scores = synthetic_scores["noise"]
    for key in ("beta_vae", "factor_vae", "mig", "sap"):
        assert 0.0 <= scores[key] <= 0.2, (key, scores[key])


def test_synthetic_duplicates_lower_mig_and_sap(synthetic_scores):
    true, dup = synthetic_scores["true"], synthetic_scores["duplicate"]
    assert dup["mig"] < 0.1 < 0.9 < true["mig"]
    assert dup["sap"] < 0.05 < 0.3 < true["sap"]
    # ...but not the scores that only ask whether some dim identifies the factor
    assert dup["beta_vae"] > 0.9 and dup["factor_vae"] > 0.9


def test_synthetic_sap_on_balanced_binary_factors_reaches_its_ceiling():
    gt = dl.grid_ground_truth((2,) * 4)
    true = dl.sap_synthetic(_represent("true"), gt, 0, 1000, 500, progress=False)
    assert 0.45 <= true["sap"] <= 0.55  # accuracy 1.0 for the right dim vs ~0.5 for the others


@pytest.mark.parametrize("estimator", ["hist", "gbt"])
def test_synthetic_dci_known_answers(estimator):
    gt = dl.grid_ground_truth((2, 2, 3))
    scores = {
        kind: dl.dci_synthetic(_represent(kind), gt, 0, estimator=estimator, **DCI_SMALL)
        for kind in ("true", "permuted", "noise")
    }
    for kind in ("true", "permuted"):
        for key in DCI_KEYS:
            assert 0.9 <= scores[kind][key] <= 1.0 + 1e-9, (kind, key, scores[kind][key])
    assert scores["noise"]["dci_disentanglement"] <= 0.2 and scores["noise"]["dci_completeness"] <= 0.2
    assert scores["noise"]["dci_informativeness"] < np.mean([1 / 2, 1 / 2, 1 / 3]) + 0.1  # ~ guessing


def test_synthetic_rotation_entangles():
    gt = dl.grid_ground_truth((2, 2, 3))
    rotation = np.linalg.qr(np.random.default_rng(3).standard_normal((3, 3)))[0]
    scores = dl.evaluate_synthetic(
        lambda x: x @ rotation, gt, 0, 400, 200, metrics=("mig", "dci"), dci_estimator="hist", progress=False
    )
    assert scores["mig"] < 0.5 and scores["dci_disentanglement"] < 0.6
    assert scores["dci_informativeness"] > 0.9  # the information is all there, just mixed


def test_hist_importance_agrees_with_gbt():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((600, 5))
    y = np.stack([z[:, 2] > 0, z[:, 0] + 0.3 * z[:, 4] > 0], axis=1)
    gbt, _, _ = dl.dci_importance(z[:400], y[:400], z[400:], y[400:], 0, "gbt", progress=False)
    hist, _, _ = dl.dci_importance(z[:400], y[:400], z[400:], y[400:], 0, "hist", progress=False)
    assert np.allclose(hist.sum(axis=0), 1.0)
    assert list(hist.argmax(axis=0)) == list(gbt.argmax(axis=0)) == [2, 0]
    assert hist[4, 1] > hist[1, 1] and hist[4, 1] > hist[3, 1]  # the secondary latent is second


# ---------------------------------------------------------------------------------------------
# Fixed setting


def _fixed_data(kind: str, n: int = 3000, k: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    attributes = rng.random((n, k)) < np.linspace(0.2, 0.5, k)
    a = attributes.astype(float)
    noise = 0.05 * rng.standard_normal((n, k))
    latents = {
        "true": a + noise,
        "noise": rng.standard_normal((n, k)),
        "duplicate": np.concatenate([a + noise, a + 0.05 * rng.standard_normal((n, k))], axis=1),
        "permuted": ((a + noise) * np.delete(np.linspace(-3, 3, k + 1), k // 2))[:, ::-1],
    }[kind]
    return latents, attributes


FIXED_SMALL = dict(
    num_train=2000, num_test=1000, metrics=("beta_vae_approx", "factor_vae_approx", "mig_fixed", "sap_fixed"),
    progress=False,
)


@pytest.fixture(scope="module")
def fixed_scores():
    kinds = ("true", "noise", "duplicate", "permuted")
    return {kind: dl.evaluate_fixed(*_fixed_data(kind), None, seed=0, **FIXED_SMALL) for kind in kinds}


HIGH_FIXED = ("beta_vae_approx", "factor_vae_approx", "mig_fixed")


@pytest.mark.parametrize("kind", ["true", "permuted"])
def test_fixed_true_attributes_score_high(fixed_scores, kind):
    scores = fixed_scores[kind]
    for key in HIGH_FIXED:
        assert 0.9 <= scores[key] <= 1.0 + 1e-9, (key, scores[key])
    # balanced accuracy: 1.0 for the copy, 0.5 for an uninformative latent -> SAP ceiling 0.5
    assert 0.45 <= scores["sap_fixed"] <= 0.5 + 1e-9


def test_fixed_noise_scores_low(fixed_scores):
    scores = fixed_scores["noise"]
    for key in ("beta_vae_approx", "factor_vae_approx", "mig_fixed", "sap_fixed"):
        assert 0.0 <= scores[key] <= 0.2, (key, scores[key])


def test_fixed_dci_known_answers():
    """Class-balanced boosting (the faithful GradientBoostingClassifier) on imbalanced attributes."""
    scores = {}
    for kind in ("true", "permuted", "noise"):
        latents, attributes = _fixed_data(kind, n=900, k=3)
        scores[kind] = dl.dci_fixed(latents, attributes, 0, num_train=600, num_test=300, progress=False)
    for kind in ("true", "permuted"):
        for key in ("dci_disentanglement_fixed", "dci_completeness_fixed", "dci_informativeness_fixed"):
            assert 0.9 <= scores[kind][key] <= 1.0 + 1e-9, (kind, key, scores[kind][key])
    assert scores["noise"]["dci_disentanglement_fixed"] <= 0.2 and scores["noise"]["dci_completeness_fixed"] <= 0.2
    assert abs(scores["noise"]["dci_informativeness_fixed"] - 0.5) < 0.07  # balanced accuracy of guessing


def test_fixed_duplicates_lower_mig_and_sap(fixed_scores):
    true, dup = fixed_scores["true"], fixed_scores["duplicate"]
    assert dup["mig_fixed"] < 0.1 and dup["sap_fixed"] < 0.05
    assert true["mig_fixed"] > 0.9 and true["sap_fixed"] > 0.45


def test_fixed_keys_are_apart_from_synthetic(fixed_scores, synthetic_scores):
    assert not set(fixed_scores["true"]) & set(synthetic_scores["true"])
    assert {"beta_vae_approx", "factor_vae_approx", "mig_fixed", "sap_fixed"} <= set(fixed_scores["true"])


def test_fixed_split_is_seeded_and_disjoint():
    train, test = dl.split_rows(100, seed=1)
    assert len(train) == 67 and len(test) == 33 and not set(train) & set(test)
    again, _ = dl.split_rows(100, seed=1)
    other, _ = dl.split_rows(100, seed=2)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    train, test = dl.split_rows(100_000, seed=0, num_train=10_000, num_test=5_000)
    assert len(train) == 10_000 and len(test) == 5_000


def test_fixed_on_real_celeba_attributes():
    """Real attributes are imbalanced and correlated: true copies still beat noise and duplicates."""
    path = SHARED / "first20000" / ATTR_FILE
    if not path.exists():
        pytest.skip(f"{path} not present")
    table = pd.read_csv(path, sep=r"\s+", skiprows=2, header=None, index_col=0, nrows=4000)
    header = path.read_text().splitlines()[1].split()
    names = ["Smiling", "Male", "Eyeglasses", "Blond_Hair", "Wearing_Hat", "Bangs", "Black_Hair", "Wavy_Hair"]
    attributes = table.to_numpy()[:, [header.index(n) for n in names]] > 0
    rng = np.random.default_rng(0)
    true = attributes + 0.05 * rng.standard_normal(attributes.shape)
    kwargs = FIXED_SMALL
    scores = {
        "true": dl.evaluate_fixed(true, attributes, names, 0, **kwargs),
        "noise": dl.evaluate_fixed(rng.standard_normal(true.shape), attributes, names, 0, **kwargs),
        "duplicate": dl.evaluate_fixed(np.concatenate([true, true[:, ::-1]], axis=1), attributes, names, 0, **kwargs),
    }
    assert scores["true"]["mig_fixed"] > 0.9 and scores["noise"]["mig_fixed"] < 0.05
    assert scores["true"]["beta_vae_approx"] > 0.8 > 0.3 > scores["noise"]["beta_vae_approx"]
    assert scores["true"]["factor_vae_approx"] > 0.8 > 0.3 > scores["noise"]["factor_vae_approx"]
    assert scores["duplicate"]["mig_fixed"] < 0.05 and scores["duplicate"]["sap_fixed"] < 0.05


# ---------------------------------------------------------------------------------------------
# Building blocks


def test_discrete_mutual_info_matches_sklearn():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 20, (2000, 3))
    factors = np.stack([codes[:, 0] % 4, rng.integers(0, 3, 2000)], axis=1)
    ours = dl.discrete_mutual_info(codes, factors)
    reference = [[mutual_info_score(factors[:, k], codes[:, d]) for k in range(2)] for d in range(3)]
    assert np.allclose(ours, reference, atol=1e-12)
    assert np.allclose(dl.discrete_entropy(factors), [mutual_info_score(f, f) for f in factors.T])


def test_histogram_discretize_is_disentanglement_libs():
    x = np.random.default_rng(0).standard_normal((500, 3)) * [1, 10, 0.1]
    expected = np.stack([np.digitize(c, np.histogram(c, 20)[1][:-1]) - 1 for c in x.T], axis=1)
    codes = dl.histogram_discretize(x, 20)
    assert np.array_equal(codes, expected) and codes.min() == 0 and codes.max() == 19


def test_dci_scores_of_known_importance_matrices():
    assert dl.disentanglement(np.eye(3)) == pytest.approx(1.0) and dl.completeness(np.eye(3)) == pytest.approx(1.0)
    assert dl.disentanglement(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-9)
    # two latents share factor 0: each latent is pure, factor 0 is spread over 2 of 3 latents
    r = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert dl.disentanglement(r) == pytest.approx(1.0)
    assert dl.completeness(r) == pytest.approx(2 / 3 * (1 - np.log(2) / np.log(3)) + 1 / 3)


def test_top_two_gap():
    assert dl.top_two_gap(np.array([[0.9, 0.5], [0.6, 0.5], [0.1, 0.4]])) == pytest.approx((0.3 + 0.0) / 2)


# ---------------------------------------------------------------------------------------------
# Seeds


def test_same_seed_same_numbers_and_streams_are_per_metric():
    gt = dl.grid_ground_truth((2, 3, 2))

    def represent(x):  # deterministic, so only the metrics' own randomness matters
        return np.tanh(x @ np.array([[1.0, 0.2, 0.0], [0.3, 1.0, 0.1], [0.0, 0.5, 1.0]]))

    kwargs = dict(num_train=200, num_eval=100, dci_estimator="hist", progress=False)
    first = dl.evaluate_synthetic(represent, gt, seed=5, **kwargs)
    assert dl.evaluate_synthetic(represent, gt, seed=5, **kwargs) == first
    other = dl.evaluate_synthetic(represent, gt, seed=6, **kwargs)
    assert any(other[k] != first[k] for k in first)
    alone = dl.evaluate_synthetic(represent, gt, seed=5, metrics=("sap",), **kwargs)
    assert alone["sap"] == first["sap"]

    latents, attributes = _fixed_data("permuted", n=450, k=3)
    latents = latents + np.random.default_rng(1).standard_normal(latents.shape)
    fixed_kwargs = dict(num_train=300, num_test=150, progress=False)
    a = dl.evaluate_fixed(latents, attributes, None, 3, **fixed_kwargs)
    assert dl.evaluate_fixed(latents, attributes, None, 3, **fixed_kwargs) == a
    b = dl.evaluate_fixed(latents, attributes, None, 4, **fixed_kwargs)
    assert any(a[k] != b[k] for k in a)


# ---------------------------------------------------------------------------------------------
# Errors


def test_ground_truth_validation():
    with pytest.raises(ValueError, match="at least 2 factors"):
        dl.GroundTruth(("a",), (3,), lambda n, r: None, lambda f, r: None)
    with pytest.raises(ValueError, match=r"factor\(s\) \['b'\] have fewer than 2 values"):
        dl.GroundTruth(("a", "b"), (3, 1), lambda n, r: None, lambda f, r: None)
    bad = dl.GroundTruth(("a", "b"), (2, 2), lambda n, r: r.random((n, 2)), lambda f, r: f)
    with pytest.raises(ValueError, match="integer codes"):
        dl.mig_synthetic(lambda x: x, bad, 0, num_train=10, progress=False)


def test_represent_with_wrong_shape_is_named():
    gt = dl.grid_ground_truth((2, 2))
    with pytest.raises(ValueError, match=r"represent\(\) must return \(n, num_latents\)"):
        dl.mig_synthetic(lambda x: x[:-1], gt, 0, num_train=10, progress=False)


def test_fixed_input_errors():
    latents, attributes = _fixed_data("true", n=200, k=3)
    with pytest.raises(ValueError, match="attributes > 0"):
        dl.evaluate_fixed(latents, np.where(attributes, 1, -1), None, 0, progress=False)
    constant = attributes.copy()
    constant[:, 1] = False
    with pytest.raises(ValueError, match=r"\['Bald'\] take one value"):
        dl.evaluate_fixed(latents, constant, ["Smiling", "Bald", "Male"], 0, progress=False)
    with pytest.raises(ValueError, match="same N"):
        dl.evaluate_fixed(latents[:10], attributes, None, 0, progress=False)
    with pytest.raises(ValueError, match="unknown metric"):
        dl.evaluate_fixed(latents, attributes, None, 0, metrics=("mig",), progress=False)
    with pytest.raises(ValueError, match="unknown DCI estimator"):
        dl.dci_fixed(latents, attributes, 0, estimator="xgb", progress=False)


# ---------------------------------------------------------------------------------------------
# Synthetic faces


def test_synth_faces_adapter():
    names = ("background_hue", "background_value", "male")
    gt = dl.synth_ground_truth(names, num_bins=4, num_reference=2000)
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

    backgrounds = dl.synth_ground_truth(("background_hue", "background_value"), 4, 0, 2000)
    assert dl.mig_synthetic(corner_hue_and_value, backgrounds, 0, num_train=200, progress=False)["mig"] > 0.6
    swapped = dl.mig_synthetic(
        lambda obs: corner_hue_and_value(obs)[:, ::-1], backgrounds, 0, num_train=200, progress=False
    )
    assert swapped["mig"] > 0.6  # MIG does not care which dim carries which factor
