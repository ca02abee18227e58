"""Drawing a synthetic CelebA: who the people are, what each image of them shows, in CelebA's order.

The model has two levels, like CelebA: an identity fixes a person's base look and each image of
that person draws its own expression, accessories, pose and background. Rates come from
CELEBA_PREVALENCE and from the real per-sex rates in MALE_RATE; identity-level attributes are drawn
with weighted stratified sampling so that their image-level prevalence is exact, not just right on
average. `sample_faces` draws a whole data set (identities, partitions, factors, all 40 attributes);
`sample_factors` draws independent faces for the disentanglement metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from celeb.data.schema import ATTRIBUTE_NAMES, CELEBA_PREVALENCE, IDENTITY, IMAGE_ID, PARTITION
from celeb.synth.factors import BEARD_STYLES, FACTOR_NAMES, FACTORS, HIDDEN_ATTRIBUTES, attributes_from_factors

MAX_IMAGES = 999_999  # CelebA's image ids have six digits

# --------------------------------------------------------------------------------------------
# Rates: P(attribute | male) measured on the first 20,000 real CelebA images; the female rate is
# then whatever makes the overall rate equal CELEBA_PREVALENCE.

P_MALE = CELEBA_PREVALENCE["Male"]
MALE_RATE: dict[str, float] = {
    "Arched_Eyebrows": 0.052, "Attractive": 0.276, "Bags_Under_Eyes": 0.341, "Bald": 0.055,
    "Bangs": 0.083, "Big_Lips": 0.151, "Big_Nose": 0.424, "Black_Hair": 0.297, "Blond_Hair": 0.022,
    "Blurry": 0.059, "Brown_Hair": 0.152, "Bushy_Eyebrows": 0.243, "Chubby": 0.119,
    "Double_Chin": 0.097, "Eyeglasses": 0.120, "Gray_Hair": 0.086, "Heavy_Makeup": 0.003,
    "Narrow_Eyes": 0.125, "Oval_Face": 0.224, "Pale_Skin": 0.027, "Pointy_Nose": 0.161,
    "Receding_Hairline": 0.117, "Rosy_Cheeks": 0.005, "Smiling": 0.401, "Straight_Hair": 0.241,
    "Wavy_Hair": 0.139, "Wearing_Earrings": 0.015, "Wearing_Hat": 0.084, "Wearing_Lipstick": 0.006,
    "Wearing_Necklace": 0.018, "Wearing_Necktie": 0.175, "Young": 0.641,
}
# Real conditional rates, sex-independent enough to keep simple.
OPEN_IF_SMILING, OPEN_IF_NOT_SMILING = 0.758, 0.223
CHEEKBONES_IF_SMILING, CHEEKBONES_IF_NOT_SMILING = 0.800, 0.128
FEMALE_MAKEUP_WITHOUT_LIPSTICK = 0.069

# Real CelebA: how many identities have 1, 2, ..., 35 images (identity_CelebA.txt, all 202,599).
IDENTITY_SIZE_COUNTS: tuple[int, ...] = (
    44, 324, 245, 221, 221, 207, 183, 176, 187, 202, 199, 165, 176, 210, 172, 219, 173, 217, 288,
    1044, 565, 419, 369, 290, 361, 106, 125, 216, 493, 2343, 9, 3, 0, 2, 3,
)
IMAGES_PER_IDENTITY = 202_599 / 10_177
PARTITION_SHARES = (0.8, 0.1, 0.1)


def sex_rates(name: str) -> np.ndarray:
    """[female rate, male rate] of one attribute; the mix matches CELEBA_PREVALENCE exactly."""
    male = MALE_RATE[name]
    female = (CELEBA_PREVALENCE[name] - P_MALE * male) / (1 - P_MALE)
    return np.array([min(max(female, 0.0), 1.0), male])


def _category_rates(names: Sequence[str]) -> np.ndarray:
    """(2, len(names) + 1) class probabilities per sex: the named classes, then 'none of them'."""
    rates = np.stack([sex_rates(name) for name in names], axis=1)
    return np.concatenate([rates, 1 - rates.sum(axis=1, keepdims=True)], axis=1)


# --------------------------------------------------------------------------------------------
# Sampling


@dataclass(frozen=True)
class SynthSample:
    """Everything drawn for a synthetic data set, one row per image in image-id order."""

    factors: pd.DataFrame  # image_id, identity, partition, then FACTOR_NAMES
    attributes: pd.DataFrame  # image_id, then the 40 ATTRIBUTE_NAMES as bool


def identity_sizes(n: int, identities: int, rng: np.random.Generator) -> np.ndarray:
    """Images per identity: CelebA's size distribution, rescaled to sum to n, each at least 1."""
    if not 1 <= identities <= n:
        raise ValueError(f"identities must be between 1 and n={n}, got {identities}")
    counts = np.array(IDENTITY_SIZE_COUNTS, dtype=float)
    drawn = rng.choice(np.arange(1, len(counts) + 1), size=identities, p=counts / counts.sum())
    # Everyone gets one image; the other n - identities are shared out in proportion to
    # (drawn size - 1) with largest-remainder rounding, so the total is exactly n.
    weight = drawn - 1 + 1e-9
    share = weight / weight.sum() * (n - identities)
    extra = np.floor(share).astype(np.int64)
    remainder = (n - identities) - extra.sum()
    extra[np.argsort(-(share - extra), kind="stable")[:remainder]] += 1
    return 1 + extra


