"""Disentanglement metrics: β-VAE score, FactorVAE score, MIG, DCI and SAP, in two settings.

The definitions and defaults follow disentanglement_lib (Locatello et al. 2019), which implements

- β-VAE score (Higgins et al. 2017): pairs of observations that share one factor; the feature of a
  training point is mean |z1 - z2| over 64 pairs; a logistic regression predicts which factor was
  shared. Score = eval accuracy (10,000 train, 5,000 eval points).
- FactorVAE score (Kim & Mnih 2018): latents divided by their std over a global sample (10,000),
  dims with std < 0.05 pruned; a batch of 64 shares one factor; the dim of least normalised variance
  votes for that factor; a majority-vote classifier maps dims to factors. Score = eval accuracy.
- MIG (Chen et al. 2018): latents discretised into 20 equal-width histogram bins; mutual information
  with each factor; the gap between the two most informative latents divided by the factor's entropy,
  averaged over factors (10,000 points).
- DCI (Eastwood & Williams 2018): one gradient-boosted tree classifier per factor (sklearn's
  GradientBoostingClassifier with its defaults) gives an importance matrix R (latents x factors);
  disentanglement = importance-weighted mean over latents of 1 - H_K(R[d, :]), completeness =
  importance-weighted mean over factors of 1 - H_D(R[:, k]), informativeness = test accuracy
  (10,000 train, 5,000 test points).
- SAP (Kumar et al. 2018), the discrete-factor variant: for each (latent, factor) a
  LinearSVC(C=0.01, class_weight="balanced") on that one latent; score matrix = test accuracy;
  SAP = mean over factors of the gap between the two best latents (10,000 train, 5,000 test). Its
  ceiling is 1 minus the accuracy an uninformative latent gets, so about 0.5 for balanced binary
  factors, not 1.

Two settings, kept apart in function names and in the keys of the returned dicts:

- synthetic (exact protocols, `evaluate_synthetic`, keys `beta_vae`, `mig`, ...): the caller gives a
  `GroundTruth` (factor names and sizes, `sample_factors(n, rng)`, `observe(factors, rng)`) and
  `represent(observations) -> latents`, so the metric can draw batches with one factor held fixed.
  `grid_ground_truth` is a toy process for tests; `synth_ground_truth` wraps celeb.synth's faces.
- fixed (`evaluate_fixed`, keys `mig_fixed`, `dci_*_fixed`, `sap_fixed`, `beta_vae_approx`,
  `factor_vae_approx`): real photos cannot be re-rendered, so the metrics run on fixed arrays of
  latents and binary attributes. MIG needs no change (it divides by each attribute's entropy). DCI's
  classifiers predict argmax p(c | z) / p(c) and report balanced accuracy; SAP's LinearSVC already
  weights classes and reports balanced accuracy, because attributes are imbalanced and plain
  accuracy would reward predicting the majority class. The β-VAE and FactorVAE scores
  become APPROXIMATIONS: a batch "shares a factor" when its rows are drawn from the data set to
  share one attribute's value, so the other attributes do not vary independently of it as they
  would under re-rendering (Male and No_Beard move together), and nuisance factors that no
  attribute names vary freely. Rare attributes (Bald, 2%) are shared by most random pairs anyway,
  which caps how well any representation can score on them.

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

Every function takes a seed; each metric draws from its own stream derived from (seed, metric), so
running one metric alone gives the same number as running the full set.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

Represent = Callable[[Any], np.ndarray]

SYNTHETIC_METRICS = ("beta_vae", "factor_vae", "mig", "dci", "sap")
FIXED_METRICS = ("beta_vae_approx", "factor_vae_approx", "mig_fixed", "dci_fixed", "sap_fixed")
DCI_ESTIMATORS = ("gbt", "hist")


# ----------------------------------------------------------------------------------------------
# Ground truth for the synthetic setting


@dataclass(frozen=True)
class GroundTruth:
    """A generative process with known discrete factors, for the exact protocols.

    `sample_factors(n, rng)` returns (n, K) integer codes, column k in [0, factor_sizes[k]);
    `observe(factors, rng)` turns codes into whatever `represent` takes (an array, images, a dict).
    Continuous factors must be discretised into codes that `observe` maps back to values, so that
    "the same code" means "the same value" when a metric holds a factor fixed.
    """

    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    sample_factors: Callable[[int, np.random.Generator], np.ndarray]
    observe: Callable[[np.ndarray, np.random.Generator], Any]

    def __post_init__(self) -> None:
        if len(self.factor_names) != len(self.factor_sizes):
            raise ValueError(
                f"GroundTruth has {len(self.factor_names)} factor names but {len(self.factor_sizes)} sizes"
            )
        if len(self.factor_names) < 2:
            raise ValueError("GroundTruth needs at least 2 factors (MIG, DCI and SAP compare factors)")
        small = [n for n, s in zip(self.factor_names, self.factor_sizes) if s < 2]
        if small:
            raise ValueError(f"factor(s) {small} have fewer than 2 values; drop them from the GroundTruth")

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)


def grid_ground_truth(
    factor_sizes: Sequence[int],
    names: Sequence[str] | None = None,
    mixing: np.ndarray | None = None,
    noise: float = 0.0,
) -> GroundTruth:
    """A toy process: independent uniform factors on a grid, observed as codes scaled to [0, 1].

    With `mixing` (K, M) the observation is the scaled codes times that matrix (a linear mixing);
    `noise` adds Gaussian noise of that std to each observation.
    """
    sizes = tuple(int(s) for s in factor_sizes)
    names = tuple(names) if names is not None else tuple(f"factor_{k}" for k in range(len(sizes)))
    scale = 1.0 / (np.asarray(sizes, dtype=np.float64) - 1.0)
    if mixing is not None:
        mixing = np.asarray(mixing, dtype=np.float64)
        if mixing.ndim != 2 or mixing.shape[0] != len(sizes):
            raise ValueError(f"mixing must be (num_factors={len(sizes)}, M); got shape {mixing.shape}")

    def sample_factors(n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, sizes, size=(n, len(sizes)))

    def observe(factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = factors * scale
        if mixing is not None:
            x = x @ mixing
        if noise > 0:
            x = x + noise * rng.standard_normal(x.shape)
        return x

    return GroundTruth(names, sizes, sample_factors, observe)


def synth_ground_truth(
    factor_names: Sequence[str] | None = None,
    num_bins: int = 5,
    seed: int = 0,
    num_reference: int = 10_000,
    workers: int | None = 1,
) -> GroundTruth:
    """Our synthetic faces (celeb.synth) as a GroundTruth; `observe` renders images.

    Booleans, integer classes and floats with at most `num_bins` distinct values keep their values;
    other floats are cut into `num_bins` quantile bins of a reference sample (`num_reference` faces
    drawn with `seed`) and a code is rendered at its bin's median, so a held-fixed code is a
    held-fixed value. Factors left out of `factor_names` come from a fresh `sample_factors` draw for
    every observation. `observe` returns {"images": (n, 218, 178, 3) uint8, "factors": the rendered
    factor table, "attributes": its visible attributes (if celeb.synth can derive them)}, so a
    `represent` for a conditional model can build its condition. Rendering costs ~3-10 ms per face
    per core (`workers` renders in parallel): the β-VAE score at its defaults renders 1.92 million
    faces, so pass smaller counts, and max_batch ~512 (a face is 116 KB) to bound memory.
    """
    try:
        from celeb import synth
    except ImportError as e:
        raise ImportError(f"synth_ground_truth needs celeb.synth, which could not be imported: {e}") from e
    for needed in ("sample_factors", "render_factors"):
        if not callable(getattr(synth, needed, None)):
            raise ImportError(
                f"celeb.synth has no {needed}(); synth_ground_truth needs sample_factors and render_factors"
            )

    reference = pd.DataFrame(synth.sample_factors(num_reference, np.random.default_rng(seed)))
    if factor_names is None:
        factor_names = getattr(synth, "FACTOR_NAMES", None) or [
            c for c in reference.columns if c not in ("image_id", "identity")
        ]
    missing = [n for n in factor_names if n not in reference.columns]
    if missing:
        raise ValueError(
            f"celeb.synth.sample_factors has no column(s) {missing}; it has {list(reference.columns)}"
        )
    names = tuple(factor_names)
    attributes_from_factors = getattr(synth, "attributes_from_factors", None)
    encoders = {name: _column_codebook(reference[name], num_bins) for name in names}
    sizes = tuple(len(encoders[n][1]) for n in names)

    def encode(table: pd.DataFrame) -> np.ndarray:
        return np.stack([encoders[n][0](table[n]) for n in names], axis=1)

    def sample_factors(n: int, rng: np.random.Generator) -> np.ndarray:
        return encode(pd.DataFrame(synth.sample_factors(n, rng)))

    def observe(factors: np.ndarray, rng: np.random.Generator) -> dict:
        table = pd.DataFrame(synth.sample_factors(len(factors), rng))
        for k, name in enumerate(names):
            values = encoders[name][1]
            table[name] = pd.Series(values[factors[:, k]], index=table.index).astype(reference[name].dtype)
        observation = {"images": np.asarray(synth.render_factors(table, workers=workers)), "factors": table}
        if attributes_from_factors is not None:
            observation["attributes"] = attributes_from_factors(table)
        return observation

    return GroundTruth(names, sizes, sample_factors, observe)


def _column_codebook(column, num_bins: int) -> tuple[Callable[[Any], np.ndarray], np.ndarray]:
    """(encode(values) -> codes, values[code]) for one factor column of a reference sample."""
    values = np.asarray(column)
    distinct = np.unique(values)
    if len(distinct) <= num_bins or not np.issubdtype(values.dtype, np.floating):
        # bools, classes (hair_color, beard_style: indices, not quantities) and few-valued floats

        def encode_discrete(x) -> np.ndarray:
            x = np.asarray(x)
            codes = np.searchsorted(distinct, x)
            bad = (codes >= len(distinct)) | (distinct[np.minimum(codes, len(distinct) - 1)] != x)
            if bad.any():
                raise ValueError(
                    f"factor {column.name!r} took value {x[bad][0]!r}, unseen in the reference sample; "
                    "raise num_reference"
                )
            return codes

        return encode_discrete, distinct
    values = values.astype(np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, num_bins + 1)[1:-1]))
    codes = np.digitize(values, edges)
    bounds = np.concatenate([[values.min()], edges, [values.max()]])
    medians = np.array([
        np.median(values[codes == b]) if (codes == b).any() else (bounds[b] + bounds[b + 1]) / 2
        for b in range(len(edges) + 1)
    ])
    return (lambda x: np.digitize(np.asarray(x, dtype=np.float64), edges)), medians


# ----------------------------------------------------------------------------------------------
# Shared building blocks (arrays in, numbers out)


def histogram_discretize(latents: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each column cut into `num_bins` equal-width bins over its own range: (N, D) ints in [0, num_bins)."""
    latents = np.asarray(latents, dtype=np.float64)
    codes = np.empty(latents.shape, dtype=np.int64)
    for d in range(latents.shape[1]):
        edges = np.histogram_bin_edges(latents[:, d], bins=num_bins)
        codes[:, d] = np.digitize(latents[:, d], edges[:-1]) - 1
    return codes


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mutual information in nats between each code column and each factor column: (D, K)."""
    codes = _dense_labels(codes)
    factors = _dense_labels(factors)
    n, num_codes = codes.shape
    code_card = int(codes.max()) + 1
    mi = np.zeros((num_codes, factors.shape[1]))
    offsets = np.arange(num_codes) * code_card
    for k in range(factors.shape[1]):
        card = int(factors[:, k].max()) + 1
        joint_index = (codes + offsets) * card + factors[:, k : k + 1]
        joint = np.bincount(joint_index.ravel(), minlength=num_codes * code_card * card)
        joint = joint.reshape(num_codes, code_card, card) / n
        p_code = joint.sum(axis=2, keepdims=True)
        p_factor = joint.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = joint * np.log(joint / (p_code * p_factor))
        mi[:, k] = np.nansum(terms, axis=(1, 2))
    return np.maximum(mi, 0.0)


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Entropy in nats of each factor column: (K,)."""
    factors = _dense_labels(factors)
    entropy = np.zeros(factors.shape[1])
    for k in range(factors.shape[1]):
        p = np.bincount(factors[:, k]) / len(factors)
        p = p[p > 0]
        entropy[k] = -(p * np.log(p)).sum()
    return entropy


