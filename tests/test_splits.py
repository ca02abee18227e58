"""Tests of celeb.data.splits: official and balanced identity-disjoint splits, the report, the split folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celeb.data.schema import ATTRIBUTE_NAMES, CELEBA_PREVALENCE, IDENTITY, IMAGE_ID, PARTITION
from celeb.data.splits import (
    MAX_POS_WEIGHT, SPLITS, balance_report, make_split, positive_weights, read_split, write_split,
)

REPO = Path(__file__).resolve().parents[1]
FIRST20000 = REPO.parent / "shared" / "celeba-annotations" / "first20000"
RATIOS = (0.8, 0.1, 0.1)


def identity_table(n_images: int, n_identities: int, seed: int = 0) -> pd.DataFrame:
    """A CelebA-shaped table whose attributes depend strongly on the identity (and on a shared factor).

    Each identity has its own probability per attribute (logit of CelebA's prevalence plus a large
    per-identity effect and a sex-like factor shared by many attributes), so a random
    identity-disjoint split is visibly unbalanced. Identity sizes vary (mean n_images / n_identities).
    """
    rng = np.random.default_rng(seed)
    weights = rng.gamma(4.0, size=n_identities)
    identity = np.concatenate([np.arange(n_identities),
                               rng.choice(n_identities, n_images - n_identities, p=weights / weights.sum())])
    rng.shuffle(identity)
    base = np.array([CELEBA_PREVALENCE[a] for a in ATTRIBUTE_NAMES])
    shared = rng.choice([-1.0, 1.0], n_identities)[:, None] * rng.normal(0, 1, len(ATTRIBUTE_NAMES))
    effect = rng.normal(0, 1.5, (n_identities, len(ATTRIBUTE_NAMES))) + shared
    logits = np.log(base / (1 - base)) + effect[identity] + rng.logistic(0, 0.5, (n_images, len(ATTRIBUTE_NAMES)))
    frame = pd.DataFrame({
        IMAGE_ID: [f"{i:06d}.jpg" for i in range(1, n_images + 1)],
        PARTITION: rng.choice(np.int8([0, 1, 2]), n_images, p=[0.8, 0.1, 0.1]).astype(np.int8),
        IDENTITY: identity.astype(np.int32),
    })
    return pd.concat([frame, pd.DataFrame(logits > 0, columns=list(ATTRIBUTE_NAMES))], axis=1)


def random_identity_split(table: pd.DataFrame, seed: int = 0) -> pd.Series:
    """Identities shuffled and cut at the cumulative ratios: the baseline a balanced split must beat."""
    identities, row_identity = np.unique(table[IDENTITY].to_numpy(), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(identities))
    cumulative = np.cumsum(np.bincount(row_identity)[order]) / len(table)
    split_of = np.empty(len(identities), dtype=np.int64)
    split_of[order] = np.searchsorted(np.cumsum(RATIOS)[:-1], cumulative)
    return pd.Series(np.array(SPLITS, dtype=object)[split_of[row_identity]], index=table.index)


def identity_sets(table: pd.DataFrame, split: pd.Series) -> dict[str, set]:
    return {name: set(table.loc[split == name, IDENTITY]) for name in SPLITS}


def assert_valid_balanced(table: pd.DataFrame, split: pd.Series, ratios=RATIOS) -> dict:
    """Zero identity overlap and each split's fraction within 0.01 of the requested ratio."""
    ids = identity_sets(table, split)
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    fractions = split.value_counts(normalize=True)
    for name, ratio in zip(SPLITS, ratios):
        assert abs(fractions[name] - ratio) <= 0.01, (name, fractions[name], ratio)
    report = balance_report(table, split)
    assert report["identity_overlap_total"] == 0
    return report


@pytest.fixture(scope="module")
def medium() -> pd.DataFrame:
    return identity_table(20_000, 1_000, seed=3)


@pytest.fixture(scope="module")
def medium_split(medium) -> pd.Series:
    return make_split(medium, "balanced", seed=0, progress=False)


