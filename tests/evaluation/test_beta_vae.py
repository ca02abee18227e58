"""β-VAE score: known answers of the exact protocol and of the fixed-data approximation."""

KEYS = {"synthetic": "beta_vae", "fixed": "beta_vae_approx"}


def test_true_factors_score_high_and_noise_low(shared_known_answer):
    shared_known_answer(KEYS)


def test_synthetic_duplicates_still_score_high(synthetic_scores):
    # duplicates bring MIG and SAP down, but not the scores that only ask whether some dim identifies the factor
    assert synthetic_scores["duplicate"]["beta_vae"] > 0.9
