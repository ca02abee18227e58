"""Per-dimension evaluation: KL, activity, MI/correlation with attributes, and the labels."""

import numpy as np
import pandas as pd
import pytest

from celeb.evaluation.dimensions import evaluate_dimensions, kl_per_dimension, label_dimensions

NAMES = ["Smiling", "Blond_Hair", "Eyeglasses", "Male"]


def _noisy_copies(seed: int = 0, n: int = 4000):
    """Latents where dims 5, 2, 7 and 0 are noisy copies of the 4 attributes, dims 1 and 3 are used
    noise, and dims 4 and 6 are collapsed to the prior (mu = 0, logvar = 0)."""
    rng = np.random.default_rng(seed)
    prevalence = np.array([0.48, 0.15, 0.065, 0.42])
    attributes = rng.random((n, 4)) < prevalence
    mu = np.zeros((n, 8))
    logvar = np.full((n, 8), -2.0)
    copies = {5: 0, 2: 1, 7: 2, 0: 3}
    for dim, k in copies.items():
        mu[:, dim] = 2.0 * attributes[:, k] - 1.0 + 0.3 * rng.standard_normal(n)
    mu[:, 1], mu[:, 3] = rng.standard_normal(n), rng.standard_normal(n)
    logvar[:, [4, 6]] = 0.0
    mu[:, [4, 6]] = 0.01 * rng.standard_normal((n, 2))
    mu[:, 7] *= -1.0  # a dim may encode its attribute with either sign
    return mu, logvar, attributes, copies


def test_kl_per_dimension_matches_closed_form():
    mu = np.array([[1.0, 0.0], [3.0, 0.0]])
    logvar = np.array([[0.0, np.log(2.0)], [0.0, np.log(2.0)]])
    expected = [0.5 * (1 + 9) / 2, 0.5 * (2 - 1 - np.log(2.0))]
    assert np.allclose(kl_per_dimension(mu, logvar), expected)


def test_table_columns_kl_and_activity():
    mu, logvar, attributes, _ = _noisy_copies()
    table = evaluate_dimensions(mu, logvar, attributes, NAMES)
    assert list(table["dim"]) == list(range(8))
    for name in NAMES:
        assert f"mi_{name}" in table and f"corr_{name}" in table
    assert np.allclose(table["kl"], kl_per_dimension(mu, logvar))
    assert list(table.loc[~table["active"], "dim"]) == [4, 6]
    assert (table.loc[table["active"], "kl"] > 0.5).all()


def test_mi_is_normalised_and_correlation_has_sign():
    mu, logvar, attributes, copies = _noisy_copies()
    table = evaluate_dimensions(mu, logvar, attributes, NAMES).set_index("dim")
    for dim, k in copies.items():
        name = NAMES[k]
        assert 0.6 < table.loc[dim, f"mi_{name}"] <= 1.0
        others = [table.loc[d, f"mi_{name}"] for d in range(8) if d != dim]
        assert max(others) < 0.05
    assert table.loc[5, "corr_Smiling"] > 0.8
    assert table.loc[7, "corr_Eyeglasses"] < -0.8  # the sign-flipped copy
    assert abs(table.loc[1, "corr_Smiling"]) < 0.1


def test_labels_name_the_copied_attribute_ordered_by_kl():
    mu, logvar, attributes, copies = _noisy_copies()
    table = evaluate_dimensions(mu, logvar, attributes, NAMES)
    labels = label_dimensions(table)
    assert len(labels) == 8
    kl_order = table.sort_values("kl", ascending=False)["dim"].tolist()
    assert [int(label.split()[1].rstrip(":")) for label in labels] == kl_order
    by_dim = {int(label.split()[1].rstrip(":")): label for label in labels}
    mi = table.set_index("dim")["best_mi"]
    for dim, k in copies.items():
        assert by_dim[dim] == f"dim {dim} ↔ {NAMES[k]} (MI {mi[dim]:.2f})"
    assert by_dim[4] == "dim 4: inactive" and by_dim[6] == "dim 6: inactive"
    assert by_dim[1].startswith("dim 1 ↔ unlabelled (best ")


def test_kl_per_dim_vector_is_accepted():
    mu, logvar, attributes, _ = _noisy_copies(n=1000)
    kl = np.array([2.0, 1.0, 3.0, 1.5, 0.001, 0.5, 0.0, 0.7])
    table = evaluate_dimensions(mu, kl, attributes, NAMES, active_threshold=0.01)
    assert np.array_equal(table["kl"], kl)
    assert list(table.loc[~table["active"], "dim"]) == [4, 6]
    assert label_dimensions(table)[0].startswith("dim 2 ↔ Blond_Hair")


def test_constant_attribute_gives_zero_not_nan():
    mu, logvar, attributes, _ = _noisy_copies(n=500)
    attributes[:, 2] = False
    table = evaluate_dimensions(mu, logvar, attributes, NAMES)
    assert not table.isna().any().any()
    assert (table["mi_Eyeglasses"] == 0).all() and (table["corr_Eyeglasses"] == 0).all()


def test_min_mi_controls_unlabelled():
    mu, logvar, attributes, _ = _noisy_copies(n=1000)
    table = evaluate_dimensions(mu, logvar, attributes, NAMES)
    assert sum("unlabelled" in label for label in label_dimensions(table, min_mi=1.01)) == 6
    assert sum("unlabelled" in label for label in label_dimensions(table, min_mi=0.0)) == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda mu, lv, a: (mu, lv[:, :3], a), "logvar must have the shape"),
        (lambda mu, lv, a: (mu, np.ones(3), a), "kl_per_dim must have one value per latent dim"),
        (lambda mu, lv, a: (mu, lv, a[:10]), "attributes must be"),
        (lambda mu, lv, a: (mu, lv, np.where(a, 1, -1)), "attributes > 0"),
    ],
)
def test_bad_input_is_named(change, message):
    mu, logvar, attributes, _ = _noisy_copies(n=100)
    with pytest.raises(ValueError, match=message):
        evaluate_dimensions(*change(mu, logvar, attributes), NAMES)


def test_table_is_a_dataframe_with_best_columns():
    mu, logvar, attributes, _ = _noisy_copies(n=500)
    table = evaluate_dimensions(mu, logvar, attributes, NAMES)
    assert isinstance(table, pd.DataFrame)
    assert table.loc[5, "best_attribute"] == "Smiling"
    assert table.loc[5, "best_mi"] == table.loc[5, "mi_Smiling"]
    assert table.loc[5, "best_corr"] == table.loc[5, "corr_Smiling"]