@pytest.fixture(scope="module")
def real_first20000() -> pd.DataFrame:
    if not (FIRST20000 / "list_attr_celeba.txt").is_file():
        pytest.skip(f"real CelebA annotations not at {FIRST20000}")
    from celeb.data.annotations import load_annotations

    return load_annotations(FIRST20000).table


def tiny_table() -> pd.DataFrame:
    """Six images of four identities; Smiling and Male set by hand, every other attribute False."""
    frame = pd.DataFrame({
        IMAGE_ID: [f"{i:06d}.jpg" for i in range(1, 7)],
        PARTITION: np.int8([0, 0, 0, 0, 1, 2]),
        IDENTITY: np.int32([1, 1, 2, 2, 3, 4]),
    })
    labels = pd.DataFrame(False, index=frame.index, columns=list(ATTRIBUTE_NAMES))
    labels["Smiling"] = [True, True, False, False, True, False]
    labels["Male"] = [True, False, False, False, False, False]
    return pd.concat([frame, labels], axis=1)


TINY_SPLIT = pd.Series(["train", "train", "train", "train", "val", "test"], name="split")


# --------------------------------------------------------------------------------------------
# Balanced split


def test_balanced_split_is_identity_disjoint_within_ratio_tolerance_and_beats_random(medium, medium_split):
    report = assert_valid_balanced(medium, medium_split)
    random_report = balance_report(medium, random_identity_split(medium))
    assert random_report["worst_gap_pp"] > 3.0  # the table really is hard to balance by chance
    assert report["worst_gap_pp"] < random_report["worst_gap_pp"] / 3
    assert medium_split.index.equals(medium.index) and medium_split.name == "split"


def test_balanced_split_is_deterministic_per_seed(medium, medium_split):
    again = make_split(medium, "balanced", seed=0, progress=False)
    other = make_split(medium, "balanced", seed=1, progress=False)
    pd.testing.assert_series_equal(again, medium_split)
    assert (other != medium_split).mean() > 0.05
    assert_valid_balanced(medium, other)


def test_balanced_split_honours_other_ratios(medium):
    ratios = (0.6, 0.15, 0.25)
    split = make_split(medium, "balanced", ratios=ratios, seed=0, progress=False)
    assert_valid_balanced(medium, split, ratios)


def test_balanced_split_follows_the_table_index():
    table = identity_table(3_000, 150, seed=1)
    table.index = np.arange(len(table))[::-1] * 7
    split = make_split(table, "balanced", seed=0, progress=False)
    assert split.index.equals(table.index)
    assert_valid_balanced(table, split)


def test_real_first20000_meets_the_balance_target(real_first20000):
    split = make_split(real_first20000, "balanced", seed=0, progress=False)
    report = assert_valid_balanced(real_first20000, split)
    assert report["worst_gap_pp"] <= 1.0
    assert balance_report(real_first20000, random_identity_split(real_first20000))["worst_gap_pp"] > 2.0


@pytest.mark.slow
def test_celeba_size_synthetic_meets_the_balance_target():
    table = identity_table(202_599, 10_177, seed=0)
    split = make_split(table, "balanced", seed=0, progress=False)
    report = assert_valid_balanced(table, split)
    assert report["worst_gap_pp"] <= 0.5


# --------------------------------------------------------------------------------------------
# Official split


def test_official_split_reads_the_partition_column():
    table = tiny_table()
    split = make_split(table, "official")
    assert split.tolist() == ["train", "train", "train", "train", "val", "test"]
    assert split.index.equals(table.index)


def test_official_split_works_without_identities():
    table = tiny_table().drop(columns=[IDENTITY])
    report = balance_report(table, make_split(table, "official"), strategy="official")
    assert report["identity_overlap"] is None and report["splits"]["val"]["identities"] is None


def test_official_split_rejects_unknown_partition_codes():
    table = tiny_table()
    table.loc[2, PARTITION] = 5
    with pytest.raises(ValueError, match=r"partition column holds \[5\].*celeb prepare"):
        make_split(table, "official")