def mutual_information_gap(latents: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Per factor: (top MI - second MI) / H(factor), latents discretised into `num_bins` bins: (K,)."""
    if latents.shape[1] < 2:
        raise ValueError("MIG needs at least 2 latent dimensions")
    mi = discrete_mutual_info(histogram_discretize(latents, num_bins), factors)
    entropy = discrete_entropy(factors)
    top_two = np.sort(mi, axis=0)[::-1][:2]
    return (top_two[0] - top_two[1]) / entropy


def dci_importance(
    latents_train: np.ndarray,
    factors_train: np.ndarray,
    latents_test: np.ndarray,
    factors_test: np.ndarray,
    seed: int,
    estimator: str = "gbt",
    balanced: bool = False,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Importance matrix (D, K) and per-factor train and test accuracy of one classifier per factor.

    estimator "gbt" is disentanglement_lib's GradientBoostingClassifier() (faithful, slow: ~10 s per
    binary factor at 10,000 x 64 on one core, times the number of classes); "hist" is
    HistGradientBoostingClassifier with the same shape (100 trees of depth 3, learning rate 0.1, no
    early stopping) and importances = summed split gains (like LightGBM's "gain"), ~10x faster.
    `balanced`: the classifiers are fit as usual (so the importances are the usual ones), but predict
    argmax_c p(c | z) / p(c), the decision that maximises balanced accuracy, and are scored by
    balanced accuracy; otherwise a rare attribute's classifier wins by predicting "absent".
    (Fitting with balanced sample weights instead made HistGradientBoosting ~10x slower.)
    """
    if estimator not in DCI_ESTIMATORS:
        raise ValueError(f"unknown DCI estimator {estimator!r}; expected one of {DCI_ESTIMATORS}")
    num_factors = factors_train.shape[1]
    importance = np.zeros((latents_train.shape[1], num_factors))
    train_acc, test_acc = np.zeros(num_factors), np.zeros(num_factors)
    score = balanced_accuracy_score if balanced else _accuracy
    with _one_thread():
        for k in tqdm(range(num_factors), desc=f"DCI ({estimator})", disable=not progress, leave=False):
            y = factors_train[:, k]
            if estimator == "gbt":
                model = GradientBoostingClassifier(random_state=seed)
                model.fit(latents_train, y)
                importance[:, k] = np.abs(model.feature_importances_)
            else:
                model = HistGradientBoostingClassifier(
                    max_iter=100, max_depth=3, learning_rate=0.1, early_stopping=False, random_state=seed
                )
                model.fit(latents_train, y)
                importance[:, k] = _split_gain_importance(model, latents_train.shape[1])
            predict = _prior_corrected(model, y) if balanced else model.predict
            train_acc[k] = score(y, predict(latents_train))
            test_acc[k] = score(factors_test[:, k], predict(latents_test))
    return importance, train_acc, test_acc


def _prior_corrected(model, y_train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """predict(x) = argmax_c p(c | x) / p_train(c): the balanced-accuracy decision for a fitted model."""
    prior = np.array([np.mean(y_train == c) for c in model.classes_])
    return lambda x: model.classes_[np.argmax(model.predict_proba(x) / prior, axis=1)]


def _split_gain_importance(model: HistGradientBoostingClassifier, num_features: int) -> np.ndarray:
    """Total split gain per feature over all trees of a fitted HistGradientBoostingClassifier, summing to 1."""
    # sklearn exposes no feature_importances_ for histogram boosting; its fitted trees carry the gains.
    if not hasattr(model, "_predictors"):
        raise RuntimeError("this scikit-learn's HistGradientBoostingClassifier hides its trees; use estimator='gbt'")
    gain = np.zeros(num_features)
    for trees in model._predictors:
        for tree in trees:
            splits = tree.nodes[tree.nodes["is_leaf"] == 0]
            np.add.at(gain, splits["feature_idx"], np.maximum(splits["gain"], 0.0))
    total = gain.sum()
    return gain / total if total > 0 else gain


def disentanglement(importance: np.ndarray) -> float:
    """DCI disentanglement: per latent 1 - entropy (base K) of its importances, weighted by importance."""
    per_code = 1.0 - _entropy_along(importance, axis=1)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float((per_code * weights.sum(axis=1) / weights.sum()).sum())


def completeness(importance: np.ndarray) -> float:
    """DCI completeness: per factor 1 - entropy (base D) of its importances, weighted by importance."""
    per_factor = 1.0 - _entropy_along(importance, axis=0)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float((per_factor * weights.sum(axis=0) / weights.sum()).sum())


def _entropy_along(importance: np.ndarray, axis: int) -> np.ndarray:
    """Entropy of importances normalised along `axis`, in base `importance.shape[axis]`."""
    p = importance + 1e-11  # as disentanglement_lib: an all-zero row counts as uniform
    p = p / p.sum(axis=axis, keepdims=True)
    return -(p * np.log(p)).sum(axis=axis) / np.log(importance.shape[axis])


def sap_matrix(
    latents_train: np.ndarray,
    factors_train: np.ndarray,
    latents_test: np.ndarray,
    factors_test: np.ndarray,
    balanced: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """(D, K) test accuracy of LinearSVC(C=0.01, class_weight="balanced") on one latent per factor."""
    score = balanced_accuracy_score if balanced else _accuracy
    num_codes, num_factors = latents_train.shape[1], factors_train.shape[1]
    matrix = np.zeros((num_codes, num_factors))
    for d in tqdm(range(num_codes), desc="SAP", disable=not progress, leave=False):
        for k in range(num_factors):
            model = LinearSVC(C=0.01, class_weight="balanced")
            model.fit(latents_train[:, d : d + 1], factors_train[:, k])
            matrix[d, k] = score(factors_test[:, k], model.predict(latents_test[:, d : d + 1]))
    return matrix


def top_two_gap(matrix: np.ndarray) -> float:
    """Mean over columns of the gap between the two largest entries."""
    ordered = np.sort(matrix, axis=0)
    return float(np.mean(ordered[-1] - ordered[-2]))


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred))


def _dense_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel each column to 0..n_values-1 (int64), so bincount-based counting works."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D array (rows, columns), got shape {labels.shape}")
    dense = np.empty(labels.shape, dtype=np.int64)
    for j in range(labels.shape[1]):
        dense[:, j] = np.unique(labels[:, j], return_inverse=True)[1].ravel()
    return dense


