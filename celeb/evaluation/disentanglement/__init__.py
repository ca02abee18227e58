"""Disentanglement metrics: β-VAE score, FactorVAE score, MIG, DCI and SAP, in two settings.

The definitions and defaults follow disentanglement_lib (Locatello et al. 2019). One module per
metric holds its definition and both settings side by side:

    beta_vae, factor_vae, mig, dci, sap    the metrics
    suite                                  evaluate_synthetic, evaluate_fixed, the metric names
    ground_truth                           the synthetic setting's generative process (GroundTruth)
    fixed_data                             the fixed setting's arrays, row split and shared-value draws
    information                            histogram codes, discrete mutual information and entropy
    common                                 classifier scores, one-thread sklearn

Two settings, kept apart in function names and in the keys of the returned dicts:

- synthetic (exact protocols, `evaluate_synthetic`, keys `beta_vae`, `mig`, ...): the caller gives a
  `GroundTruth` (factor names and sizes, `sample_factors(n, rng)`, `observe(factors, rng)`) and
  `represent(observations) -> latents`, so the metric can draw batches with one factor held fixed.
  `grid_ground_truth` is a toy process for tests; `synth_ground_truth` wraps celeb.synth's faces.
- fixed (`evaluate_fixed`, keys `mig_fixed`, `dci_*_fixed`, `sap_fixed`, `beta_vae_approx`,
  `factor_vae_approx`): real photos cannot be re-rendered, so the metrics run on fixed arrays of
  latents and binary attributes. Attributes are imbalanced, so the fitted metrics (DCI, SAP) score
  by balanced accuracy; the β-VAE and FactorVAE scores become APPROXIMATIONS (their modules say
  how and what that costs).

Choosing β (the β-VAE paper's principle). Higgins et al. (2017) pick β with their disentanglement
metric wherever factors are labelled, and by eye where they are not (CelebA): labels for only SOME
factors (weak supervision) are enough to rank models, because the metric is computed per labelled
factor; an unsupervised model is then chosen by a score that needs those few labels, not by its
training loss. Here CelebA's attributes are the weak labels, so no choice is made by eye: a β sweep
(sweeps/cvae_disentangle.yaml) trains models at several normalised β and seeds, at the end of each
trial `evaluate_fixed` scores the validation latents against the attributes, and the sweep ranks
trials by one key (e.g. `mig_fixed`) averaged over seeds; among βs whose scores agree within the
seed spread, take the smallest (better reconstructions). For a conditional β-VAE, score against
attributes the model is NOT conditioned on: the condition already carries those, so a good model's
latents should not encode them. On synthetic faces `evaluate_synthetic` runs the exact protocols on
the same models, which shows how well the fixed-data approximations rank models like the exact ones.

Every function takes a seed; each metric draws from its own stream derived from (seed, metric)
(celeb.seeds.stream_rng), so running one metric alone gives the same number as running the full set.
"""