# --------------------------------------------------------------------------------------------
# Bad input


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown split strategy 'random'.*official, balanced"):
        make_split(tiny_table(), "random")


@pytest.mark.parametrize("ratios, message", [
    ((0.8, 0.1, 0.2), "must sum to 1"),
    ((0.9, 0.2, -0.1), "must all be positive"),
    ((0.8, 0.2), "must be 3 numbers"),
    ((1.0, 0.0, 0.0), "must all be positive"),
])
def test_bad_ratios_are_clear_errors(ratios, message):
    with pytest.raises(ValueError, match=message):
        make_split(tiny_table(), "balanced", ratios=ratios, progress=False)


def test_balanced_split_without_identities_says_which_file_to_add():
    table = tiny_table().drop(columns=[IDENTITY])
    with pytest.raises(ValueError, match=r"balanced split needs identities.*identity_CelebA\.txt.*celeb prepare"):
        make_split(table, "balanced", progress=False)


def test_official_split_without_partition_says_which_file_to_add():
    with pytest.raises(ValueError, match=r"official split needs.*list_eval_partition\.txt.*celeb prepare"):
        make_split(tiny_table().drop(columns=[PARTITION]), "official")


def test_balanced_split_of_a_tiny_table_fills_every_split():
    table = tiny_table()
    split = make_split(table, "balanced", seed=0, progress=False)
    ids = identity_sets(table, split)
    assert all(ids[name] for name in SPLITS)
    assert sum(len(v) for v in ids.values()) == 4  # each of the 4 identities in exactly one split


def test_balanced_split_needs_three_identities():
    table = tiny_table()
    table[IDENTITY] = np.int32([1, 1, 1, 2, 2, 2])
    with pytest.raises(ValueError, match="at least 3 identities.*has 2"):
        make_split(table, "balanced", progress=False)


def test_a_split_of_another_table_is_rejected_by_the_report():
    with pytest.raises(ValueError, match="different index"):
        balance_report(tiny_table(), TINY_SPLIT.iloc[:5])
    with pytest.raises(ValueError, match=r"\['training'\].*train, val, test"):
        balance_report(tiny_table(), TINY_SPLIT.replace("train", "training"))


# --------------------------------------------------------------------------------------------
# Report and positive weights


def test_balance_report_on_a_hand_made_table():
    report = balance_report(tiny_table(), TINY_SPLIT, strategy="balanced", seed=7, ratios=RATIOS)
    smiling, male = report["attributes"]["Smiling"], report["attributes"]["Male"]
    # Smiling: train 2/4, val 1/1, test 0/1 -> gap 100 pp; Male: train 1/4, val 0, test 0 -> 25 pp.
    assert smiling == {"overall": 0.5, "train": 0.5, "val": 1.0, "test": 0.0, "gap_pp": 100.0}
    assert male["train"] == 0.25 and male["gap_pp"] == 25.0
    assert report["attributes"]["Bald"]["gap_pp"] == 0.0
    assert report["worst_attribute"] == "Smiling" and report["worst_gap_pp"] == 100.0
    assert report["mean_gap_pp"] == pytest.approx(125.0 / 40)
    assert report["splits"]["train"] == {"size": 4, "fraction": 4 / 6, "identities": 2}
    assert report["identity_overlap"] == {"train-val": 0, "train-test": 0, "val-test": 0}
    assert (report["strategy"], report["seed"], report["ratios"]) == ("balanced", 7, dict(zip(SPLITS, RATIOS)))
    json.dumps(report, allow_nan=False)


def test_balance_report_counts_identity_overlap():
    split = pd.Series(["train", "val", "train", "test", "val", "test"])  # identities 1 and 2 straddle
    overlap = balance_report(tiny_table(), split)["identity_overlap"]
    assert overlap == {"train-val": 1, "train-test": 1, "val-test": 0}