def _majority_vote_accuracies(train_votes: np.ndarray, eval_votes: np.ndarray) -> tuple[float, float]:
    """FactorVAE's classifier: each latent dim predicts the factor it voted for most in training."""
    classifier = np.argmax(train_votes, axis=0)
    dims = np.arange(train_votes.shape[1])
    train = train_votes[classifier, dims].sum() / max(train_votes.sum(), 1)
    evaluation = eval_votes[classifier, dims].sum() / max(eval_votes.sum(), 1)
    return float(train), float(evaluation)


def _logistic_accuracies(
    train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray, seed: int
) -> tuple[float, float]:
    """The β-VAE score's low-capacity classifier. max_iter=1000 (sklearn's default 100 often stops
    before convergence on these features; the model is otherwise disentanglement_lib's)."""
    model = LogisticRegression(max_iter=1000, random_state=seed)
    with _one_thread():
        model.fit(train_x, train_y)
    return _accuracy(train_y, model.predict(train_x)), _accuracy(eval_y, model.predict(eval_x))


def _one_thread():
    """Run sklearn single-threaded: trials share machines, and oversubscribed OpenMP threads made
    HistGradientBoosting 40x slower in our measurements (2 cores, load 9)."""
    return threadpool_limits(limits=1)


def _rng(seed: int, stream: str) -> np.random.Generator:
    """A generator for one named stream of one seed (independent of which other metrics run)."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode())])


# ----------------------------------------------------------------------------------------------
# Synthetic setting: exact protocols


def _sample_factors(gt: GroundTruth, n: int, rng: np.random.Generator) -> np.ndarray:
    factors = np.asarray(gt.sample_factors(n, rng))
    if factors.shape != (n, gt.num_factors) or not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(
            f"GroundTruth.sample_factors({n}) must return ({n}, {gt.num_factors}) integer codes, "
            f"got {factors.dtype} {factors.shape}"
        )
    if (factors < 0).any() or (factors >= np.asarray(gt.factor_sizes)).any():
        raise ValueError(f"GroundTruth.sample_factors returned codes outside [0, size) for sizes {gt.factor_sizes}")
    return factors


def _represent(represent: Represent, gt: GroundTruth, factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    latents = np.asarray(represent(gt.observe(factors, rng)), dtype=np.float64)
    if latents.ndim != 2 or len(latents) != len(factors):
        raise ValueError(
            f"represent() must return (n, num_latents) for n={len(factors)} observations, got shape {latents.shape}"
        )
    return latents


def _sample_codes(
    represent: Represent, gt: GroundTruth, num_points: int, rng: np.random.Generator, max_batch: int,
    progress: bool, desc: str,
) -> tuple[np.ndarray, np.ndarray]:
    """`num_points` i.i.d. (latents, factor codes), drawn in calls of at most `max_batch` observations."""
    latents, factors = [], []
    with tqdm(total=num_points, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, num_points, max_batch):
            f = _sample_factors(gt, min(max_batch, num_points - start), rng)
            latents.append(_represent(represent, gt, f, rng))
            factors.append(f)
            bar.update(len(f))
    return np.concatenate(latents), np.concatenate(factors)


def _beta_vae_points(
    represent: Represent, gt: GroundTruth, num_points: int, batch_size: int, rng: np.random.Generator,
    max_batch: int, progress: bool, desc: str,
) -> tuple[np.ndarray, np.ndarray]:
    """(features (P, D), fixed factor (P,)): feature = mean |z1 - z2| over pairs sharing one factor."""
    points_per_call = max(1, max_batch // (2 * batch_size))
    features, labels = [], []
    with tqdm(total=num_points, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, num_points, points_per_call):
            p = min(points_per_call, num_points - start)
            fixed = rng.integers(gt.num_factors, size=p)
            first = _sample_factors(gt, p * batch_size, rng)
            second = _sample_factors(gt, p * batch_size, rng)
            rows, cols = np.arange(p * batch_size), np.repeat(fixed, batch_size)
            second[rows, cols] = first[rows, cols]
            z = _represent(represent, gt, np.concatenate([first, second]), rng)
            diff = np.abs(z[: p * batch_size] - z[p * batch_size :])
            features.append(diff.reshape(p, batch_size, -1).mean(axis=1))
            labels.append(fixed)
            bar.update(p)
    return np.concatenate(features), np.concatenate(labels)


def _factor_vae_votes(
    represent: Represent, gt: GroundTruth, num_points: int, batch_size: int, rng: np.random.Generator,
    global_var: np.ndarray, active: np.ndarray, max_batch: int, progress: bool, desc: str,
) -> np.ndarray:
    """(K, D) counts: how often dim d had the least normalised variance when factor k was fixed."""
    votes = np.zeros((gt.num_factors, len(global_var)), dtype=np.int64)
    active_dims = np.flatnonzero(active)
    points_per_call = max(1, max_batch // batch_size)
    with tqdm(total=num_points, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, num_points, points_per_call):
            p = min(points_per_call, num_points - start)
            fixed = rng.integers(gt.num_factors, size=p)
            factors = _sample_factors(gt, p * batch_size, rng).reshape(p, batch_size, -1)
            rows = np.arange(p)
            factors[rows, :, fixed] = factors[rows, 0, fixed][:, None]  # every row shares row 0's value
            z = _represent(represent, gt, factors.reshape(p * batch_size, -1), rng)
            local_var = z.reshape(p, batch_size, -1).var(axis=1, ddof=1)
            chosen = active_dims[np.argmin(local_var[:, active] / global_var[active], axis=1)]
            np.add.at(votes, (fixed, chosen), 1)
            bar.update(p)
    return votes


def beta_vae_score(
    represent: Represent, ground_truth: GroundTruth, seed: int, num_train: int = 10_000, num_eval: int = 5_000,
    batch_size: int = 64, max_batch: int = 4096, progress: bool = True,
) -> dict[str, float]:
    """β-VAE score (Higgins et al. 2017), exact protocol: {"beta_vae", "beta_vae_train"}."""
    rng = _rng(seed, "beta_vae")
    args = (batch_size, rng, max_batch, progress)
    train_x, train_y = _beta_vae_points(represent, ground_truth, num_train, *args, "β-VAE train")
    eval_x, eval_y = _beta_vae_points(represent, ground_truth, num_eval, *args, "β-VAE eval")
    train, evaluation = _logistic_accuracies(train_x, train_y, eval_x, eval_y, seed)
    return {"beta_vae": evaluation, "beta_vae_train": train}


def factor_vae_score(
    represent: Represent, ground_truth: GroundTruth, seed: int, num_train: int = 10_000, num_eval: int = 5_000,
    batch_size: int = 64, num_variance_estimate: int = 10_000, prune_threshold: float = 0.05,
    max_batch: int = 4096, progress: bool = True,
) -> dict[str, float]:
    """FactorVAE score (Kim & Mnih 2018), exact protocol.

    Returns {"factor_vae", "factor_vae_train", "factor_vae_active_dims"}.
    """
    rng = _rng(seed, "factor_vae")
    z, _ = _sample_codes(represent, ground_truth, num_variance_estimate, rng, max_batch, progress, "FactorVAE variance")
    global_var = z.var(axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    if not active.any():
        return {"factor_vae": 0.0, "factor_vae_train": 0.0, "factor_vae_active_dims": 0.0}
    args = (batch_size, rng, global_var, active, max_batch, progress)
    train_votes = _factor_vae_votes(represent, ground_truth, num_train, *args, "FactorVAE train")
    eval_votes = _factor_vae_votes(represent, ground_truth, num_eval, *args, "FactorVAE eval")
    train, evaluation = _majority_vote_accuracies(train_votes, eval_votes)
    return {"factor_vae": evaluation, "factor_vae_train": train, "factor_vae_active_dims": float(active.sum())}


def mig_synthetic(
    represent: Represent, ground_truth: GroundTruth, seed: int, num_train: int = 10_000, num_bins: int = 20,
    max_batch: int = 4096, progress: bool = True,
) -> dict[str, float]:
    """Mutual Information Gap (Chen et al. 2018) on i.i.d. samples: {"mig"}."""
    rng = _rng(seed, "mig")
    z, factors = _sample_codes(represent, ground_truth, num_train, rng, max_batch, progress, "MIG")
    return {"mig": float(mutual_information_gap(z, factors, num_bins).mean())}


def dci_synthetic(
    represent: Represent, ground_truth: GroundTruth, seed: int, num_train: int = 10_000, num_test: int = 5_000,
    estimator: str = "gbt", max_batch: int = 4096, progress: bool = True,
) -> dict[str, float]:
    """DCI (Eastwood & Williams 2018): {"dci_disentanglement", "dci_completeness", "dci_informativeness", ...}."""
    rng = _rng(seed, "dci")
    z_train, f_train = _sample_codes(represent, ground_truth, num_train, rng, max_batch, progress, "DCI train")
    z_test, f_test = _sample_codes(represent, ground_truth, num_test, rng, max_batch, progress, "DCI test")
    importance, train_acc, test_acc = dci_importance(z_train, f_train, z_test, f_test, seed, estimator, False, progress)
    return {
        "dci_disentanglement": disentanglement(importance),
        "dci_completeness": completeness(importance),
        "dci_informativeness": float(test_acc.mean()),
        "dci_informativeness_train": float(train_acc.mean()),
    }


def sap_synthetic(
    represent: Represent, ground_truth: GroundTruth, seed: int, num_train: int = 10_000, num_test: int = 5_000,
    max_batch: int = 4096, progress: bool = True,
) -> dict[str, float]:
    """SAP score (Kumar et al. 2018), discrete-factor variant: {"sap"}."""
    rng = _rng(seed, "sap")
    z_train, f_train = _sample_codes(represent, ground_truth, num_train, rng, max_batch, progress, "SAP train")
    z_test, f_test = _sample_codes(represent, ground_truth, num_test, rng, max_batch, progress, "SAP test")
    return {"sap": top_two_gap(sap_matrix(z_train, f_train, z_test, f_test, False, progress))}


def evaluate_synthetic(
    represent: Represent, ground_truth: GroundTruth, seed: int, num_train: int = 10_000, num_eval: int = 5_000,
    batch_size: int = 64, metrics: Sequence[str] = SYNTHETIC_METRICS, dci_estimator: str = "gbt",
    max_batch: int = 4096, progress: bool = True,
) -> dict[str, float]:
    """All exact-protocol metrics (or the named subset) at disentanglement_lib's defaults.

    `num_eval` is also the test size of DCI and SAP and `num_train` the variance sample of the
    FactorVAE score. `max_batch` caps the observations passed to one `represent` call.
    """
    _check_metrics(metrics, SYNTHETIC_METRICS)
    common = dict(max_batch=max_batch, progress=progress)
    runs = {
        "beta_vae": lambda: beta_vae_score(represent, ground_truth, seed, num_train, num_eval, batch_size, **common),
        "factor_vae": lambda: factor_vae_score(
            represent, ground_truth, seed, num_train, num_eval, batch_size, num_variance_estimate=num_train, **common
        ),
        "mig": lambda: mig_synthetic(represent, ground_truth, seed, num_train, **common),
        "dci": lambda: dci_synthetic(represent, ground_truth, seed, num_train, num_eval, dci_estimator, **common),
        "sap": lambda: sap_synthetic(represent, ground_truth, seed, num_train, num_eval, **common),
    }
    scores: dict[str, float] = {}
    for name in tqdm(metrics, desc="disentanglement (synthetic)", disable=not progress):
        scores.update(runs[name]())
    return scores


# ----------------------------------------------------------------------------------------------
# Fixed setting: arrays of latents and binary attributes (real photos)


def _check_fixed(
    latents: np.ndarray, attributes: np.ndarray, names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    latents = np.asarray(latents, dtype=np.float64)
    attributes = np.asarray(attributes)
    if latents.ndim != 2 or attributes.ndim != 2 or len(latents) != len(attributes):
        raise ValueError(
            f"latents must be (N, D) and attributes (N, K) with the same N; got {latents.shape} and {attributes.shape}"
        )
    if attributes.dtype != bool:
        if not np.isin(attributes, (0, 1)).all():
            raise ValueError("attributes must be bool (or 0/1); convert CelebA's -1/1 with `attributes > 0`")
        attributes = attributes.astype(bool)
    names = list(names) if names is not None else [f"attribute_{k}" for k in range(attributes.shape[1])]
    if len(names) != attributes.shape[1]:
        raise ValueError(f"{len(names)} names for {attributes.shape[1]} attribute columns")
    if attributes.shape[1] < 2 or latents.shape[1] < 2:
        raise ValueError("the metrics need at least 2 attributes and 2 latent dimensions")
    if not np.isfinite(latents).all():
        raise ValueError("latents contain NaN or inf; check the encoder's output")
    constant = [n for n, col in zip(names, attributes.T) if col.all() or not col.any()]
    if constant:
        raise ValueError(f"attribute(s) {constant} take one value in every row; drop them or use more rows")
    return latents, attributes, names


def split_rows(
    num_rows: int, seed: int, num_train: int = 10_000, num_test: int = 5_000
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/test split of row indices: at most num_train/num_test rows, 2:1 when rows are fewer."""
    order = _rng(seed, "split").permutation(num_rows)
    if num_rows < num_train + num_test:
        num_test = max(1, round(num_rows * num_test / (num_train + num_test)))
        num_train = num_rows - num_test
    return np.sort(order[:num_train]), np.sort(order[num_train : num_train + num_test])


