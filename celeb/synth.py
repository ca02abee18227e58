"""Synthetic CelebA: cartoon faces with known generative factors, in CelebA's exact on-disk layout.

`synthesize(out_dir, n, seed)` writes a folder that every CelebA reader accepts as the real thing
(torchvision's flat layout):

    out_dir/img_align_celeba/000001.jpg ...     178x218 RGB JPEGs (unless images=False)
    out_dir/list_attr_celeba.txt                the five annotation files in the official formats
    out_dir/list_eval_partition.txt             (count line, headers, padded fields, CRLF)
    out_dir/identity_CelebA.txt
    out_dir/list_bbox_celeba.txt
    out_dir/list_landmarks_align_celeba.txt
    out_dir/factors.parquet                     the TRUE generative factors of every image

The generative model has two levels, like CelebA: an identity fixes a person's base look (sex, skin
tone, hair colour/length/volume/texture, hairline, face shape, beard, eyebrows, nose, lips) and each
image of that person draws its own expression, accessories, pose and background. Rates come from
CELEBA_PREVALENCE and from the real per-sex rates in MALE_RATE, so all 40 attributes have CelebA's
prevalence and its obvious correlations (beards only on men, lipstick mostly on women, smiling with
an open mouth). Identity-level attributes are drawn with weighted stratified sampling so that their
image-level prevalence is exact, not just right on average.

37 of the 40 attributes are drawn (VISIBLE_ATTRIBUTES) and are a pure function of the factors
(`attributes_from_factors`); Attractive, High_Cheekbones and Young are sampled labels only.

Rendering is a pure function of one row of factors (`render_face`): no random numbers are drawn
while drawing, so a factor table re-renders to the same pixels, and the disentanglement metrics can
fix one factor and vary the rest (`sample_factors` + `render_factors`). FACTORS documents every
factor's type, range and meaning.
"""

from __future__ import annotations

import colorsys
import functools
import io
import math
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from celeb.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from celeb.data.schema import (
    ATTR_FILE, ATTRIBUTE_NAMES, BBOX_COLUMNS, BBOX_FILE, CELEBA_PREVALENCE, IDENTITY, IDENTITY_FILE,
    IMAGE_DIR, IMAGE_HEIGHT, IMAGE_ID, IMAGE_WIDTH, LANDMARK_COLUMNS, LANDMARKS_FILE, PARTITION,
    PARTITION_FILE,
)

FACTORS_FILE = "factors.parquet"
JPEG_QUALITY = 90
CHUNK = 128  # images per job handed to a worker process
MAX_IMAGES = 999_999  # CelebA's image ids have six digits

# --------------------------------------------------------------------------------------------
# The factors


class Factor(NamedTuple):
    kind: str  # "bool", "int" (a class index) or "float"
    low: float
    high: float
    level: str  # "identity": shared by all images of a person; "image": drawn per image
    meaning: str


HAIR_COLORS: tuple[str, ...] = ("black", "blond", "brown", "gray", "other")
HAIRLINES: tuple[str, ...] = ("normal", "receding", "bald")
HAIR_TEXTURES: tuple[str, ...] = ("plain", "straight", "wavy")


class BeardStyle(NamedTuple):
    name: str
    male_share: float  # share of men with this style among the first 20,000 real CelebA images
    stubble: int  # 0 none, 1 light (still No_Beard), 2 heavy
    full: bool
    goatee: bool
    mustache: bool
    sideburns: bool


# The 16 commonest real combinations of 5_o_Clock_Shadow/Goatee/Mustache/Sideburns/No_Beard among
# men (98.6% of them); shares are renormalised when sampling.
BEARD_STYLES: tuple[BeardStyle, ...] = (
    BeardStyle("clean", 0.5243, 0, False, False, False, False),
    BeardStyle("light stubble", 0.0734, 1, False, False, False, False),
    BeardStyle("heavy stubble", 0.1109, 2, False, False, False, False),
    BeardStyle("full beard", 0.0503, 0, True, False, False, False),
    BeardStyle("goatee", 0.0356, 0, False, True, False, False),
    BeardStyle("stubble + sideburns", 0.0308, 1, False, False, False, True),
    BeardStyle("goatee + sideburns", 0.0283, 0, False, True, False, True),
    BeardStyle("goatee + mustache + sideburns", 0.0234, 0, False, True, True, True),
    BeardStyle("mustache", 0.0228, 0, False, False, True, False),
    BeardStyle("sideburns", 0.0222, 0, False, False, False, True),
    BeardStyle("goatee + mustache", 0.0179, 0, False, True, True, False),
    BeardStyle("stubble + goatee + sideburns", 0.0159, 1, False, True, False, True),
    BeardStyle("stubble + goatee", 0.0119, 1, False, True, False, False),
    BeardStyle("stubble + goatee + mustache + sideburns", 0.0085, 1, False, True, True, True),
    BeardStyle("stubble + mustache", 0.0058, 1, False, False, True, False),
    BeardStyle("stubble + goatee + mustache", 0.0043, 1, False, True, True, False),
)

PALE_BELOW = 0.1  # skin_tone below this is Pale_Skin