def test_balance_report_leaves_empty_splits_out_of_the_gap():
    split = pd.Series(["train"] * 5 + ["val"])
    report = balance_report(tiny_table(), split)
    assert report["attributes"]["Smiling"]["test"] is None
    assert report["attributes"]["Smiling"]["gap_pp"] == pytest.approx(100 * (3 / 5 - 0))
    assert report["splits"]["test"]["size"] == 0
    json.dumps(report, allow_nan=False)


def test_positive_weights_on_a_hand_made_table():
    weights = positive_weights(tiny_table(), TINY_SPLIT)
    assert list(weights) == list(ATTRIBUTE_NAMES)
    assert weights["Smiling"] == 1.0  # train: 2 positives, 2 negatives
    assert weights["Male"] == 3.0  # train: 1 positive, 3 negatives
    assert weights["Bald"] == MAX_POS_WEIGHT  # no positive in train
    assert positive_weights(tiny_table(), TINY_SPLIT, subset="val")["Smiling"] == 0.0


def test_positive_weights_are_capped():
    table = pd.concat([tiny_table()] * 500, ignore_index=True)
    table["Smiling"] = False
    table.loc[0, "Smiling"] = True
    split = pd.Series(["train"] * len(table))
    assert positive_weights(table, split)["Smiling"] == MAX_POS_WEIGHT
    assert positive_weights(table, split, max_weight=50.0)["Smiling"] == 50.0
    with pytest.raises(ValueError, match="unknown subset 'dev'"):
        positive_weights(table, split, subset="dev")
    with pytest.raises(ValueError, match="val split has no rows"):
        positive_weights(table, split, subset="val")


# --------------------------------------------------------------------------------------------
# The split folder


@pytest.fixture(scope="module")
def written(tmp_path_factory, medium, medium_split) -> tuple[Path, dict]:
    """A split folder written once for the medium table (rendering the plots takes seconds)."""
    out = tmp_path_factory.mktemp("split")
    report = balance_report(medium, medium_split, strategy="balanced", seed=0, ratios=RATIOS)
    write_split(out, medium, medium_split, report)
    return out, report


def test_write_then_read_round_trip(written, medium, medium_split):
    tmp_path, report = written
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "correlation.png", "pos_weight.json", "prevalence.png", "report.json", "report.md", "split.parquet"]
    pd.testing.assert_series_equal(read_split(tmp_path, medium), medium_split)
    on_disk = pd.read_parquet(tmp_path / "split.parquet")
    assert list(on_disk.columns) == [IMAGE_ID, "split"]
    assert on_disk[IMAGE_ID].tolist() == medium[IMAGE_ID].tolist()
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert json.loads((tmp_path / "pos_weight.json").read_text()) == positive_weights(medium, medium_split)
    for png in ("prevalence.png", "correlation.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    markdown = (tmp_path / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and line.split("|")[1].strip()
            in ATTRIBUTE_NAMES]
    gaps = [float(row.split("|")[-2]) for row in rows]
    assert len(rows) == 40 and gaps == sorted(gaps, reverse=True)
    assert rows[0].split("|")[1].strip() == report["worst_attribute"]
    assert "train-val 0" in markdown


def test_read_split_rejects_a_split_of_another_table(written, medium):
    out, _ = written
    swapped = medium.copy()
    swapped.loc[[10, 11], IMAGE_ID] = swapped.loc[[11, 10], IMAGE_ID].to_numpy()
    with pytest.raises(ValueError, match=r"split\.parquet was made from a different table.*rerun `celeb split`"):
        read_split(out, swapped)
    with pytest.raises(ValueError, match="different table"):
        read_split(out, medium.iloc[:-1])
    with pytest.raises(FileNotFoundError, match="celeb split"):
        read_split(out / "nowhere", medium)


def test_write_split_rejects_a_misaligned_split_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="different index"):
        write_split(tmp_path / "out", tiny_table(), TINY_SPLIT.iloc[:4], {})
    assert not (tmp_path / "out").exists()


def test_importing_splits_loads_no_plotting_library():
    code = "import sys, celeb.data.splits; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.stdout.strip() == "False"