def _value_groups(attributes: np.ndarray, pool: np.ndarray) -> list[list[np.ndarray]]:
    """groups[k][v] = the rows of `pool` whose attribute k has value v."""
    return [[pool[~attributes[pool, k]], pool[attributes[pool, k]]] for k in range(attributes.shape[1])]


def _draw_sharing(
    attributes: np.ndarray, groups: list[list[np.ndarray]], fixed: np.ndarray, anchors: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """For each anchor row (any shape, fixed broadcast to it), a random row sharing its value of attribute `fixed`."""
    fixed = np.broadcast_to(fixed, anchors.shape)
    values = attributes[anchors, fixed]
    drawn = np.empty(anchors.shape, dtype=np.int64)
    for k in range(attributes.shape[1]):
        for v in (False, True):
            where = (fixed == k) & (values == v)
            group = groups[k][int(v)]
            drawn[where] = group[rng.integers(len(group), size=int(where.sum()))]
    return drawn


def _beta_vae_approx_points(
    latents: np.ndarray, attributes: np.ndarray, pool: np.ndarray, num_points: int, batch_size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    groups = _value_groups(attributes, pool)
    fixed = rng.integers(attributes.shape[1], size=num_points)
    features = np.empty((num_points, latents.shape[1]))
    step = max(1, 2**20 // (batch_size * latents.shape[1]))  # bounds the (points, pairs, D) gather
    for start in range(0, num_points, step):
        f = fixed[start : start + step, None]
        first = pool[rng.integers(len(pool), size=(len(f), batch_size))]
        second = _draw_sharing(attributes, groups, f, first, rng)
        features[start : start + step] = np.abs(latents[first] - latents[second]).mean(axis=1)
    return features, fixed


def _factor_vae_approx_votes(
    latents: np.ndarray, attributes: np.ndarray, pool: np.ndarray, num_points: int, batch_size: int,
    rng: np.random.Generator, global_var: np.ndarray, active: np.ndarray,
) -> np.ndarray:
    groups = _value_groups(attributes, pool)
    fixed = rng.integers(attributes.shape[1], size=num_points)
    anchors = pool[rng.integers(len(pool), size=num_points)]
    votes = np.zeros((attributes.shape[1], latents.shape[1]), dtype=np.int64)
    active_dims = np.flatnonzero(active)
    step = max(1, 2**20 // (batch_size * latents.shape[1]))
    for start in range(0, num_points, step):
        f, a = fixed[start : start + step], anchors[start : start + step]
        rest = _draw_sharing(attributes, groups, f[:, None], np.repeat(a[:, None], batch_size - 1, axis=1), rng)
        batch = np.concatenate([a[:, None], rest], axis=1)
        local_var = latents[batch].var(axis=1, ddof=1)
        chosen = active_dims[np.argmin(local_var[:, active] / global_var[active], axis=1)]
        np.add.at(votes, (f, chosen), 1)
    return votes


def beta_vae_approx(
    latents: np.ndarray, attributes: np.ndarray, seed: int, num_train: int = 10_000, num_eval: int = 5_000,
    batch_size: int = 64, names: Sequence[str] | None = None,
) -> dict[str, float]:
    """APPROXIMATE β-VAE score on fixed data: pairs drawn to share one attribute's value.

    Training points come from the train rows of `split_rows`, eval points from its test rows.
    Returns {"beta_vae_approx", "beta_vae_approx_train"}.
    """
    latents, attributes, _ = _check_fixed(latents, attributes, names)
    train_rows, test_rows = split_rows(len(latents), seed)
    rng = _rng(seed, "beta_vae_approx")
    train_x, train_y = _beta_vae_approx_points(latents, attributes, train_rows, num_train, batch_size, rng)
    eval_x, eval_y = _beta_vae_approx_points(latents, attributes, test_rows, num_eval, batch_size, rng)
    train, evaluation = _logistic_accuracies(train_x, train_y, eval_x, eval_y, seed)
    return {"beta_vae_approx": evaluation, "beta_vae_approx_train": train}


def factor_vae_approx(
    latents: np.ndarray, attributes: np.ndarray, seed: int, num_train: int = 10_000, num_eval: int = 5_000,
    batch_size: int = 64, prune_threshold: float = 0.05, names: Sequence[str] | None = None,
) -> dict[str, float]:
    """APPROXIMATE FactorVAE score on fixed data: each batch shares one attribute's value.

    Global variances come from the train rows. Returns {"factor_vae_approx",
    "factor_vae_approx_train", "factor_vae_approx_active_dims"}.
    """
    latents, attributes, _ = _check_fixed(latents, attributes, names)
    train_rows, test_rows = split_rows(len(latents), seed)
    rng = _rng(seed, "factor_vae_approx")
    global_var = latents[train_rows].var(axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    if not active.any():
        return {"factor_vae_approx": 0.0, "factor_vae_approx_train": 0.0, "factor_vae_approx_active_dims": 0.0}
    args = (batch_size, rng, global_var, active)
    train_votes = _factor_vae_approx_votes(latents, attributes, train_rows, num_train, *args)
    eval_votes = _factor_vae_approx_votes(latents, attributes, test_rows, num_eval, *args)
    train, evaluation = _majority_vote_accuracies(train_votes, eval_votes)
    return {
        "factor_vae_approx": evaluation,
        "factor_vae_approx_train": train,
        "factor_vae_approx_active_dims": float(active.sum()),
    }


def mig_fixed(
    latents: np.ndarray, attributes: np.ndarray, num_bins: int = 20, names: Sequence[str] | None = None
) -> dict[str, float]:
    """MIG on all given rows (no fitting, so no split): {"mig_fixed"}."""
    latents, attributes, _ = _check_fixed(latents, attributes, names)
    return {"mig_fixed": float(mutual_information_gap(latents, attributes, num_bins).mean())}


def dci_fixed(
    latents: np.ndarray, attributes: np.ndarray, seed: int, num_train: int = 10_000, num_test: int = 5_000,
    estimator: str = "gbt", names: Sequence[str] | None = None, progress: bool = True,
) -> dict[str, float]:
    """DCI scored by balanced accuracy with prior-corrected predictions (see dci_importance): {"dci_*_fixed"}."""
    latents, attributes, _ = _check_fixed(latents, attributes, names)
    train, test = split_rows(len(latents), seed, num_train, num_test)
    importance, train_acc, test_acc = dci_importance(
        latents[train], attributes[train], latents[test], attributes[test], seed, estimator, True, progress
    )
    return {
        "dci_disentanglement_fixed": disentanglement(importance),
        "dci_completeness_fixed": completeness(importance),
        "dci_informativeness_fixed": float(test_acc.mean()),
        "dci_informativeness_train_fixed": float(train_acc.mean()),
    }


def sap_fixed(
    latents: np.ndarray, attributes: np.ndarray, seed: int, num_train: int = 10_000, num_test: int = 5_000,
    names: Sequence[str] | None = None, progress: bool = True,
) -> dict[str, float]:
    """SAP with balanced accuracy as the score matrix (an uninformative latent scores 0.5): {"sap_fixed"}."""
    latents, attributes, _ = _check_fixed(latents, attributes, names)
    train, test = split_rows(len(latents), seed, num_train, num_test)
    matrix = sap_matrix(latents[train], attributes[train], latents[test], attributes[test], True, progress)
    return {"sap_fixed": top_two_gap(matrix)}


def evaluate_fixed(
    latents: np.ndarray, attributes: np.ndarray, names: Sequence[str] | None, seed: int, num_train: int = 10_000,
    num_test: int = 5_000, batch_size: int = 64, metrics: Sequence[str] = FIXED_METRICS, dci_estimator: str = "gbt",
    progress: bool = True,
) -> dict[str, float]:
    """All fixed-data metrics (or the named subset) for latents (N, D) and bool attributes (N, K).

    `num_train`/`num_test` cap the rows used for fitting (DCI, SAP); they are also the number of
    β-VAE/FactorVAE approximation points, drawn from the train and test rows respectively.
    """
    _check_metrics(metrics, FIXED_METRICS)
    latents, attributes, names = _check_fixed(latents, attributes, names)
    train, _ = split_rows(len(latents), seed, num_train, num_test)
    constant = [n for n, col in zip(names, attributes[train].T) if col.all() or not col.any()]
    if constant:
        raise ValueError(f"attribute(s) {constant} take one value in every train row; use more rows or drop them")
    runs = {
        "beta_vae_approx": lambda: beta_vae_approx(latents, attributes, seed, num_train, num_test, batch_size),
        "factor_vae_approx": lambda: factor_vae_approx(latents, attributes, seed, num_train, num_test, batch_size),
        "mig_fixed": lambda: mig_fixed(latents, attributes),
        "dci_fixed": lambda: dci_fixed(
            latents, attributes, seed, num_train, num_test, dci_estimator, progress=progress
        ),
        "sap_fixed": lambda: sap_fixed(latents, attributes, seed, num_train, num_test, progress=progress),
    }
    scores: dict[str, float] = {}
    for name in tqdm(metrics, desc="disentanglement (fixed)", disable=not progress):
        scores.update(runs[name]())
    return scores


def _check_metrics(metrics: Sequence[str], known: tuple[str, ...]) -> None:
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected some of {known}")