FACTORS: dict[str, Factor] = {
    # identity level
    "male": Factor("bool", 0, 1, "identity", "square jaw, wider neck and brows; beards only on men"),
    "skin_tone": Factor("float", 0, 1, "identity", f"0 palest .. 1 darkest; < {PALE_BELOW} is Pale_Skin"),
    "hair_color": Factor("int", 0, len(HAIR_COLORS) - 1, "identity", f"index into HAIR_COLORS {HAIR_COLORS}"),
    "hair_shade": Factor("float", -1, 1, "identity", "hair brightness within its colour class"),
    "hair_length": Factor("float", 0, 1, "identity", "0 cropped .. 1 shoulder length; > 0.3 hangs below the ears"),
    "hair_thickness": Factor("float", 0, 1, "identity", "hair volume around the head (3 to 14 px)"),
    "hair_texture": Factor("int", 0, 2, "identity", f"index into HAIR_TEXTURES {HAIR_TEXTURES}"),
    "hairline": Factor("int", 0, 2, "identity", f"index into HAIRLINES {HAIRLINES}"),
    "face_width": Factor("float", 0, 1, "identity", "face half-width 36 .. 48 px (+5 if chubby)"),
    "oval_face": Factor("bool", 0, 1, "identity", "a longer face (+7 px)"),
    "chubby": Factor("bool", 0, 1, "identity", "a wider face (+5 px)"),
    "double_chin": Factor("bool", 0, 1, "identity", "a fold under the chin"),
    "beard_style": Factor("int", 0, len(BEARD_STYLES) - 1, "identity", "index into BEARD_STYLES"),
    "bushy_eyebrows": Factor("bool", 0, 1, "identity", "thick eyebrows"),
    "arched_eyebrows": Factor("bool", 0, 1, "identity", "eyebrows peaked in the middle"),
    "narrow_eyes": Factor("bool", 0, 1, "identity", "half-height eyes"),
    "bags_under_eyes": Factor("bool", 0, 1, "identity", "dark arcs under the eyes"),
    "big_nose": Factor("bool", 0, 1, "identity", "a wider nose"),
    "pointy_nose": Factor("bool", 0, 1, "identity", "a nose with a pointed tip"),
    "big_lips": Factor("bool", 0, 1, "identity", "thicker lips"),
    # image level
    "smile": Factor("float", 0, 1, "image", "mouth curvature and width; >= 0.5 is Smiling"),
    "mouth_open": Factor("bool", 0, 1, "image", "open mouth (teeth show when smiling)"),
    "eyeglasses": Factor("bool", 0, 1, "image", "dark frames"),
    "hat": Factor("bool", 0, 1, "image", "a brimmed hat (never on a bald or receding head)"),
    "hat_hue": Factor("float", 0, 1, "image", "hue of the hat"),
    "bangs": Factor("bool", 0, 1, "image", "a fringe over the forehead (normal hairline, no hat)"),
    "lipstick": Factor("bool", 0, 1, "image", "red lips"),
    "makeup": Factor("bool", 0, 1, "image", "eye shadow and eyeliner (Heavy_Makeup)"),
    "rosy_cheeks": Factor("bool", 0, 1, "image", "pink cheeks"),
    "earrings": Factor("bool", 0, 1, "image", "gold studs on the ear lobes"),
    "necklace": Factor("bool", 0, 1, "image", "a gold chain at the base of the neck"),
    "necktie": Factor("bool", 0, 1, "image", "a tie on the shirt (below the usual 148-px crop)"),
    "blurry": Factor("bool", 0, 1, "image", "Gaussian blur of radius 1.8 px"),
    "rotation": Factor("float", -15, 15, "image", "in-plane head rotation in degrees, counter-clockwise"),
    "scale": Factor("float", 0.95, 1.05, "image", "zoom about the face centre"),
    "shift_x": Factor("float", -3, 3, "image", "horizontal offset in px"),
    "shift_y": Factor("float", -3, 3, "image", "vertical offset in px"),
    "background_hue": Factor("float", 0, 1, "image", "hue of the plain background"),
    "background_value": Factor("float", 0.35, 0.95, "image", "brightness of the background"),
    "shirt_hue": Factor("float", 0, 1, "image", "hue of the shirt"),
}
FACTOR_NAMES: tuple[str, ...] = tuple(FACTORS)

HIDDEN_ATTRIBUTES: tuple[str, ...] = ("Attractive", "High_Cheekbones", "Young")
VISIBLE_ATTRIBUTES: tuple[str, ...] = tuple(a for a in ATTRIBUTE_NAMES if a not in HIDDEN_ATTRIBUTES)

# The factor each visible attribute is computed from (see attributes_from_factors): what a latent
# dim labelled with that attribute should carry, if the label is right.
ATTRIBUTE_FACTORS: dict[str, str] = {
    "5_o_Clock_Shadow": "beard_style", "Arched_Eyebrows": "arched_eyebrows", "Bags_Under_Eyes": "bags_under_eyes",
    "Bald": "hairline", "Bangs": "bangs", "Big_Lips": "big_lips", "Big_Nose": "big_nose",
    "Black_Hair": "hair_color", "Blond_Hair": "hair_color", "Blurry": "blurry", "Brown_Hair": "hair_color",
    "Bushy_Eyebrows": "bushy_eyebrows", "Chubby": "chubby", "Double_Chin": "double_chin",
    "Eyeglasses": "eyeglasses", "Goatee": "beard_style", "Gray_Hair": "hair_color", "Heavy_Makeup": "makeup",
    "Male": "male", "Mouth_Slightly_Open": "mouth_open", "Mustache": "beard_style", "Narrow_Eyes": "narrow_eyes",
    "No_Beard": "beard_style", "Oval_Face": "oval_face", "Pale_Skin": "skin_tone", "Pointy_Nose": "pointy_nose",
    "Receding_Hairline": "hairline", "Rosy_Cheeks": "rosy_cheeks", "Sideburns": "beard_style", "Smiling": "smile",
    "Straight_Hair": "hair_texture", "Wavy_Hair": "hair_texture", "Wearing_Earrings": "earrings",
    "Wearing_Hat": "hat", "Wearing_Lipstick": "lipstick", "Wearing_Necklace": "necklace",
    "Wearing_Necktie": "necktie",
}

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