def _stratified_uniform(weights: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One U(0,1) value per identity whose image-weighted distribution is uniform almost exactly.

    Within each group, identities are shuffled and laid end to end on a circle of circumference
    1 in proportion to their weight; each takes the (randomly rotated) position of its midpoint.
    So `u < r` selects a share r of the group's images, off by at most one identity's images.
    """
    u = np.empty(len(weights))
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        w = weights[members].astype(float)
        ends = np.cumsum(w)
        u[members] = ((ends - w / 2) / ends[-1] + rng.random()) % 1.0
    return u


def _pick(u: np.ndarray, probs_by_sex: np.ndarray, male: np.ndarray) -> np.ndarray:
    """Class index from uniforms u and per-sex class probabilities (2, classes)."""
    cumulative = np.cumsum(probs_by_sex, axis=1)[male.astype(int)]
    return np.minimum((u[:, None] >= cumulative).sum(axis=1), probs_by_sex.shape[1] - 1)


def _sample_people(sizes: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Identity-level factors and hidden attributes, one value per identity."""
    k = len(sizes)
    everyone = np.zeros(k, dtype=int)
    male = _stratified_uniform(sizes, everyone, rng) < P_MALE
    sex = male.astype(int)

    people: dict[str, np.ndarray] = {"male": male}
    hairline_probs = _category_rates(["Receding_Hairline", "Bald"])[:, [2, 0, 1]]  # normal first
    people["hairline"] = _pick(_stratified_uniform(sizes, sex, rng), hairline_probs, male)
    bald = people["hairline"] == 2
    # Texture only shows on hair: draw it among the non-bald at a rate raised to compensate.
    not_bald_rate = 1 - sex_rates("Bald")
    texture_probs = _category_rates(["Straight_Hair", "Wavy_Hair"])[:, :2] / not_bald_rate[:, None]
    texture_probs = np.concatenate([1 - texture_probs.sum(axis=1, keepdims=True), texture_probs], axis=1)
    texture = _pick(_stratified_uniform(sizes, sex * 2 + bald, rng), texture_probs, male)
    people["hair_texture"] = np.where(bald, 0, texture)
    hair_probs = _category_rates(["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"])
    people["hair_color"] = _pick(_stratified_uniform(sizes, sex, rng), hair_probs, male)
    beard_share = np.array([style.male_share for style in BEARD_STYLES])
    beard_probs = np.stack([np.eye(len(BEARD_STYLES))[0], beard_share / beard_share.sum()])
    people["beard_style"] = _pick(_stratified_uniform(sizes, sex, rng), beard_probs, male)

    pale = _stratified_uniform(sizes, sex, rng) < sex_rates("Pale_Skin")[sex]
    people["skin_tone"] = np.where(pale, rng.uniform(0, 0.08, k), 0.15 + 0.85 * rng.beta(1.3, 2.2, k))
    for factor, name in (("oval_face", "Oval_Face"), ("chubby", "Chubby"), ("double_chin", "Double_Chin"),
                         ("bushy_eyebrows", "Bushy_Eyebrows"), ("arched_eyebrows", "Arched_Eyebrows"),
                         ("narrow_eyes", "Narrow_Eyes"), ("bags_under_eyes", "Bags_Under_Eyes"),
                         ("big_nose", "Big_Nose"), ("pointy_nose", "Pointy_Nose"), ("big_lips", "Big_Lips"),
                         ("Attractive", "Attractive"), ("Young", "Young")):
        people[factor] = _stratified_uniform(sizes, sex, rng) < sex_rates(name)[sex]
    people["hair_shade"] = rng.uniform(-1, 1, k)
    long_on_men = rng.random(k) < 0.1
    people["hair_length"] = np.where(male, np.where(long_on_men, rng.uniform(0.3, 0.8, k), rng.uniform(0, 0.25, k)),
                                     rng.uniform(0.25, 1, k))
    people["hair_thickness"] = rng.uniform(0, 1, k)
    people["face_width"] = rng.uniform(0, 1, k)
    return people


def _sample_images(people: dict[str, np.ndarray], owner: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Image-level factors and hidden attributes for images whose identity index is `owner`."""
    n = len(owner)
    male = people["male"][owner]
    sex = male.astype(int)
    hairline = people["hairline"][owner]

    def chance(rate_by_sex: np.ndarray) -> np.ndarray:
        return rng.random(n) < rate_by_sex[sex]

    images: dict[str, np.ndarray] = {}
    smiling = chance(sex_rates("Smiling"))
    images["smile"] = np.where(smiling, rng.uniform(0.55, 1, n), rng.uniform(0, 0.45, n))
    images["mouth_open"] = rng.random(n) < np.where(smiling, OPEN_IF_SMILING, OPEN_IF_NOT_SMILING)
    images["High_Cheekbones"] = rng.random(n) < np.where(smiling, CHEEKBONES_IF_SMILING, CHEEKBONES_IF_NOT_SMILING)
    images["eyeglasses"] = chance(sex_rates("Eyeglasses"))
    # A hat only on a normal hairline, bangs only on a normal hairline without a hat: the rates
    # are raised by the eligible share so that the overall prevalences stay CelebA's.
    hairline_rates = _category_rates(["Receding_Hairline", "Bald"])
    normal_share = hairline_rates[:, 2]
    hat_rate = sex_rates("Wearing_Hat")
    images["hat"] = (hairline == 0) & chance(hat_rate / normal_share)
    images["bangs"] = (hairline == 0) & ~images["hat"] & chance(sex_rates("Bangs") / (normal_share - hat_rate))
    lipstick = chance(sex_rates("Wearing_Lipstick"))
    images["lipstick"] = lipstick
    images["makeup"] = rng.random(n) < _makeup_rate(lipstick, male)
    for factor, name in (("rosy_cheeks", "Rosy_Cheeks"), ("earrings", "Wearing_Earrings"),
                         ("necklace", "Wearing_Necklace"), ("necktie", "Wearing_Necktie"), ("blurry", "Blurry")):
        images[factor] = chance(sex_rates(name))
    images["hat_hue"] = rng.random(n)
    images["rotation"] = np.clip(rng.normal(0, 5, n), -15, 15)
    images["scale"] = rng.uniform(0.95, 1.05, n)
    images["shift_x"] = rng.uniform(-3, 3, n)
    images["shift_y"] = rng.uniform(-3, 3, n)
    images["background_hue"] = rng.random(n)
    images["background_value"] = rng.uniform(0.35, 0.95, n)
    images["shirt_hue"] = rng.random(n)
    return images


def _makeup_rate(lipstick: np.ndarray, male: np.ndarray) -> np.ndarray:
    """P(Heavy_Makeup): for women it depends on lipstick, as in the real data."""
    female_rate, male_rate = sex_rates("Heavy_Makeup")
    female_lipstick = sex_rates("Wearing_Lipstick")[0]
    with_lipstick = (female_rate - (1 - female_lipstick) * FEMALE_MAKEUP_WITHOUT_LIPSTICK) / female_lipstick
    return np.where(male, male_rate, np.where(lipstick, with_lipstick, FEMALE_MAKEUP_WITHOUT_LIPSTICK))


def _draw(sizes: np.ndarray, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Factors and hidden attributes for identities of the given sizes, images grouped by identity."""
    people = _sample_people(sizes, rng)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    images = _sample_images(people, owner, rng)
    columns = {**{key: value[owner] for key, value in people.items()}, **images}
    factors = pd.DataFrame({name: _typed(columns[name], FACTORS[name].kind) for name in FACTOR_NAMES})
    hidden = pd.DataFrame({name: columns[name].astype(bool) for name in HIDDEN_ATTRIBUTES})
    return factors, hidden


def _typed(values: np.ndarray, kind: str) -> np.ndarray:
    return values.astype({"bool": bool, "int": np.int8, "float": np.float64}[kind])


def sample_faces(n: int, seed: int, identities: int | None = None) -> SynthSample:
    """Draw a whole synthetic CelebA: identities, their images, factors and all 40 attributes.

    Images are ordered like CelebA's: the identities are split ~80/10/10 into partitions 0/1/2
    (identity-disjoint), each partition's images come as one block in that order, shuffled within
    it; identity numbers are a random relabelling 1..identities.
    """
    if not 1 <= n <= MAX_IMAGES:
        raise ValueError(f"n must be between 1 and {MAX_IMAGES:,} (six-digit image ids), got {n}")
    identities = max(1, round(n / IMAGES_PER_IDENTITY)) if identities is None else identities
    rng = np.random.default_rng(seed)
    sizes = identity_sizes(n, identities, rng)
    factors, hidden = _draw(sizes, rng)
    owner = np.repeat(np.arange(identities), sizes)

    order = rng.permutation(identities)
    cut = np.round(np.cumsum(PARTITION_SHARES)[:2] * identities).astype(int)
    partition_of = np.empty(identities, dtype=np.int8)
    for code, members in enumerate(np.split(order, cut)):
        partition_of[members] = code
    label_of = rng.permutation(identities) + 1
    rows = np.concatenate([rng.permutation(np.flatnonzero(partition_of[owner] == code)) for code in range(3)])

    image_ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    factors = factors.iloc[rows].reset_index(drop=True)
    factors.insert(0, PARTITION, partition_of[owner[rows]])
    factors.insert(0, IDENTITY, label_of[owner[rows]].astype(np.int32))
    factors.insert(0, IMAGE_ID, image_ids)
    attributes = attributes_from_factors(factors)
    for name in HIDDEN_ATTRIBUTES:
        attributes[name] = hidden[name].to_numpy()[rows]
    attributes = attributes[list(ATTRIBUTE_NAMES)]
    attributes.insert(0, IMAGE_ID, image_ids)
    return SynthSample(factors=factors, attributes=attributes)


def sample_factors(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n independent faces (each its own identity): a DataFrame with the FACTOR_NAMES columns.

    For the disentanglement metrics: set one column to a constant and `render_factors` the rest.
    """
    factors, _ = _draw(np.ones(n, dtype=np.int64), rng)
    return factors
