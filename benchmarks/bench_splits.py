"""Benchmark of the balanced split against a random identity-disjoint split.

    PYTHONPATH=. python benchmarks/bench_splits.py [--seed 0]

Prints time, worst and mean prevalence gap, split fractions and identity overlap for the real
first 20,000 CelebA rows (when ../shared/celeba-annotations/first20000 exists) and for a synthetic
table of CelebA's size (202,599 images, 10,177 identities).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from celeb.data.schema import ATTRIBUTE_NAMES, CELEBA_PREVALENCE, IDENTITY, IMAGE_ID, PARTITION
from celeb.data.splits import SPLITS, balance_report, make_split

REAL_FIRST20000 = Path(__file__).resolve().parents[1].parent / "shared" / "celeba-annotations" / "first20000"

# How much each attribute belongs to the person rather than the photo (0: per photo, 3: per person).
PERSON_LEVEL: dict[str, float] = {
    "Male": 4.0, "Bald": 3.0, "Black_Hair": 2.0, "Blond_Hair": 2.0, "Brown_Hair": 1.5, "Gray_Hair": 2.5,
    "Big_Nose": 2.0, "Big_Lips": 1.5, "Pointy_Nose": 1.5, "Young": 2.5, "Attractive": 1.5, "Chubby": 2.0,
    "Double_Chin": 2.0, "Receding_Hairline": 2.0, "Pale_Skin": 1.5, "Oval_Face": 1.0, "Narrow_Eyes": 1.0,
    "Arched_Eyebrows": 1.5, "Bushy_Eyebrows": 1.5, "Heavy_Makeup": 1.5, "Wearing_Lipstick": 1.5,
}


def synthetic_identity_table(n_images: int = 202_599, n_identities: int = 10_177, seed: int = 0) -> pd.DataFrame:
    """A CelebA-shaped table whose attributes depend on the person (and on sex) as well as the photo.

    Each identity gets a random effect per attribute (strong for person-level attributes such as
    Male or Bald) plus a shared factor standing for sex, so attributes are correlated within an
    identity and across attributes; identity sizes vary like CelebA's (1 to ~40, mean ~20).
    """
    rng = np.random.default_rng(seed)
    weights = rng.gamma(4.0, size=n_identities)
    identity = np.concatenate([np.arange(n_identities),
                               rng.choice(n_identities, n_images - n_identities, p=weights / weights.sum())])
    rng.shuffle(identity)
    base = np.array([CELEBA_PREVALENCE[a] for a in ATTRIBUTE_NAMES])
    person = np.array([PERSON_LEVEL.get(a, 0.5) for a in ATTRIBUTE_NAMES])
    sex_loading = rng.normal(0, 1.0, len(ATTRIBUTE_NAMES)) * (person > 0.5)
    sex_loading[ATTRIBUTE_NAMES.index("Male")] = 0.0
    sex = rng.choice([-1.0, 1.0], n_identities)
    effect = rng.normal(0, 1, (n_identities, len(ATTRIBUTE_NAMES))) * person + sex[:, None] * sex_loading
    effect[:, ATTRIBUTE_NAMES.index("Male")] = 6 * sex
    logits = np.log(base / (1 - base)) + effect[identity] + rng.logistic(0, 0.5, (n_images, len(ATTRIBUTE_NAMES)))
    labels = logits > 0
    frame = pd.DataFrame({
        IMAGE_ID: [f"{i:06d}.jpg" for i in range(1, n_images + 1)],
        PARTITION: np.repeat(np.int8([0, 1, 2]), [int(0.8 * n_images), int(0.1 * n_images),
                                                  n_images - int(0.8 * n_images) - int(0.1 * n_images)]),
        IDENTITY: identity.astype(np.int32),
    })
    return pd.concat([frame, pd.DataFrame(labels, columns=list(ATTRIBUTE_NAMES))], axis=1)


def random_identity_split(table: pd.DataFrame, ratios=(0.8, 0.1, 0.1), seed: int = 0) -> pd.Series:
    """The naive baseline: identities shuffled, then cut at the cumulative image ratios."""
    rng = np.random.default_rng(seed)
    identities, identity_of_row = np.unique(table[IDENTITY].to_numpy(), return_inverse=True)
    sizes = np.bincount(identity_of_row)
    order = rng.permutation(len(identities))
    cumulative = np.cumsum(sizes[order]) / len(table)
    split_of_identity = np.empty(len(identities), dtype=np.int64)
    split_of_identity[order] = np.searchsorted(np.cumsum(ratios)[:-1], cumulative, side="left")
    return pd.Series(np.array(SPLITS, dtype=object)[split_of_identity[identity_of_row]], index=table.index)


def describe(label: str, table: pd.DataFrame, split: pd.Series,
             seconds: tuple[float, float] | None = None) -> None:
    report = balance_report(table, split)
    fractions = " / ".join(f"{report['splits'][name]['fraction']:.4f}" for name in SPLITS)
    took = "" if seconds is None else f"{seconds[0]:5.2f} s (CPU {seconds[1]:5.2f} s)  "
    print(f"  {label:<22} {took}worst gap {report['worst_gap_pp']:5.2f} pp ({report['worst_attribute']}), "
          f"mean gap {report['mean_gap_pp']:.2f} pp, fractions {fractions}, "
          f"identity overlap {report['identity_overlap_total']}")


def bench(name: str, table: pd.DataFrame, seed: int, official: bool = False) -> None:
    print(f"{name}: {len(table):,} images, {table[IDENTITY].nunique():,} identities")
    wall, cpu = time.perf_counter(), time.process_time()
    split = make_split(table, "balanced", seed=seed, progress=False)
    describe("balanced", table, split, (time.perf_counter() - wall, time.process_time() - cpu))
    describe("random identity split", table, random_identity_split(table, seed=seed))
    # The first 20,000 real rows are all in the official train partition, so only a full table compares.
    if official and set(make_split(table, "official")) == set(SPLITS):
        describe("official partition", table, make_split(table, "official"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if REAL_FIRST20000.is_dir():
        from celeb.data.annotations import load_annotations

        bench("real CelebA, first 20,000", load_annotations(REAL_FIRST20000).table, args.seed, official=True)
    else:
        print(f"(no {REAL_FIRST20000}: skipping the real-data benchmark)")
    bench("synthetic, CelebA size", synthetic_identity_table(seed=args.seed), args.seed)


if __name__ == "__main__":
    main()