def attributes_from_factors(factors: pd.DataFrame) -> pd.DataFrame:
    """The VISIBLE_ATTRIBUTES of each row, as bool columns: exactly what the renderer draws."""
    f = {name: factors[name].to_numpy() for name in FACTOR_NAMES}
    style = np.array([list(s[2:]) for s in BEARD_STYLES], dtype=int)[f["beard_style"].astype(int)]
    stubble, full, goatee, mustache, sideburns = style.T
    hair_color, hairline, texture = f["hair_color"], f["hairline"], f["hair_texture"]
    values = {
        "5_o_Clock_Shadow": stubble > 0, "Arched_Eyebrows": f["arched_eyebrows"],
        "Bags_Under_Eyes": f["bags_under_eyes"], "Bald": hairline == 2, "Bangs": f["bangs"],
        "Big_Lips": f["big_lips"], "Big_Nose": f["big_nose"], "Black_Hair": hair_color == 0,
        "Blond_Hair": hair_color == 1, "Blurry": f["blurry"], "Brown_Hair": hair_color == 2,
        "Bushy_Eyebrows": f["bushy_eyebrows"], "Chubby": f["chubby"], "Double_Chin": f["double_chin"],
        "Eyeglasses": f["eyeglasses"], "Goatee": goatee > 0, "Gray_Hair": hair_color == 3,
        "Heavy_Makeup": f["makeup"], "Male": f["male"], "Mouth_Slightly_Open": f["mouth_open"],
        "Mustache": mustache > 0, "Narrow_Eyes": f["narrow_eyes"],
        "No_Beard": ~((stubble == 2) | (full > 0) | (goatee > 0) | (mustache > 0) | (sideburns > 0)),
        "Oval_Face": f["oval_face"], "Pale_Skin": f["skin_tone"] < PALE_BELOW,
        "Pointy_Nose": f["pointy_nose"], "Receding_Hairline": hairline == 1,
        "Rosy_Cheeks": f["rosy_cheeks"], "Sideburns": sideburns > 0, "Smiling": f["smile"] >= 0.5,
        "Straight_Hair": texture == 1, "Wavy_Hair": texture == 2, "Wearing_Earrings": f["earrings"],
        "Wearing_Hat": f["hat"], "Wearing_Lipstick": f["lipstick"], "Wearing_Necklace": f["necklace"],
        "Wearing_Necktie": f["necktie"],
    }
    return pd.DataFrame({name: np.asarray(values[name], dtype=bool) for name in VISIBLE_ATTRIBUTES})


# --------------------------------------------------------------------------------------------
# Geometry, shared by the renderer and the bbox/landmark files. All functions work on scalars
# and on numpy arrays alike. Coordinates are in the 178x218 frame; the "canonical" face is
# upright, centred at (CX, CY), then rotated/scaled/shifted as a whole.

CX, CY = 89.0, 118.0
EYE_Y, NOSE_Y, MOUTH_Y = 111.0, 136.0, 152.0


def face_half_width(f: Mapping[str, Any]) -> Any:
    return 36.0 + 12.0 * np.asarray(f["face_width"], dtype=float) + 5.0 * np.asarray(f["chubby"], dtype=float)


def face_half_height(f: Mapping[str, Any]) -> Any:
    return 56.0 + 7.0 * np.asarray(f["oval_face"], dtype=float)


def eye_offset(a: Any) -> Any:
    return 19.0 + 0.15 * (a - 44.0)


def mouth_corners(f: Mapping[str, Any]) -> tuple[Any, Any]:
    """Half-width of the mouth and the height of its corners (a smile widens and lifts them)."""
    smile = np.asarray(f["smile"], dtype=float)
    return 13.0 + 4.0 * smile, MOUTH_Y - 4.0 * smile


def _pose(f: Mapping[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
    theta = np.radians(np.asarray(f["rotation"], dtype=float))
    return (np.cos(theta), np.sin(theta), np.asarray(f["scale"], dtype=float),
            np.asarray(f["shift_x"], dtype=float), np.asarray(f["shift_y"], dtype=float))


def to_frame(x: Any, y: Any, f: Mapping[str, Any]) -> tuple[Any, Any]:
    """Canonical face coordinates -> image coordinates (rotation counter-clockwise on screen)."""
    cos, sin, scale, dx, dy = _pose(f)
    u, v = x - CX, y - CY
    return CX + scale * (cos * u + sin * v) + dx, CY + scale * (-sin * u + cos * v) + dy


def face_landmarks(factors: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
    """(n, 10) int landmarks in LANDMARK_COLUMNS order: eye centres, nose tip, mouth corners.

    "left" is the image's left, as in CelebA's aligned landmarks.
    """
    f = _columns(factors)
    a = face_half_width(f)
    ex = eye_offset(a)
    mw, my = mouth_corners(f)
    nose_y = NOSE_Y + 2.0 * np.asarray(f["pointy_nose"], dtype=float)
    points = [(CX - ex, EYE_Y), (CX + ex, EYE_Y), (CX, nose_y), (CX - mw, my), (CX + mw, my)]
    coordinates = [c for x, y in points for c in to_frame(x, y, f)]
    return np.rint(np.stack(np.broadcast_arrays(*coordinates), axis=-1)).astype(np.int32).reshape(-1, 10)


def face_bbox(factors: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
    """(n, 4) int boxes x_1, y_1, width, height around the face (skull and chin) in the image."""
    f = _columns(factors)
    a, b = face_half_width(f), face_half_height(f)
    cos, sin, scale, _, _ = _pose(f)
    cx, cy = to_frame(CX, CY, f)
    half_w = scale * np.sqrt((a * cos) ** 2 + (b * sin) ** 2)
    half_h = scale * np.sqrt((a * sin) ** 2 + (b * cos) ** 2)
    x1, y1 = np.rint(cx - half_w), np.rint(cy - half_h)
    box = np.stack([x1, y1, np.rint(cx + half_w) - x1, np.rint(cy + half_h) - y1], axis=-1)
    return box.astype(np.int32).reshape(-1, 4)


def _columns(factors: pd.DataFrame | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(factors, pd.DataFrame):
        return {name: factors[name].to_numpy() for name in factors.columns}
    return factors


# --------------------------------------------------------------------------------------------
# Rendering. Every shape is built in canonical coordinates and mapped through the pose (rotation,
# scale, shift) before it is drawn, so the only resampling is the final 2x -> 1x box filter:
# a PIL affine resample of the finished image would cost more than all the drawing.

SUPERSAMPLE = 2  # draw at 2x and downsize: cheap anti-aliasing

SKIN_PALETTE = (  # skin_tone -> RGB
    (0.00, (255, 236, 228)), (0.10, (250, 222, 205)), (0.15, (243, 206, 178)),
    (0.45, (220, 168, 128)), (0.70, (172, 118, 80)), (1.00, (98, 62, 42)),
)
HAIR_RGB = {0: (34, 27, 26), 1: (226, 192, 118), 2: (108, 68, 40), 3: (168, 168, 172), 4: (156, 64, 34)}
EYE_WHITE, IRIS, DARK = (245, 245, 240), (72, 48, 32), (28, 22, 22)
LIPSTICK_RGB, GOLD, FRAME_RGB, MOUTH_RGB, TEETH_RGB = (192, 24, 58), (228, 188, 60), (24, 24, 26), (74, 22, 28), (240, 238, 230)

Color = tuple[int, int, int]
_ANGLES = np.linspace(0, 2 * np.pi, 28, endpoint=False)
_UNIT_CIRCLE = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)  # ellipses are drawn as 28-gons


def _mix(c1: Sequence[float], c2: Sequence[float], t: float) -> Color:
    return tuple(int(round(a + (b - a) * t)) for a, b in zip(c1, c2))  # type: ignore[return-value]


def _hsv(h: float, s: float, v: float) -> Color:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))  # type: ignore[return-value]


def skin_rgb(tone: float) -> Color:
    stops = [t for t, _ in SKIN_PALETTE]
    return tuple(int(round(np.interp(tone, stops, [c[i] for _, c in SKIN_PALETTE]))) for i in range(3))  # type: ignore[return-value]


def hair_rgb(color: int, shade: float) -> Color:
    base = HAIR_RGB[int(color)]
    if color == 0:  # black stays black; shade only lifts it a little
        return tuple(int(c + 16 * (shade + 1)) for c in base)  # type: ignore[return-value]
    return tuple(int(min(255, c * (1 + 0.22 * shade))) for c in base)  # type: ignore[return-value]


@functools.cache
def _steps(k: int) -> np.ndarray:
    """k evenly spaced parameters from 0 to 1 (cached: shapes use the same few counts)."""
    steps = np.linspace(0.0, 1.0, k)
    steps.flags.writeable = False
    return steps


@functools.cache
def _bezier_basis(k: int) -> np.ndarray:
    """(k, 3) weights of a quadratic Bezier curve's three control points at k even steps."""
    t = _steps(k)[:, None]
    basis = np.concatenate([(1 - t) ** 2, 2 * t * (1 - t), t * t], axis=1)
    basis.flags.writeable = False
    return basis


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float, k: int, power: float = 2.0) -> np.ndarray:
    """(k, 2) points of the superellipse |x/rx|^p + |y/ry|^p = 1 from angle start to stop (degrees, y down)."""
    t = math.radians(start) + math.radians(stop - start) * _steps(k)
    c, s = np.cos(t), np.sin(t)
    if power != 2.0:
        c, s = np.sign(c) * np.abs(c) ** (2 / power), np.sign(s) * np.abs(s) ** (2 / power)
    return np.stack([cx + rx * c, cy + ry * s], axis=1)


def _curve(p0: Sequence[float], mid: Sequence[float], p2: Sequence[float], k: int = 7) -> np.ndarray:
    """(k, 2) points of the parabola from p0 through mid (at t = 0.5) to p2."""
    (x0, y0), (xm, ym), (x2, y2) = p0, mid, p2
    control = (2 * xm - (x0 + x2) / 2, 2 * ym - (y0 + y2) / 2)
    return _bezier_basis(k) @ np.array([(x0, y0), control, (x2, y2)], dtype=float)


def _points(*parts: Any) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=float).reshape(-1, 2) for p in parts])


def _ellipse_x(a: float, b: float, y: float) -> float:
    """Half-width of the face ellipse at height y."""
    return a * math.sqrt(max(0.0, 1 - ((y - CY) / b) ** 2))


class _Pen:
    """Draws canonical-coordinate shapes on a SUPERSAMPLE x canvas through one face's pose."""

    def __init__(self, image: Image.Image, f: Mapping[str, Any]) -> None:
        self.draw = ImageDraw.Draw(image)
        cos, sin, scale, dx, dy = (float(v) for v in _pose(f))
        k = SUPERSAMPLE
        # canonical (x, y) -> canvas: k * (C + scale * R (p - C) + shift)
        self.matrix = k * scale * np.array([[cos, -sin], [sin, cos]])
        self.offset = k * (np.array([CX + dx, CY + dy]) - scale * np.array([cos * CX + sin * CY, -sin * CX + cos * CY]))
        self.unit = k * scale  # canonical length -> canvas pixels

    def _xy(self, points: np.ndarray) -> list[float]:
        return (np.asarray(points, dtype=float) @ self.matrix + self.offset).ravel().tolist()

    def polygon(self, points: np.ndarray, fill: Color) -> None:
        self.draw.polygon(self._xy(points), fill=fill)

    def line(self, points: np.ndarray, fill: Color, width: float) -> None:
        self.draw.line(self._xy(points), fill=fill, width=max(1, round(width * self.unit)), joint="curve")

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Color) -> None:
        if rx == ry:  # a circle stays a circle under the pose
            (m00, m01), (m10, m11) = self.matrix.tolist()
            x = cx * m00 + cy * m10 + self.offset[0]
            y = cx * m01 + cy * m11 + self.offset[1]
            r = rx * self.unit
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        else:
            self.polygon(_UNIT_CIRCLE * (rx, ry) + (cx, cy), fill)


@dataclass
class _Look:
    """The colours and sizes one face is drawn with, worked out once from its factors."""

    a: float  # face half-width
    b: float  # face half-height
    male: bool
    skin: Color
    shadow: Color
    hair: Color
    hair_dark: Color
    beard: Color
    background: Color
    volume: float  # hair volume beyond the skull
    style: BeardStyle


def _look(f: Mapping[str, Any]) -> _Look:
    skin = skin_rgb(float(f["skin_tone"]))
    hair = hair_rgb(int(f["hair_color"]), float(f["hair_shade"]))
    return _Look(
        a=float(face_half_width(f)), b=float(face_half_height(f)), male=bool(f["male"]), skin=skin,
        shadow=_mix(skin, (60, 30, 20), 0.18), hair=hair,
        hair_dark=_mix(hair, (0, 0, 0), 0.3) if int(f["hair_color"]) else _mix(hair, (255, 255, 255), 0.15),
        beard=_mix(hair, (0, 0, 0), 0.15),
        background=_hsv(float(f["background_hue"]), 0.3, float(f["background_value"])),
        volume=3.0 + 11.0 * float(f["hair_thickness"]), style=BEARD_STYLES[int(f["beard_style"])],
    )


def render_face(factors: Mapping[str, Any]) -> Image.Image:
    """Draw one face (178x218 RGB) from a mapping of FACTOR_NAMES to values. Deterministic."""
    f = {name: factors[name] for name in FACTOR_NAMES}
    look = _look(f)
    image = Image.new("RGB", (IMAGE_WIDTH * SUPERSAMPLE, IMAGE_HEIGHT * SUPERSAMPLE), look.background)
    pen = _Pen(image, f)
    # Back to front.
    _draw_body(pen, f, look)
    _draw_back_hair(pen, f, look)
    outline = _draw_head(pen, f, look)
    _draw_beard(pen, look, outline)
    _draw_front_hair(pen, f, look)
    _draw_eyes(pen, f, look)
    _draw_nose(pen, f, look)
    _draw_mouth(pen, f, look)
    _draw_accessories(pen, f, look)
    image = image.reduce(SUPERSAMPLE)
    if f["blurry"]:
        image = image.filter(ImageFilter.GaussianBlur(1.8))
    return image


def _draw_body(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Shoulders, neck, necktie, necklace."""
    a, b = look.a, look.b
    neck = (0.6 if look.male else 0.48) * a
    pen.ellipse(CX, 262, 96, 62, fill=_hsv(float(f["shirt_hue"]), 0.55, 0.55))
    if int(f["hairline"]) != 2 and float(f["hair_length"]) > 0.3:
        _draw_long_hair(pen, f, look)
    pen.polygon(_points((CX - neck, CY + 0.4 * b), (CX + neck, CY + 0.4 * b), (CX + neck, 202), (CX, 214),
                        (CX - neck, 202)), fill=look.shadow)
    if f["necktie"]:
        tie = _hsv(float(f["shirt_hue"]) + 0.5, 0.7, 0.4)
        pen.polygon(_points((CX - 4, 205), (CX + 4, 205), (CX + 3, 211), (CX - 3, 211)), fill=tie)
        pen.polygon(_points((CX - 3, 211), (CX + 3, 211), (CX + 6, 230), (CX - 6, 230)), fill=tie)
    if f["necklace"]:
        pen.line(_curve((CX - neck, 186), (CX, 198), (CX + neck, 186)), fill=GOLD, width=1.6)
        pen.ellipse(CX, 199.5, 2.2, 2.2, fill=GOLD)


def _draw_long_hair(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Hair hanging behind the neck, down to CY + 10 + 90 * hair_length, with its texture."""
    half = look.a + look.volume
    bottom = CY + 10 + 90 * float(f["hair_length"])
    corners = [_arc(CX + side * (half - 8), bottom - 8, 8, 8, start, start + 90, 5)
               for side, start in ((1, 0), (-1, 90))]
    pen.polygon(_points((CX - half, CY), (CX + half, CY), *corners), fill=look.hair)
    texture = int(f["hair_texture"])
    if texture == 2:  # wavy: scalloped edges
        for y in np.arange(CY + 4, bottom - 4, 8.0):
            for side in (-1, 1):
                pen.ellipse(CX + side * half, float(y), 4, 4, fill=look.hair)
    elif texture == 1:  # straight: long vertical strands
        for side in (-1, 1):
            for inset in (3.0, 7.0):
                x = CX + side * (half - inset)
                pen.line(_points((x, CY), (x, bottom - 3)), fill=look.hair_dark, width=1.2)


def _draw_back_hair(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Hair around the skull: down to the ears (or just above them when cropped short)."""
    if int(f["hairline"]) == 2:
        return
    length = min(float(f["hair_length"]), 0.3) / 0.3
    reach = -20 + 30 * length  # degrees below the horizontal at which the sides end (temples .. ears)
    top = _arc(CX, CY, look.a + look.volume, look.b + look.volume * 1.1, 180 - reach, 360 + reach, 21)
    pen.polygon(top, fill=look.hair)
    if int(f["hair_texture"]) == 2:
        r = 1.5 + 0.35 * look.volume
        for x, y in top[::2]:
            pen.ellipse(float(x), float(y), r, r, fill=look.hair)


def _draw_head(pen: _Pen, f: Mapping[str, Any], look: _Look) -> np.ndarray:
    """Ears, face (a squarer jaw for men), double chin, earrings. Returns the face outline."""
    a, b = look.a, look.b
    for side in (-1, 1):
        pen.ellipse(CX + side * (a - 1), EYE_Y + 6, 5.5, 10, fill=look.shadow)
    jaw = 3.0 if look.male else 2.0
    outline = _points(_arc(CX, CY, a, b, 180, 360, 19), _arc(CX, CY, a, b, 0, 180, 19, power=jaw)[1:-1])
    pen.polygon(outline, fill=look.skin)
    if f["double_chin"]:  # a second, lower chin below a crease
        pen.polygon(_curve((CX - 0.42 * a, CY + b - 6), (CX, CY + b + 6), (CX + 0.42 * a, CY + b - 6)), fill=look.skin)
        pen.line(_curve((CX - 0.3 * a, CY + b - 3), (CX, CY + b + 0.5), (CX + 0.3 * a, CY + b - 3)),
                 fill=look.shadow, width=1.6)
    if f["earrings"]:
        for side in (-1, 1):
            pen.ellipse(CX + side * (a + 0.5), EYE_Y + 16, 2.6, 2.6, fill=GOLD)
    return outline


def _draw_beard(pen: _Pen, look: _Look, outline: np.ndarray) -> None:
    """Stubble or full beard over the lower face, goatee, sideburns (the mustache goes with the mouth)."""
    a, b, style = look.a, look.b, look.style
    if style.stubble or style.full:
        cut = NOSE_Y + 4
        half = _ellipse_x(a, b, cut)
        region = _points((CX + half, cut), outline[outline[:, 1] >= cut], (CX - half, cut))
        if style.full:  # a little fuller than the jaw
            region = np.stack([CX + 1.06 * (region[:, 0] - CX),
                               region[:, 1] + np.where(region[:, 1] > CY + 0.8 * b, 2.5, 0)], axis=1)
        tint = 1.0 if style.full else (0.35 if style.stubble == 1 else 0.6)
        pen.polygon(region, fill=_mix(look.skin, look.beard, tint))
    if style.goatee:
        pen.ellipse(CX, MOUTH_Y + 13, 9, 8.5, fill=look.beard)
    if style.sideburns:
        top, bottom = CY - 0.5 * b, EYE_Y + 18
        for side in (-1, 1):
            edge = [(CX + side * (_ellipse_x(a, b, y) + 1), y) for y in (top, EYE_Y, bottom)]
            inner = [(x - side * 6, y) for x, y in reversed(edge)]
            pen.polygon(_points(*edge, *inner), fill=look.beard)


def _draw_front_hair(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """The hair over the forehead down to the hairline, straight strands, bangs; tufts when bald."""
    a, b = look.a, look.b
    hairline = int(f["hairline"])
    if hairline == 2:
        for side in (-1, 1):
            pen.ellipse(CX + side * (a - 1.5), EYE_Y - 6, 4.2, 10, fill=look.hair)
        return
    side_y, centre_y = (CY - 0.45 * b, CY - 0.6 * b) if hairline == 0 else (CY - 0.86 * b, CY - 0.72 * b)
    start = math.degrees(math.asin((side_y - CY) / (b + 1)))
    cap = _arc(CX, CY, a + 1, b + 1, 180 - start, 360 + start, 17)
    pen.polygon(_points(cap, _curve(cap[-1], (CX, centre_y), cap[0])[1:-1]), fill=look.hair)
    if int(f["hair_texture"]) == 1:
        for dx in (-0.5, -0.25, 0.0, 0.25, 0.5):
            x = CX + dx * a
            y_top = CY - (b + look.volume) * math.sqrt(1 - (dx * a / (a + look.volume)) ** 2)
            y_end = centre_y - 2 + abs(dx) * 2 * (side_y - centre_y) * 0.5
            pen.line(_points((x, y_top + 2), (x + dx * 4, y_end)), fill=look.hair_dark, width=1.2)
    if f["bangs"]:
        fringe_y = EYE_Y - 15
        half = _ellipse_x(a, b, fringe_y)
        start = math.degrees(math.asin((fringe_y - CY) / (b + 1)))
        teeth = np.linspace(CX + half, CX - half, 10)
        fringe = np.stack([teeth, fringe_y - 5.0 * (np.arange(10) % 2)], axis=1)
        pen.polygon(_points(_arc(CX, CY, a + 1, b + 1, 180 - start, 360 + start, 13), fringe), fill=look.hair)


def _draw_eyes(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Eye shadow, eyes, lids, bags, eyebrows."""
    ex = eye_offset(look.a)
    narrow = bool(f["narrow_eyes"])
    half_h = 2.0 if narrow else 3.8
    brow = _mix(look.hair, (0, 0, 0), 0.35)
    brow_width = (3.4 if f["bushy_eyebrows"] else 1.8) + (0.6 if look.male else 0.0)
    arched = bool(f["arched_eyebrows"])
    for side in (-1, 1):
        x = CX + side * ex
        if f["makeup"]:
            pen.ellipse(x, EYE_Y - 3, 8.5, 5, fill=_mix(look.skin, (130, 70, 140), 0.55))
        pen.ellipse(x, EYE_Y, 6.5, half_h, fill=EYE_WHITE)
        iris = min(3.0, half_h)
        pen.ellipse(x, EYE_Y, iris, iris, fill=IRIS)
        pen.ellipse(x, EYE_Y, 1.3, 1.3, fill=DARK)
        pen.line(_curve((x - 6.8, EYE_Y + 0.5), (x, EYE_Y - half_h - 0.3), (x + 6.8, EYE_Y + 0.5), 5), fill=DARK,
                 width=1.8 if f["makeup"] else 1.0)
        if f["bags_under_eyes"]:
            pen.line(_curve((x - 5.5, EYE_Y + half_h + 1.5), (x, EYE_Y + half_h + 4), (x + 5.5, EYE_Y + half_h + 1.5), 5),
                     fill=_mix(look.skin, (90, 50, 60), 0.4), width=1.7)
        brow_y = EYE_Y - (8.5 if narrow else 10)
        peak = (x + side * 1.5, brow_y - 3.5) if arched else (x, brow_y - 0.8)
        pen.line(_points((x - side * 8, brow_y + 0.5), peak, (x + side * 8, brow_y + (2.0 if arched else 0.5))),
                 fill=brow, width=brow_width)


def _draw_nose(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """A shaded wedge ending in a round tip, or in a sharp point lower down when pointy."""
    half = 8.0 if f["big_nose"] else 5.0
    shade = _mix(look.skin, (70, 35, 25), 0.16)
    if f["pointy_nose"]:
        pen.polygon(_points((CX, EYE_Y + 4), (CX + 0.45 * half, NOSE_Y - 6), (CX + 0.7 * half, NOSE_Y - 1),
                            (CX, NOSE_Y + 4), (CX - 0.7 * half, NOSE_Y - 1), (CX - 0.45 * half, NOSE_Y - 6)), fill=shade)
    else:
        pen.polygon(_points((CX, EYE_Y + 4), (CX + 0.45 * half, NOSE_Y - 6), (CX + half, NOSE_Y), (CX - half, NOSE_Y),
                            (CX - 0.45 * half, NOSE_Y - 6)), fill=shade)
        pen.ellipse(CX, NOSE_Y - 0.5, 0.55 * half, 3.0, fill=shade)
    nostril = _mix(look.skin, (40, 15, 10), 0.55)
    for side in (-1, 1):
        pen.ellipse(CX + side * 0.5 * half, NOSE_Y - 0.5, 1.4 + 0.1 * half, 1.1, fill=nostril)


def _draw_mouth(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Mustache, lips (red with lipstick), the opening with teeth when smiling, rosy cheeks."""
    smile = float(f["smile"])
    mw, my = (float(v) for v in mouth_corners(f))
    mid = MOUTH_Y + 2.5 * smile
    upper, lower = (4.2, 5.6) if f["big_lips"] else (2.6, 3.6)
    opening = (3.0 + 4.0 * smile) if f["mouth_open"] else 0.0
    lips = LIPSTICK_RGB if f["lipstick"] else _mix(look.skin, (165, 55, 65), 0.45)
    left, right = (CX - mw, my), (CX + mw, my)
    inner_top = _curve(left, (CX, mid), right)
    inner_bottom = _curve(right, (CX, mid + opening), left)
    if look.style.mustache:
        top = mid - upper
        pen.polygon(_points((CX - mw - 2, my - 1), (CX - 4, top - 6), (CX, top - 4.5), (CX + 4, top - 6),
                            (CX + mw + 2, my - 1), (CX + mw - 1, my - 2.5), (CX, top - 1.5), (CX - mw + 1, my - 2.5)),
                    fill=look.beard)
    bow = mid - upper - 0.6 * (1 - smile)
    top_lip = _points(_curve(left, (CX - 0.5 * mw, bow), (CX, mid - upper + 0.8), 4),
                      _curve((CX, mid - upper + 0.8), (CX + 0.5 * mw, bow), right, 4)[1:])
    pen.polygon(_points(top_lip, inner_top[::-1][1:-1]), fill=lips)
    if opening:
        pen.polygon(_points(inner_top, inner_bottom[1:-1]), fill=MOUTH_RGB)
        if smile >= 0.5:
            teeth = inner_top[::-1] + np.array([0.0, min(2.6, 0.45 * opening)])
            pen.polygon(_points(inner_top[1:-1], teeth[1:-1]), fill=TEETH_RGB)
    pen.polygon(_points(inner_bottom, _curve(left, (CX, mid + opening + lower), right)[1:-1]), fill=lips)
    if not opening:
        pen.line(inner_top, fill=_mix(lips, (0, 0, 0), 0.5), width=1.0)
    if f["rosy_cheeks"]:
        for side in (-1, 1):
            pen.ellipse(CX + side * 0.55 * look.a, MOUTH_Y - 13, 7, 4.5, fill=_mix(look.skin, (232, 92, 108), 0.45))


def _draw_accessories(pen: _Pen, f: Mapping[str, Any], look: _Look) -> None:
    """Eyeglasses and hat, over everything else."""
    a, b = look.a, look.b
    if f["eyeglasses"]:
        ex = eye_offset(a)
        for side in (-1, 1):
            x = CX + side * ex
            pen.line(_arc(x, EYE_Y - 0.3, 9.5, 7.3, 0, 360, 25, power=3.0), fill=FRAME_RGB, width=1.7)
            pen.line(_points((CX + side * (ex + 9.5), EYE_Y - 2), (CX + side * (a + 1), EYE_Y - 1)), fill=FRAME_RGB, width=1.6)
        pen.line(_points((CX - ex + 9.5, EYE_Y - 2), (CX, EYE_Y - 4), (CX + ex - 9.5, EYE_Y - 2)), fill=FRAME_RGB, width=1.6)
    if f["hat"]:
        brim_y = CY - 0.72 * b
        crown_top = CY - b - look.volume - 4
        color = _hsv(float(f["hat_hue"]), 0.6, 0.62)
        half = a + look.volume
        pen.polygon(_arc(CX, brim_y, half - 1, brim_y - crown_top, 180, 360, 15), fill=color)
        pen.polygon(_points((CX - half, brim_y - 6), (CX + half, brim_y - 6), (CX + half, brim_y - 2),
                            (CX - half, brim_y - 2)), fill=_mix(color, (0, 0, 0), 0.35))
        pen.ellipse(CX, brim_y, half + 10, 4.5, fill=color)


def encode_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def render_factors(factors: pd.DataFrame, workers: int | None = 1, progress: bool = False) -> np.ndarray:
    """Render every row of a factor table: (n, 218, 178, 3) uint8, the same for any `workers`."""
    missing = [name for name in FACTOR_NAMES if name not in factors.columns]
    if missing:
        raise ValueError(f"factor table lacks column(s) {missing}; sample one with sample_factors() "
                         "or read factors.parquet from a `celeb synth` folder")
    records = factors[list(FACTOR_NAMES)].to_dict("records")
    out = np.empty((len(records), IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
    jobs = [(start, records[start:stop]) for start, stop in _chunks(len(records))]
    with _progress(len(records), progress, "rendering") as bar:
        for start, pixels in _map(_render_chunk, jobs, workers):
            out[start:start + len(pixels)] = pixels
            bar.update(len(pixels))
    return out


def _render_chunk(job: tuple[int, list[dict[str, Any]]]) -> tuple[int, np.ndarray]:
    start, records = job
    return start, np.stack([np.asarray(render_face(record)) for record in records])


def _write_chunk(job: tuple[Path, list[str], list[dict[str, Any]]]) -> int:
    image_dir, image_ids, records = job
    for image_id, record in zip(image_ids, records):
        write_bytes_atomic(image_dir / image_id, encode_jpeg(render_face(record)))
    return len(records)


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]


def _map(function: Callable[[Any], Any], jobs: list[Any], workers: int | None) -> Iterator[Any]:
    """Yield function(job) for every job (in any order), in worker processes when that pays off."""
    workers = default_workers(len(jobs)) if workers is None else min(workers, len(jobs))
    if workers <= 1:
        yield from map(function, jobs)
        return
    # spawn, not fork: the caller may hold threads (torch, Ray) that fork would copy half-locked.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(function, jobs)


def default_workers(chunks: int) -> int:
    """All cores, but a process only per 4 chunks: starting one costs about as much as 100 faces."""
    return max(1, min(os.cpu_count() or 1, chunks // 4))


def _progress(total: int, enabled: bool, what: str) -> tqdm:
    return tqdm(total=total, desc=what, unit="img", disable=not enabled, leave=False)


# --------------------------------------------------------------------------------------------
# The files


# Row layouts as printf formats, padded like the real files; one % per row keeps 202,599 rows quick.
# Like the real file, the first value follows the id after one space, unpadded ("000007.jpg 1 -1");
# the other values are right-aligned in 2-wide fields after a space ("  1", " -1").
ATTR_ROW = "%s %d" + "%3d" * (len(ATTRIBUTE_NAMES) - 1)  # 000001.jpg -1  1  1 -1 ...
PAIR_ROW = "%s %d"  # 000001.jpg 2880
BBOX_ROW = "%s%6d%4d%4d%4d"  # 000001.jpg    95  71 226 313
LANDMARKS_ROW = "%s %d" + "%5d" * (len(LANDMARK_COLUMNS) - 1)  # 000001.jpg 69  109  106  113   77 ...


def _rows(template: str, image_ids: Sequence[str], values: np.ndarray) -> list[str]:
    columns = np.asarray(values).reshape(len(image_ids), -1).T.tolist()
    return [template % row for row in zip(image_ids, *columns)]


def attr_text(attributes: pd.DataFrame) -> str:
    """list_attr_celeba.txt: count, header with a trailing space, rows of +-1 values (ATTR_ROW)."""
    signs = np.where(attributes[list(ATTRIBUTE_NAMES)].to_numpy(bool), 1, -1)
    rows = _rows(ATTR_ROW, attributes[IMAGE_ID].tolist(), signs)
    return _lines([str(len(rows)), " ".join(ATTRIBUTE_NAMES) + " ", *rows])


def pairs_text(image_ids: Sequence[str], values: Sequence[int]) -> str:
    """list_eval_partition.txt / identity_CelebA.txt: `000001.jpg 0` rows, no header."""
    return _lines(_rows(PAIR_ROW, image_ids, np.asarray(values)))


def bbox_text(image_ids: Sequence[str], boxes: np.ndarray) -> str:
    """list_bbox_celeba.txt: count, header with a trailing space, padded rows."""
    rows = _rows(BBOX_ROW, image_ids, boxes)
    return _lines([str(len(rows)), " ".join(("image_id", *BBOX_COLUMNS)) + " ", *rows])


def landmarks_text(image_ids: Sequence[str], landmarks: np.ndarray) -> str:
    """list_landmarks_align_celeba.txt: count, header of LANDMARK_COLUMNS, padded rows."""
    rows = _rows(LANDMARKS_ROW, image_ids, landmarks)
    return _lines([str(len(rows)), " ".join(LANDMARK_COLUMNS), *rows])


def _lines(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"  # written with newline="\r\n"


@dataclass(frozen=True)
class SynthResult:
    """What `synthesize` wrote, with the tables in memory and the rendering time."""

    out_dir: Path
    n_images: int
    n_identities: int
    factors: pd.DataFrame  # as written to factors.parquet
    attributes: pd.DataFrame  # image_id + the 40 attributes, as written to list_attr_celeba.txt
    render_seconds: float  # 0 when images=False

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.render_seconds if self.render_seconds else float("nan")


_IMAGE_NAME = re.compile(r"[0-9]{6}\.jpg")


def synthesize(out_dir: Path, n: int, seed: int, identities: int | None = None, images: bool = True,
               workers: int | None = None, progress: bool = True) -> SynthResult:
    """Write n synthetic faces and their annotations into out_dir in CelebA's flat layout.

    The same (n, seed, identities) gives byte-identical files for any number of workers. Rerunning
    into a folder this function wrote before replaces it, including removing JPEGs it no longer
    describes; a folder holding CelebA files from elsewhere is refused rather than overwritten.

    Workers are spawned processes (safe beside threads), so a script that calls this with more
    than one worker needs the usual `if __name__ == "__main__":` guard.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir)
    sample = sample_faces(n, seed, identities)
    factors, attributes = sample.factors, sample.attributes
    image_ids = factors[IMAGE_ID].tolist()
    image_dir = out_dir / IMAGE_DIR

    seconds = 0.0
    _remove_stale_images(image_dir, keep=n if images else 0)
    if images:
        image_dir.mkdir(parents=True, exist_ok=True)
        records = factors[list(FACTOR_NAMES)].to_dict("records")
        jobs = [(image_dir, image_ids[a:b], records[a:b]) for a, b in _chunks(n)]
        started = time.perf_counter()
        with _progress(n, progress, "synth images") as bar:
            for done in _map(_write_chunk, jobs, workers):
                bar.update(done)
        seconds = time.perf_counter() - started

    write_text_atomic(out_dir / PARTITION_FILE, pairs_text(image_ids, factors[PARTITION].tolist()), newline="\r\n")
    write_text_atomic(out_dir / IDENTITY_FILE, pairs_text(image_ids, factors[IDENTITY].tolist()), newline="\r\n")
    write_text_atomic(out_dir / BBOX_FILE, bbox_text(image_ids, face_bbox(factors)), newline="\r\n")
    write_text_atomic(out_dir / LANDMARKS_FILE, landmarks_text(image_ids, face_landmarks(factors)), newline="\r\n")
    write_text_atomic(out_dir / ATTR_FILE, attr_text(attributes), newline="\r\n")
    with atomic_path(out_dir / FACTORS_FILE) as tmp:
        factors.to_parquet(tmp, index=False)
    return SynthResult(out_dir=out_dir, n_images=n, n_identities=int(factors[IDENTITY].nunique()),
                       factors=factors, attributes=attributes, render_seconds=seconds)


def _check_target(out_dir: Path) -> None:
    if (out_dir / ATTR_FILE).exists() and not (out_dir / FACTORS_FILE).exists():
        raise ValueError(f"{out_dir} already holds {ATTR_FILE} that `celeb synth` did not write "
                         f"(no {FACTORS_FILE} beside it); choose an empty or new output folder")


def _remove_stale_images(image_dir: Path, keep: int) -> None:
    """Delete our NNNNNN.jpg files numbered above `keep` (left by an earlier, larger run)."""
    if not image_dir.is_dir() or not (image_dir.parent / FACTORS_FILE).exists():
        return
    for path in image_dir.iterdir():
        if _IMAGE_NAME.fullmatch(path.name) and int(path.name[:6]) > keep:
            path.unlink()


def copy_true_factors(celeba_dir: Path, data_dir: Path, image_ids: Sequence[str]) -> Path | None:
    """Copy a synthetic folder's factors.parquet into a data dir beside the table (`celeb prepare`), checked
    to be row-aligned with it, so reviews can check latent labels against the truth. None for real CelebA."""
    source = celeba_dir / FACTORS_FILE
    if not source.exists():
        return None
    factors = pd.read_parquet(source)
    if IMAGE_ID not in factors or not factors[IMAGE_ID].reset_index(drop=True).equals(
            pd.Series(list(image_ids), name=IMAGE_ID)):
        raise ValueError(f"{source} does not list the same images, in the same order, as the annotation files; "
                         "regenerate the folder with `celeb synth` or delete the stale factors.parquet")
    target = data_dir / FACTORS_FILE
    with atomic_path(target) as tmp:
        factors.to_parquet(tmp, index=False)
    return target
